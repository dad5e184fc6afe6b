// SPDX-License-Identifier: Apache-2.0
// The background prefetch's bandwidth cap: a token bucket over compressed bytes,
// refilled at rate bytes/s up to capacity. Pure: the caller passes the time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace cfnd::cache {

class TokenBucket {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  // Starts full at start. rate > 0.
  TokenBucket(std::uint64_t rate, std::uint64_t capacity, time_point start)
      : rate_(static_cast<double>(rate)),
        capacity_(static_cast<double>(capacity)),
        tokens_(capacity_),
        last_(start) {}

  // Takes n tokens at now, running into debt if there are too few; returns how long
  // the caller waits before using them (0 when the bucket had n).
  std::chrono::nanoseconds take(std::uint64_t n, time_point now) {
    if (now > last_) {
      tokens_ =
          std::min(capacity_, tokens_ + rate_ * std::chrono::duration<double>(now - last_).count());
      last_ = now;
    }
    tokens_ -= static_cast<double>(n);
    if (tokens_ >= 0) {
      return std::chrono::nanoseconds(0);
    }
    return std::chrono::nanoseconds(static_cast<std::int64_t>(-tokens_ / rate_ * 1e9));
  }

 private:
  double rate_;
  double capacity_;
  double tokens_;
  time_point last_;
};

}  // namespace cfnd::cache
