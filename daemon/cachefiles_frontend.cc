// SPDX-License-Identifier: Apache-2.0
#include "daemon/cachefiles_frontend.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/digest.h"
#include "base/file.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "base/worker_pool.h"
#include "daemon/kernel_config.h"
#include "fscache/protocol.h"

namespace cfnd {

std::string default_fsid(base::Bytes bootstrap) {
  return base::hex(base::sha256(bootstrap)).substr(0, 32);
}

base::Status check_fscache_name(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") {
    return base::errorf(EINVAL, "{} '{}': must be 1..128 characters, not . or ..", what, name);
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return base::errorf(EINVAL, "{} '{}': only A-Z a-z 0-9 . _ - are allowed", what, name);
    }
  }
  return {};
}

ReadWindow read_window(std::uint64_t off, std::uint64_t len, std::uint64_t size,
                       std::uint64_t page) {
  ReadWindow w;
  if (len == 0 || off >= size || page == 0) {
    return w;
  }
  const std::uint64_t size_end = size + (page - size % page) % page;  // size <= 2^63
  const std::uint64_t end = len > size_end - off ? size_end : off + len;
  w.off = off - off % page;
  const std::uint64_t aligned_end = std::min(size_end, end + (page - end % page) % page);
  w.len = aligned_end - w.off;
  w.data_len = std::min(size, aligned_end) - w.off;
  return w;
}

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kCopyPiece = 1ULL << 20;

// One write() per command: 0 or -errno, as the kernel answered.
int command(int devfd, const std::string& cmd) {
  const ssize_t n = ::write(devfd, cmd.data(), cmd.size());
  if (n < 0) {
    return -errno;
  }
  return n == static_cast<ssize_t>(cmd.size()) ? 0 : -EIO;
}

// A cachefiles object: one anon fd and what it is served from. Shared between the map
// (until CLOSE) and the READ jobs in flight, so a CLOSE racing a fill never closes an fd
// a worker is writing through (nor lets the number be reused under it).
struct Object {
  base::UniqueFd anon;
  std::string cookie;
  std::uint64_t size = 0;
  std::shared_ptr<CachedBlob> blob;   // a data blob; null for a bootstrap
  base::UniqueFd bootstrap;           // the bootstrap file, read-only; for the fsid cookie
  std::shared_ptr<BoundImage> image;  // keeps the blob's image alive while the object lives
  std::string volume_key;             // the OPEN's, e.g. "erofs,<domain>"
  // What we wrote into it (cache::RangeSet): the allocated bytes of an object the kernel
  // made in this mount, an unnamed tmpfile that no scan sees (open_objects()).
  mutable std::mutex written_mu;
  cache::RangeSet written;
};

struct Registered {
  std::shared_ptr<BoundImage> image;
  std::string domain;  // domain_id, or the fsid itself when the mount has none
  std::string dir;
};

class CachefilesImpl final : public CachefilesFrontend {
 public:
  explicit CachefilesImpl(base::UniqueFd dev) : dev_(std::move(dev)) {}

  ~CachefilesImpl() override {
    jobs_.stop();
    // Closing /dev/cachefiles fails every pending request with EIO; callers unmount first.
  }

  void start_workers(unsigned n) {
    jobs_.start(n, [this] {
      return
          [this, buf = base::AlignedBuffer(kCopyPiece, kPage)](Job& job) mutable { run(job, buf); };
    });
  }

  int dev_fd() const override { return dev_.get(); }

  void on_readable() override {
    alignas(8) std::byte buf[fscache::kMsgMaxSize];
    // One message per read(); 0 when nothing is pending (never EAGAIN).
    for (;;) {
      const ssize_t n = ::read(dev_.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0) {
        // EMSGSIZE leaves the request queued: reading again would spin; wait for poll.
        static base::RateLimit rl;
        if (rl.allow()) {
          spdlog::error("cachefiles: read /dev/cachefiles: {}", std::strerror(errno));
        }
        return;
      }
      if (n == 0) {
        return;
      }
      auto msg = fscache::parse_message(base::Bytes(buf, static_cast<std::size_t>(n)));
      if (!msg) {
        static base::RateLimit rl;
        if (rl.allow()) {
          spdlog::error("cachefiles: kernel message skipped: {}", msg.error().to_string());
        }
        continue;
      }
      if (auto* o = std::get_if<fscache::OpenRequest>(&msg->body)) {
        on_open(*msg, *o);
      } else if (auto* r = std::get_if<fscache::ReadRequest>(&msg->body)) {
        on_read(*msg, *r);
      } else {
        std::lock_guard lk(objects_mu_);
        objects_.erase(msg->object_id);
        spdlog::debug("cachefiles: CLOSE object {}", msg->object_id);
      }
    }
  }

