// SPDX-License-Identifier: Apache-2.0
// fanotify pre-content front end (kernel >= 6.14): the daemon's sparse blob cache files
// are marked FAN_PRE_ACCESS in one FAN_CLASS_PRE_CONTENT group; a file-backed EROFS mount
// (mount(2) of the local bootstrap with device=<cache file> per blob) reads them, and
// every read raises a permission event with the page-aligned range. We fill the range
// through the event's own fd (FMODE_NONOTIFY: no event for our write) and answer
// FAN_ALLOW, or FAN_DENY_ERRNO(EIO) when the fill fails for good.
//
// Duties (reference/fanotify-precontent.md):
//  - mark every blob BEFORE mount(2) opens it: the hook mode of a struct file is fixed
//    at open, so a blob marked later reads as zeros, silently;
//  - answer every permission event exactly once and close its fd (EMFILE auto-denies);
//  - never read the lazy mount nor write a marked file through a normal fd from the
//    loop thread (self-deadlock);
//  - unmount BEFORE closing the group: closing it with a live mount fails open (zeros).
//
// Failover. The group fd is kept outside the daemon (fd store / fd holder: "fanotify"),
// so a dead daemon does not close it: its readers wait. Every permission event read is
// recorded (fd number, blob, range) in the in-flight file before it is handled and
// cleared once answered (daemon/fanotify_inflight.h). A successor that is handed the
// group (take_over, before it reads any event):
//  1. loads the record and answers FAN_DENY_ERRNO(EIO) to every fd number below the
//     dead daemon's bound that the record does not hold (an event it read and did not
//     record; numbers with no pending event answer ENOENT), or to every number when
//     the record is lost or unreadable: never ALLOW over a hole;
//  2. reserves the recorded numbers in its own fd table (a placeholder fd), so that no
//     event it reads itself gets a number a pending event of the dead daemon has: the
//     kernel answers the first event on its list with the number written;
//  3. re-binds the images (marks and blob map, no mount), serves new events, and on the
//     workers fills each recorded range and answers FAN_ALLOW by its number (FAN_DENY
//     EIO when the fill fails), then drops the number's reservation (settle).
// Its blob files were opened while the dead daemon's marks were on them, so its own
// writes and reads of them raise events too: events of the daemon's own pid are allowed
// at once (it never reads the lazy mounts; it reads and writes only its blob files).
//
// Unmount. A file-backed EROFS superblock can outlive the mount the daemon made and
// unmounts: a bind mount of it made before, a copy in another mount namespace (unshare
// -m, a container's), an overlay using it as a lower layer, a file open on a lazily
// detached mount. EROFS keeps its device= files open for as long as the superblock
// lives, and their reads keep raising events; a blob closed with its mark removed would
// read holes as zeros, silently. So umount() only unmounts: the image (its blobs open and
// marked, its events served) is released when its superblock dies. We learn that from an
// inotify watch on the mount's root directory, added right after mount(2) (and at
// rebind): when the last mount of a superblock goes, generic_shutdown_super ->
// fsnotify_sb_delete sends IN_UNMOUNT and then IN_IGNORED to every watch on its inodes,
// in every mount namespace, before umount2(2) of that last mount returns. A watch only
// pins the root inode, never the mount or the superblock, so it blocks no unmount. When
// the watch cannot be added, the image is kept until the daemon exits (safe, not freed).
// The inotify instance is kept outside the daemon like the group ("fanotify-unmount"):
// its watches, and the IN_UNMOUNT events of superblocks that die while no daemon runs,
// outlive a dead daemon. A successor handed it back finds a lingering image's watch by
// its number (recorded in fanotify.json) and asks the kernel whether it still exists:
// /proc/self/fdinfo of an inotify fd lists every live watch (wd, root inode, s_dev);
// a superblock's death removes its watches. A live one is re-bound as lingering
// (rebind_lingering: marks and blob map, no mount), so its readers get data again.
//
// Hot reads. The kernel raises an event for every read of a marked file, filled or not,
// and the reader waits for our answer (a cross-CPU round trip). So a blob is marked only
// while it still has absent chunks: a blob complete at bind time is not marked (EROFS
// opens it without hooks), and a blob that becomes complete (on-demand fills or
// prefetch) has its mark removed (FAN_MARK_REMOVE) by the blob cache's on_complete
// callback. Reads of it then go straight to the page cache. Why that is safe (checked
// in the 6.12..7.x sources, fs/notify/): a file opened while marked keeps its hook mode,
// but the hook's first test is the inode's mark mask (__fsnotify_parent ->
// fsnotify_object_watched), which the removal recomputes (fsnotify_recalc_mask), so
// the read returns at once; an event already queued or being answered pinned its mark
// (fsnotify_prepare_user_wait) and still waits for, and gets, our answer; a read racing
// with the removal is let through without an event (prepare_user_wait fails), which is
// right since every byte is present. Completeness only ever grows, so a mark is never
// needed again once removed. Consequence: the blob cache no longer hears of reads of a
// complete blob through this front end (CachedBlob::demanded_chunks records only the
// reads made while the blob was incomplete).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "daemon/blob_cache.h"
#include "daemon/fanotify_inflight.h"
#include "daemon/image.h"

