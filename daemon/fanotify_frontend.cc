// SPDX-License-Identifier: Apache-2.0
#include "daemon/fanotify_frontend.h"

#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <thread>
#include <utility>

#include "base/bytes.h"
#include "base/file.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "base/worker_pool.h"

namespace cfnd {

namespace {

// EROFS_SUPER_MAGIC_V1 (include/uapi/linux/magic.h).
constexpr std::int64_t kErofsMagic = 0xE0F5E1E2;

}  // namespace

std::vector<FanEvent> parse_fan_events(std::span<const std::byte> buf) {
  std::vector<FanEvent> out;
  parse_fan_events(buf, out);
  return out;
}

void parse_fan_events(std::span<const std::byte> buf, std::vector<FanEvent>& out) {
  std::size_t pos = 0;
  while (buf.size() - pos >= sizeof(FanEventMetadata)) {
    auto m = base::load<FanEventMetadata>(buf, pos);
    FanEvent ev;
    ev.fd = m.fd;
    ev.mask = m.mask;
    ev.pid = m.pid;
    // Lengths first: a lying event_len means the following events cannot be found.
    if (m.vers != kFanotifyMetadataVersion || m.metadata_len < sizeof(FanEventMetadata) ||
        m.event_len < m.metadata_len || m.event_len > buf.size() - pos) {
      ev.malformed = true;
      out.push_back(ev);
      break;
    }
    std::size_t info = pos + m.metadata_len;
    const std::size_t end = pos + m.event_len;
    while (info < end) {
      if (end - info < sizeof(FanInfoHeader)) {
        ev.malformed = true;
        break;
      }
      auto h = base::load<FanInfoHeader>(buf, info);
      if (h.len < sizeof(FanInfoHeader) || h.len > end - info) {
        ev.malformed = true;
        break;
      }
      if (h.info_type == kFanEventInfoTypeRange) {
        if (h.len < sizeof(FanInfoRange) || ev.range_offset) {
          ev.malformed = true;  // short, or a second range: which one would we fill?
          break;
        }
        auto r = base::load<FanInfoRange>(buf, info);
        if (r.count > UINT64_MAX - r.offset) {
          ev.malformed = true;
          break;
        }
        ev.range_offset = r.offset;
        ev.range_count = r.count;
      }
      // Other info types (pidfd, error) carry nothing we need.
      info += h.len;
    }
    out.push_back(ev);
    pos = end;
  }
}

std::vector<InotifyWatchInfo> parse_inotify_fdinfo(std::string_view text) {
  std::vector<InotifyWatchInfo> out;
  // The value of "key:" in a line of space-separated fields, in hex.
  auto field = [](std::string_view line, std::string_view key) -> std::optional<std::uint64_t> {
    std::size_t pos = 0;
    while (pos < line.size()) {
      const std::size_t end = std::min(line.find(' ', pos), line.size());
      const std::string_view f = line.substr(pos, end - pos);
      if (f.size() > key.size() && f.starts_with(key) && f[key.size()] == ':') {
        const std::string_view v = f.substr(key.size() + 1);
        std::uint64_t n = 0;
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n, 16);
        if (ec != std::errc() || p != v.data() + v.size() || v.empty()) {
          return std::nullopt;
        }
        return n;
      }
      pos = end + 1;
    }
    return std::nullopt;
  };
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = std::min(text.find('\n', pos), text.size());
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (!line.starts_with("inotify ")) {
      continue;
    }
    const auto wd = field(line, "wd");
    const auto ino = field(line, "ino");
    const auto sdev = field(line, "sdev");
    if (!wd || !ino || !sdev || *wd == 0 || *wd > INT32_MAX || *sdev > UINT32_MAX) {
      continue;
    }
    // The kernel's dev_t: major in the top 12 bits, minor in the low 20 (MINORBITS).
    const auto k = static_cast<std::uint32_t>(*sdev);
    out.push_back({static_cast<int>(*wd), *ino, ::makedev(k >> 20, k & 0xfffffU)});
  }
  return out;
}

namespace {

struct BlobKey {
  dev_t dev;
  ino_t ino;
  auto operator<=>(const BlobKey&) const = default;
};

// The marks of incomplete blobs, and their removal when a blob completes. Shared
// (shared_ptr) with the on_complete callbacks kept by the blobs, which may outlive the
// front end (the cache and bound images own the blobs): `group` is -1 once it is gone.
struct Marks {
  std::mutex mu;
  int group = -1;
  std::set<BlobKey> watched;  // marked, with an on_complete callback pending
  std::atomic<std::uint64_t> removed{0};

