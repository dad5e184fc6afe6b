// SPDX-License-Identifier: Apache-2.0
#include "daemon/event_loop.h"

#include <poll.h>
#include <sys/eventfd.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <vector>

#include "base/io_uring.h"
#include "base/log.h"
#include "base/unique_fd.h"

namespace cfnd {
namespace {

class PollLoop final : public EventLoop {
 public:
  explicit PollLoop(base::UniqueFd wake) : wake_(std::move(wake)) {}

  base::Status add(int fd, Handler handler) override {
    if (fd < 0) {
      return base::make_error(EBADF, "event loop: negative fd");
    }
    for (const auto& e : entries_) {
      if (e.fd == fd) {
        return base::errorf(EEXIST, "event loop: fd {} already added", fd);
      }
    }
    entries_.push_back({fd, std::make_shared<Handler>(std::move(handler))});
    return {};
  }

  void remove(int fd) override {
    std::erase_if(entries_, [fd](const Entry& e) { return e.fd == fd; });
  }

  base::Status run() override {
    std::vector<pollfd> pfds;
    while (!stopped_.load(std::memory_order_acquire)) {
      pfds.clear();
      pfds.push_back({wake_.get(), POLLIN, 0});
      // Copy the handler list: a handler may add or remove entries.
      auto round = entries_;
      for (const auto& e : round) {
        pfds.push_back({e.fd, POLLIN, 0});
      }
      int n = ::poll(pfds.data(), pfds.size(), -1);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        return base::errno_error("event loop: poll");
      }
      for (std::size_t i = 1; i < pfds.size(); ++i) {
        if ((pfds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
          (*round[i - 1].handler)();
        }
      }
    }
    return {};
  }

  void stop() override {
    stopped_.store(true, std::memory_order_release);
    std::uint64_t one = 1;
    // Async-signal-safe; a full counter (never here) would still wake the poll.
    [[maybe_unused]] auto r = ::write(wake_.get(), &one, sizeof one);
  }

 private:
  struct Entry {
    int fd;
    std::shared_ptr<Handler> handler;
  };
  base::UniqueFd wake_;
  std::vector<Entry> entries_;
  std::atomic<bool> stopped_{false};
};

// io_uring: one one-shot POLL_ADD per fd, re-armed after its handler ran. Each
// registration is a heap object whose address is the request's user_data; a removed one
// is freed only when its own completion (usually -ECANCELED) has been reaped.
class UringLoop final : public EventLoop {
 public:
  UringLoop(base::IoUring ring, base::UniqueFd wake)
      : ring_(std::move(ring)), wake_(std::move(wake)) {}

  base::Status init() {
    wake_entry_ = std::make_unique<Entry>(Entry{wake_.get(), nullptr, false, false});
    return arm(*wake_entry_);
  }

  base::Status add(int fd, Handler handler) override {
    if (fd < 0) {
      return base::make_error(EBADF, "event loop: negative fd");
    }
    if (entries_.contains(fd)) {
      return base::errorf(EEXIST, "event loop: fd {} already added", fd);
    }
    auto e = std::make_unique<Entry>(
        Entry{fd, std::make_shared<Handler>(std::move(handler)), false, false});
    CFN_TRY(arm(*e));
    entries_.emplace(fd, std::move(e));
    return {};
  }

  void remove(int fd) override {
    auto it = entries_.find(fd);
    if (it == entries_.end()) {
      return;
    }
    auto e = std::move(it->second);
    entries_.erase(it);
    e->removed = true;
    if (e->armed) {
      // Still owned by the kernel: cancel, and free after the poll's own completion.
      if (ring_.poll_remove(e.get(), nullptr)) {
        (void)ring_.submit();
      }
    }
    // Freed by run(), never here: a handler may remove its own entry (or another one
    // of the same batch of completions), which run() looks at after the handler
    // returns (TSan: heap-use-after-free, EventLoop.RunsHandlersUntilStopped).
    dying_.push_back(std::move(e));
  }

  base::Status run() override {
    while (!stopped_.load(std::memory_order_acquire)) {
      std::vector<Entry*> ready;
      auto n = ring_.wait(1, nullptr, [&](const base::IoCompletion& c) {
        if (c.user_data == nullptr) {
          return;  // a poll_remove's own completion
        }
        auto* e = static_cast<Entry*>(c.user_data);
        e->armed = false;
        ready.push_back(e);
      });
      if (!n) {
        if (n.error().code == EINTR) {
          continue;
        }
        return base::Unexpected(n.error().wrap("event loop: io_uring wait"));
      }
      for (auto* e : ready) {
        if (e == wake_entry_.get()) {
          continue;  // stop() was called: the loop condition ends it
        }
        if (e->removed) {
          std::erase_if(dying_, [e](const auto& d) { return d.get() == e; });
          continue;
        }
        auto handler = e->handler;  // the handler may remove() its own entry
        (*handler)();
        if (!e->removed) {
          if (auto st = arm(*e); !st) {
            return st;
          }
        } else {
          std::erase_if(dying_, [e](const auto& d) { return d.get() == e; });
        }
      }
      // Removed entries the kernel holds no poll of any more (removed while being
      // handled, or never re-armed): nothing refers to them now.
      std::erase_if(dying_, [](const auto& d) { return !d->armed; });
    }
    return {};
  }

  void stop() override {
    stopped_.store(true, std::memory_order_release);
    std::uint64_t one = 1;
    [[maybe_unused]] auto r = ::write(wake_.get(), &one, sizeof one);
  }

 private:
  struct Entry {
    int fd;
    std::shared_ptr<Handler> handler;
    bool armed;
    bool removed;
  };

  base::Status arm(Entry& e) {
    CFN_TRY(ring_.poll_add(e.fd, POLLIN, &e));
    e.armed = true;
    CFN_TRY(ring_.submit());
    return {};
  }

  base::IoUring ring_;
  base::UniqueFd wake_;
  std::unique_ptr<Entry> wake_entry_;
  std::map<int, std::unique_ptr<Entry>> entries_;
  std::vector<std::unique_ptr<Entry>> dying_;
  std::atomic<bool> stopped_{false};
};

}  // namespace

base::Result<std::unique_ptr<EventLoop>> EventLoop::create() {
  base::UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) {
    return base::errno_error("eventfd");
  }
  auto ring = base::IoUring::create(64);
  if (!ring) {
    spdlog::warn("io_uring unavailable ({}): poll(2) event loop", ring.error().to_string());
    return std::make_unique<PollLoop>(std::move(wake));
  }
  auto loop = std::make_unique<UringLoop>(std::move(*ring), std::move(wake));
  CFN_TRY(loop->init());
  return loop;
}

}  // namespace cfnd
