// SPDX-License-Identifier: Apache-2.0
#include "daemon/devfd_handover.h"

#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <span>

#include "base/log.h"
#include "daemon/sd_notify.h"

namespace cfnd {
namespace {

// The name of /dev/cachefiles in systemd's fd store and in the fd holder.
constexpr char kDevFdName[] = "cachefiles";

// True when fd is /dev/cachefiles (the same character device).
bool is_cachefiles_dev(int fd) {
  struct stat a {};
  struct stat b {};
  return ::fstat(fd, &a) == 0 && ::stat("/dev/cachefiles", &b) == 0 && S_ISCHR(a.st_mode) &&
         S_ISCHR(b.st_mode) && a.st_rdev == b.st_rdev;
}

}  // namespace

base::Result<DevfdHandover> DevfdHandover::open(const Config& config) {
  DevfdHandover h;
  for (auto& [name, fd] : sd::take_listen_fds()) {
    if (name == kDevFdName && !h.handed_ && is_cachefiles_dev(fd.get())) {
      spdlog::info("failover: /dev/cachefiles handed over by the service manager's fd store");
      h.handed_ = std::move(fd);
    } else {
      spdlog::warn("closing an fd named '{}' passed by the service manager", name);
    }
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
  if (!h.handed_) {
    CFN_ASSIGN_OR_RETURN(auto held, h.holder_->get(kDevFdName));
    if (held && is_cachefiles_dev(held.get())) {
      spdlog::info("failover: /dev/cachefiles handed over by the fd holder");
      h.handed_ = std::move(held);
    } else if (held) {
      spdlog::warn("the fd holder's '{}' is not /dev/cachefiles: ignored", kDevFdName);
    }
  }
  return h;
}

void DevfdHandover::keep(int dev_fd) {
  if (sd::enabled() && !sd::store_fds(kDevFdName, std::span<const int>(&dev_fd, 1))) {
    spdlog::warn("the service manager did not take /dev/cachefiles: no failover");
  }
  if (holder_) {
    if (auto st = holder_->put(kDevFdName, dev_fd); !st) {
      spdlog::error("fd holder: {}: no failover", st.error().to_string());
    }
  }
}

void DevfdHandover::release(bool stored) {
  if (stored) {
    sd::remove_fds(kDevFdName);
  }
  if (holder_) {
    if (auto st = holder_->release(); !st) {
      spdlog::warn("fd holder: {}", st.error().to_string());
    }
    holder_.reset();
  }
}

}  // namespace cfnd
