// SPDX-License-Identifier: Apache-2.0
// The blob cache's clock: what "now" is for read deadlines, the failure hold and the
// prefetch token bucket, and how a thread waits for a time. Production uses
// steady_clock; a test passes a clock it moves by hand (CacheOptions::clock), so no
// test sleeps to see a hold end or a bucket refill.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>

namespace cfnd::cache {

class Clock {
 public:
  // The backend's Deadline is a time point of this clock (daemon/backend.h).
  using time_point = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  [[nodiscard]] virtual time_point now() const = 0;
  // With lk locked on cv's mutex: waits on cv until pred() holds or now() reaches t
  // (time_point::max(): no bound). Returns pred(). Whoever makes pred true notifies cv.
  virtual bool wait_until(std::unique_lock<std::mutex>& lk, std::condition_variable& cv,
                          time_point t, const std::function<bool()>& pred) = 0;
};

// steady_clock and condition_variable::wait_until. One object, shared.
[[nodiscard]] std::shared_ptr<Clock> steady_clock();

}  // namespace cfnd::cache
