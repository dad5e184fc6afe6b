// SPDX-License-Identifier: Apache-2.0
// WorkerPool: jobs handed from one producer (an event loop) to a fixed set of worker
// threads over a BlockingQueue. Each thread builds its own handler once (per-thread
// state such as a copy buffer lives in it) and runs it on every job it pops. stop()
// lets the workers drain what is queued, then joins them.
#pragma once

#include <thread>
#include <utility>
#include <vector>

#include "base/blocking_queue.h"

namespace base {

template <typename Job>
class WorkerPool {
 public:
  WorkerPool() = default;
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  ~WorkerPool() { stop(); }

  // Starts n threads (at least one). make_handler() is called once on each thread and
  // returns a callable taking Job&; it must not throw.
  template <typename MakeHandler>
  void start(unsigned n, MakeHandler make_handler) {
    for (unsigned i = 0; i < (n == 0 ? 1 : n); ++i) {
      threads_.emplace_back([this, make_handler] {
        auto handle = make_handler();
        for (;;) {
          Job job;  // per iteration: a finished job releases what it holds at once
          if (!jobs_.pop(job)) {
            return;
          }
          handle(job);
        }
      });
    }
  }

  void push(Job job) { jobs_.push(std::move(job)); }

  // Closes the queue, lets the workers finish what is queued and joins them. Idempotent;
  // not to be called from a worker.
  void stop() {
    jobs_.close();
    for (auto& t : threads_) {
      t.join();
    }
    threads_.clear();
  }

 private:
  BlockingQueue<Job> jobs_;
  std::vector<std::thread> threads_;
};

}  // namespace base