namespace cfnd {

// UAPI values missing from Debian's linux-libc-dev 6.1 (<linux/fanotify.h>), from the
// v6.14..v6.18 uapi header.
inline constexpr unsigned kFanClassPreContent = 0x00000008;
inline constexpr unsigned kFanCloexec = 0x00000001;
inline constexpr unsigned kFanNonblock = 0x00000002;
inline constexpr unsigned kFanUnlimitedQueue = 0x00000010;
inline constexpr std::uint64_t kFanPreAccess = 0x00100000;
inline constexpr std::uint64_t kFanQOverflow = 0x00004000;
// Permission events of every kind we might be asked to answer.
inline constexpr std::uint64_t kFanOpenPerm = 0x00010000;
inline constexpr std::uint64_t kFanAccessPerm = 0x00020000;
inline constexpr std::uint64_t kFanOpenExecPerm = 0x00040000;
inline constexpr std::uint64_t kFanAllPermEvents =
    kFanOpenPerm | kFanAccessPerm | kFanOpenExecPerm | kFanPreAccess;
inline constexpr std::uint32_t kFanAllow = 0x01;
inline constexpr std::uint32_t kFanDeny = 0x02;
inline constexpr std::uint8_t kFanEventInfoTypeRange = 6;
inline constexpr std::uint8_t kFanotifyMetadataVersion = 3;
constexpr std::uint32_t fan_deny_errno(int err) {
  return kFanDeny | ((static_cast<std::uint32_t>(err) & 0xffU) << 24);
}

// Wire structs, written from the uapi header (not in Debian's 6.1 headers).
// struct fanotify_event_metadata (uapi), 24 bytes; mask is 8-aligned at offset 8.
struct FanEventMetadata {
  std::uint32_t event_len;
  std::uint8_t vers;
  std::uint8_t reserved;
  std::uint16_t metadata_len;
  std::uint64_t mask;
  std::int32_t fd;
  std::int32_t pid;
};
static_assert(sizeof(FanEventMetadata) == 24);

// struct fanotify_event_info_header + struct fanotify_event_info_range (6.14): offset
// comes BEFORE count (an older RFC had them the other way round).
struct FanInfoHeader {
  std::uint8_t info_type;
  std::uint8_t pad;
  std::uint16_t len;
};
struct FanInfoRange {
  FanInfoHeader hdr;
  std::uint32_t pad;
  std::uint64_t offset;
  std::uint64_t count;
};
static_assert(sizeof(FanInfoHeader) == 4);
static_assert(sizeof(FanInfoRange) == 24);
static_assert(offsetof(FanInfoRange, offset) == 8);
static_assert(offsetof(FanInfoRange, count) == 16);

struct FanResponse {
  std::int32_t fd;
  std::uint32_t response;
};
static_assert(sizeof(FanResponse) == 8);

// One event as read from the group fd, validated.
struct FanEvent {
  int fd = -1;  // -1 (FAN_NOFD) or negative: nothing to answer or close
  std::uint64_t mask = 0;
  std::int32_t pid = 0;
  std::optional<std::uint64_t> range_offset;  // set together with range_count
  std::uint64_t range_count = 0;
  bool malformed = false;  // bad info records: answer with deny (when a permission event)
};

// Parse a read() buffer of events. Pure. Stops at the first event whose header is
// truncated or lies about its length (the rest cannot be located); such an event's fd
// is still returned (malformed) when the fixed header was complete, so it gets an
// answer and is closed. Returns the events in order.
[[nodiscard]] std::vector<FanEvent> parse_fan_events(std::span<const std::byte> buf);
// The same, appending to out (the loop reuses one vector: no allocation per read).
void parse_fan_events(std::span<const std::byte> buf, std::vector<FanEvent>& out);

// The inotify watch on the root of an image's EROFS superblock (see "Unmount").
struct SbWatch {
  int wd = -1;    // -1: no watch (the image is kept until the daemon exits)
  dev_t dev = 0;  // st_dev of the mount's root
  ino_t ino = 0;  // st_ino of the mount's root
};

// One watch of an inotify instance as /proc/<pid>/fdinfo/<fd> lists it ("inotify wd:%x
// ino:%lx sdev:%x ..."; fs/notify/fdinfo.c), its device in user space's encoding.
struct InotifyWatchInfo {
  int wd = 0;
  std::uint64_t ino = 0;
  dev_t dev = 0;
  bool operator==(const InotifyWatchInfo&) const = default;
};
// Pure. The watches listed in an inotify fd's fdinfo text; lines that are not watches
// (pos, flags, mnt_id, ino) are skipped, and so is a watch line that does not parse.
[[nodiscard]] std::vector<InotifyWatchInfo> parse_inotify_fdinfo(std::string_view text);

class FanotifyFrontend {
 public:
  // Checks that the running kernel supports pre-content events on files in cache_dir:
  // fanotify_init(FAN_CLASS_PRE_CONTENT) and a FAN_PRE_ACCESS mark on a scratch file.
  // Errors say which step failed (EPERM without CAP_SYS_ADMIN, EINVAL before 6.14,
  // EOPNOTSUPP on tmpfs).
  [[nodiscard]] static base::Status probe(const std::string& cache_dir);

