// SPDX-License-Identifier: Apache-2.0
// The control API: a unix stream socket (mode 0600) speaking line-delimited JSON. A
// client sends ONE request object on one line ('\n'-terminated, at most kMaxRequest
// bytes); the daemon answers with one JSON object on one line and closes. Every answer
// has "ok": true/false; failures carry "error" (text) and "errno".
//
//   {"op":"bind","bootstrap":PATH,"blob_dir":DIR,"mountpoint":DIR,"frontend":"fanotify"}
//   {"op":"unbind","mountpoint":DIR[,"force":true]}
//   {"op":"list"}                        -> {"ok":true,"images":[{...}]}
//   {"op":"metrics"}                     -> {"ok":true,"metrics":{...}}
//   {"op":"metrics","format":"prometheus"} -> {"ok":true,"text":"..."}
//   {"op":"ping"}                        -> {"ok":true,"pid":N,"frontend":...}
//
// Hostile clients: the request size is bounded, each connection has a deadline, at most
// kMaxClients are served at once (more are closed at once), and requests run on their
// own threads, never on the event loop.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace cfnd {

inline constexpr std::size_t kMaxRequest = 64 * 1024;
inline constexpr std::size_t kMaxResponse = 16 * 1024 * 1024;
inline constexpr int kMaxClients = 16;
inline constexpr std::chrono::seconds kRequestDeadline{5};

class ControlServer {
 public:
  // Answer one request line (JSON text, no newline) with one JSON text.
  using Handler = std::function<std::string(const std::string& request)>;

  // Listen on path (its parent directory is created 0700 when missing; a stale socket is
  // replaced, a live one is EADDRINUSE).
  [[nodiscard]] static base::Result<std::unique_ptr<ControlServer>> listen(const std::string& path,
                                                                           Handler handler);
  virtual ~ControlServer() = default;

  // The listening fd (non-blocking), for the event loop; on_readable() accepts.
  [[nodiscard]] virtual int fd() const = 0;
  virtual void on_readable() = 0;
};

// Client side: send one request, return the answer line. ECONNREFUSED / ENOENT when no
// daemon listens; ETIMEDOUT after `timeout`.
[[nodiscard]] base::Result<std::string> control_call(const std::string& path,
                                                     const std::string& request,
                                                     std::chrono::milliseconds timeout);

}  // namespace cfnd
