// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/server.h"

#include <exception>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

#include "base/log.h"

namespace snapshotter {
namespace {

// A call in progress. Its address is the completion-queue tag of each of its operations,
// and it has at most one operation pending at a time.
class Call {
 public:
  virtual ~Call() = default;
  // Its pending operation completed (ok: it succeeded). May delete this.
  virtual void proceed(bool ok) = 0;
};

// A handler's status; an exception it throws becomes UNKNOWN with the exception's text.
template <typename F>
grpc::Status guarded(std::string_view rpc, F&& handle) {
  try {
    return handle();
  } catch (const std::exception& e) {
    static base::RateLimit rl;
    if (rl.allow()) {
      spdlog::error("{}: {}", rpc, e.what());
    }
    return grpc::Status(grpc::StatusCode::UNKNOWN, std::string(rpc) + ": " + e.what());
  }
}

// A unary RPC: waiting for a call (a request is outstanding), then answered (Finish pending).
template <typename Req, typename Resp>
class UnaryCall final : public Call {
 public:
  using Request = void (api::Snapshots::AsyncService::*)(grpc::ServerContext*, Req*,
                                                         grpc::ServerAsyncResponseWriter<Resp>*,
                                                         grpc::CompletionQueue*,
                                                         grpc::ServerCompletionQueue*, void*);
  using Handler = grpc::Status (Service::*)(const Req&, Resp*);
  struct Method {
    const char* name;
    Request request;
    Handler handler;
  };

  // Waits for the next call of m.
  static void await(Server& server, const Method& m) {
    auto* c = new UnaryCall(server, m);
    (server.async().*m.request)(&c->ctx_, &c->req_, &c->writer_, server.cq(), server.cq(), c);
  }

  void proceed(bool ok) override {
    // !ok while waiting: the server shuts down. Answered: Finish is done (sent or not).
    if (!ok || answered_) {
      delete this;
      return;
    }
    // A call came: the next one may come while this one is handled.
    if (!server_.stopping()) {
      await(server_, m_);
    }
    answered_ = true;
    grpc::Status st =
        guarded(m_.name, [this] { return (server_.service().*m_.handler)(req_, &resp_); });
    writer_.Finish(resp_, st, this);
  }

 private:
  UnaryCall(Server& server, const Method& m) : server_(server), m_(m), writer_(&ctx_) {}

  Server& server_;
  const Method m_;
  grpc::ServerContext ctx_;
  Req req_;
  Resp resp_;
  grpc::ServerAsyncResponseWriter<Resp> writer_;
  bool answered_ = false;
};

// List (Walk): waiting for a call, writing the batches one at a time (the last one with
// the status), finished.
class ListCall final : public Call {
 public:
  static void await(Server& server) {
    auto* c = new ListCall(server);
    server.async().RequestList(&c->ctx_, &c->req_, &c->writer_, server.cq(), server.cq(), c);
  }

  void proceed(bool ok) override {
    switch (state_) {
      case State::kWaiting:
        if (!ok) {
          delete this;
          return;
        }
        if (!server_.stopping()) {
          await(server_);
        }
        state_ = State::kWriting;
        status_ = guarded("list", [this] { return server_.service().List(req_, &batches_); });
        write_next();
        return;
      case State::kWriting:
        if (!ok) {
          state_ = State::kFinished;
          writer_.Finish(grpc::Status(grpc::StatusCode::CANCELLED, "list: the client went away"),
                         this);
          return;
        }
        write_next();
        return;
      case State::kFinished:
        delete this;
        return;
    }
  }

 private:
  enum class State { kWaiting, kWriting, kFinished };

  explicit ListCall(Server& server) : server_(server), writer_(&ctx_) {}

  void write_next() {
    if (!status_.ok() || next_ == batches_.size()) {
      state_ = State::kFinished;
      writer_.Finish(status_, this);
      return;
    }
    const auto& batch = batches_[next_++];
    if (next_ == batches_.size()) {
      state_ = State::kFinished;
      writer_.WriteAndFinish(batch, grpc::WriteOptions(), status_, this);
      return;
    }
    writer_.Write(batch, this);
  }

