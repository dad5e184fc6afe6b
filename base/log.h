// SPDX-License-Identifier: Apache-2.0
// Logging set-up. Code logs through spdlog's default logger; programs call
// init_logging() once from main. Pure code (erofs/, fscache/ codecs) never logs.
#pragma once

#include <atomic>
#include <chrono>
#include <limits>
#include <string_view>

#include <spdlog/spdlog.h>

namespace base {

// level: trace, debug, info, warn, error, off. Logs go to stderr with a short pattern.
void init_logging(std::string_view program, std::string_view level = "info");

// At most one log line per second per call site, for per-request problems:
//   static base::RateLimit rl; if (rl.allow()) { spdlog::error(...); }
class RateLimit {
 public:
  bool allow() {
    auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    auto last = last_.load(std::memory_order_relaxed);
    if (now - last < std::chrono::steady_clock::duration(std::chrono::seconds(1)).count()) {
      return false;
    }
    return last_.compare_exchange_strong(last, now, std::memory_order_relaxed);
  }

 private:
  std::atomic<std::chrono::steady_clock::rep> last_{
      std::numeric_limits<std::chrono::steady_clock::rep>::min() / 2};
};

}  // namespace base