  // Under mu. fd: the blob's own fd (the mark is the inode's, whichever file names it).
  void remove_locked(int fd, const BlobKey& key) {
    watched.erase(key);
    if (group < 0) {
      return;
    }
    if (::fanotify_mark(group, FAN_MARK_REMOVE, kFanPreAccess, fd, nullptr) == 0) {
      removed.fetch_add(1, std::memory_order_relaxed);
    } else if (errno != ENOENT) {
      // The mark stays: reads keep raising events, answered from the complete blob.
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::warn("fanotify: removing the mark of a complete blob (dev {} ino {}): {}", key.dev,
                     key.ino, std::strerror(errno));
      }
    }
  }
};

class FanotifyImpl final : public FanotifyFrontend {
 public:
  FanotifyImpl(base::UniqueFd group, std::unique_ptr<InflightLog> log, base::UniqueFd sb_watch)
      : group_(std::move(group)),
        log_(std::move(log)),
        self_pid_(::getpid()),
        marks_(std::make_shared<Marks>()),
        sb_watch_(std::move(sb_watch)) {
    marks_->group = group_.get();
    if (sb_watch_) {
      // Handed over: the dead daemon's watches. Its open file is shared with the keeper
      // (which never reads it); non-blocking like one of ours.
      const int fl = ::fcntl(sb_watch_.get(), F_GETFL);
      if (fl < 0 || ::fcntl(sb_watch_.get(), F_SETFL, fl | O_NONBLOCK) != 0) {
        spdlog::warn("fanotify: the handed-over unmount watch: O_NONBLOCK: {}: a new one is used",
                     std::strerror(errno));
        sb_watch_.reset();
      } else {
        handed_watch_ = true;
      }
    }
    if (!sb_watch_) {
      sb_watch_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    }
    if (!sb_watch_) {
      spdlog::warn(
          "fanotify: inotify_init1: {}: images unmounted here stay served until the daemon "
          "exits (their file systems may outlive the mount)",
          std::strerror(errno));
    }
  }

  ~FanotifyImpl() override {
    {
      std::lock_guard lk(marks_->mu);
      marks_->group = -1;  // callbacks still held by blobs do nothing from now on
    }
    jobs_.stop();
    // Callers unmount first; closing the group answers anything left with ALLOW.
  }

  void start_workers(unsigned n) {
    jobs_.start(n, [this] { return [this](Job& job) { run(job); }; });
  }

  int group_fd() const override { return group_.get(); }

  void on_readable() override {
    alignas(8) std::byte buf[64 * 1024];
    for (;;) {
      ssize_t n = ::read(group_.get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        if (errno != EAGAIN) {
          static base::RateLimit rl;
          if (rl.allow()) {
            spdlog::error("fanotify: read from group: {}", std::strerror(errno));
          }
        }
        return;
      }
      if (n == 0) {
        return;
      }
      events_.clear();
      parse_fan_events(std::span(buf, static_cast<std::size_t>(n)), events_);
      for (const auto& ev : events_) {
        handle(ev);
      }
    }
  }

  base::Result<SbWatch> mount(const std::shared_ptr<BoundImage>& image,
                              const std::string& dir) override {
    CFN_ASSIGN_OR_RETURN(const std::string data, mark_and_map(image, false));
    if (::mount(image->bootstrap_path().c_str(), dir.c_str(), "erofs", MS_RDONLY, data.c_str()) !=
        0) {
      return base::errno_error(
          fmt::format("mount erofs {} on {} ({})", image->bootstrap_path(), dir, data));
    }
    return add_mount(image, dir);
  }

  base::Result<SbWatch> rebind(const std::shared_ptr<BoundImage>& image,
                               const std::string& dir) override {
    if (auto d = mark_and_map(image, true); !d) {
      return base::Unexpected(d.error());
    }
    return add_mount(image, dir);
  }

