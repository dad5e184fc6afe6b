// SPDX-License-Identifier: Apache-2.0
// Server: a Service on a gRPC socket, with grpc++'s asynchronous completion-queue API.
//
// One thread polls the completion queue. The cheap read-only calls (Stat, Mounts, List) run
// inline on that thread: the request is read, handled and answered with no thread hand-off
// (grpc++'s synchronous server passes each call from its poller thread to a handler thread
// and back, several futex wake-ups per call). The calls that write or may take long
// (Prepare, View, Commit, Remove, Update, Usage's walk of a directory tree, Cleanup) go to
// a pool of worker threads, so a slow one never holds up the cheap ones; a worker answers
// from its own thread.
//
// A handler that throws is answered UNKNOWN with the exception's text, as grpc++'s
// synchronous server did.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "base/result.h"
#include "base/worker_pool.h"
#include "snapshotter/service.h"

namespace snapshotter {

class Server {
 public:
  static constexpr unsigned kWorkers = 4;

  // Serves `service` (which must outlive the server) on `address`, a gRPC address such as
  // "unix:/run/x.sock". EADDRNOTAVAIL when it cannot listen there.
  [[nodiscard]] static base::Result<std::unique_ptr<Server>> start(Service& service,
                                                                   const std::string& address,
                                                                   unsigned workers = kWorkers);
  // shutdown(now) unless done.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Stops taking new calls and lets the calls in flight finish until `deadline` (then they
  // are cancelled), waits for the workers, stops polling. Idempotent; not from a handler.
  void shutdown(std::chrono::system_clock::time_point deadline);

  // Where a call's handler runs. Public for the call objects in server.cc.
  enum class Where { kInline, kWorker };
  void run(Where where, std::function<void()> job);
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
  base::WorkerPool<std::function<void()>> workers_;
  std::thread poller_;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
};

}  // namespace snapshotter
