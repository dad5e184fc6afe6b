// SPDX-License-Identifier: Apache-2.0
// Logging set-up. Code logs through spdlog's default logger; programs call
// init_logging() once from main. Pure code (erofs/, fscache/ codecs) never logs.
#pragma once

#include <string_view>

#include <spdlog/spdlog.h>

namespace base {

// level: trace, debug, info, warn, error, off. Logs go to stderr with a short pattern.
void init_logging(std::string_view program, std::string_view level = "info");

}  // namespace base