  base::Status rebind_lingering(const std::shared_ptr<BoundImage>& image,
                                const SbWatch& watch) override {
    if (!sb_watch_ || !handed_watch_) {
      return base::make_error(ENOTSUP,
                              "the dead daemon's unmount watch (inotify) was not handed over: "
                              "whether its file system lives is unknown");
    }
    if (watch.wd < 1) {
      return base::make_error(EINVAL, "no watch recorded");
    }
    // Cheap check first: a superblock that died while no daemon ran has no watch left.
    if (!watched(watch)) {
      return base::errorf(ENOENT, "its file system is gone (inotify watch {} removed)", watch.wd);
    }
    CFN_ASSIGN_OR_RETURN(const std::string data, mark_and_map(image, true));
    (void)data;
    {
      std::lock_guard lk(mounts_mu_);
      auto [it, fresh] = sbs_.try_emplace(watch.wd);
      if (!fresh) {
        kept_.push_back(std::move(it->second.image));
      }
      it->second = Superblock{fmt::format("(lingering, watch {})", watch.wd), image};
    }
    // Registered before this second look: a superblock dying from here on queues its
    // IN_UNMOUNT / IN_IGNORED, and the loop releases the image; one that died between
    // the two looks is released here.
    if (!watched(watch)) {
      std::shared_ptr<BoundImage> gone;
      std::lock_guard lk(mounts_mu_);
      if (auto it = sbs_.find(watch.wd); it != sbs_.end() && it->second.image == image) {
        gone = std::move(it->second.image);
        sbs_.erase(it);
      }
      return base::errorf(ENOENT, "its file system is gone (inotify watch {} removed)", watch.wd);
    }
    return {};
  }

  bool alive(int wd) override {
    drain_sb_events();
    std::lock_guard lk(mounts_mu_);
    return sbs_.contains(wd);
  }

  void on_released(std::function<void(int wd)> fn) override {
    std::lock_guard lk(mounts_mu_);
    on_released_ = std::move(fn);
  }

  int sb_watch_fd() const override { return sb_watch_.get(); }
  bool sb_watch_handed() const override { return handed_watch_; }

  void on_sb_readable() override { drain_sb_events(); }

  // Read every queued IN_UNMOUNT / IN_IGNORED and release the images of those
  // superblocks. From the loop, and from lingering() on any thread: umount2(2) of a
  // superblock's last mount returns after its events are queued, so a count right after
  // an unmount is exact. (Each event is read by one reader only.)
  void drain_sb_events() {
    if (!sb_watch_) {
      return;
    }
    alignas(inotify_event) char buf[4096];
    std::vector<std::shared_ptr<BoundImage>> released;  // destroyed without the lock
    std::vector<int> released_wds;
    for (;;) {
      const ssize_t n = ::read(sb_watch_.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        break;
      }
      std::lock_guard lk(mounts_mu_);
      for (std::size_t pos = 0; pos + sizeof(inotify_event) <= static_cast<std::size_t>(n);) {
        inotify_event ev{};
        std::memcpy(&ev, buf + pos, sizeof ev);
        pos += sizeof ev + ev.len;
        if ((ev.mask & IN_Q_OVERFLOW) != 0) {
          // Which superblocks died is lost: their images stay served (safe, not freed).
          spdlog::error("fanotify: the unmount watch overflowed: some unmounted images stay "
                        "open until the daemon exits");
          continue;
        }
        if ((ev.mask & (IN_UNMOUNT | IN_IGNORED)) == 0) {
          continue;
        }
        auto it = sbs_.find(ev.wd);
        if (it == sbs_.end()) {
          continue;  // IN_IGNORED after the IN_UNMOUNT handled it
        }
        spdlog::info("fanotify: the file system mounted on {} is gone: its image is released",
                     it->second.dir);
        if (auto m = mounts_.find(it->second.dir); m != mounts_.end() && m->second.wd == ev.wd) {
          m->second.wd = kSbGone;  // unmounted behind our back: umount() drops it
        }
        released.push_back(std::move(it->second.image));
        released_wds.push_back(ev.wd);
        sbs_.erase(it);
      }
    }
    std::function<void(int)> fn;
    if (!released_wds.empty()) {
      std::lock_guard lk(mounts_mu_);
      fn = on_released_;
    }
    if (fn) {
      for (const int wd : released_wds) {
        fn(wd);
      }
    }
  }

  std::size_t lingering() override {
    drain_sb_events();
    std::lock_guard lk(mounts_mu_);
    std::set<int> mounted;
    for (const auto& [dir, m] : mounts_) {
      mounted.insert(m.wd);
    }
    std::size_t n = kept_.size();
    for (const auto& [wd, sb] : sbs_) {
      n += mounted.contains(wd) ? 0 : 1;
    }
    return n;
  }

  void settle(std::vector<InflightRecord> records, std::vector<base::UniqueFd> reserved) override {
    for (std::size_t i = 0; i < records.size(); ++i) {
      const auto& r = records[i];
      base::UniqueFd hold = i < reserved.size() ? std::move(reserved[i]) : base::UniqueFd();
      std::shared_ptr<CachedBlob> blob;
      {
        std::shared_lock lk(map_mu_);
        auto it = blobs_.find(BlobKey{static_cast<dev_t>(r.dev), static_cast<ino_t>(r.ino)});
        if (it != blobs_.end()) {
          blob = it->second.lock();
        }
      }
      if (!blob) {
        spdlog::warn(
            "failover: event fd {} of the dead daemon is for a blob no re-bound image has "
            "(dev {} ino {}): denied",
            r.fd, r.dev, r.ino);
        settle_answer(r.fd, std::move(hold), fan_deny_errno(EIO));
        continue;
      }
      const std::uint64_t size = blob->size();
      if (r.offset >= size || r.count == 0) {
        settle_answer(r.fd, std::move(hold), kFanAllow);
        continue;
      }
      jobs_.push(Job{std::move(hold), r.fd, std::move(blob), r.offset,
                     std::min(r.count, size - r.offset), true});
    }
  }

