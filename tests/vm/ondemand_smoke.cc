// SPDX-License-Identifier: Apache-2.0
// VM test: EROFS over fscache, served by a minimal on-demand server built on fscache/.
//
//   ondemand_smoke [--failover] CACHE_DIR IMAGE_DIR SOURCE_DIR MNT
//
// IMAGE_DIR is `nydus-convert build --compressor none` output (image.boot, blobs/<id>): with
// no compression a blob file is exactly the bytes of its EROFS device. The server answers
// OPEN for the fsid cookie with the bootstrap and for a 64-hex cookie with blobs/<id>,
// anything else with copen -ENOENT; READ by pwrite() into the anon fd and READ_COMPLETE;
// CLOSE by closing the object's fds. Meanwhile the main thread mounts the image with fsid=,
// then with domain_id=, compares every file of SOURCE_DIR with the mounted copy (sha256,
// symlink targets, directory entries), and checks that an unknown fsid fails the mount.
// --failover instead lets the server die at its first blob READ while a reader waits, and a
// second server take over the same /dev/cachefiles fd with "restore" (Linux >= 6.8 or a
// backport; skipped where the kernel has no restore command).
//
// Needs root and a kernel with CONFIG_CACHEFILES_ONDEMAND + CONFIG_EROFS_FS_ONDEMAND.
// CACHE_DIR must be on ext4 or another filesystem with xattrs, tmpfile and sync_fs.
// Exit: 0 passed, 1 failed, 77 skipped (no /dev/cachefiles).
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "base/aligned_buffer.h"
#include "base/digest.h"
#include "base/file.h"
#include "base/unique_fd.h"
#include "erofs/reader.h"
#include "fscache/protocol.h"

namespace {

namespace fs = std::filesystem;
constexpr std::size_t kPage = 4096;
constexpr int kExitSkip = 77;

std::atomic<int> g_failures{0};

template <typename... Args>
void say(fmt::format_string<Args...> f, Args&&... args) {
  std::fputs(("ondemand_smoke: " + fmt::format(f, std::forward<Args>(args)...) + "\n").c_str(),
             stdout);
  std::fflush(stdout);
}

template <typename... Args>
void fail(fmt::format_string<Args...> f, Args&&... args) {
  say("FAIL: {}", fmt::format(f, std::forward<Args>(args)...));
  ++g_failures;
}

// One write() per command; returns 0 or -errno, as the kernel answered.
int command(int devfd, const std::string& cmd) {
  const ssize_t n = ::write(devfd, cmd.data(), cmd.size());
  if (n < 0) {
    return -errno;
  }
  return n == static_cast<ssize_t>(cmd.size()) ? 0 : -EIO;
}

struct Object {
  base::UniqueFd anon;    // the kernel's anon fd: the cache file
  base::UniqueFd source;  // what we serve into it
  std::string cookie;
};

// The on-demand server: one thread reading /dev/cachefiles until stop(). With
// crash_at_blob_read it plays a daemon that dies: at the first READ of a data blob it closes
// every anon fd without answering and its thread ends, while /dev/cachefiles stays open (in
// production another process holds it, e.g. systemd's fd store).
class Server {
 public:
  Server(int devfd, std::string fsid, fs::path image_dir, bool crash_at_blob_read = false)
      : devfd_(devfd),
        fsid_(std::move(fsid)),
        image_dir_(std::move(image_dir)),
        crash_at_blob_read_(crash_at_blob_read) {}
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server() {
    if (thread_.joinable()) {
      stop();
    }
  }

  void start() {
    stop_ = base::UniqueFd(::eventfd(0, EFD_CLOEXEC));
    thread_ = std::thread([this] { run(); });
  }
  void stop() {
    const std::uint64_t one = 1;
    if (::write(stop_.get(), &one, sizeof one) != sizeof one) {
      fail("eventfd write: {}", std::strerror(errno));
    }
    thread_.join();
  }
  [[nodiscard]] bool crashed() const { return crashed_; }

