// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/server.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "base/log.h"
#include "base/unique_fd.h"
#include "base/unix_socket.h"
#include "base/worker_pool.h"
#include "snapshotter/grpc_h2.h"

namespace snapshotter {
namespace {

// The nice value of the threads that run Remove and Cleanup (rm_pool): they yield the CPUs
// to the other calls, as the directory removal itself does (at 19: store.cc).
constexpr int kRemovalNice = 10;

constexpr std::string_view kService = "/containerd.services.snapshots.v1.Snapshots/";
// How long a drained server waits for its clients to close their connections (linger).
constexpr std::chrono::milliseconds kLinger{1000};
constexpr size_t kMaxConnections = 1024;
constexpr uint64_t kListenTag = 0;
constexpr uint64_t kWakeTag = 1;

// A handler's status; an exception it throws becomes UNKNOWN with the exception's text.
template <typename F>
RpcStatus guarded(std::string_view rpc, F&& handle) {
  try {
    return handle();
  } catch (const std::exception& e) {
    static base::RateLimit rl;
    if (rl.allow()) {
      spdlog::error("{}: {}", rpc, e.what());
    }
    return RpcStatus(RpcCode::UNKNOWN, std::string(rpc) + ": " + e.what());
  }
}

// One method: its name after kService, whether it runs on the loop, and the call from
// request bytes to reply.
struct Method {
  std::string_view name;
  bool on_loop = false;
  std::function<GrpcReply(std::string_view request)> run;
  // Run on the removal workers (Remove, Cleanup), not the others.
  bool removal = false;
};

template <typename Req>
std::optional<GrpcReply> parse(std::string_view bytes, Req* req) {
  if (!req->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return GrpcReply{RpcStatus(RpcCode::INTERNAL, "cannot parse the request message"), {}};
  }
  return std::nullopt;
}

template <typename Req, typename Resp>
Method unary(Service& service, std::string_view name, bool on_loop,
             RpcStatus (Service::*handler)(const Req&, Resp*)) {
  return {name, on_loop,
          [&service, name, handler](std::string_view bytes) {
            Req req;
            if (auto bad = parse(bytes, &req)) {
              return std::move(*bad);
            }
            Resp resp;
            GrpcReply r;
            r.status = guarded(name, [&] { return (service.*handler)(req, &resp); });
            if (r.status.ok()) {
              r.messages.push_back(resp.SerializeAsString());
            }
            return r;
          },
          false};
}

Method list(Service& service) {
  return {"List", false,
          [&service](std::string_view bytes) {
            api::ListSnapshotsRequest req;
            if (auto bad = parse(bytes, &req)) {
              return std::move(*bad);
            }
            std::vector<api::ListSnapshotsResponse> batches;
            GrpcReply r;
            r.status = guarded("list", [&] { return service.List(req, &batches); });
            if (r.status.ok()) {
              for (const auto& b : batches) {
                r.messages.push_back(b.SerializeAsString());
              }
            }
            return r;
          },
          false};
}

using Empty = google::protobuf::Empty;

// Stat and Mounts read one row and its parent chain from the store's read connection (WAL:
// no writer's fsync to wait for) and take tens of microseconds: on the loop. List is not
// bounded: by label over 10,000 snapshots it takes under a millisecond, unfiltered (what
// containerd's garbage collection sends) 69 ms, which would hold every other call. It and
// the rest (write, fsync, mount, bind, walk directories) run on the workers.
std::vector<Method> methods_of(Service& s) {
  std::vector<Method> m;
  m.push_back(
      unary<api::StatSnapshotRequest, api::StatSnapshotResponse>(s, "Stat", true, &Service::Stat));
  m.push_back(unary<api::MountsRequest, api::MountsResponse>(s, "Mounts", true, &Service::Mounts));
  m.push_back(unary<api::PrepareSnapshotRequest, api::PrepareSnapshotResponse>(s, "Prepare", false,
                                                                               &Service::Prepare));
  m.push_back(
      unary<api::ViewSnapshotRequest, api::ViewSnapshotResponse>(s, "View", false, &Service::View));
  m.push_back(unary<api::CommitSnapshotRequest, Empty>(s, "Commit", false, &Service::Commit));
  m.push_back(unary<api::RemoveSnapshotRequest, Empty>(s, "Remove", false, &Service::Remove));
  m.back().removal = true;
  m.push_back(unary<api::UpdateSnapshotRequest, api::UpdateSnapshotResponse>(s, "Update", false,
                                                                             &Service::Update));
  m.push_back(list(s));
  m.push_back(unary<api::UsageRequest, api::UsageResponse>(s, "Usage", false, &Service::Usage));
  m.push_back(unary<api::CleanupRequest, Empty>(s, "Cleanup", false, &Service::Cleanup));
  m.back().removal = true;
  return m;
}

// One client connection. The loop and the workers both write to it (a worker sends the
// reply of the call it ran), so mu guards everything below it but `timer`, which only the
// loop touches. Held by the loop's map and by each job of the connection in flight: a
// worker whose client went away finds it dead and drops the reply.
struct Conn {
  std::mutex mu;
  base::UniqueFd fd;
  std::unique_ptr<H2Connection> h2;
  uint32_t events = 0;  // what epoll watches for
  bool dead = false;
  // Loop thread only: its h2's earliest deadline as keyed in Loop::timers (nullopt: not
  // there). A worker's reply drops a stream's deadline without touching it, so it may be
  // earlier than h2's: the loop then wakes once for nothing (expire finds no stream due)
  // and rearms. It is never later, since only the loop adds streams.
  std::optional<Clock::time_point> timer;
};

struct Job {
  std::shared_ptr<Conn> conn;  // shared with the loop's map: see Conn
  uint64_t conn_id = 0;
  int32_t stream = 0;
  const Method* method = nullptr;
  std::string request;
  std::optional<Clock::time_point> deadline;
};

}  // namespace

struct Server::Loop {
  std::vector<Method> methods;
  base::UniqueFd listen;
  base::UniqueFd epoll;
  base::UniqueFd wake;  // eventfd: shutdown, and a worker's last reply while draining
  std::unordered_map<uint64_t, std::shared_ptr<Conn>> conns;
  // (earliest deadline, connection id) of each connection with a stream waiting on a
  // deadline: the loop's timeout is the front, never a scan of every stream. pump() keeps a
  // connection's entry right (every change to its streams is followed by a pump).
  std::set<std::pair<Clock::time_point, uint64_t>> timers;
  // A connection was closed (by the loop or a worker): the loop erases the dead ones.
  std::atomic<bool> reap{false};
  uint64_t next_id = 2;             // 0 and 1 are kListenTag and kWakeTag
  std::atomic<size_t> jobs_out{0};  // jobs pushed whose reply has not been sent
  base::WorkerPool<Job> pool;
  // Remove and Cleanup: a Remove waits for its batch's commit (store.h), a Cleanup for the
  // background removals, and many at once (containerd's GC, `ctr image rm` of many
  // images) took every worker while a Prepare waited in the queue for one (bench/snapgc:
  // that wait was most of what removal added to Prepare + Commit). Its threads run at
  // kRemovalNice: 4 clients removing as fast as they are answered kept these workers on
  // both CPUs, and a Prepare's worker woken after its fdatasync waited for one of them
  // (bench/snapgc: about 1 ms per Prepare + Commit runnable after wake-up, against 0.04).
  base::WorkerPool<Job> rm_pool;
  std::atomic<bool> stop{false};
  std::atomic<std::chrono::system_clock::rep> stop_deadline{0};
  char buf[64 << 10];

