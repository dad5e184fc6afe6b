// SPDX-License-Identifier: Apache-2.0
// Failover of the kernel session fds: the kernel keeps a front end's state while someone
// holds its fd open (/dev/cachefiles: the cache and its mounts; the fanotify group: its
// marks and the permission events the daemon read and has not answered). The daemon
// hands a dup of each such fd, under a name ("cachefiles", "fanotify", "fuse-<n>"), to
// the service manager's fd store (systemd, FDSTORE=1) and, with fd_holder on, to the fd
// holder process (daemon/fd_holder.h); the next daemon takes them back by name.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "daemon/config.h"
#include "daemon/fd_holder.h"

namespace cfnd {

// The names the front ends keep their fds under.
inline constexpr std::string_view kCachefilesFdName = "cachefiles";
inline constexpr std::string_view kFanotifyFdName = "fanotify";
// The fanotify front end's inotify instance: the unmount watches of its superblocks.
inline constexpr std::string_view kFanotifyWatchFdName = "fanotify-unmount";

class FdHandover {
 public:
  // Collect the fds the service manager passed (its fd store), by name, then (fd_holder
  // on) connect to the fd holder, starting it when none answers. Errors: the fd holder
  // could not be reached or started.
  [[nodiscard]] static base::Result<FdHandover> open(const Config& config);

  // The handed-over fd of that name: the service manager's first, else the fd holder's.
  // An fd that fails `is_right` (not the kind of fd the name stands for) is logged and
  // closed. Invalid when there is none. Errors: talking to the fd holder failed.
  [[nodiscard]] base::Result<base::UniqueFd> take(std::string_view name,
                                                  const std::function<bool(int)>& is_right);
  // Failover that cannot resume: every fd kept under a name starting with prefix and not
  // in `keep` (the names a restarted daemon resumes) is taken out of the fd store
  // (FDSTOREREMOVE) and dropped by the fd holder, and our copy closed, so that the kernel
  // ends the session (a FUSE mount's readers fail with ENOTCONN at once instead of waiting
  // for the holder's grace time). Returns the names dropped. Call before close_untaken().
  std::vector<std::string> drop_unlisted(std::string_view prefix,
                                         const std::vector<std::string>& keep);
  // Close the service manager's fds nobody took (logged).
  void close_untaken();

  [[nodiscard]] bool has_holder() const { return holder_.has_value(); }
  // True when an fd kept with keep() outlives this process: a service manager listens
  // (its fd store) or the fd holder is connected.
  [[nodiscard]] bool can_keep() const;

  // Give the fd store and the fd holder a dup of fd under name, so that the kernel
  // keeps the front end's state when this daemon dies. Failures are logged (no failover).
  void keep(std::string_view name, int fd);
  // The fd of that name is no longer needed (its mount is gone): the fd store and the
  // fd holder close theirs. Failures are logged.
  void forget(std::string_view name);
  // A clean shutdown with nothing mounted: take the named fds out of the fd store, let
  // the fd holder exit (it closes everything it holds), and disconnect from it.
  void release(const std::vector<std::string_view>& stored_names);

 private:
  std::map<std::string, base::UniqueFd, std::less<>> from_store_;
  std::optional<FdHolderClient> holder_;  // fd_holder on: our connection, for our life
  // One call at a time on the holder connection (binds and FUSE sessions keep and
  // forget from their own threads). A pointer: FdHandover is moved.
  std::unique_ptr<std::mutex> holder_mu_ = std::make_unique<std::mutex>();
};

}  // namespace cfnd