  base::Status mount(const std::shared_ptr<BoundImage>& image, const std::string& fsid,
                     const std::string& domain_id, const std::string& dir) override {
    CFN_TRY(add(image, fsid, domain_id, dir));
    std::string opts = "fsid=" + fsid;
    if (!domain_id.empty()) {
      opts += ",domain_id=" + domain_id;
    }
    // The kernel sends OPEN for the fsid (and each blob) from inside mount(2).
    if (::mount("none", dir.c_str(), "erofs", MS_RDONLY, opts.c_str()) != 0) {
      auto e = base::errno_error(fmt::format("mount -t erofs none -o {} {}", opts, dir));
      std::lock_guard lk(reg_mu_);
      images_.erase(fsid);
      return e;
    }
    std::lock_guard lk(reg_mu_);
    mounts_[dir] = fsid;
    return {};
  }

  base::Status rebind(const std::shared_ptr<BoundImage>& image, const std::string& fsid,
                      const std::string& domain_id, const std::string& dir) override {
    CFN_TRY(add(image, fsid, domain_id, dir));
    std::lock_guard lk(reg_mu_);
    mounts_[dir] = fsid;
    return {};
  }

  base::Status restore() override {
    if (const int rc = command(dev_.get(), fscache::format_restore()); rc != 0) {
      return base::errorf(-rc, "/dev/cachefiles 'restore': {} (needs Linux 6.8 or a backport)",
                          std::strerror(-rc));
    }
    return {};
  }

  base::Status umount(const std::string& dir, bool force) override {
    if (::umount2(dir.c_str(), force ? MNT_DETACH : 0) != 0) {
      return base::errno_error("umount " + dir);
    }
    std::lock_guard lk(reg_mu_);
    if (auto it = mounts_.find(dir); it != mounts_.end()) {
      images_.erase(it->second);
      mounts_.erase(it);
    }
    return {};
  }