 private:
  // Mark the image's incomplete blobs and map them (the event handler finds blobs by
  // dev/ino). Returns the mount options: device=<blob> per blob.
  // adopted: the group is a dead daemon's (its marks are on the blobs already).
  base::Result<std::string> mark_and_map(const std::shared_ptr<BoundImage>& image, bool adopted) {
    std::string data;
    std::vector<std::pair<BlobKey, std::shared_ptr<CachedBlob>>> keys;
    for (const auto& blob : image->blobs()) {
      const auto& path = blob->path();
      if (path.find(',') != std::string::npos || path.empty() || path[0] != '/') {
        return base::errorf(EINVAL, "blob cache path {} cannot be a device= option", path);
      }
      struct stat st {};
      if (::fstat(blob->fd(), &st) != 0) {
        return base::errno_error("fstat " + path);
      }
      const BlobKey key{st.st_dev, st.st_ino};
      // Mark BEFORE mount(2): EROFS opens each device= file inside mount(2), and a file
      // opened while its inode had no pre-content mark never raises events (reads of
      // holes would return zeros, silently). A mark stays until its blob is complete
      // (not at umount: a lazily detached mount may still read the blob). A complete
      // blob is not marked at all.
      std::lock_guard lk(marks_->mu);
      if (!blob->complete()) {
        if (::fanotify_mark(group_.get(), FAN_MARK_ADD, kFanPreAccess, AT_FDCWD, path.c_str()) !=
            0) {
          return base::errno_error("fanotify_mark FAN_PRE_ACCESS " + path);
        }
        // After the mark: a blob completing from here on runs the callback, one
        // completed just before makes on_complete refuse and we remove the mark here.
        // Either way no mark outlives completeness, and none is removed before it.
        if (!marks_->watched.contains(key)) {
          auto marks = marks_;
          const int fd = blob->fd();  // valid while the blob that runs the callback lives
          if (blob->on_complete([marks, fd, key] {
                std::lock_guard lk(marks->mu);
                marks->remove_locked(fd, key);
              })) {
            marks_->watched.insert(key);
            // An incomplete blob evicted by the cache: its mark goes before its fd
            // closes (a mark pins the inode: the unlinked file's blocks would stay
            // allocated, and its inode number, reused, would look watched).
            blob->on_close([marks, fd, key] {
              std::lock_guard lk(marks->mu);
              if (marks->watched.contains(key)) {
                marks->remove_locked(fd, key);
              }
            });
          } else {
            marks_->remove_locked(blob->fd(), key);
          }
        }
      } else if (adopted) {
        // A dead daemon's mark on a blob that completed as it died: reads need no event.
        (void)::fanotify_mark(group_.get(), FAN_MARK_REMOVE, kFanPreAccess, blob->fd(), nullptr);
      }
      keys.emplace_back(key, blob);
      data += (data.empty() ? "" : ",") + std::string("device=") + path;
    }
    if (data.size() >= 4000) {
      return base::errorf(E2BIG, "mount options for {} blobs exceed a page", keys.size());
    }
    {
      std::unique_lock lk(map_mu_);
      std::erase_if(blobs_, [](const auto& kv) { return kv.second.expired(); });
      for (auto& [k, b] : keys) {
        blobs_[k] = b;
      }
    }
    return data;
  }

 public:
  base::Status umount(const std::string& dir, bool force) override {
    if (::umount2(dir.c_str(), force ? MNT_DETACH : 0) != 0) {
      return base::errno_error("umount " + dir);
    }
    std::lock_guard lk(mounts_mu_);
    auto it = mounts_.find(dir);
    if (it == mounts_.end()) {
      return {};
    }
    // The superblock may live on (a bind mount, another mount namespace, an open file of
    // a detached mount): a read of a hole through it must still raise an event we
    // answer. Its watch (sbs_) keeps the image until the superblock dies; without one
    // it is kept until the daemon exits.
    if (it->second.wd == kNoWatch) {
      kept_.push_back(std::move(it->second.image));
    }
    mounts_.erase(it);
    return {};
  }

