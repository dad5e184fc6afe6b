// SPDX-License-Identifier: Apache-2.0
#include "daemon/control.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "base/log.h"
#include "base/unix_socket.h"
#include "control/api.h"
#include "control/wire.h"

namespace cfnd {
namespace {

using control::Clock;

// A connection whose request line is still arriving (the reader thread's only).
struct Pending {
  base::UniqueFd fd;
  std::string line;
  Clock::time_point deadline;
};

// A complete request line waiting for a worker.
struct Ready {
  base::UniqueFd fd;
  std::string line;
};

// Best effort, never blocking: an error answer to a client that misbehaved (it fits the
// socket buffer; a client that does not read it loses it).
void answer_now(int fd, const base::Error& e) {
  std::string a = control::error_to_json(e);
  a.push_back('\n');
  (void)::send(fd, a.data(), a.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

class Server final : public ControlServer {
 public:
  Server(base::UniqueFd fd, base::UniqueFd wake, std::string path, Handler h)
      : fd_(std::move(fd)), wake_(std::move(wake)), path_(std::move(path)), handler_(std::move(h)) {
    reader_ = std::thread([this] { read_loop(); });
  }

  ~Server() override {
    ::unlink(path_.c_str());
    fd_.reset();
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    poke();
    reader_.join();
    for (auto& t : workers_) {
      t.join();
    }
  }

  int fd() const override { return fd_.get(); }

  // The event loop's thread: accept every waiting connection and hand it to the reader.
  void on_readable() override {
    bool any = false;
    for (;;) {
      int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
          spdlog::warn("control: accept: {}", std::strerror(errno));
        }
        break;
      }
      std::lock_guard lk(mu_);
      accepted_.emplace_back(c);
      any = true;
    }
    if (any) {
      poke();
    }
  }

 private:
  void poke() {
    std::uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }

  // One thread reads every request line (poll over at most kMaxPending connections,
  // each under its deadline), so a client that sends slowly or never holds no worker.
  void read_loop() {
    std::deque<Pending> pending;  // in accept order: the front is the oldest
    std::vector<pollfd> pfds;
    for (;;) {
      {
        std::lock_guard lk(mu_);
        if (stop_) {
          return;
        }
        auto now = Clock::now();
        for (auto& c : accepted_) {
          pending.push_back({std::move(c), {}, now + kRequestDeadline});
        }
        accepted_.clear();
      }
      // A flood faster than this thread reads: the oldest go before the poll set grows
      // without bound (the usual cap is applied after the read below).
      while (pending.size() > static_cast<std::size_t>(4 * kMaxPending)) {
        pending.pop_front();
        ++dropped_;
      }
      if (dropped_ != 0 && dropped_ != logged_dropped_ &&
          Clock::now() - last_drop_log_ > std::chrono::seconds(10)) {
        spdlog::warn("control: {} connections closed before their request (over {} at once)",
                     dropped_ - logged_dropped_, kMaxPending);
        logged_dropped_ = dropped_;
        last_drop_log_ = Clock::now();
      }

      pfds.clear();
      pfds.push_back({wake_.get(), POLLIN, 0});
      auto now = Clock::now();
      auto next = now + std::chrono::seconds(60);
      for (auto& p : pending) {
        pfds.push_back({p.fd.get(), POLLIN, 0});
        next = std::min(next, p.deadline);
      }
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
      int n = ::poll(pfds.data(), pfds.size(), static_cast<int>(std::max<long long>(ms, 0) + 1));
      if (n < 0 && errno != EINTR) {
        spdlog::error("control: poll: {}", std::strerror(errno));
        return;
      }
      if (pfds[0].revents != 0) {
        std::uint64_t v;
        (void)!::read(wake_.get(), &v, sizeof v);
      }
      now = Clock::now();
      std::deque<Pending> keep;
      for (std::size_t i = 0; i < pending.size(); ++i) {
        auto& p = pending[i];
        if (pfds[i + 1].revents != 0 && !read_some(p)) {
          continue;  // done with it: answered, handed on or closed
        }
        if (now >= p.deadline) {
          answer_now(p.fd.get(), {ETIMEDOUT, "bad request: no complete line before the deadline"});
          continue;
        }
        keep.push_back(std::move(p));
      }
      pending.swap(keep);
      // Too many waiting for their line: the oldest (the slowest to send it) is closed.
      // This runs after the read, so a line already sent is served, not dropped.
      while (pending.size() > static_cast<std::size_t>(kMaxPending)) {
        pending.pop_front();
        ++dropped_;
      }
    }
  }

  // Read what the client sent; false when this connection leaves the pending set.
  bool read_some(Pending& p) {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(p.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        if (errno == EAGAIN) {
          return true;
        }
        return false;  // reset: nobody to answer
      }
      if (n == 0) {
        if (p.line.empty()) {
          return false;  // closed before a byte
        }
        dispatch(std::move(p));  // a last line without '\n' is accepted
        return false;
      }
      const char* nl = static_cast<const char*>(std::memchr(buf, '\n', static_cast<size_t>(n)));
      p.line.append(buf, nl != nullptr ? static_cast<size_t>(nl - buf) : static_cast<size_t>(n));
      if (p.line.size() > control::kMaxRequest) {
        answer_now(p.fd.get(), {EMSGSIZE, "request too large"});
        return false;
      }
      if (nl != nullptr) {
        dispatch(std::move(p));
        return false;
      }
    }
  }