  const Method* find(std::string_view path) const {
    if (path.substr(0, kService.size()) != kService) {
      return nullptr;
    }
    path.remove_prefix(kService.size());
    for (const auto& m : methods) {
      if (m.name == path) {
        return &m;
      }
    }
    return nullptr;
  }

  void notify() {
    uint64_t one = 1;
    while (::write(wake.get(), &one, sizeof one) < 0 && errno == EINTR) {
    }
  }

  // On a worker: runs the call and sends its reply on the connection itself. Handing the
  // reply back to the loop cost a second thread wake-up on the call's critical path, which
  // waits for a time slice when the cores are busy (docs/benchmarks.md, bench/snapshotter).
  // The loop keeps its epoll watch and timer right: send_and_watch sets EPOLLOUT when the
  // socket is full, and a stale timer only wakes the loop once (Conn::timer).
  void work(Job& j) {
    GrpcReply reply;
    if (j.deadline && *j.deadline <= Clock::now()) {
      reply.status = RpcStatus(RpcCode::DEADLINE_EXCEEDED, "deadline exceeded before the call ran");
    } else {
      reply = j.method->run(j.request);
    }
    {
      std::lock_guard lk(j.conn->mu);
      Conn& c = *j.conn;
      if (!c.dead) {  // else the client went away while the call ran
        c.h2->complete(j.stream, std::move(reply));
        send_and_watch(j.conn_id, c);
      }
    }
    j.conn.reset();
    // Draining: the loop counts the jobs out and must look again after the last one.
    if (jobs_out.fetch_sub(1, std::memory_order_acq_rel) == 1 &&
        stop.load(std::memory_order_acquire)) {
      notify();
    }
  }

