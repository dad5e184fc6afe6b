// SPDX-License-Identifier: Apache-2.0
#include "daemon/control.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>

#include "base/log.h"
#include "base/unix_socket.h"

namespace cfnd {
namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(left.count());
}

// Wait until fd is ready for `events` or the deadline passes (ETIMEDOUT).
base::Status wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, ms_left(deadline));
    if (n > 0) {
      return {};
    }
    if (n == 0) {
      return base::make_error(ETIMEDOUT, "control socket: deadline passed");
    }
    if (errno != EINTR) {
      return base::errno_error("poll");
    }
  }
}

// Read up to a '\n' (not included) of at most `max` bytes. EMSGSIZE when longer.
base::Result<std::string> read_line(int fd, std::size_t max, Clock::time_point deadline) {
  std::string line;
  char buf[4096];
  for (;;) {
    CFN_TRY(wait_fd(fd, POLLIN, deadline));
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      return base::errno_error("recv");
    }
    if (n == 0) {
      if (line.empty()) {
        return base::make_error(ECONNRESET, "control socket: peer closed");
      }
      return line;  // a last line without '\n' is accepted
    }
    const char* nl = static_cast<const char*>(std::memchr(buf, '\n', static_cast<size_t>(n)));
    line.append(buf, nl != nullptr ? static_cast<size_t>(nl - buf) : static_cast<size_t>(n));
    if (line.size() > max) {
      return base::errorf(EMSGSIZE, "control message longer than {} bytes", max);
    }
    if (nl != nullptr) {
      return line;
    }
  }
}

base::Status send_all(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    CFN_TRY(wait_fd(fd, POLLOUT, deadline));
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      return base::errno_error("send");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

class Server final : public ControlServer {
 public:
  Server(base::UniqueFd fd, std::string path, Handler h)
      : fd_(std::move(fd)), path_(std::move(path)), handler_(std::move(h)) {}

  ~Server() override {
    ::unlink(path_.c_str());
    fd_.reset();
    // Client threads hold `this` through state_: wait for them.
    while (state_->active.load() != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  int fd() const override { return fd_.get(); }

  void on_readable() override {
    for (;;) {
      int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c < 0) {
        if (errno != EAGAIN && errno != EINTR) {
          spdlog::warn("control: accept: {}", std::strerror(errno));
        }
        return;
      }
      base::UniqueFd client(c);
      if (state_->active.load() >= kMaxClients) {
        continue;  // too many at once: drop this one
      }
      state_->active.fetch_add(1);
      // Each request on its own thread: a bind mounts and fetches blob meta, which must
      // never run on the event loop (its fanotify events would wait for it).
      std::thread([this, client = std::move(client), st = state_]() mutable {
        serve(client.get());
        st->active.fetch_sub(1);
      }).detach();
    }
  }

 private:
  struct State {
    std::atomic<int> active{0};
  };

  void serve(int c) {
    auto deadline = Clock::now() + kRequestDeadline;
    auto line = read_line(c, kMaxRequest, deadline);
    std::string answer;
    if (!line) {
      if (line.error().code == ECONNRESET) {
        return;
      }
      answer = fmt::format(R"({{"ok":false,"errno":{},"error":"{}"}})", line.error().code,
                           line.error().code == EMSGSIZE ? "request too large" : "bad request");
    } else {
      answer = handler_(*line);
    }
    answer.push_back('\n');
    // The answer may take long to compute (a bind); give the send its own deadline.
    (void)send_all(c, answer, Clock::now() + kRequestDeadline);
  }

  base::UniqueFd fd_;
  std::string path_;
  Handler handler_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
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
  auto probe = control_call(path, R"({"op":"ping"})", std::chrono::milliseconds(1000));
  if (probe) {
    return base::errorf(EADDRINUSE, "a daemon already listens on {}", path);
  }
  ::unlink(path.c_str());
  CFN_ASSIGN_OR_RETURN(auto fd, base::listen_private(path, SOCK_STREAM, 64));
  return std::make_unique<Server>(std::move(fd), path, std::move(handler));
}

base::Result<std::string> control_call(const std::string& path, const std::string& request,
                                       std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  CFN_ASSIGN_OR_RETURN(auto fd, base::connect_unix(path, SOCK_STREAM));
  CFN_TRY(send_all(fd.get(), request + "\n", deadline));
  return read_line(fd.get(), kMaxResponse, deadline);
}

}  // namespace cfnd
