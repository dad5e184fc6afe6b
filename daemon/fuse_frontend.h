// SPDX-License-Identifier: Apache-2.0
// FUSE front end (any kernel): a complete read-only filesystem served from a bound
// image's bootstrap, its data read from the blob cache files (filled on demand). Inode
// numbers are EROFS nids (the root nid is FUSE_ROOT_ID). The image is immutable, so
// entries and attributes are cached by the kernel for a long time and open files keep
// their page cache.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"
#include "daemon/image.h"

namespace cfnd {

class FuseMount {
 public:
  // Mount image on dir and serve it on `threads` worker threads; after serving a request
  // a worker polls /dev/fuse for the next one for up to poll_us before it sleeps (0 = it
  // sleeps at once). Errors: EINVAL when libfuse rejects the options, the mount's errno.
  [[nodiscard]] static base::Result<std::unique_ptr<FuseMount>> start(
      std::shared_ptr<BoundImage> image, const std::string& dir, unsigned threads,
      unsigned poll_us);
  // Unmounts (detached when still mounted) and joins the session threads.
  virtual ~FuseMount() = default;

  // umount2(dir) (MNT_DETACH when force), then wait for the session to end.
  // Errors: umount2's errno (EBUSY when in use and not forced).
  [[nodiscard]] virtual base::Status unmount(bool force) = 0;
};

}  // namespace cfnd
