// SPDX-License-Identifier: Apache-2.0
// Server: a Service on a gRPC socket, with grpc++'s asynchronous completion-queue API.
//
// kPollers threads poll the one completion queue, and each call is handled on the thread
// that took its event: read, handled and answered with no hand-off to another thread (a
// hand-off is a scheduler wake-up on the call's path, which costs milliseconds when the
// machine is loaded). While one thread is in a slow call (a Prepare's fsync, a Usage walk,
// a Cleanup) the others keep polling, so the cheap calls are not held up unless kPollers
// slow ones run at once.
//
// A handler that throws is answered UNKNOWN with the exception's text, as grpc++'s
// synchronous server did.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "base/result.h"
#include "snapshotter/service.h"

namespace snapshotter {

class Server {
 public:
  static constexpr unsigned kPollers = 4;

  // Serves `service` (which must outlive the server) on `address`, a gRPC address such as
  // "unix:/run/x.sock". EADDRNOTAVAIL when it cannot listen there.
  [[nodiscard]] static base::Result<std::unique_ptr<Server>> start(Service& service,
                                                                   const std::string& address,
                                                                   unsigned pollers = kPollers);
  // shutdown(now) unless done.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Stops taking new calls and lets the calls in flight finish until `deadline` (then they
  // are cancelled), stops polling. Idempotent; not from a handler.
  void shutdown(std::chrono::system_clock::time_point deadline);

  // For the call objects in server.cc.
  [[nodiscard]] bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  Service& service() { return service_; }
  api::Snapshots::AsyncService& async() { return async_; }
  grpc::ServerCompletionQueue* cq() { return cq_.get(); }

 private:
  explicit Server(Service& service) : service_(service) {}
  void poll();

  Service& service_;
  api::Snapshots::AsyncService async_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::thread> pollers_;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
};

}  // namespace snapshotter