  std::uint64_t events_allowed() const override { return allowed_.load(); }
  std::uint64_t events_denied() const override { return denied_.load(); }
  std::uint64_t marked_blobs() const override {
    std::lock_guard lk(marks_->mu);
    return marks_->watched.size();
  }
  std::uint64_t marks_removed() const override { return marks_->removed.load(); }

 private:
  struct Job {
    // The event's fd (answered and closed by respond()), or for a dead daemon's event
    // (settle) the placeholder that reserves its number (or none), closed after it.
    base::UniqueFd fd;
    int number;  // the fd number to answer
    std::shared_ptr<CachedBlob> blob;
    std::uint64_t off;
    std::uint64_t len;
    bool settle = false;
  };

  // Answer a permission event and close its fd: every event fd is a new open file, and
  // an event whose fd cannot be created (EMFILE) is denied by the kernel. The record is
  // cleared between the answer and the close: while the fd is open its number is ours.
  void respond(base::UniqueFd fd, std::uint32_t response) {
    const int number = fd.get();
    FanResponse r{number, response};
    if (::write(group_.get(), &r, sizeof r) != static_cast<ssize_t>(sizeof r)) {
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::error("fanotify: response {:#x} for fd {}: {}", response, number,
                      std::strerror(errno));
      }
    }
    if (log_) {
      log_->clear(number);
    }
    fd.reset();
    (response == kFanAllow ? allowed_ : denied_).fetch_add(1, std::memory_order_relaxed);
  }

  // Answer a dead daemon's event by its number, then clear its record and drop the
  // reservation. ENOENT: it had been answered just before its daemon died.
  void settle_answer(int number, base::UniqueFd hold, std::uint32_t response) {
    FanResponse r{number, response};
    if (::write(group_.get(), &r, sizeof r) == static_cast<ssize_t>(sizeof r)) {
      settled_.fetch_add(1, std::memory_order_relaxed);
      spdlog::info("failover: answered the dead daemon's event fd {} with {}", number,
                   response == kFanAllow ? "ALLOW" : "DENY (EIO)");
      (response == kFanAllow ? allowed_ : denied_).fetch_add(1, std::memory_order_relaxed);
    } else if (errno == ENOENT) {
      spdlog::info("failover: the dead daemon's event fd {} was answered already", number);
    } else {
      spdlog::error("failover: answering the dead daemon's event fd {}: {}", number,
                    std::strerror(errno));
    }
    if (log_) {
      log_->clear(number);
    }
    hold.reset();
  }

  void deny(base::UniqueFd fd) { respond(std::move(fd), fan_deny_errno(EIO)); }

  void handle(const FanEvent& ev) {
    if ((ev.mask & kFanQOverflow) != 0) {
      // Cannot happen with FAN_UNLIMITED_QUEUE; if it does, readers got zeros.
      spdlog::error("fanotify: event queue overflowed: readers may have seen holes as zeros");
    }
    if (ev.fd < 0) {
      return;
    }
    // Ours from here: every path below answers it (a permission event) or closes it.
    base::UniqueFd fd(ev.fd);
    if ((ev.mask & kFanAllPermEvents) == 0) {
      return;
    }
    if (ev.pid == self_pid_) {
      // Our own read or write of a blob file opened while it was marked (after a
      // failover): we never read a lazy mount, and touch only bytes we fill or have.
      respond(std::move(fd), kFanAllow);
      return;
    }
    static base::RateLimit rl;
    if (ev.malformed || !ev.range_offset) {
      if (rl.allow()) {
        spdlog::warn("fanotify: malformed event (mask {:#x}, pid {}): denied", ev.mask, ev.pid);
      }
      deny(std::move(fd));
      return;
    }
    if ((ev.mask & kFanPreAccess) == 0) {
      respond(std::move(fd), kFanAllow);  // a permission we never asked for: do not block it
      return;
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
      deny(std::move(fd));
      return;
    }
    std::shared_ptr<CachedBlob> blob;
    {
      std::shared_lock lk(map_mu_);
      auto it = blobs_.find(BlobKey{st.st_dev, st.st_ino});
      if (it != blobs_.end()) {
        blob = it->second.lock();
      }
    }
    if (!blob) {
      if (rl.allow()) {
        spdlog::warn("fanotify: event for an unknown file (dev {} ino {}, pid {}): denied",
                     st.st_dev, st.st_ino, ev.pid);
      }
      deny(std::move(fd));
      return;
    }
    // The range is page-aligned and not clipped at EOF; a truncate asks for count 0.
    const std::uint64_t size = blob->size();
    const std::uint64_t off = *ev.range_offset;
    if (off >= size || ev.range_count == 0) {
      respond(std::move(fd), kFanAllow);
      return;
    }
    const std::uint64_t len = std::min(ev.range_count, size - off);
    // Recorded before anything can answer it: a successor settles it if we die now.
    if (log_) {
      log_->record({fd.get(), st.st_dev, st.st_ino, off, len});
    }
    // Every access raises an event, filled or not: answer present ranges right here.
    if (blob->ready(off, len)) {
      respond(std::move(fd), kFanAllow);
      return;
    }
    const int number = fd.get();
    jobs_.push(Job{std::move(fd), number, std::move(blob), off, len});
  }

  // One event on a worker: fill through the event's fd, then answer it.
  void run(Job& job) {
    if (job.settle) {
      // No event fd of ours: the blob's own fd (its events are our pid's, allowed).
      auto st = job.blob->fill(job.off, job.len);
      if (!st) {
        spdlog::error("failover: fill {} [{}, +{}) for the dead daemon's event fd {}: {}",
                      job.blob->info().id, job.off, job.len, job.number, st.error().to_string());
      }
      settle_answer(job.number, std::move(job.fd), st ? kFanAllow : fan_deny_errno(EIO));
      return;
    }
    // Write through the event's fd: it was opened FMODE_NONOTIFY, so the write raises
    // no event (a normal fd opened after the mark would block on our own group).
    auto st = job.blob->fill(job.off, job.len, job.fd.get());
    if (!st) {
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::error("fanotify: fill {} [{}, +{}): {}", job.blob->info().id, job.off, job.len,
                      st.error().to_string());
      }
      deny(std::move(job.fd));
    } else {
      respond(std::move(job.fd), kFanAllow);
    }
  }

  // Record a mount (made or re-bound) and watch its superblock's end: an inotify watch
  // on the root directory of the EROFS mount on dir, named through an fd of it (so it
  // is that file system's root, not what dir resolves to a moment later).
  SbWatch add_mount(const std::shared_ptr<BoundImage>& image, const std::string& dir) {
    int wd = kNoWatch;
    struct stat rst {};
    if (sb_watch_) {
      base::UniqueFd root(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      struct statfs fs {};
      if (!root || ::fstatfs(root.get(), &fs) != 0 || ::fstat(root.get(), &rst) != 0) {
        spdlog::warn("fanotify: {}: {}: its image stays open until the daemon exits", dir,
                     std::strerror(errno));
      } else if (static_cast<std::int64_t>(fs.f_type) != kErofsMagic) {
        spdlog::warn("fanotify: {} is no EROFS mount (unmounted already?): its image stays "
                     "open until the daemon exits",
                     dir);
      } else {
        const std::string path = fmt::format("/proc/self/fd/{}", root.get());
        wd = ::inotify_add_watch(sb_watch_.get(), path.c_str(), IN_UNMOUNT);
        if (wd < 0) {
          spdlog::warn("fanotify: watching {} for its unmount: {}: its image stays open until "
                       "the daemon exits",
                       dir, std::strerror(errno));
          wd = kNoWatch;
        }
      }
    }
    std::lock_guard lk(mounts_mu_);
    if (wd != kNoWatch) {
      auto [it, fresh] = sbs_.try_emplace(wd);
      if (!fresh) {
        // The same root inode: the superblock of an image kept already. Keep both.
        kept_.push_back(std::move(it->second.image));
      }
      it->second = Superblock{dir, image};
    }
    mounts_[dir] = Mounted{image, wd};
    if (wd == kNoWatch) {
      return {};
    }
    return SbWatch{wd, rst.st_dev, rst.st_ino};
  }

  // True when the inotify instance still has this watch on that root inode (its
  // superblock lives): /proc/self/fdinfo lists every live watch of the instance.
  bool watched(const SbWatch& w) const {
    // A proc file says size 0: read to the end (base::read_file trusts the size).
    const std::string path = fmt::format("/proc/self/fdinfo/{}", sb_watch_.get());
    base::UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!f) {
      spdlog::warn("fanotify: {}: {}", path, std::strerror(errno));
      return false;
    }
    std::string text;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(f.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0) {
        spdlog::warn("fanotify: reading {}: {}", path, std::strerror(errno));
        return false;
      }
      if (n == 0 || text.size() > (64U << 20)) {
        break;
      }
      text.append(buf, static_cast<std::size_t>(n));
    }
    for (const auto& i : parse_inotify_fdinfo(text)) {
      if (i.wd == w.wd) {
        if (i.dev != w.dev || i.ino != w.ino) {
          spdlog::warn("fanotify: unmount watch {} is on dev {} ino {}, not dev {} ino {}", w.wd,
                       i.dev, i.ino, w.dev, w.ino);
          return false;
        }
        return true;
      }
    }
    return false;
  }

  base::UniqueFd group_;
  std::unique_ptr<InflightLog> log_;
  const pid_t self_pid_;
  std::shared_ptr<Marks> marks_;
  base::UniqueFd sb_watch_;  // inotify: IN_UNMOUNT of every mount's root (or invalid)
  bool handed_watch_ = false;     // sb_watch_ is the dead daemon's (its watches are there)
  std::vector<FanEvent> events_;  // loop thread only: on_readable's parse buffer
  std::shared_mutex map_mu_;
  // Weak: the bound images hold their blobs; the cache closes an unmounted image's blob
  // (its mark goes with it) once nothing holds it. An unmounted image whose superblock
  // lives on is held by sbs_ (or kept_), so its blobs stay served.
  std::map<BlobKey, std::weak_ptr<CachedBlob>> blobs_;
  static constexpr int kNoWatch = -1;  // no inotify watch: kept until the daemon exits
  static constexpr int kSbGone = -2;   // its superblock died while still listed
  struct Mounted {
    std::shared_ptr<BoundImage> image;
    int wd = kNoWatch;
  };
  struct Superblock {
    std::string dir;  // where we mounted it (for logs)
    std::shared_ptr<BoundImage> image;
  };
  std::mutex mounts_mu_;
  std::map<std::string, Mounted> mounts_;
  // By inotify wd: the images whose superblock lives (mounted here or not), released at
  // its IN_UNMOUNT. Guarded by mounts_mu_.
  std::map<int, Superblock> sbs_;
  // Unmounted images we could not watch: kept until the daemon exits (see umount()).
  std::vector<std::shared_ptr<BoundImage>> kept_;  // guarded by mounts_mu_
  std::function<void(int)> on_released_;           // guarded by mounts_mu_

  base::WorkerPool<Job> jobs_;
  std::atomic<std::uint64_t> allowed_{0};
  std::atomic<std::uint64_t> denied_{0};
  std::atomic<std::uint64_t> settled_{0};
};

