// SPDX-License-Identifier: Apache-2.0
#include "daemon/control.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <list>
#include <thread>

#include "base/log.h"
#include "base/unix_socket.h"
#include "control/api.h"
#include "control/wire.h"

namespace cfnd {
namespace {

using control::Clock;

class Server final : public ControlServer {
 public:
  Server(base::UniqueFd fd, std::string path, Handler h)
      : fd_(std::move(fd)), path_(std::move(path)), handler_(std::move(h)) {}

  ~Server() override {
    ::unlink(path_.c_str());
    fd_.reset();
    for (auto& w : workers_) {
      w.thread.join();
    }
  }

  int fd() const override { return fd_.get(); }

  void on_readable() override {
    reap();
    for (;;) {
      int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c < 0) {
        if (errno != EAGAIN && errno != EINTR) {
          spdlog::warn("control: accept: {}", std::strerror(errno));
        }
        return;
      }
      base::UniqueFd client(c);
      if (workers_.size() >= static_cast<std::size_t>(kMaxClients)) {
        reap();
        if (workers_.size() >= static_cast<std::size_t>(kMaxClients)) {
          continue;  // too many at once: drop this one
        }
      }
      // Each request on its own thread: a bind mounts and fetches blob meta, which must
      // never run on the event loop (its fanotify events would wait for it).
      auto& w = workers_.emplace_back();
      w.thread = std::thread([this, client = std::move(client), done = &w.done]() mutable {
        serve(client.get());
        client.reset();
        done->store(true, std::memory_order_release);
      });
    }
  }

 private:
  struct Worker {
    std::thread thread;
    std::atomic<bool> done{false};
  };

  // Join the client threads that finished (each set `done` as its last step).
  void reap() {
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->done.load(std::memory_order_acquire)) {
        it->thread.join();
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void serve(int c) {
    auto deadline = Clock::now() + kRequestDeadline;
    auto line = control::read_line(c, control::kMaxRequest, deadline);
    std::string answer;
    if (!line) {
      if (line.error().code == ECONNRESET) {
        return;
      }
      answer = control::error_to_json(
          {line.error().code, line.error().code == EMSGSIZE ? "request too large" : "bad request"});
    } else {
      answer = handler_(*line);
    }
    answer.push_back('\n');
    // The answer may take long to compute (a bind); give the send its own deadline.
    (void)control::send_all(c, answer, Clock::now() + kRequestDeadline);
  }

  base::UniqueFd fd_;
  std::string path_;
  Handler handler_;
  std::list<Worker> workers_;  // the loop thread's only (on_readable, destructor)
};

}  // namespace

base::Result<std::unique_ptr<ControlServer>> ControlServer::listen(const std::string& path,
                                                                   Handler handler) {
  CFN_TRY(base::unix_address(path));  // a bad path fails before any probe or unlink
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    if (std::filesystem::create_directories(parent, ec)) {
      ::chmod(parent.c_str(), 0700);
    }
  }
  // A socket file nobody answers on is stale (a crashed daemon): replace it.
  auto probe = control::call(path, control::to_json(control::PingRequest{}),
                             std::chrono::milliseconds(1000));
  if (probe) {
    return base::errorf(EADDRINUSE, "a daemon already listens on {}", path);
  }
  ::unlink(path.c_str());
  CFN_ASSIGN_OR_RETURN(auto fd, base::listen_private(path, SOCK_STREAM, 64));
  return std::make_unique<Server>(std::move(fd), path, std::move(handler));
}

}  // namespace cfnd