  // Runs inside c.h2->recv(), with c.mu held by the loop.
  std::optional<GrpcReply> dispatch(uint64_t id, H2Connection::Call&& call) {
    const Method* m = find(call.path);
    if (m == nullptr) {
      return GrpcReply{RpcStatus(RpcCode::UNIMPLEMENTED, "unknown method " + call.path), {}};
    }
    if (m->on_loop) {
      return m->run(call.request);
    }
    auto it = conns.find(id);
    if (it == conns.end()) {  // not expected: recv runs on a connection in the map
      return GrpcReply{RpcStatus(RpcCode::INTERNAL, "connection not found"), {}};
    }
    jobs_out.fetch_add(1, std::memory_order_acq_rel);
    (m->removal ? rm_pool : pool)
        .push(Job{it->second, id, call.stream_id, m, std::move(call.request), call.deadline});
    return std::nullopt;
  }

  // With c.mu held, on the loop or a worker.
  void close(Conn& c) {
    if (!c.dead) {
      c.dead = true;
      reap.store(true, std::memory_order_release);
      ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
      c.fd.reset();
    }
  }

  // The connection's entry in timers, after its streams changed. Loop thread, c.mu held.
  void rearm(uint64_t id, Conn& c) {
    const auto want = c.dead ? std::nullopt : c.h2->next_deadline();
    if (want == c.timer) {
      return;
    }
    if (c.timer) {
      timers.erase({*c.timer, id});
    }
    if (want) {
      timers.emplace(*want, id);
    }
    c.timer = want;
  }

  // Writes what the connection has to send, then watches for what it needs next, and
  // rearms its timer. Loop thread, c.mu held.
  void pump(uint64_t id, Conn& c) {
    send_and_watch(id, c);
    rearm(id, c);
  }

  // c.mu held (loop or worker).
  void send_and_watch(uint64_t id, Conn& c) {
    if (c.dead) {
      return;
    }
    for (;;) {
      c.h2->produce();
      auto o = c.h2->out();
      if (o.empty()) {
        break;
      }
      ssize_t n = ::send(c.fd.get(), o.data(), o.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        if (errno == EAGAIN) {
          break;
        }
        close(c);
        return;
      }
      c.h2->consume(static_cast<size_t>(n));
      if (static_cast<size_t>(n) < o.size()) {
        break;
      }
    }
    if (c.h2->done()) {
      close(c);
      return;
    }
    uint32_t want = (c.h2->wants_read() ? uint32_t{EPOLLIN} : 0u) |
                    (c.h2->out().empty() ? 0u : uint32_t{EPOLLOUT});
    if (want != c.events) {
      epoll_event ev{};
      ev.events = want;
      ev.data.u64 = id;
      if (::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) != 0) {
        close(c);
        return;
      }
      c.events = want;
    }
  }

