// SPDX-License-Identifier: Apache-2.0
// cachefiles on-demand front end (Linux 5.19 .. ~7.1, CONFIG_CACHEFILES_ONDEMAND): EROFS
// mounted with fsid= (and domain_id=) reads its bootstrap and every blob device through
// fscache; cachefiles asks us, through /dev/cachefiles, to fill the holes of ITS cache
// files (<cache_dir>/fscache/cache/...) via per-object anon fds. We fill our own sparse
// blob cache (CachedBlob::fill, shared with the other front ends) and copy the range
// into the anon fd. Protocol: fscache/protocol.h, reference/cachefiles-ondemand.md.
//
// Duties:
//  - OPEN: copen <msg_id>,<size> for a bound fsid (the bootstrap) or a blob id known in
//    the message's domain; copen <msg_id>,-ENOENT and close the anon fd otherwise (no
//    CLOSE follows a failed OPEN);
//  - READ: page-aligned writes through the anon fd (the kernel writes its cache file with
//    direct I/O), zero padding only past the object's end, then READ_COMPLETE; a failed
//    fill writes nothing and still completes: the range stays a hole and the reader gets
//    EIO, never a wrong byte. Fills run on worker threads, never on the loop thread;
//  - CLOSE: no reply; drop the object (its anon fd closes once no fill uses it);
//  - mount(2) runs on a control thread: the kernel sends the fsid's OPEN from inside it
//    and waits for the loop thread's copen.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/latency_histogram.h"
#include "base/result.h"
#include "daemon/cache/space.h"
#include "daemon/image.h"

namespace cfnd {

// The tag we give the cache ("tag" command).
inline constexpr std::string_view kCachefilesTag = "cachefilesd-nydus";

// The fsid an image gets when the bind names none: the first 32 hex digits of the
// bootstrap's sha256. Pure.
[[nodiscard]] std::string default_fsid(base::Bytes bootstrap);

// An fsid or domain_id goes into mount options and a cachefiles path: 1..128 characters
// of [A-Za-z0-9._-], not "." or "..". EINVAL naming `what` otherwise. Pure.
[[nodiscard]] base::Status check_fscache_name(std::string_view what, std::string_view name);

// The page-aligned window a READ {off, len} of an object of `size` bytes is served with:
// [off, off + len) rounded out to pages, clipped at size rounded up to a page. The first
// data_len bytes come from the source; the rest (past size) are zeros. len 0: nothing
// to write (off at or past the end, or an empty READ). Pure.
struct ReadWindow {
  std::uint64_t off = 0;
  std::uint64_t len = 0;       // multiple of the page size
  std::uint64_t data_len = 0;  // <= len; off + data_len <= size
};
[[nodiscard]] ReadWindow read_window(std::uint64_t off, std::uint64_t len, std::uint64_t size,
                                     std::uint64_t page = 4096);

class CachefilesFrontend {
 public:
  // Open /dev/cachefiles (EBUSY: another daemon, e.g. the distro's cachefilesd, holds
  // it), write "dir <cache_dir>/fscache" (created; the filesystem needs xattrs, tmpfile
  // and sync_fs: ext4 or xfs, not tmpfs), "tag cachefilesd-nydus" and "bind ondemand",
  // and start `workers` fill threads. Errors say which step failed, with the errno.
  [[nodiscard]] static base::Result<std::unique_ptr<CachefilesFrontend>> create(
      const std::string& cache_dir, unsigned workers);
  // Failover: take over a live /dev/cachefiles fd handed over from a dead daemon (fd
  // store or fd holder). Nothing is written yet: rebind() the images the dead daemon had
  // mounted, then restore().
  [[nodiscard]] static std::unique_ptr<CachefilesFrontend> adopt(base::UniqueFd dev,
                                                                 unsigned workers);
  virtual ~CachefilesFrontend() = default;

  // /dev/cachefiles, to poll for readability; on_readable() drains it. Loop thread only.
  [[nodiscard]] virtual int dev_fd() const = 0;
  virtual void on_readable() = 0;

  // Register the image under fsid (in domain_id's domain when not empty), then
  // mount("none", dir, "erofs", MS_RDONLY, "fsid=..[,domain_id=..]"). Not on the loop
  // thread. Errors: EINVAL (bad names), EEXIST (fsid already bound), mount's errno.
  [[nodiscard]] virtual base::Status mount(const std::shared_ptr<BoundImage>& image,
                                           const std::string& fsid, const std::string& domain_id,
                                           const std::string& dir) = 0;
  // Failover: register the image under fsid like mount() does, for a mount on dir that
  // is already there (made by a daemon that died). Errors: EINVAL, EEXIST as mount().
  [[nodiscard]] virtual base::Status rebind(const std::shared_ptr<BoundImage>& image,
                                            const std::string& fsid, const std::string& domain_id,
                                            const std::string& dir) = 0;
  // Failover: write "restore" (Linux >= 6.8): requests the dead daemon read but never
  // answered become new again, and objects whose anon fds died are re-OPENed on their
  // next READ. Errors: the kernel's (EOPNOTSUPP / EINVAL before 6.8).
  [[nodiscard]] virtual base::Status restore() = 0;
  // umount2(dir) (MNT_DETACH when force), then forget the fsid. Objects still open keep
  // serving until the kernel CLOSEs them.
  [[nodiscard]] virtual base::Status umount(const std::string& dir, bool force) = 0;

  // Take one of the kernel's cache files away, the protocol's way: in a thread of its
  // own working directory (unshare(CLONE_FS): the daemon's cwd never moves), chdir into
  // <fscache_dir>/cache/<volume_dir>/<fan> (each step opened O_NOFOLLOW), write
  // "inuse <name>" and then "cull <name>". EBUSY when the kernel has the object open
  // (the caller tries again later); a name already gone (ESTALE) is done. Names that are not
  // the kernel's forms (cache::scan_fscache) are refused with EINVAL. Thread-safe.
  [[nodiscard]] virtual base::Status cull(const std::string& fscache_dir,
                                          const cache::FscacheObject& object) = 0;

  // The objects the kernel has open through us (OPEN answered, no CLOSE yet), each with
  // its volume key, cookie and the bytes we wrote into it (overlaps counted once).
  // Thread-safe.
  [[nodiscard]] virtual std::vector<cache::OpenKernelObject> open_objects() const = 0;

  [[nodiscard]] virtual std::uint64_t reads_served() const = 0;
  [[nodiscard]] virtual std::uint64_t reads_failed() const = 0;
  // Served READs, from the message read off /dev/cachefiles to READ_COMPLETE done, in
  // ns: those whose data was local already (a bootstrap, or a blob range the blob cache
  // held) and those that had to fetch.
  [[nodiscard]] virtual base::LatencyHistogram::Snapshot read_latency_local() const = 0;
  [[nodiscard]] virtual base::LatencyHistogram::Snapshot read_latency_fetched() const = 0;
};

}  // namespace cfnd
