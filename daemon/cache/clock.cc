// SPDX-License-Identifier: Apache-2.0
#include "daemon/cache/clock.h"

namespace cfnd::cache {
namespace {

class SteadyClock final : public Clock {
 public:
  [[nodiscard]] time_point now() const override { return std::chrono::steady_clock::now(); }
  bool wait_until(std::unique_lock<std::mutex>& lk, std::condition_variable& cv, time_point t,
                  const std::function<bool()>& pred) override {
    if (t == time_point::max()) {
      cv.wait(lk, pred);
      return true;
    }
    return cv.wait_until(lk, t, pred);
  }
};

}  // namespace

std::shared_ptr<Clock> steady_clock() {
  static const std::shared_ptr<Clock> clock = std::make_shared<SteadyClock>();
  return clock;
}

}  // namespace cfnd::cache
