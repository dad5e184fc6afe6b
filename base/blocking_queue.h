// SPDX-License-Identifier: Apache-2.0
// BlockingQueue: a FIFO handed from one producer thread (an event loop) to a set of
// worker threads. close() lets the workers drain what is queued, then pop() returns
// false so they can exit.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>

namespace base {

template <typename T>
class BlockingQueue {
 public:
  void push(T item) {
    {
      std::lock_guard lk(mu_);
      items_.push_back(std::move(item));
    }
    cv_.notify_one();
  }

  // Blocks until an item is available (true) or the queue is closed and empty (false).
  bool pop(T& out) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [this] { return closed_ || !items_.empty(); });
    if (items_.empty()) {
      return false;
    }
    out = std::move(items_.front());
    items_.pop_front();
    return true;
  }

  void close() {
    {
      std::lock_guard lk(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
  bool closed_ = false;
};

}  // namespace base