base::Result<base::UniqueFd> init_group(bool nonblock) {
  unsigned flags = kFanClassPreContent | kFanCloexec | kFanUnlimitedQueue;
  if (nonblock) {
    flags |= kFanNonblock;
  }
  // O_RDWR: we fill through the event fds.
  int g = ::fanotify_init(flags, O_RDWR | O_LARGEFILE);
  if (g < 0) {
    return base::errorf(errno, "fanotify_init(FAN_CLASS_PRE_CONTENT)");  // strerror: to_string
  }
  return base::UniqueFd(g);
}

}  // namespace

// The name of the file system path is on, for an error (statfs(2)'s f_type; the common
// ones by name, others as hex).
std::string fs_type_name(const std::string& path) {
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) != 0) {
    return "unknown";
  }
  static constexpr std::pair<std::uint64_t, std::string_view> kNames[] = {
      {0x01021994, "tmpfs"}, {0x858458f6, "ramfs"}, {0xEF53, "ext2/3/4"},
      {0x58465342, "xfs"},   {0x9123683E, "btrfs"}, {0x794c7630, "overlayfs"},
      {0x6969, "nfs"},       {0x65735546, "fuse"},  {0xE0F5E1E2, "erofs"}};
  const auto type = static_cast<std::uint64_t>(fs.f_type);
  for (const auto& [magic, name] : kNames) {
    if (magic == type) {
      return std::string(name);
    }
  }
  return fmt::format("type 0x{:x}", type);
}

