// SPDX-License-Identifier: Apache-2.0
#include "daemon/devfd_handover.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <span>

#include "base/log.h"
#include "daemon/sd_notify.h"

namespace cfnd {

base::Result<FdHandover> FdHandover::open(const Config& config) {
  FdHandover h;
  for (auto& [name, fd] : sd::take_listen_fds()) {
    if (h.from_store_.contains(name)) {
      spdlog::warn("closing a second fd named '{}' passed by the service manager", name);
      continue;
    }
    h.from_store_.emplace(name, std::move(fd));
  }
  if (!config.fd_holder) {
    return h;
  }
  char exe[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    return base::errno_error("readlink /proc/self/exe");
  }
  auto c = FdHolderClient::connect_or_start(
      fd_holder_socket(config.socket_path), std::string(exe, static_cast<std::size_t>(n)),
      config.cache_dir + "/fd-holder.log", std::chrono::seconds(config.fd_holder_grace_s));
  if (!c) {
    return base::Unexpected(c.error().wrap("fd holder"));
  }
  h.holder_.emplace(std::move(*c));
  return h;
}

base::Result<base::UniqueFd> FdHandover::take(std::string_view name,
                                              const std::function<bool(int)>& is_right) {
  if (auto it = from_store_.find(name); it != from_store_.end()) {
    base::UniqueFd fd = std::move(it->second);
    from_store_.erase(it);
    if (is_right(fd.get())) {
      spdlog::info("failover: '{}' handed over by the service manager's fd store", name);
      return fd;
    }
    spdlog::warn(
        "closing an fd named '{}' passed by the service manager: not the kind of fd "
        "that name stands for",
        name);
  }
  if (!holder_) {
    return base::UniqueFd();
  }
  std::unique_lock lk(*holder_mu_);
  CFN_ASSIGN_OR_RETURN(auto held, holder_->get(name));
  lk.unlock();
  if (held && is_right(held.get())) {
    spdlog::info("failover: '{}' handed over by the fd holder", name);
    return held;
  }
  if (held) {
    spdlog::warn("the fd holder's '{}' is not what that name stands for: ignored", name);
  }
  return base::UniqueFd();
}

std::vector<std::string> FdHandover::drop_unlisted(std::string_view prefix,
                                                   const std::vector<std::string>& keep) {
  auto kept = [&](const std::string& n) {
    return std::find(keep.begin(), keep.end(), n) != keep.end();
  };
  std::vector<std::string> dropped;
  for (auto it = from_store_.begin(); it != from_store_.end();) {
    if (it->first.starts_with(prefix) && !kept(it->first)) {
      sd::remove_fds(it->first);
      dropped.push_back(it->first);
      it = from_store_.erase(it);  // closes our copy
    } else {
      ++it;
    }
  }
  std::lock_guard lk(*holder_mu_);
  if (holder_) {
    auto names = holder_->names(prefix);
    if (!names) {
      spdlog::error("fd holder: listing '{}*': {}", prefix, names.error().to_string());
      return dropped;
    }
    for (const auto& n : *names) {
      if (kept(n)) {
        continue;
      }
      if (auto st = holder_->drop(n); !st) {
        spdlog::error("fd holder: dropping '{}': {}", n, st.error().to_string());
        continue;
      }
      if (std::find(dropped.begin(), dropped.end(), n) == dropped.end()) {
        dropped.push_back(n);
      }
    }
  }
  return dropped;
}

void FdHandover::close_untaken() {
  for (auto& [name, fd] : from_store_) {
    spdlog::warn("closing an fd named '{}' passed by the service manager", name);
  }
  from_store_.clear();
}

bool FdHandover::can_keep() const {
  return holder_.has_value() || sd::enabled();
}

void FdHandover::keep(std::string_view name, int fd) {
  if (sd::enabled() && !sd::store_fds(name, std::span<const int>(&fd, 1))) {
    spdlog::warn("the service manager did not take '{}': no failover for it", name);
  }
  std::lock_guard lk(*holder_mu_);
  if (holder_) {
    if (auto st = holder_->put(name, fd); !st) {
      spdlog::error("fd holder: {}: no failover for '{}'", st.error().to_string(), name);
    }
  }
}

void FdHandover::forget(std::string_view name) {
  if (sd::enabled()) {
    sd::remove_fds(name);
  }
  std::lock_guard lk(*holder_mu_);
  if (holder_) {
    if (auto st = holder_->drop(name); !st) {
      spdlog::warn("fd holder: dropping '{}': {}", name, st.error().to_string());
    }
  }
}

void FdHandover::release(const std::vector<std::string_view>& stored_names) {
  for (auto name : stored_names) {
    sd::remove_fds(name);
  }
  std::lock_guard lk(*holder_mu_);
  if (holder_) {
    if (auto st = holder_->release(); !st) {
      spdlog::warn("fd holder: {}", st.error().to_string());
    }
    holder_.reset();
  }
}

}  // namespace cfnd