  base::Status cull(const std::string& fscache_dir, const cache::FscacheObject& o) override {
    if (cache::fscache_entry_id(o).empty() || o.volume_dir.find('/') != std::string::npos ||
        o.name.find('/') != std::string::npos) {
      return base::errorf(EINVAL, "cachefiles cull: '{}/{}/{}' is not a cache object's name",
                          o.volume_dir, o.fan, o.name);
    }
    const std::string where = fmt::format("{}/cache/{}/{}", fscache_dir, o.volume_dir, o.fan);
    base::Status out;
    // The kernel takes the directory from the writer's working directory; a thread of
    // its own fs_struct changes it without moving the daemon's.
    std::thread t([&] {
      if (::unshare(CLONE_FS) != 0) {
        out = base::errno_error("cachefiles cull: unshare(CLONE_FS)");
        return;
      }
      auto dir = base::UniqueFd::open(fscache_dir + "/cache",
                                      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      for (const std::string* step : {&o.volume_dir, &o.fan}) {
        if (!dir) {
          break;
        }
        dir = base::UniqueFd::openat(dir->get(), *step,
                                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }
      if (!dir) {
        if (dir.error().code == ENOENT) {
          return;  // the volume or fan went: so did the object
        }
        out = base::Unexpected(dir.error());
        return;
      }
      if (::fchdir(dir->get()) != 0) {
        out = base::errno_error("cachefiles cull: chdir " + where);
        return;
      }
      for (const char* verb : {"inuse", "cull"}) {
        auto cmd = std::string_view(verb) == "inuse" ? fscache::format_inuse(o.name)
                                                     : fscache::format_cull(o.name);
        if (!cmd) {
          out = base::Unexpected(cmd.error());
          return;
        }
        const int rc = command(dev_.get(), *cmd);
        if (rc == -ESTALE || rc == -ENOENT) {
          return;  // gone already (the kernel answers a missing name with ESTALE)
        }
        if (rc == -EBUSY) {
          out = base::errorf(EBUSY, "cachefiles: {}/{} is in use by the kernel ('{}': EBUSY)",
                             where, o.name, verb);
          return;
        }
        if (rc != 0) {
          out = base::errorf(-rc, "cachefiles: '{}' in {}: {}", *cmd, where, std::strerror(-rc));
          return;
        }
      }
    });
    t.join();
    if (out) {
      spdlog::debug("cachefiles: culled {}/{}", where, o.name);
    }
    return out;
  }

  std::uint64_t reads_served() const override { return served_.load(); }
  std::uint64_t reads_failed() const override { return failed_.load(); }
  base::LatencyHistogram::Snapshot read_latency_local() const override {
    return local_latency_.snapshot();
  }
  base::LatencyHistogram::Snapshot read_latency_fetched() const override {
    return fetched_latency_.snapshot();
  }

 private:
  // Register image under fsid (checked names; EEXIST when the fsid is bound).
  base::Status add(const std::shared_ptr<BoundImage>& image, const std::string& fsid,
                   const std::string& domain_id, const std::string& dir) {
    CFN_TRY(check_fscache_name("fsid", fsid));
    if (!domain_id.empty()) {
      CFN_TRY(check_fscache_name("domain_id", domain_id));
    }
    if (fsid.size() == 64 && fsid.find_first_not_of("0123456789abcdef") == std::string::npos) {
      return base::errorf(EINVAL, "fsid '{}' looks like a blob id", fsid);
    }
    std::lock_guard lk(reg_mu_);
    if (images_.contains(fsid)) {
      return base::errorf(EEXIST, "fsid {} is already bound (on {})", fsid, images_[fsid].dir);
    }
    images_[fsid] = Registered{image, domain_id.empty() ? fsid : domain_id, dir};
    return {};
  }

  struct Job {
    std::uint32_t msg_id;
    std::shared_ptr<Object> object;
    std::uint64_t off;
    std::uint64_t len;
    std::chrono::steady_clock::time_point received;
  };

  // What an OPEN's cookie names in its domain: a bound fsid, or a blob of an image bound
  // in that domain. Null when nothing.
  std::shared_ptr<Object> lookup(std::string_view domain, const std::string& cookie) {
    std::lock_guard lk(reg_mu_);
    if (auto it = images_.find(cookie); it != images_.end()) {
      if (it->second.domain != domain) {
        return nullptr;  // the fsid is bound, but in another domain
      }
      auto f = base::UniqueFd::open(it->second.image->bootstrap_path(), O_RDONLY | O_CLOEXEC);
      struct stat st {};
      if (!f || ::fstat(f->get(), &st) != 0) {
        spdlog::error("cachefiles: bootstrap {} of fsid {}: {}", it->second.image->bootstrap_path(),
                      cookie, f ? std::strerror(errno) : f.error().to_string());
        return nullptr;
      }
      auto o = std::make_shared<Object>();
      o->cookie = cookie;
      o->size = static_cast<std::uint64_t>(st.st_size);
      o->bootstrap = std::move(*f);
      o->image = it->second.image;
      return o;
    }
    for (const auto& [fsid, reg] : images_) {
      if (reg.domain != domain) {
        continue;
      }
      for (const auto& blob : reg.image->blobs()) {
        if (blob->info().id == cookie) {
          auto o = std::make_shared<Object>();
          o->cookie = cookie;
          o->size = blob->size();
          o->blob = blob;
          o->image = reg.image;
          return o;
        }
      }
    }
    return nullptr;
  }

  void on_open(const fscache::Message& m, const fscache::OpenRequest& req) {
    base::UniqueFd anon(static_cast<int>(req.fd));  // ours, whatever we answer
    auto object = lookup(req.domain(), req.cookie_key);
    if (!object) {
      auto cmd = fscache::format_copen_error(m.msg_id, ENOENT);
      const int rc = command(dev_.get(), *cmd);
      spdlog::warn("cachefiles: OPEN of unknown cookie '{}' in domain '{}': ENOENT{}",
                   req.cookie_key, req.domain(),
                   rc == 0 ? "" : fmt::format(" (copen: {})", std::strerror(-rc)));
      return;  // the anon fd closes here: no CLOSE follows a failed OPEN
    }
    auto cmd = fscache::format_copen(m.msg_id, object->size);
    if (!cmd) {
      spdlog::error("cachefiles: OPEN '{}': {}", req.cookie_key, cmd.error().to_string());
      if (auto e = fscache::format_copen_error(m.msg_id, EFBIG)) {
        (void)command(dev_.get(), *e);
      }
      return;
    }
    object->anon = std::move(anon);
    object->volume_key = req.volume_key;
    const std::uint64_t size = object->size;
    {
      // Before the copen: a READ may follow at once (it is read on this thread, but keep
      // the order obvious).
      std::lock_guard lk(objects_mu_);
      objects_[m.object_id] = std::move(object);
    }
    if (const int rc = command(dev_.get(), *cmd); rc != 0) {
      spdlog::error("cachefiles: '{}': {}", *cmd, std::strerror(-rc));
      std::lock_guard lk(objects_mu_);
      objects_.erase(m.object_id);
      return;
    }
    spdlog::debug("cachefiles: OPEN object {} domain '{}' cookie '{}' size {}", m.object_id,
                  req.domain(), req.cookie_key, size);
  }

  void on_read(const fscache::Message& m, const fscache::ReadRequest& r) {
    std::shared_ptr<Object> object;
    {
      std::lock_guard lk(objects_mu_);
      if (auto it = objects_.find(m.object_id); it != objects_.end()) {
        object = it->second;
      }
    }
    if (!object) {
      // No fd to complete it through; the kernel fails the read when the object closes.
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::error("cachefiles: READ msg_id {} for unknown object {}", m.msg_id, m.object_id);
      }
      return;
    }
    jobs_.push(Job{m.msg_id, std::move(object), r.off, r.len, std::chrono::steady_clock::now()});
  }

  std::vector<cache::OpenKernelObject> open_objects() const override {
    std::vector<std::shared_ptr<Object>> objects;
    {
      std::lock_guard lk(objects_mu_);
      objects.reserve(objects_.size());
      for (const auto& [id, o] : objects_) {
        objects.push_back(o);
      }
    }
    std::vector<cache::OpenKernelObject> out;
    out.reserve(objects.size());
    for (const auto& o : objects) {
      std::lock_guard lk(o->written_mu);
      out.push_back(cache::OpenKernelObject{o->volume_key, o->cookie, o->written.bytes()});
    }
    return out;
  }

  // One READ on a worker: fill, copy into the anon fd, complete, record the latency.
  void run(Job& job, base::AlignedBuffer& buf) {
    const bool local = !job.object->blob || job.object->blob->ready(job.off, job.len);
    bool ok = true;
    if (auto st = serve(job, buf); !st) {
      ok = false;
      failed_.fetch_add(1, std::memory_order_relaxed);
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::error("cachefiles: READ {} [{}, +{}): {}", job.object->cookie, job.off, job.len,
                      st.error().to_string());
      }
    } else {
      served_.fetch_add(1, std::memory_order_relaxed);
    }
    // Always complete: a range we could not fill stays a hole, and the kernel answers
    // the reader with EIO (cachefiles retries once, finds the hole, gives up).
    if (::ioctl(job.object->anon.get(), fscache::kIocReadComplete, job.msg_id) != 0) {
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::error("cachefiles: READ_COMPLETE msg_id {} ({}): {}", job.msg_id,
                      job.object->cookie, std::strerror(errno));
      }
    }
    if (ok) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now() - job.received);
      (local ? local_latency_ : fetched_latency_).record(static_cast<std::uint64_t>(ns.count()));
    }
  }

  // Fill the window through the blob cache (a blob) and copy it into the anon fd in
  // page-aligned pieces. Nothing is written for a window whose fill failed.
  static base::Status serve(const Job& job, base::AlignedBuffer& buf) {
    const Object& o = *job.object;
    const ReadWindow w = read_window(job.off, job.len, o.size, kPage);
    if (w.len == 0) {
      return {};
    }
    int src = o.bootstrap.get();
    if (o.blob) {
      CFN_TRY(o.blob->fill(w.off, w.data_len));
      src = o.blob->fd();
    }
    for (std::uint64_t pos = 0; pos < w.len; pos += kCopyPiece) {
      const std::uint64_t piece = std::min(kCopyPiece, w.len - pos);
      const std::uint64_t data = pos < w.data_len ? std::min(piece, w.data_len - pos) : 0;
      if (data > 0) {
        CFN_TRY(base::pread_full(src, base::MutableBytes(buf.data(), data), w.off + pos));
      }
      std::memset(buf.data() + data, 0, piece - data);
      CFN_TRY(base::pwrite_full(o.anon.get(), base::Bytes(buf.data(), piece), w.off + pos));
      std::lock_guard lk(o.written_mu);
      job.object->written.add(w.off + pos, piece);
    }
    return {};
  }

  base::UniqueFd dev_;

  std::mutex reg_mu_;                          // guards images_, mounts_
  std::map<std::string, Registered> images_;   // fsid -> image
  std::map<std::string, std::string> mounts_;  // mount point -> fsid

  mutable std::mutex objects_mu_;
  std::map<std::uint32_t, std::shared_ptr<Object>> objects_;  // object_id -> object

  base::WorkerPool<Job> jobs_;
  std::atomic<std::uint64_t> served_{0};
  std::atomic<std::uint64_t> failed_{0};
  base::LatencyHistogram local_latency_;
  base::LatencyHistogram fetched_latency_;
};

}  // namespace