  std::set<std::string> opened() {
    std::lock_guard lock(mu_);
    return opened_;
  }
  std::set<std::string> refused() {
    std::lock_guard lock(mu_);
    return refused_;
  }
  std::size_t live_objects() {
    std::lock_guard lock(mu_);
    return objects_.size();
  }
  std::uint64_t reads() const { return reads_; }
  std::uint64_t closes() const { return closes_; }
  std::uint64_t bytes() const { return bytes_; }

 private:
  void run() {
    std::vector<std::byte> buf(fscache::kMsgMaxSize);
    for (;;) {
      pollfd p[2] = {{devfd_, POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) {
          continue;
        }
        fail("poll: {}", std::strerror(errno));
        return;
      }
      if ((p[1].revents & POLLIN) != 0) {
        return;
      }
      // Drain: one message per read(), 0 when nothing is pending.
      for (;;) {
        const ssize_t n = ::read(devfd_, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) {
          continue;
        }
        if (n < 0) {
          fail("read /dev/cachefiles: {}", std::strerror(errno));
          return;
        }
        if (n == 0) {
          break;
        }
        handle(base::Bytes(buf.data(), static_cast<std::size_t>(n)));
        if (crashed_) {
          return;
        }
      }
    }
  }

  void handle(base::Bytes raw) {
    auto msg = fscache::parse_message(raw);
    if (!msg) {
      fail("kernel message: {}", msg.error().to_string());
      return;
    }
    if (auto* o = std::get_if<fscache::OpenRequest>(&msg->body)) {
      on_open(*msg, *o);
    } else if (auto* r = std::get_if<fscache::ReadRequest>(&msg->body)) {
      on_read(*msg, *r);
    } else {
      std::lock_guard lock(mu_);
      ++closes_;
      objects_.erase(msg->object_id);  // closes the anon fd and the source
    }
  }

  void on_open(const fscache::Message& m, const fscache::OpenRequest& o) {
    base::UniqueFd anon(static_cast<int>(o.fd));  // ours from here on, whatever we answer
    fs::path src;
    if (o.cookie_key == fsid_) {
      src = image_dir_ / "image.boot";
    } else if (o.cookie_key.size() == 64 &&
               o.cookie_key.find_first_not_of("0123456789abcdef") == std::string::npos) {
      src = image_dir_ / "blobs" / o.cookie_key;
    }
    base::UniqueFd source;
    struct stat st {};
    if (!src.empty()) {
      auto f = base::UniqueFd::open(src, O_RDONLY);
      if (f && ::fstat(f->get(), &st) == 0) {
        source = std::move(*f);
      }
    }
    if (!source) {
      {
        // Recorded before the copen: the mount it fails returns at once to the main thread.
        std::lock_guard lock(mu_);
        refused_.insert(o.cookie_key);
      }
      auto cmd = fscache::format_copen_error(m.msg_id, ENOENT);
      const int rc = command(devfd_, *cmd);
      say("OPEN volume '{}' cookie '{}' -> ENOENT ({})", o.volume_key, o.cookie_key,
          rc == 0 ? "copen ok" : std::strerror(-rc));
      if (rc != 0) {
        fail("'{}': {}", *cmd, std::strerror(-rc));
      }
      return;  // anon closes here: no CLOSE will follow a failed OPEN
    }
    auto cmd = fscache::format_copen(m.msg_id, static_cast<std::uint64_t>(st.st_size));
    {
      // Record the object before the copen, so a READ right after it finds it.
      std::lock_guard lock(mu_);
      objects_[m.object_id] = Object{std::move(anon), std::move(source), o.cookie_key};
      opened_.insert(o.cookie_key);
    }
    if (const int rc = command(devfd_, *cmd); rc != 0) {
      fail("'{}': {}", *cmd, std::strerror(-rc));
    }
    say("OPEN msg_id {} object {} volume '{}' (domain '{}') cookie '{}' size {}", m.msg_id,
        m.object_id, o.volume_key, o.domain(), o.cookie_key, st.st_size);
  }