  // c.mu held.
  void read_from(uint64_t id, Conn& c) {
    // A few reads at most, so one busy peer does not starve the others.
    for (int i = 0; i < 4 && !c.dead && c.h2->wants_read(); ++i) {
      ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0) {
        close(c);
        return;
      }
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        if (errno != EAGAIN) {
          close(c);
        }
        break;
      }
      if (!c.h2->recv(std::string_view(buf, static_cast<size_t>(n)))) {
        close(c);
        return;
      }
      pump(id, c);
    }
    pump(id, c);
  }

  void accept_all() {
    for (;;) {
      int fd = ::accept4(listen.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) {
          continue;
        }
        if (errno != EAGAIN) {
          static base::RateLimit rl;
          if (rl.allow()) {
            spdlog::warn("accept: {}", std::strerror(errno));
          }
        }
        return;
      }
      base::UniqueFd cfd(fd);
      if (conns.size() >= kMaxConnections) {
        static base::RateLimit rl;
        if (rl.allow()) {
          spdlog::warn("{} connections open: refusing another", conns.size());
        }
        continue;
      }
      uint64_t id = next_id++;
      auto h2 = H2Connection::create(
          [this, id](H2Connection::Call&& call) { return dispatch(id, std::move(call)); });
      if (!h2) {
        spdlog::warn("connection: {}", h2.error().to_string());
        continue;
      }
      auto c = std::make_shared<Conn>();
      c->fd = std::move(cfd);
      c->h2 = std::move(*h2);
      c->events = EPOLLIN;
      epoll_event ev{};
      ev.events = c->events;
      ev.data.u64 = id;
      if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, c->fd.get(), &ev) != 0) {
        continue;
      }
      auto& ref = *c;
      conns.emplace(id, std::move(c));
      std::lock_guard lk(ref.mu);
      pump(id, ref);  // our SETTINGS
    }
  }

  void drain_wake() {
    uint64_t n = 0;
    while (::read(wake.get(), &n, sizeof n) < 0 && errno == EINTR) {
    }
  }

  void run() {
    bool draining = false;
    std::vector<epoll_event> evs(64);
    for (;;) {
      auto now = Clock::now();
      if (stop.load(std::memory_order_acquire) && !draining) {
        draining = true;
        ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, listen.get(), nullptr);
        listen.reset();
        for (auto& [id, c] : conns) {
          std::lock_guard lk(c->mu);
          c->h2->goaway();
          pump(id, *c);
        }
      }
      std::optional<Clock::time_point> next;
      if (!timers.empty()) {
        next = timers.begin()->first;
      }
      int timeout = -1;
      if (draining) {
        bool busy = jobs_out.load(std::memory_order_acquire) > 0;
        for (auto& [id, c] : conns) {
          std::lock_guard lk(c->mu);
          busy = busy || (!c->dead && (c->h2->open_streams() > 0 || !c->h2->out().empty()));
        }
        auto left = std::chrono::system_clock::duration(stop_deadline.load()) -
                    std::chrono::system_clock::now().time_since_epoch();
        if (!busy || left <= left.zero()) {
          break;
        }
        timeout = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
      }
      if (next) {
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - now).count();
        ms = std::max<int64_t>(ms, 0);
        timeout = timeout < 0 ? static_cast<int>(std::min<int64_t>(ms, 1 << 30))
                              : std::min(timeout, static_cast<int>(ms));
      }
      int n = ::epoll_wait(epoll.get(), evs.data(), static_cast<int>(evs.size()), timeout);
      if (n < 0 && errno != EINTR) {
        spdlog::error("epoll_wait: {}", std::strerror(errno));
        break;
      }
      for (int i = 0; i < n; ++i) {
        uint64_t tag = evs[i].data.u64;
        if (tag == kListenTag) {
          if (listen) {
            accept_all();
          }
          continue;
        }
        if (tag == kWakeTag) {
          drain_wake();
          continue;
        }
        auto it = conns.find(tag);
        if (it == conns.end()) {
          continue;
        }
        Conn& c = *it->second;
        std::lock_guard lk(c.mu);
        if (c.dead) {
          continue;
        }
        if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 && c.h2->wants_read()) {
          read_from(tag, c);
        } else {
          pump(tag, c);  // writable, or hung up with reading off: send fails and closes
        }
      }
      now = Clock::now();
      while (!timers.empty() && timers.begin()->first <= now) {
        const uint64_t id = timers.begin()->second;
        timers.erase(timers.begin());
        auto it = conns.find(id);
        if (it == conns.end()) {
          continue;
        }
        Conn& c = *it->second;
        c.timer.reset();
        std::lock_guard lk(c.mu);
        if (!c.dead) {
          c.h2->expire(now);  // every stream due: its next deadline is after now
          pump(id, c);
        }
      }
      if (reap.exchange(false, std::memory_order_acq_rel)) {  // not a walk every turn
        std::erase_if(conns, [this](const auto& kv) {
          bool dead = false;
          {
            std::lock_guard lk(kv.second->mu);
            dead = kv.second->dead;
          }
          if (dead && kv.second->timer) {
            timers.erase({*kv.second->timer, kv.first});
          }
          return dead;
        });
      }
    }
    linger();
    for (auto& [id, c] : conns) {
      std::lock_guard lk(c->mu);
      close(*c);
    }
    conns.clear();
  }

  // After a drain in time (every reply sent), before the connections close: our side is
  // shut down for writing (the client reads every reply, then EOF) and what the client still
  // sends is read and dropped until it closes, for at most kLinger and never past the
  // stop deadline. Closing at once failed calls that had been answered: a client still
  // writing (a SETTINGS or PING acknowledgement, a call sent before our GOAWAY reached it)
  // got EPIPE, and gRPC then failed every call of that connection, replies it had not read
  // yet included (ServiceTest.ShutdownDrainsCallsInFlight, 1 run in 25 under TSan).
  void linger() {
    const auto deadline = std::chrono::system_clock::time_point(
        std::chrono::system_clock::duration(stop_deadline.load()));
    const auto until = std::min(deadline, std::chrono::system_clock::now() + kLinger);
    size_t open = 0;
    for (auto& [id, c] : conns) {
      std::lock_guard lk(c->mu);
      if (c->dead) {
        continue;
      }
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = id;
      if (::shutdown(c->fd.get(), SHUT_WR) != 0 ||
          ::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, c->fd.get(), &ev) != 0) {
        close(*c);
        continue;
      }
      c->events = EPOLLIN;
      ++open;
    }
    std::vector<epoll_event> evs(64);
    while (open > 0) {
      const auto left = until - std::chrono::system_clock::now();
      if (left <= left.zero()) {
        return;
      }
      const int timeout =
          static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
      const int n = ::epoll_wait(epoll.get(), evs.data(), static_cast<int>(evs.size()), timeout);
      if (n < 0 && errno != EINTR) {
        return;
      }
      for (int i = 0; i < n; ++i) {
        if (evs[i].data.u64 == kWakeTag) {
          drain_wake();
          continue;
        }
        auto it = conns.find(evs[i].data.u64);
        if (it == conns.end()) {
          continue;
        }
        Conn& c = *it->second;
        std::lock_guard lk(c.mu);
        for (int r = 0; r < 16 && !c.dead; ++r) {
          const ssize_t got = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
          if (got > 0 || (got < 0 && errno == EINTR)) {
            continue;  // dropped
          }
          if (got < 0 && errno == EAGAIN) {
            break;
          }
          close(c);  // EOF or an error: the client is done
          --open;
        }
      }
    }
  }
};