  Server& server_;
  grpc::ServerContext ctx_;
  api::ListSnapshotsRequest req_;
  grpc::ServerAsyncWriter<api::ListSnapshotsResponse> writer_;
  State state_ = State::kWaiting;
  grpc::Status status_;
  std::vector<api::ListSnapshotsResponse> batches_;
  size_t next_ = 0;
};

template <typename Req, typename Resp>
void await(Server& server, const char* name, typename UnaryCall<Req, Resp>::Request request,
           typename UnaryCall<Req, Resp>::Handler handler) {
  UnaryCall<Req, Resp>::await(server, {name, request, handler});
}

using Async = api::Snapshots::AsyncService;
using Empty = google::protobuf::Empty;

// One outstanding request per method; each call that comes asks for the next.
void await_all(Server& s) {
  await<api::StatSnapshotRequest, api::StatSnapshotResponse>(s, "stat", &Async::RequestStat,
                                                             &Service::Stat);
  await<api::MountsRequest, api::MountsResponse>(s, "mounts", &Async::RequestMounts,
                                                 &Service::Mounts);
  ListCall::await(s);
  await<api::PrepareSnapshotRequest, api::PrepareSnapshotResponse>(
      s, "prepare", &Async::RequestPrepare, &Service::Prepare);
  await<api::ViewSnapshotRequest, api::ViewSnapshotResponse>(s, "view", &Async::RequestView,
                                                             &Service::View);
  await<api::CommitSnapshotRequest, Empty>(s, "commit", &Async::RequestCommit, &Service::Commit);
  await<api::RemoveSnapshotRequest, Empty>(s, "remove", &Async::RequestRemove, &Service::Remove);
  await<api::UpdateSnapshotRequest, api::UpdateSnapshotResponse>(s, "update", &Async::RequestUpdate,
                                                                 &Service::Update);
  await<api::UsageRequest, api::UsageResponse>(s, "usage", &Async::RequestUsage, &Service::Usage);
  await<api::CleanupRequest, Empty>(s, "cleanup", &Async::RequestCleanup, &Service::Cleanup);
}

}  // namespace

base::Result<std::unique_ptr<Server>> Server::start(Service& service, const std::string& address,
                                                    unsigned pollers) {
  std::unique_ptr<Server> s(new Server(service));
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &bound);
  builder.RegisterService(&s->async_);
  s->cq_ = builder.AddCompletionQueue();
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || bound == 0) {
    return base::errorf(EADDRNOTAVAIL, "cannot listen on {}", address);
  }
  await_all(*s);
  for (unsigned i = 0; i < (pollers == 0 ? 1 : pollers); ++i) {
    s->pollers_.emplace_back([p = s.get()] { p->poll(); });
  }
  return s;
}

Server::~Server() {
  shutdown(std::chrono::system_clock::now());
}

void Server::poll() {
  void* tag = nullptr;
  bool ok = false;
  while (cq_->Next(&tag, &ok)) {
    static_cast<Call*>(tag)->proceed(ok);
  }
}

void Server::shutdown(std::chrono::system_clock::time_point deadline) {
  if (stopped_) {
    return;
  }
  stopped_ = true;
  stopping_.store(true, std::memory_order_release);
  // The pollers keep running: calls in flight finish on them; the outstanding requests
  // come back not ok and are freed. A handler still running when the deadline passes
  // answers its cancelled call before its thread polls again.
  if (server_ != nullptr) {
    server_->Shutdown(deadline);
  }
  if (cq_ == nullptr) {
    return;
  }
  cq_->Shutdown();
  if (pollers_.empty()) {
    poll();
  }
  for (auto& t : pollers_) {
    t.join();
  }
}

}  // namespace snapshotter