  void on_read(const fscache::Message& m, const fscache::ReadRequest& r) {
    ++reads_;
    int anon = -1;
    int source = -1;
    {
      std::lock_guard lock(mu_);
      auto it = objects_.find(m.object_id);
      if (it == objects_.end()) {
        fail("READ msg_id {} for unknown object {}", m.msg_id, m.object_id);
        return;
      }
      if (crash_at_blob_read_ && it->second.cookie != fsid_) {
        say("crash: dropping READ msg_id {} and closing {} anon fd(s)", m.msg_id, objects_.size());
        objects_.clear();
        crashed_ = true;
        return;
      }
      anon = it->second.anon.get();
      source = it->second.source.get();
    }
    if (r.off % kPage != 0) {
      fail("READ msg_id {} off {} is not page aligned", m.msg_id, r.off);
    }
    // Direct I/O into the cache file: page-aligned buffer, length padded to a page. Bytes
    // past the source's end stay zero (the kernel asked for them; they are the tail block).
    base::AlignedBuffer buf(base::AlignedBuffer::round_up(r.len, kPage), kPage);
    std::size_t got = 0;
    while (got < r.len) {
      const ssize_t n =
          ::pread(source, buf.data() + got, r.len - got, static_cast<off_t>(r.off + got));
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        break;
      }
      got += static_cast<std::size_t>(n);
    }
    const std::size_t wlen = base::AlignedBuffer::round_up(got, kPage);
    if (auto st = base::pwrite_full(anon, base::Bytes(buf.data(), wlen), r.off); !st) {
      fail("READ msg_id {}: pwrite anon fd: {}", m.msg_id, st.error().to_string());
    }
    bytes_ += wlen;
    if (::ioctl(anon, fscache::kIocReadComplete, m.msg_id) != 0) {
      fail("READ_COMPLETE msg_id {}: {}", m.msg_id, std::strerror(errno));
    }
  }

  int devfd_;
  std::string fsid_;
  fs::path image_dir_;
  bool crash_at_blob_read_;
  std::atomic<bool> crashed_{false};
  base::UniqueFd stop_;
  std::thread thread_;
  std::mutex mu_;
  std::map<std::uint32_t, Object> objects_;
  std::set<std::string> opened_;
  std::set<std::string> refused_;
  std::atomic<std::uint64_t> reads_{0};
  std::atomic<std::uint64_t> closes_{0};
  std::atomic<std::uint64_t> bytes_{0};
};

base::Result<base::Digest> sha256_file(const fs::path& p) {
  CFN_ASSIGN_OR_RETURN(auto bytes, base::read_file(p));
  return base::sha256(bytes);
}