namespace {

// What the cachefiles front end needs of the kernel, for the errors that say it is missing.
constexpr std::array<std::string_view, 3> kCachefilesOptions = {
    "CONFIG_CACHEFILES", "CONFIG_CACHEFILES_ONDEMAND", "CONFIG_EROFS_FS_ONDEMAND"};

// "Linux >= 5.19 with ...; this kernel is R[, its /proc/config.gz leaves X unset]".
std::string cachefiles_kernel_needs() {
  const std::string note = kernel_config_note(kCachefilesOptions);
  return fmt::format(
      "the cachefiles front end needs Linux >= 5.19 built with CONFIG_CACHEFILES=m/y, "
      "CONFIG_CACHEFILES_ONDEMAND=y and CONFIG_EROFS_FS_ONDEMAND=y, and the module loaded "
      "(modprobe cachefiles); this kernel is {}{}",
      kernel_release(), note.empty() ? "" : ", and " + note);
}

// "pid N (comm), ..." of the processes with /dev/cachefiles open (a scan of /proc/*/fd),
// or what to look at when none can be seen (another mount namespace, no permission).
std::string devcachefiles_holders() {
  std::string out;
  std::error_code ec;
  for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = proc.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::error_code ec2;
    for (const auto& fd : std::filesystem::directory_iterator(proc.path() / "fd", ec2)) {
      std::error_code ec3;
      if (std::filesystem::read_symlink(fd.path(), ec3) == "/dev/cachefiles") {
        // /proc files report size 0: read the line, not st_size bytes.
        std::string comm;
        std::ifstream in(proc.path() / "comm");
        std::getline(in, comm);
        out += fmt::format("{}pid {} ({})", out.empty() ? "" : ", ", pid, comm);
        break;
      }
    }
  }
  return out.empty() ? std::string(
                           "another process (none visible here: `fuser /dev/cachefiles` "
                           "as root names it)")
                     : out;
}

}  // namespace

