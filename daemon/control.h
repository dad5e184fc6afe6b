// SPDX-License-Identifier: Apache-2.0
// The daemon's side of the control API (control/api.h): a unix stream socket (mode
// 0600), one request line in, one answer line out, then close.
//
// Hostile clients: one reader thread polls every connection until its request line is
// complete, so slow, half-written or silent clients hold no worker. The request size is
// bounded (control::kMaxRequest), each connection has a deadline for its line, at most
// kMaxPending connections wait for their line (over that, the oldest is closed), and at
// most kMaxClients handlers run at once on worker threads (never on the event loop; more
// complete requests queue). Memory: at most kMaxPending * kMaxRequest of request bytes.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace cfnd {

inline constexpr int kMaxClients = 16;
inline constexpr int kMaxPending = 256;
inline constexpr std::chrono::seconds kRequestDeadline{5};

class ControlServer {
 public:
  // Answer one request line (JSON text, no newline) with one JSON text.
  using Handler = std::function<std::string(const std::string& request)>;

  // Listen on path (its parent directory is created 0700 when missing; a stale socket is
  // replaced, a live one is EADDRINUSE).
  [[nodiscard]] static base::Result<std::unique_ptr<ControlServer>> listen(const std::string& path,
                                                                           Handler handler);
  // Joins the reader and worker threads (each handler ends by its deadlines).
  virtual ~ControlServer() = default;

  // The listening fd (non-blocking), for the event loop; on_readable() accepts.
  [[nodiscard]] virtual int fd() const = 0;
  virtual void on_readable() = 0;
};

}  // namespace cfnd