  // A new group (FAN_CLASS_PRE_CONTENT, unlimited queue, event fds O_RDWR). Errors:
  // fanotify_init's errno.
  [[nodiscard]] static base::Result<base::UniqueFd> new_group();
  // Every event fd number of this process is below this: RLIMIT_NOFILE (at most
  // fs.nr_open).
  [[nodiscard]] static std::uint64_t own_fd_bound();
  // True when fd is a fanotify group (a handed-over fd of the right kind).
  [[nodiscard]] static bool is_group(int fd);
  // True when fd is an inotify instance (the handed-over unmount watch).
  [[nodiscard]] static bool is_inotify(int fd);

  // What take_over found of a dead daemon's events (see Failover above).
  struct Takeover {
    std::vector<InflightRecord> records;  // to settle, each number reserved
    std::vector<base::UniqueFd> reserved;
    std::uint64_t fd_bound = 0;  // the bound swept (the next record keeps the larger)
    std::size_t denied = 0;      // unrecorded pending events answered FAN_DENY
  };
  // Steps 1 and 2 of a failover on a handed-over group, before anything reads it.
  // Failures are logged; the worst case denies every pending event.
  [[nodiscard]] static Takeover take_over(int group, const std::string& inflight_path);

  // Serve the group (made by new_group or handed over) with `workers` fill threads,
  // recording events in log. Makes the group non-blocking. sb_watch: the dead daemon's
  // inotify instance (its unmount watches), handed over with its group; invalid: a new one.
  [[nodiscard]] static base::Result<std::unique_ptr<FanotifyFrontend>> create(
      base::UniqueFd group, unsigned workers, std::unique_ptr<InflightLog> log,
      base::UniqueFd sb_watch = {});
  virtual ~FanotifyFrontend() = default;