  // Queue a complete line for a worker; a worker is started when none is idle (at most
  // kMaxClients run handlers at once: a bind may take long, the others queue).
  void dispatch(Pending&& p) {
    std::lock_guard lk(mu_);
    ready_.push_back({std::move(p.fd), std::move(p.line)});
    if (idle_ == 0 && workers_.size() < static_cast<std::size_t>(kMaxClients)) {
      workers_.emplace_back([this] { work_loop(); });
    } else {
      cv_.notify_one();
    }
  }

  // The handler's answer. A handler must not throw (bad input is an error answer); if
  // one does all the same (a library throwing on input we failed to check), the client
  // gets an EIO answer and the daemon goes on, instead of std::terminate taking every
  // mount's reads down with it.
  std::string answer_of(const std::string& line) {
    try {
      return handler_(line);
    } catch (const std::exception& e) {
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::error("control: a request handler threw ({}): answered EIO", e.what());
      }
      return control::error_to_json(
          {EIO, fmt::format("internal error handling the request: {}", e.what())});
    }
  }

  void work_loop() {
    std::unique_lock lk(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lk, [this] { return stop_ || !ready_.empty(); });
      --idle_;
      if (ready_.empty()) {
        return;  // stopping, nothing left
      }
      Ready r = std::move(ready_.front());
      ready_.pop_front();
      lk.unlock();
      std::string answer = answer_of(r.line);
      answer.push_back('\n');
      // The answer may take long to compute (a bind); the send has its own deadline, so
      // a client that never reads holds this worker for at most that long.
      (void)control::send_all(r.fd.get(), answer, Clock::now() + kRequestDeadline);
      r.fd.reset();
      lk.lock();
    }
  }

  base::UniqueFd fd_;
  base::UniqueFd wake_;  // eventfd: accepted connections or stop for the reader
  std::string path_;
  Handler handler_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<base::UniqueFd> accepted_;  // from on_readable to the reader
  std::deque<Ready> ready_;               // from the reader to the workers
  std::vector<std::thread> workers_;      // at most kMaxClients, joined at the end
  int idle_ = 0;

  std::thread reader_;
  // The reader thread's only.
  std::uint64_t dropped_ = 0;
  std::uint64_t logged_dropped_ = 0;
  Clock::time_point last_drop_log_{};
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
  auto probe = control::call(path, R"({"op":"ping"})",
                             std::chrono::milliseconds(1000));
  if (probe) {
    return base::errorf(EADDRINUSE, "a daemon already listens on {}", path);
  }
  int w = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w < 0) {
    return base::errno_error("eventfd");
  }
  base::UniqueFd wake(w);
  ::unlink(path.c_str());
  CFN_ASSIGN_OR_RETURN(auto fd, base::listen_private(path, SOCK_STREAM, 256));
  return std::make_unique<Server>(std::move(fd), std::move(wake), path, std::move(handler));
}

}  // namespace cfnd
