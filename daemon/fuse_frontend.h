// SPDX-License-Identifier: Apache-2.0
// FUSE front end (any kernel): a complete read-only filesystem served from a bound
// image's bootstrap, its data read from the blob cache files (filled on demand). The
// protocol is spoken on /dev/fuse directly (daemon/fuse_wire.h says why not libfuse).
//
// Everything a request names is stateless, so a restarted daemon serves a live session
// from the bootstrap alone (failover): the node id of the root is FUSE_ROOT_ID (1) and
// that of every other inode is its EROFS nid + 2 (the same on every mount of the
// image), file handles are 0 (reads name the node), a directory handle is 0 too
// (READDIR reads the directory again; its offsets are entry indexes), and FORGET has
// nothing to release. The image is immutable, so entries and attributes are cached by
// the kernel for a long time and open files keep their page cache.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"
#include "daemon/fuse_wire.h"
#include "daemon/image.h"

namespace cfnd {

struct FuseOptions {
  // Reads that need a download are served by these threads; one thread reads /dev/fuse
  // and answers everything else.
  unsigned threads = 8;
  // After serving a request, poll /dev/fuse this long for the next one before sleeping
  // (0 = sleep at once).
  unsigned poll_us = 0;
  // Called once INIT is answered (on the session's thread; not for a resumed session):
  // what a successor needs to resume the session.
  std::function<void(const fusewire::InitParams&)> on_init;
};

class FuseMount {
 public:
  // A new /dev/fuse (close-on-exec). Errors: open's errno.
  [[nodiscard]] static base::Result<base::UniqueFd> open_device();

  // Mount image on dir through dev (a fresh /dev/fuse: read-only, allow_other,
  // default_permissions, type fuse.nydus) and serve it; returns once INIT is answered.
  // Errors: mount(2)'s errno; EPROTO when the kernel's INIT could not be answered.
  [[nodiscard]] static base::Result<std::unique_ptr<FuseMount>> start(
      std::shared_ptr<BoundImage> image, const std::string& dir, base::UniqueFd dev,
      FuseOptions options);

  // Failover: serve the live session on dev (mounted on dir by a dead daemon, its INIT
  // answered with init; nullopt: not answered yet, the session waits for it) without a
  // new INIT, then, when the kernel has it (or init is unknown), send FUSE_NOTIFY_RESEND
  // so that the requests the dead daemon read and never answered are queued again. resent() says
  // whether it was sent. conn_dev: the mount's device number (0 when unknown). Errors: the thread
  // set-up's (the mount is then detached).
  [[nodiscard]] static base::Result<std::unique_ptr<FuseMount>> resume(
      std::shared_ptr<BoundImage> image, const std::string& dir, base::UniqueFd dev,
      const std::optional<fusewire::InitParams>& init, dev_t conn_dev, FuseOptions options);

  // Unmounts (detached when still mounted) and joins the session threads.
  virtual ~FuseMount() = default;

  // umount2(dir) (MNT_DETACH when force), then wait for the session to end.
  // Errors: umount2's errno (EBUSY when in use and not forced).
  [[nodiscard]] virtual base::Status unmount(bool force) = 0;

  // The mount's device number (names the connection under /sys/fs/fuse/connections);
  // 0 when unknown.
  [[nodiscard]] virtual dev_t conn_dev() const = 0;
  // The session's /dev/fuse (owned by the mount).
  [[nodiscard]] virtual int dev_fd() const = 0;
  // Failover only: true when FUSE_NOTIFY_RESEND was sent.
  [[nodiscard]] virtual bool resent() const = 0;
};

}  // namespace cfnd