  // The group fd, to poll for readability; on_readable() drains it. Loop thread only.
  [[nodiscard]] virtual int group_fd() const = 0;
  virtual void on_readable() = 0;

  // Mark the image's blobs, then mount(2) its bootstrap on dir read-only with device=
  // per blob. Call from a thread other than the loop. Returns the watch on its
  // superblock. Errors: the mark's or mount's errno.
  [[nodiscard]] virtual base::Result<SbWatch> mount(const std::shared_ptr<BoundImage>& image,
                                                    const std::string& dir) = 0;
  // Failover: serve an image the dead daemon mounted on dir with this group: mark its
  // incomplete blobs (the marks are there already; this keeps them until completion)
  // and map them, without mounting. Returns the watch on its superblock (the dead
  // daemon's, when its inotify instance was handed over). Errors: the mark's errno.
  [[nodiscard]] virtual base::Result<SbWatch> rebind(const std::shared_ptr<BoundImage>& image,
                                                     const std::string& dir) = 0;
  // Failover of a lingering image (unmounted by the dead daemon, or behind its back,
  // its superblock alive): mark and map it, and keep it until watch's superblock dies,
  // as umount() would have. Errors: ENOENT when the handed-over inotify instance has no
  // such watch any more (its superblock died: nothing reads the image), ENOTSUP without
  // an inotify instance, the mark's errno.
  [[nodiscard]] virtual base::Status rebind_lingering(const std::shared_ptr<BoundImage>& image,
                                                      const SbWatch& watch) = 0;
  // True while the superblock of that watch lives (reads the pending unmount events
  // first, so an unmount that returned is seen). Thread-safe.
  [[nodiscard]] virtual bool alive(int wd) = 0;
  // Called with a watch's number once its superblock is gone and its image released
  // (on the loop thread, or on the thread calling lingering() or alive()), without any
  // lock of the front end held. Set before the loop runs.
  virtual void on_released(std::function<void(int wd)> fn) = 0;
  // Failover step 3: fill and answer the dead daemon's recorded events on the workers
  // (the loop must be serving the group: the fills raise events of our own). Each
  // number's reservation is closed once it is answered.
  virtual void settle(std::vector<InflightRecord> records,
                      std::vector<base::UniqueFd> reserved) = 0;
  // umount2(dir) (MNT_DETACH when force). The image stays served (blobs open, marks on)
  // until its superblock dies (see "Unmount" above): lingering() counts those.
  [[nodiscard]] virtual base::Status umount(const std::string& dir, bool force) = 0;
  // The inotify fd that reports superblocks gone (IN_UNMOUNT / IN_IGNORED), to poll for
  // readability; on_sb_readable() drains it and releases their images. Loop thread only.
  [[nodiscard]] virtual int sb_watch_fd() const = 0;
  // True when sb_watch_fd() is the dead daemon's, handed over (already kept outside).
  [[nodiscard]] virtual bool sb_watch_handed() const = 0;
  virtual void on_sb_readable() = 0;
  // Images unmounted here whose file system still lives (a bind mount, a copy in another
  // mount namespace, an overlay's lower layer, an open file of a detached mount). Reads
  // the pending unmount events first (thread-safe).
  [[nodiscard]] virtual std::size_t lingering() = 0;
  // Events answered so far, by outcome (for logs and tests).
  [[nodiscard]] virtual std::uint64_t events_allowed() const = 0;
  [[nodiscard]] virtual std::uint64_t events_denied() const = 0;
  // Blobs marked now (incomplete ones), and marks removed so far because their blob
  // became complete.
  [[nodiscard]] virtual std::uint64_t marked_blobs() const = 0;
  [[nodiscard]] virtual std::uint64_t marks_removed() const = 0;
};

}  // namespace cfnd
