// SPDX-License-Identifier: Apache-2.0
// Server: a Service on a unix socket, as gRPC over HTTP/2 (snapshotter/grpc_h2.h), on ONE
// event-loop thread (epoll): it accepts, reads, runs the fast calls (Stat, Mounts) inline and
// writes, so a call is answered on the thread that read it, with no hand-off. The slow calls
// (Prepare, View, Commit, Remove, Update, List, Usage, Cleanup: fsync, mounts, daemon binds,
// directory walks) go to a pool of kWorkers threads; the worker that ran a call writes its
// reply on the connection itself (each connection has a lock the loop and the workers take
// around its HTTP/2 state and socket), so a call crosses threads once, not twice; the loop
// never waits for a worker. Remove and Cleanup have kWorkers threads of their own: Removes
// waiting for their batch's commit never leave a Prepare queued for a worker.
//
// A handler that throws is answered UNKNOWN with the exception's text. A method the service
// does not have is answered UNIMPLEMENTED.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "base/result.h"
#include "snapshotter/service.h"

namespace snapshotter {

class Server {
 public:
  static constexpr unsigned kWorkers = 4;

  // Serves `service` (which must outlive the server) on `address`, a socket path or
  // "unix:PATH"; the path must not exist. The socket is made 0600. EADDRNOTAVAIL (or the
  // errno of socket/bind/listen) when it cannot listen there.
  [[nodiscard]] static base::Result<std::unique_ptr<Server>> start(Service& service,
                                                                   const std::string& address,
                                                                   unsigned workers = kWorkers);
  // shutdown(now) unless done.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Stops taking new calls and connections (GOAWAY), lets the calls in flight finish until
  // `deadline` (then closes the connections), stops the loop and the workers (a handler
  // still running is waited for). Idempotent; not from a handler.
  void shutdown(std::chrono::system_clock::time_point deadline);

  struct Loop;

 private:
  Server() = default;

  std::unique_ptr<Loop> loop_;
  std::thread thread_;
  bool stopped_ = false;
};

}  // namespace snapshotter
