// SPDX-License-Identifier: Apache-2.0
// A cache::Clock that moves only when the test says so: advance() wakes the threads
// waiting on it; wait_for_sleeper() tells a test that a thread waits for a time, so it
// moves the clock only then (no sleep to let a thread get there).
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

#include "daemon/cache/clock.h"

namespace cfntest {

class ManualClock final : public cfnd::cache::Clock {
 public:
  // Starts at the steady clock's now (so deadlines handed to a real backend mean
  // something), then stands still.
  ManualClock() : now_(std::chrono::steady_clock::now()) {}

  [[nodiscard]] time_point now() const override {
    std::lock_guard lk(mu_);
    return now_;
  }

  bool wait_until(std::unique_lock<std::mutex>& lk, std::condition_variable& cv, time_point t,
                  const std::function<bool()>& pred) override {
    const Waiter w{lk.mutex(), &cv, t};
    for (;;) {
      if (pred()) {
        return true;
      }
      {
        std::lock_guard g(mu_);
        if (now_ >= t) {
          return false;
        }
        waiters_.push_back(w);
        changed_.notify_all();
      }
      // advance() takes lk's mutex before it notifies, so a move of the clock after
      // the check above cannot slip past this wait.
      cv.wait(lk);
      std::lock_guard g(mu_);
      waiters_.erase(std::find(waiters_.begin(), waiters_.end(), w));
      changed_.notify_all();
    }
  }

  // Moves the clock by d and wakes every waiter. Call with no lock of the code under
  // test held, while the objects the waiters wait on live.
  void advance(std::chrono::nanoseconds d) {
    std::vector<Waiter> ws;
    {
      std::lock_guard g(mu_);
      now_ += d;
      ws = waiters_;
      changed_.notify_all();
    }
    for (const Waiter& w : ws) {
      { std::lock_guard g(*w.mu); }
      w.cv->notify_all();
    }
  }
  // Moves the clock to t if it is earlier.
  void advance_to(time_point t) {
    time_point n = now();
    if (t > n) {
      advance(t - n);
    }
  }

  // Blocks until a thread waits on the clock for a time still to come (a waiter the
  // last advance() woke but that has not run yet does not count).
  void wait_for_sleeper() {
    std::unique_lock g(mu_);
    changed_.wait(g, [&] {
      return std::any_of(waiters_.begin(), waiters_.end(),
                         [&](const Waiter& w) { return w.t > now_; });
    });
  }

 private:
  struct Waiter {
    std::mutex* mu;
    std::condition_variable* cv;
    time_point t;
    bool operator==(const Waiter&) const = default;
  };
  mutable std::mutex mu_;
  std::condition_variable changed_;  // waiters_ changed
  time_point now_;
  std::vector<Waiter> waiters_;
};

}  // namespace cfntest