// Compare SOURCE with the mount: every entry exists with the same type; files by sha256,
// symlinks by target; no extra entries in the mount. Returns the number of files compared.
std::size_t compare_trees(const fs::path& src, const fs::path& mnt) {
  std::size_t files = 0;
  std::error_code ec;
  std::set<fs::path> seen;
  for (auto it = fs::recursive_directory_iterator(src, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    const fs::path rel = it->path().lexically_relative(src);
    const fs::path got = mnt / rel;
    seen.insert(rel);
    const auto want_st = fs::symlink_status(it->path());
    const auto got_st = fs::symlink_status(got, ec);
    if (ec) {
      fail("{}: missing in the mount ({})", rel.string(), ec.message());
      ec.clear();
      continue;
    }
    if (want_st.type() != got_st.type()) {
      fail("{}: type differs", rel.string());
    } else if (fs::is_symlink(want_st)) {
      if (fs::read_symlink(it->path()) != fs::read_symlink(got)) {
        fail("{}: symlink target differs", rel.string());
      }
    } else if (fs::is_regular_file(want_st)) {
      auto a = sha256_file(it->path());
      auto b = sha256_file(got);
      if (!a || !b) {
        fail("{}: read: {}", rel.string(), (!a ? a.error() : b.error()).to_string());
      } else if (*a != *b) {
        fail("{}: sha256 differs", rel.string());
      }
      ++files;
    }
  }
  if (ec) {
    fail("walking {}: {}", src.string(), ec.message());
  }
  for (auto it = fs::recursive_directory_iterator(mnt, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (seen.count(it->path().lexically_relative(mnt)) == 0) {
      fail("{}: in the mount but not in the source", it->path().string());
    }
  }
  return files;
}

bool mount_erofs(const fs::path& mnt, const std::string& opts, int* err) {
  if (::mount("none", mnt.c_str(), "erofs", MS_RDONLY, opts.c_str()) == 0) {
    return true;
  }
  *err = errno;
  return false;
}

void check_mount(const fs::path& mnt, const std::string& opts, const fs::path& source) {
  int err = 0;
  const auto t0 = std::chrono::steady_clock::now();
  if (!mount_erofs(mnt, opts, &err)) {
    fail("mount -t erofs none -o {} {}: {}", opts, mnt.string(), std::strerror(err));
    return;
  }
  const std::size_t files = compare_trees(source, mnt);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  say("mount -o {}: {} files compared in {} ms", opts, files, ms);
  if (files == 0) {
    fail("mount -o {}: no files compared", opts);
  }
  if (::umount(mnt.c_str()) != 0) {
    fail("umount {}: {}", mnt.string(), std::strerror(errno));
  }
}

// Failover: daemon A dies at its first blob READ with a reader blocked on it; daemon B takes
// over the same /dev/cachefiles fd with "restore". The kernel re-opens the objects A closed
// (new OPENs) and re-sends the READ A never answered, so the reader finishes with the right
// bytes.
void check_failover(int devfd, const std::string& fsid, const fs::path& image_dir,
                    const fs::path& source, const fs::path& mnt) {
  Server a(devfd, fsid, image_dir, /*crash_at_blob_read=*/true);
  a.start();
  int err = 0;
  const std::string opts = "fsid=" + fsid;
  if (!mount_erofs(mnt, opts, &err)) {
    fail("failover: mount -o {}: {}", opts, std::strerror(err));
    return;
  }
  std::atomic<bool> done{false};
  std::size_t files = 0;
  std::thread reader([&] {
    files = compare_trees(source, mnt);
    done = true;
  });
  for (int i = 0; i < 600 && !a.crashed(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!a.crashed()) {
    fail("failover: daemon A never saw a blob READ");
  }
  a.stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  say("failover: daemon A gone; reader {}", done ? "already finished" : "blocked, as expected");

  Server b(devfd, fsid, image_dir);
  if (const int rc = command(devfd, fscache::format_restore()); rc != 0) {
    fail("failover: 'restore': {}", std::strerror(-rc));
  }
  b.start();
  reader.join();
  say("failover: reader finished, {} files compared after restore; daemon B served {} READs", files,
      b.reads());
  if (files == 0 || b.reads() == 0) {
    fail("failover: nothing was read through daemon B");
  }
  if (::umount(mnt.c_str()) != 0) {
    fail("failover: umount: {}", std::strerror(errno));
  }
  for (int i = 0; i < 100 && b.live_objects() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (b.live_objects() != 0) {
    fail("failover: {} object(s) still open after umount", b.live_objects());
  }
  b.stop();
}

}  // namespace

int main(int argc, char** argv) {
  bool failover = false;
  if (argc > 1 && std::string_view(argv[1]) == "--failover") {
    failover = true;
    --argc;
    ++argv;
  }
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s [--failover] CACHE_DIR IMAGE_DIR SOURCE_DIR MNT\n", argv[0]);
    return 2;
  }
  const fs::path cache_dir = argv[1];
  const fs::path image_dir = argv[2];
  const fs::path source = argv[3];
  const fs::path mnt = argv[4];

  auto dev = base::UniqueFd::open("/dev/cachefiles", O_RDWR);
  if (!dev) {
    say("SKIP: {} (kernel without CONFIG_CACHEFILES?)", dev.error().to_string());
    return kExitSkip;
  }
  const int devfd = dev->get();

  // The blob ids the kernel should ask for: the bootstrap's device table.
  auto boot = base::read_file(image_dir / "image.boot");
  if (!boot) {
    say("FAIL: {}", boot.error().to_string());
    return 1;
  }
  auto image = erofs::Image::parse(*boot);
  if (!image) {
    say("FAIL: image.boot: {}", image.error().to_string());
    return 1;
  }
  std::set<std::string> blob_ids;
  for (const erofs::BlobInfo& b : image->blobs()) {
    blob_ids.insert(b.id);
  }
  say("image: {} blob(s)", blob_ids.size());

  // Session: dir, tag, bind ondemand; then the kernel's answers to a few wrong moves.
  if (auto second = base::UniqueFd::open("/dev/cachefiles", O_RDWR); second) {
    fail("a second open of /dev/cachefiles succeeded");
  } else if (second.error().code != EBUSY) {
    fail("second open: {} (want EBUSY)", second.error().to_string());
  }
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  for (const auto& cmd : {fscache::format_dir(cache_dir.string()), fscache::format_tag("vmtest")}) {
    if (!cmd) {
      fail("{}", cmd.error().to_string());
      return 1;
    }
    if (const int rc = command(devfd, *cmd); rc != 0) {
      fail("'{}': {}", *cmd, std::strerror(-rc));
      return 1;
    }
  }
  if (const int rc = command(devfd, fscache::format_bind_ondemand()); rc != 0) {
    fail("'bind ondemand': {}", std::strerror(-rc));
    return 1;
  }
  if (const int rc = command(devfd, fscache::format_bind_ondemand()); rc != -EBUSY) {
    fail("second bind: {} (want EBUSY)", std::strerror(-rc));
  }
  if (const int rc = command(devfd, *fscache::format_copen(123456, 4096)); rc != -EINVAL) {
    fail("copen for no request: {} (want EINVAL)", std::strerror(-rc));
  }
  say("bound on-demand cache in {}", cache_dir.string());

  const std::string fsid = "vmtest-image";
  std::error_code mkdir_ec;
  fs::create_directories(mnt, mkdir_ec);
  if (failover) {
    // "restore" on a bound cache with nothing in flight is a no-op where it exists.
    if (const int rc = command(devfd, fscache::format_restore()); rc == -EOPNOTSUPP) {
      say("SKIP: this kernel has no 'restore' command (Linux < 6.8 without the backport)");
      return kExitSkip;
    } else if (rc != 0) {
      fail("'restore' on an idle cache: {}", std::strerror(-rc));
    }
    check_failover(devfd, fsid, image_dir, source, mnt);
    dev->reset();
    if (g_failures != 0) {
      say("{} failure(s)", g_failures.load());
      return 1;
    }
    say("PASS");
    return 0;
  }
  Server server(devfd, fsid, image_dir);
  server.start();

  fs::create_directories(mnt, ec);
  check_mount(mnt, "fsid=" + fsid, source);
  check_mount(mnt, "domain_id=vmdomain,fsid=" + fsid, source);

  // An fsid the server does not know: copen -ENOENT, and the mount fails cleanly.
  int err = 0;
  if (mount_erofs(mnt, "fsid=no-such-image", &err)) {
    fail("mount of an unknown fsid succeeded");
    (void)::umount(mnt.c_str());
  } else {
    say("unknown fsid: mount failed with {} (expected)", std::strerror(err));
  }
  if (server.refused().count("no-such-image") == 0) {
    fail("the server never refused the unknown fsid");
  }

  // Every object we opened is closed by the kernel once nothing is mounted.
  for (int i = 0; i < 100 && server.live_objects() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (server.live_objects() != 0) {
    fail("{} object(s) still open after every umount", server.live_objects());
  }
  server.stop();

  std::set<std::string> want = blob_ids;
  want.insert(fsid);
  for (const std::string& c : want) {
    if (server.opened().count(c) == 0) {
      fail("no OPEN for cookie '{}'", c);
    }
  }
  if (server.reads() == 0) {
    fail("no READ requests");
  }
  say("served {} READs ({} bytes), {} CLOSEs, {} cookies", server.reads(), server.bytes(),
      server.closes(), server.opened().size());
  dev->reset();
  if (g_failures != 0) {
    say("{} failure(s)", g_failures.load());
    return 1;
  }
  say("PASS");
  return 0;
}