base::Status FanotifyFrontend::probe(const std::string& cache_dir) {
  CFN_ASSIGN_OR_RETURN(auto group, init_group(false));
  std::string path = cache_dir + "/.fanotify-probe";
  CFN_ASSIGN_OR_RETURN(auto f, base::UniqueFd::open(path, O_CREAT | O_RDWR | O_TRUNC, 0600));
  auto unlink = [&] { ::unlink(path.c_str()); };
  if (::fanotify_mark(group.get(), FAN_MARK_ADD, kFanPreAccess, AT_FDCWD, path.c_str()) != 0) {
    const int err = errno;
    // The errno's text comes once, at the end (Error::to_string).
    auto e = base::errorf(err, "fanotify_mark FAN_PRE_ACCESS on {} (on {})", path,
                          fs_type_name(cache_dir));
    unlink();
    return e;
  }
  unlink();
  return {};
}

base::Result<base::UniqueFd> FanotifyFrontend::new_group() {
  return init_group(true);
}

bool FanotifyFrontend::is_inotify(int fd) {
  char link[64];
  const std::string proc = fmt::format("/proc/self/fd/{}", fd);
  const ssize_t n = ::readlink(proc.c_str(), link, sizeof link);
  return n > 0 && std::string_view(link, static_cast<std::size_t>(n)) == "anon_inode:inotify";
}