base::Result<std::unique_ptr<Server>> Server::start(Service& service, const std::string& address,
                                                    unsigned workers) {
  std::string path = address;
  for (std::string_view prefix : {"unix://", "unix:"}) {
    if (path.starts_with(prefix)) {
      path.erase(0, prefix.size());
      break;
    }
  }
  std::unique_ptr<Server> s(new Server());
  s->loop_ = std::make_unique<Loop>();
  Loop& l = *s->loop_;
  l.methods = methods_of(service);
  CFN_ASSIGN_OR_RETURN(l.listen, base::listen_private(path, SOCK_STREAM, 128));
  l.epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
  l.wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!l.epoll || !l.wake) {
    return base::errorf(errno, "epoll/eventfd: {}", std::strerror(errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenTag;
  if (::epoll_ctl(l.epoll.get(), EPOLL_CTL_ADD, l.listen.get(), &ev) != 0) {
    return base::errorf(errno, "epoll_ctl: {}", std::strerror(errno));
  }
  ev.data.u64 = kWakeTag;
  if (::epoll_ctl(l.epoll.get(), EPOLL_CTL_ADD, l.wake.get(), &ev) != 0) {
    return base::errorf(errno, "epoll_ctl: {}", std::strerror(errno));
  }
  l.pool.start(workers, [&l] { return [&l](Job& j) { l.work(j); }; });
  l.rm_pool.start(workers, [&l] {
    // Per thread on Linux. Raising one's nice value needs no privilege; should it fail,
    // removals only compete with the other calls as before.
    if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kRemovalNice) != 0) {
      spdlog::debug("setpriority for a removal worker: {}", std::strerror(errno));
    }
    return [&l](Job& j) { l.work(j); };
  });
  s->thread_ = std::thread([&l] { l.run(); });
  return s;
}

Server::~Server() {
  shutdown(std::chrono::system_clock::now());
}

void Server::shutdown(std::chrono::system_clock::time_point deadline) {
  if (stopped_ || !thread_.joinable()) {
    return;
  }
  stopped_ = true;
  loop_->stop_deadline.store(deadline.time_since_epoch().count());
  loop_->stop.store(true, std::memory_order_release);
  loop_->notify();
  thread_.join();
  // The loop has stopped: a handler still running finishes, and its reply is dropped.
  loop_->pool.stop();
  loop_->rm_pool.stop();
}

}  // namespace snapshotter
