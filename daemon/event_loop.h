// SPDX-License-Identifier: Apache-2.0
// The daemon's event loop: one thread waiting for readable fds (the fanotify group, the
// control socket, a signalfd) and running their handlers. Handlers must not block: a
// handler that blocks stalls every reader of every fanotify mount. Slow work (fills,
// control requests, mounts) goes to other threads.
#pragma once

#include <functional>
#include <memory>

#include "base/result.h"

namespace cfnd {

class EventLoop {
 public:
  using Handler = std::function<void()>;
  virtual ~EventLoop() = default;

  // io_uring POLL_ADD based; poll(2) based when io_uring is unavailable (logged).
  [[nodiscard]] static base::Result<std::unique_ptr<EventLoop>> create();

  // Call handler on the loop thread whenever fd is readable (level-triggered). Only from
  // the loop thread or before run(). The fd stays owned by the caller; remove() it before
  // closing it.
  virtual base::Status add(int fd, Handler handler) = 0;
  virtual void remove(int fd) = 0;
  // Run until stop(). Errors: the poll error that ended the loop.
  virtual base::Status run() = 0;
  // Thread-safe and async-signal-safe: make run() return after the current round.
  virtual void stop() = 0;
};

}  // namespace cfnd