base::Result<std::unique_ptr<CachefilesFrontend>> CachefilesFrontend::create(
    const std::string& cache_dir, unsigned workers) {
  int fd = ::open("/dev/cachefiles", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == EBUSY) {
      return base::errorf(EBUSY,
                          "/dev/cachefiles is held by {}: stop it first (only one process may "
                          "open it; the distro's cachefilesd and nydusd both do)",
                          devcachefiles_holders());
    }
    // The errno's text comes once, at the end (Error::to_string).
    return base::errorf(err, "cannot open /dev/cachefiles: {}", cachefiles_kernel_needs());
  }
  base::UniqueFd dev(fd);
  const std::string dir = cache_dir + "/fscache";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return base::errorf(ec.value(), "cachefiles cache dir {}: {}", dir, ec.message());
  }
  CFN_ASSIGN_OR_RETURN(auto dir_cmd, fscache::format_dir(dir));
  CFN_ASSIGN_OR_RETURN(auto tag_cmd, fscache::format_tag(kCachefilesTag));
  for (const auto& cmd : {dir_cmd, tag_cmd, fscache::format_bind_ondemand()}) {
    if (const int rc = command(dev.get(), cmd); rc != 0) {
      return base::errorf(-rc,
                          "/dev/cachefiles refused '{}': the cache dir needs xattrs, O_TMPFILE "
                          "and sync_fs (e.g. ext4), and 'bind ondemand' needs what the front "
                          "end needs: {}",
                          cmd, cachefiles_kernel_needs());
    }
  }
  auto f = std::make_unique<CachefilesImpl>(std::move(dev));
  f->start_workers(workers == 0 ? 1 : workers);
  spdlog::info("cachefiles: bound on-demand cache in {} (tag {})", dir, kCachefilesTag);
  return f;
}

std::unique_ptr<CachefilesFrontend> CachefilesFrontend::adopt(base::UniqueFd dev,
                                                              unsigned workers) {
  auto f = std::make_unique<CachefilesImpl>(std::move(dev));
  f->start_workers(workers == 0 ? 1 : workers);
  return f;
}

}  // namespace cfnd