bool FanotifyFrontend::is_group(int fd) {
  char link[64];
  const std::string proc = fmt::format("/proc/self/fd/{}", fd);
  const ssize_t n = ::readlink(proc.c_str(), link, sizeof link);
  return n > 0 && std::string_view(link, static_cast<std::size_t>(n)) == "anon_inode:[fanotify]";
}

namespace {
std::uint64_t nr_open() {
  std::uint64_t n = 1U << 20;
  if (auto b = base::read_file("/proc/sys/fs/nr_open")) {
    try {
      n = std::stoull(std::string(base::as_chars(*b)));
    } catch (const std::exception&) {
    }
  }
  return n;
}
}  // namespace

std::uint64_t FanotifyFrontend::own_fd_bound() {
  const std::uint64_t cap = nr_open();
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    return std::min<std::uint64_t>(rl.rlim_cur, cap);
  }
  return cap;
}

FanotifyFrontend::Takeover FanotifyFrontend::take_over(int group,
                                                       const std::string& inflight_path) {
  Takeover t;
  // fs.nr_open bounds every fd number, so any bound we sweep.
  const std::uint64_t cap = nr_open();
  const std::uint64_t own_bound = own_fd_bound();
  auto f = load_inflight(inflight_path);
  if (!f) {
    spdlog::error(
        "failover: the dead daemon's in-flight record is lost or unreadable ({}): every "
        "event it left unanswered is denied (EIO)",
        f.error().to_string());
    t.fd_bound = own_bound;
  } else {
    t.fd_bound = std::min(f->fd_bound, cap);
    t.records = std::move(f->records);
    if (f->torn > 0) {
      spdlog::warn("failover: {} half-written in-flight record(s): their events are denied (EIO)",
                   f->torn);
    }
  }
  // 1. Deny what is not recorded, before this daemon reads any event (so no number
  //    written here can be one of ours).
  std::set<int> recorded;
  for (const auto& r : t.records) {
    recorded.insert(r.fd);
  }
  const auto sweep_start = std::chrono::steady_clock::now();
  const FanResponse deny_template{0, fan_deny_errno(EIO)};
  int other_errno = 0;
  for (std::uint64_t n = 0; n < t.fd_bound; ++n) {
    if (recorded.contains(static_cast<int>(n))) {
      continue;
    }
    FanResponse r = deny_template;
    r.fd = static_cast<std::int32_t>(n);
    if (::write(group, &r, sizeof r) == static_cast<ssize_t>(sizeof r)) {
      ++t.denied;
    } else if (errno != ENOENT && other_errno == 0) {
      other_errno = errno;
    }
  }
  if (other_errno != 0) {
    spdlog::error("failover: denying unrecorded events: {}", std::strerror(other_errno));
  }
  const auto sweep_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - sweep_start)
                            .count();
  // 2. Reserve the recorded numbers: no event this daemon reads may get one of them.
  base::UniqueFd placeholder(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  for (const auto& r : t.records) {
    base::UniqueFd hold;
    if (placeholder && ::fcntl(r.fd, F_GETFD) < 0 && errno == EBADF) {
      if (::dup3(placeholder.get(), r.fd, O_CLOEXEC) == r.fd) {
        hold = base::UniqueFd(r.fd);
      }
    }
    t.reserved.push_back(std::move(hold));
  }
  spdlog::info(
      "failover: took over the fanotify group: {} recorded event(s) to settle, {} unrecorded "
      "event(s) denied (fd numbers below {} swept in {} ms)",
      t.records.size(), t.denied, t.fd_bound, sweep_ms);
  return t;
}

base::Result<std::unique_ptr<FanotifyFrontend>> FanotifyFrontend::create(
    base::UniqueFd group, unsigned workers, std::unique_ptr<InflightLog> log,
    base::UniqueFd sb_watch) {
  const int fl = ::fcntl(group.get(), F_GETFL);
  if (fl < 0 || ::fcntl(group.get(), F_SETFL, fl | O_NONBLOCK) != 0) {
    return base::errno_error("fanotify group: O_NONBLOCK");
  }
  auto f = std::make_unique<FanotifyImpl>(std::move(group), std::move(log), std::move(sb_watch));
  f->start_workers(workers == 0 ? 1 : workers);
  return f;
}

}  // namespace cfnd
