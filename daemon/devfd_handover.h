// SPDX-License-Identifier: Apache-2.0
// Failover of /dev/cachefiles: the kernel keeps a cachefiles cache (and its mounts
// readable) while someone holds the device open. The daemon hands a dup of its fd to
// the service manager's fd store (systemd, FDSTORE=1) and, with fd_holder on, to the
// fd holder process (daemon/fd_holder.h); the next daemon takes it back from them.
#pragma once

#include <optional>

#include "base/result.h"
#include "base/unique_fd.h"
#include "daemon/config.h"
#include "daemon/fd_holder.h"

namespace cfnd {

class DevfdHandover {
 public:
  // Look for a live /dev/cachefiles in the service manager's fd store, then (fd_holder
  // on: the holder is connected, and started when none answers) in the fd holder.
  // Other fds passed by the service manager are closed. Errors: the fd holder could not
  // be reached or started.
  [[nodiscard]] static base::Result<DevfdHandover> open(const Config& config);

  // The handed-over /dev/cachefiles; invalid when there was none (or it was taken).
  [[nodiscard]] base::UniqueFd take_handed() { return std::move(handed_); }
  [[nodiscard]] bool has_holder() const { return holder_.has_value(); }

  // A fresh cache: give the fd store and the fd holder a dup of dev_fd, so that the
  // kernel keeps the cache when this daemon dies. Failures are logged (no failover).
  void keep(int dev_fd);
  // A clean shutdown with nothing mounted (or no cachefiles front end): take the fd out
  // of the fd store (when `stored`), let the fd holder exit, and disconnect from it.
  void release(bool stored);

 private:
  base::UniqueFd handed_;
  std::optional<FdHolderClient> holder_;  // fd_holder on: our connection, for our life
};

}  // namespace cfnd
