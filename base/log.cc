// SPDX-License-Identifier: Apache-2.0
#include "base/log.h"

#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace base {

void init_logging(std::string_view program, std::string_view level) {
  auto logger = spdlog::stderr_color_mt(std::string(program));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %n: %v");
  logger->set_level(spdlog::level::from_str(std::string(level)));
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace base
