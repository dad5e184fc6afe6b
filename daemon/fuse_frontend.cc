// SPDX-License-Identifier: Apache-2.0
#include "daemon/fuse_frontend.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "base/blocking_queue.h"
#include "base/file.h"
#include "base/log.h"

namespace cfnd {
namespace {

using fusewire::InitParams;
using fusewire::Request;

// The image never changes while mounted: let the kernel cache for a day.
constexpr std::uint64_t kTimeoutS = 86400;

// What INIT asks for. No write ever comes (the mount is read-only): max_write only
// bounds the buffer a request is read into, which must hold a header, a fuse_write_in
// and max_write bytes (or the kernel refuses the read(2) with EINVAL).
constexpr fusewire::InitWants kWants{};
constexpr std::size_t kRecvBufSize = kWants.max_write + 8192;

// A read whose data is not all in the cache yet: served by a fill worker, so the
// thread reading /dev/fuse never waits for the network.
struct FillJob {
  std::uint64_t unique = 0;
  erofs::Nid nid = 0;
  std::uint64_t off = 0;
  std::size_t len = 0;
};

int err_of(const base::Error& e) {
  return e.code > 0 ? e.code : EIO;
}

std::uint32_t erofs_ftype_to_dtype(std::uint8_t t) {
  switch (t) {
    case erofs::kFtRegFile:
      return DT_REG;
    case erofs::kFtDir:
      return DT_DIR;
    case erofs::kFtChrdev:
      return DT_CHR;
    case erofs::kFtBlkdev:
      return DT_BLK;
    case erofs::kFtFifo:
      return DT_FIFO;
    case erofs::kFtSock:
      return DT_SOCK;
    case erofs::kFtSymlink:
      return DT_LNK;
    default:
      return DT_UNKNOWN;
  }
}

// Zeros for the holes of a reply: never written (so it stays in .bss, backed by the
// zero page). A READ is at most kWants.max_pages pages.
alignas(4096) std::byte g_zeros[1U << 20];

// One piece of a read reply: memory (the bootstrap, zeros) or a cache file range.
struct Piece {
  const std::byte* mem = nullptr;  // null: fd
  int fd = -1;
  std::uint64_t pos = 0;
  std::size_t len = 0;
};

// A pipe of this thread for spliced replies (vmsplice/splice in, one splice out to
// /dev/fuse: the kernel takes a reply from a pipe only whole).
struct SplicePipe {
  base::UniqueFd r;
  base::UniqueFd w;
  std::size_t cap = 0;
  bool unusable = false;  // could not be made or grown: copy replies on this thread

  void reset() {
    r.reset();
    w.reset();
    cap = 0;
  }
  // A pipe that holds n bytes; false when there is none.
  bool ready(std::size_t n) {
    if (unusable) {
      return false;
    }
    if (!r) {
      int p[2];
      if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
        unusable = true;
        return false;
      }
      r.reset(p[0]);
      w.reset(p[1]);
      cap = static_cast<std::size_t>(std::max(::fcntl(w.get(), F_GETPIPE_SZ), 0));
    }
    if (cap < n) {
      const int got = ::fcntl(w.get(), F_SETPIPE_SZ, static_cast<int>(n));
      if (got < 0 || static_cast<std::size_t>(got) < n) {
        // Above /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE: copy instead.
        reset();
        unusable = true;
        return false;
      }
      cap = static_cast<std::size_t>(got);
    }
    return true;
  }
};

thread_local SplicePipe t_pipe;

// FUSE_ROOT_ID (1) is the root whatever its nid; every other nid n is n + 2, so no other
// nid can collide with 1 and the mapping is reversible. The same on every mount of the
// bootstrap: a restarted daemon reads the same node ids.
erofs::Nid to_nid(erofs::Nid root, std::uint64_t nodeid) {
  return nodeid == FUSE_ROOT_ID ? root : static_cast<erofs::Nid>(nodeid - 2);
}
std::uint64_t to_nodeid(erofs::Nid root, erofs::Nid nid) {
  return nid == root ? FUSE_ROOT_ID : static_cast<std::uint64_t>(nid) + 2;
}

class FuseMountImpl final : public FuseMount {
 public:
  FuseMountImpl(std::shared_ptr<BoundImage> image, std::string dir, base::UniqueFd dev,
                FuseOptions options)
      : image_(std::move(image)),
        root_(image_->image().root()),
        dir_(std::move(dir)),
        dev_(std::move(dev)),
        opts_(std::move(options)) {}

  ~FuseMountImpl() override { (void)unmount(true); }

  base::Status mount() {
    // The source is what /proc/mounts shows: the bootstrap (mount options need no
    // escaping there).
    const std::string opts =
        fmt::format("fd={},rootmode=40000,user_id={},group_id={},default_permissions,allow_other",
                    dev_.get(), ::getuid(), ::getgid());
    if (::mount(image_->bootstrap_path().c_str(), dir_.c_str(), "fuse.nydus",
                MS_RDONLY | MS_NOSUID | MS_NODEV, opts.c_str()) != 0) {
      return base::errno_error(errno, "fuse mount on " + dir_);
    }
    mounted_ = true;
    CFN_TRY(start_threads());
    // stat(2) of the root waits for the INIT reply the receiver sends; then the device
    // number names the connection.
    struct stat st {};
    const int r = ::stat(dir_.c_str(), &st);
    const int e = errno;
    if (!initialized_.load()) {
      return base::errorf(EPROTO, "fuse mount on {}: the kernel's INIT was not answered (see log)",
                          dir_);
    }
    if (r != 0) {
      return base::errno_error(e, "stat " + dir_);
    }
    conn_dev_ = st.st_dev;
    return {};
  }

  base::Status resume(const std::optional<InitParams>& init, dev_t conn_dev) {
    if (init) {
      init_ = *init;
      initialized_ = true;
    }
    mounted_ = true;
    conn_dev_ = conn_dev;
    CFN_TRY(start_threads());
    // Without INIT parameters (the dead daemon read the INIT and died before answering
    // it) the kernel is asked all the same: it re-sends that INIT when it can.
    if (!init || fusewire::can_resend(*init)) {
      const auto h = fusewire::resend_notification();
      if (::write(dev_.get(), &h, sizeof h) == static_cast<ssize_t>(sizeof h)) {
        resent_ = true;
      } else {
        spdlog::error("fuse: FUSE_NOTIFY_RESEND on {}: {}", dir_, std::strerror(errno));
      }
    }
    return {};
  }

  base::Status unmount(bool force) override {
    std::lock_guard lk(mu_);
    if (!dev_) {
      return {};  // unmounted already
    }
    // Unmounting aborts the connection: reads of /dev/fuse fail with ENODEV and the
    // receiver ends.
    if (mounted_ && ::umount2(dir_.c_str(), force ? MNT_DETACH : 0) != 0) {
      int e = errno;
      if (e != EINVAL || !force) {
        return base::errno_error(e, "umount " + dir_);
      }
    }
    mounted_ = false;
    if (force && conn_dev_ != 0) {
      // A detached mount with open files keeps the connection alive and the session
      // threads waiting: abort it so the threads end (its readers then get ENOTCONN).
      auto path = fmt::format("/sys/fs/fuse/connections/{}/abort", conn_dev_);
      int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd >= 0) {
        [[maybe_unused]] auto r = ::write(fd, "1", 1);
        ::close(fd);
      }
    }
    stop_threads();
    dev_.reset();
    return {};
  }

  dev_t conn_dev() const override { return conn_dev_; }
  int dev_fd() const override { return dev_.get(); }
  bool resent() const override { return resent_; }

 private:
  // One receiver thread reads /dev/fuse and answers every request that needs no
  // download at once (metadata from the bootstrap, reads of cached data); a read that
  // needs a fill goes to one of opts_.threads fill workers, so the receiver never waits
  // on the network. /dev/fuse is non-blocking: the receiver waits in epoll and, after
  // serving a request, keeps polling /dev/fuse for up to poll_us before it sleeps again.
  // A reader's next request is then picked up without a wakeup; the price is up to
  // poll_us of CPU after each burst of requests.
  base::Status start_threads() {
    const int fd = dev_.get();
    const int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
      return base::errno_error(errno, "fuse: O_NONBLOCK on /dev/fuse");
    }
    base::UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!efd) {
      return base::errno_error(errno, "fuse: eventfd");
    }
    base::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
    if (!ep) {
      return base::errno_error(errno, "fuse: epoll_create1");
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return base::errno_error(errno, "fuse: epoll_ctl /dev/fuse");
    }
    ev.data.fd = efd.get();
    if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, efd.get(), &ev) != 0) {
      return base::errno_error(errno, "fuse: epoll_ctl eventfd");
    }
    stop_ = std::move(efd);
    for (unsigned i = 0; i < std::max(opts_.threads, 1U); ++i) {
      fillers_.emplace_back([this] {
        FillJob j;
        while (fills_.pop(j)) {
          serve_read(j, /*may_fill=*/true);
        }
      });
    }
    receivers_.emplace_back([this, ep = std::move(ep)] { receive(ep.get()); });
    return {};
  }

  void stop_threads() {
    wake_receivers();
    for (auto& t : receivers_) {
      t.join();
    }
    receivers_.clear();
    fills_.close();  // the fill workers answer what is queued, then end
    for (auto& t : fillers_) {
      t.join();
    }
    fillers_.clear();
  }

  // Make the stop eventfd readable: the receiver's epoll_wait returns.
  void wake_receivers() {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto w = ::write(stop_.get(), &one, sizeof one);
  }

  void receive(int ep) {
    std::vector<std::byte> buf(kRecvBufSize);
    const auto spin = std::chrono::microseconds(opts_.poll_us);
    std::chrono::steady_clock::time_point poll_until{};  // past: sleep when idle
    for (;;) {
      const ssize_t n = ::read(dev_.get(), buf.data(), buf.size());
      if (n > 0) {
        handle(std::span<const std::byte>(buf.data(), static_cast<std::size_t>(n)));
        if (opts_.poll_us > 0) {
          poll_until = std::chrono::steady_clock::now() + spin;
        }
        continue;
      }
      const int e = n == 0 ? ENODEV : errno;
      // ENOENT: the request was interrupted and dropped before this read got it.
      if (e == EINTR || e == ENOENT ||
          (e == EAGAIN && std::chrono::steady_clock::now() < poll_until)) {
        continue;
      }
      if (e == EAGAIN) {
        epoll_event ev{};
        if (::epoll_wait(ep, &ev, 1, -1) < 0 && errno != EINTR) {
          spdlog::warn("fuse: epoll_wait on {}: {}", dir_, std::strerror(errno));
          break;
        }
        if (ev.data.fd == stop_.get()) {
          break;
        }
        continue;
      }
      if (e != ENODEV) {  // ENODEV: the connection ended (unmounted or aborted)
        spdlog::warn("fuse: reading /dev/fuse for {}: {}", dir_, std::strerror(e));
      }
      break;
    }
  }

  // ---- replies ----

  // One reply: the header and payload in one write. ENOENT (the request was
  // interrupted and is gone) is normal.
  void send(std::uint64_t unique, int err, std::span<const iovec> payload) {
    std::size_t len = 0;
    for (const auto& v : payload) {
      len += v.iov_len;
    }
    const auto h = fusewire::reply_header(unique, err, len);
    std::vector<iovec> iov;
    iov.reserve(payload.size() + 1);
    iov.push_back({const_cast<fuse_out_header*>(&h), sizeof h});
    iov.insert(iov.end(), payload.begin(), payload.end());
    if (::writev(dev_.get(), iov.data(), static_cast<int>(iov.size())) < 0) {
      reply_failed(errno);
    }
  }

  void reply_failed(int e) {
    if (e != ENOENT && e != ENODEV) {
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::warn("fuse: writing a reply to /dev/fuse for {}: {}", dir_, std::strerror(e));
      }
    }
  }

  void reply_err(std::uint64_t unique, int err) { send(unique, err, {}); }

  template <typename T>
  void reply(std::uint64_t unique, const T& out, std::size_t size = sizeof(T)) {
    iovec v{const_cast<T*>(&out), size};
    send(unique, 0, std::span<const iovec>(&v, 1));
  }

  void reply_bytes(std::uint64_t unique, const void* p, std::size_t n) {
    iovec v{const_cast<void*>(p), n};
    send(unique, 0, std::span<const iovec>(&v, n == 0 ? 0 : 1));
  }

  // ---- attributes ----

  base::Result<fuse_attr> make_attr(erofs::Nid nid) const {
    CFN_ASSIGN_OR_RETURN(auto in, image_->image().stat(nid));
    fuse_attr a{};
    a.ino = to_nodeid(root_, nid);
    a.mode = in.mode;
    a.nlink = in.nlink;
    a.uid = in.uid;
    a.gid = in.gid;
    a.size = in.size;
    a.rdev =
        static_cast<std::uint32_t>(makedev(erofs::rdev_major(in.rdev), erofs::rdev_minor(in.rdev)));
    a.blksize = static_cast<std::uint32_t>(image_->image().block_size());
    a.blocks = (in.size + 511) / 512;
    a.mtime = in.mtime;
    a.mtimensec = in.mtime_nsec;
    a.ctime = a.mtime;
    a.ctimensec = a.mtimensec;
    a.atime = a.mtime;
    a.atimensec = a.mtimensec;
    return a;
  }

  base::Result<fuse_entry_out> make_entry(erofs::Nid nid) const {
    CFN_ASSIGN_OR_RETURN(auto attr, make_attr(nid));
    fuse_entry_out e{};
    e.nodeid = attr.ino;
    e.generation = 1;
    e.entry_valid = kTimeoutS;
    e.attr_valid = kTimeoutS;
    e.attr = attr;
    return e;
  }

  // ---- requests ----

  void handle(std::span<const std::byte> bytes) {
    auto req = fusewire::parse_request(bytes);
    if (!req) {
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::error("fuse: {} on {}", req.error().to_string(), dir_);
      }
      if (bytes.size() >= sizeof(fuse_in_header)) {
        fuse_in_header h{};
        std::memcpy(&h, bytes.data(), sizeof h);
        reply_err(h.unique, EIO);
      }
      return;
    }
    const Request& r = *req;
    const std::uint64_t unique = r.header.unique;
    const auto op = static_cast<fuse_opcode>(r.header.opcode);
    if (op == FUSE_INIT) {
      // Also on a resumed session: the dead daemon may have died between recording
      // its INIT answer and sending it, and the kernel re-sent the INIT.
      return on_init(r);
    }
    if (op == FUSE_FORGET || op == FUSE_BATCH_FORGET) {
      return;  // node ids are nids: nothing to release, and no reply is expected
    }
    if (!initialized_.load(std::memory_order_acquire)) {
      return reply_err(unique, EIO);
    }
    const erofs::Nid nid = to_nid(root_, r.header.nodeid);
    switch (op) {
      case FUSE_LOOKUP:
        return on_lookup(r, nid);
      case FUSE_GETATTR:
        return on_getattr(r, nid);
      case FUSE_READLINK:
        return on_readlink(r, nid);
      case FUSE_OPEN:
        return on_open(r, nid, /*dir=*/false);
      case FUSE_OPENDIR:
        return on_open(r, nid, /*dir=*/true);
      case FUSE_READ:
        return on_read(r, nid);
      case FUSE_READDIR:
        return on_readdir(r, nid, /*plus=*/false);
      case FUSE_READDIRPLUS:
        return on_readdir(r, nid, /*plus=*/true);
      case FUSE_RELEASE:
      case FUSE_RELEASEDIR:
      case FUSE_DESTROY:
        return reply_err(unique, 0);  // handles are 0: nothing to release
      case FUSE_STATFS:
        return on_statfs(r);
      case FUSE_GETXATTR:
        return on_getxattr(r, nid);
      case FUSE_LISTXATTR:
        return on_listxattr(r, nid);
      case FUSE_INTERRUPT:
        // ENOSYS to an interrupt: the kernel stops sending them and waits for the
        // answer of the interrupted request, which always comes.
        return reply_err(unique, ENOSYS);
      case FUSE_SETATTR:
      case FUSE_SYMLINK:
      case FUSE_MKNOD:
      case FUSE_MKDIR:
      case FUSE_UNLINK:
      case FUSE_RMDIR:
      case FUSE_RENAME:
      case FUSE_RENAME2:
      case FUSE_LINK:
      case FUSE_WRITE:
      case FUSE_SETXATTR:
      case FUSE_REMOVEXATTR:
      case FUSE_CREATE:
      case FUSE_FALLOCATE:
      case FUSE_COPY_FILE_RANGE:
        return reply_err(unique, EROFS);
      default:
        // FLUSH, FSYNC, ACCESS, LSEEK, locks, ioctl, poll...: the kernel does without.
        return reply_err(unique, ENOSYS);
    }
  }

  void on_init(const Request& r) {
    auto rep = fusewire::negotiate_init(r, kWants);
    if (!rep) {
      spdlog::error("fuse: {} on {}", rep.error().to_string(), dir_);
      return reply_err(r.header.unique, err_of(rep.error()));
    }
    const bool again = initialized_.load();
    init_ = rep->params;
    // Recorded before the answer goes out: a successor never waits for an INIT that
    // was answered.
    if (!again && opts_.on_init) {
      opts_.on_init(init_);
    }
    initialized_.store(true, std::memory_order_release);
    reply(r.header.unique, rep->out, rep->size);
  }

  void on_lookup(const Request& r, erofs::Nid parent) {
    auto name = fusewire::name_arg(r, 0);
    if (!name) {
      return reply_err(r.header.unique, EINVAL);
    }
    auto nid = image_->image().lookup(parent, *name);
    if (!nid) {
      return reply_err(r.header.unique, err_of(nid.error()));
    }
    auto e = make_entry(*nid);
    if (!e) {
      return reply_err(r.header.unique, err_of(e.error()));
    }
    reply(r.header.unique, *e);
  }

  void on_getattr(const Request& r, erofs::Nid nid) {
    auto a = make_attr(nid);
    if (!a) {
      return reply_err(r.header.unique, err_of(a.error()));
    }
    fuse_attr_out out{};
    out.attr_valid = kTimeoutS;
    out.attr = *a;
    reply(r.header.unique, out);
  }

  void on_readlink(const Request& r, erofs::Nid nid) {
    auto target = image_->image().readlink(nid);
    if (!target) {
      return reply_err(r.header.unique, err_of(target.error()));
    }
    reply_bytes(r.header.unique, target->data(), target->size());
  }

  void on_open(const Request& r, erofs::Nid nid, bool dir) {
    auto in = fusewire::fixed_arg<fuse_open_in>(r);
    if (!in) {
      return reply_err(r.header.unique, EINVAL);
    }
    if (!dir && (in->flags & O_ACCMODE) != O_RDONLY) {
      return reply_err(r.header.unique, EROFS);
    }
    auto st = image_->image().stat(nid);
    if (!st) {
      return reply_err(r.header.unique, err_of(st.error()));
    }
    if (S_ISDIR(st->mode) != dir) {
      return reply_err(r.header.unique, dir ? ENOTDIR : EISDIR);
    }
    fuse_open_out out{};
    out.fh = 0;  // stateless: a restarted daemon serves the same handle
    // Immutable: cached pages (and a directory's cached entries) stay valid.
    out.open_flags = FOPEN_KEEP_CACHE | (dir ? FOPEN_CACHE_DIR : 0);
    reply(r.header.unique, out);
  }

  void on_statfs(const Request& r) {
    fuse_statfs_out out{};
    const auto bs = image_->image().block_size();
    std::uint64_t bytes = image_->image().bytes().size();
    for (const auto& b : image_->blobs()) {
      bytes += b->size();
    }
    out.st.bsize = static_cast<std::uint32_t>(bs);
    out.st.frsize = static_cast<std::uint32_t>(bs);
    out.st.blocks = (bytes + bs - 1) / bs;
    out.st.namelen = 255;
    reply(r.header.unique, out);
  }

  // GETXATTR and LISTXATTR: the size asked 0 means "how big", else the value or ERANGE.
  void reply_xattr(std::uint64_t unique, std::uint32_t size, const std::string& value) {
    if (size == 0) {
      fuse_getxattr_out out{};
      out.size = static_cast<std::uint32_t>(value.size());
      return reply(unique, out);
    }
    if (size < value.size()) {
      return reply_err(unique, ERANGE);
    }
    reply_bytes(unique, value.data(), value.size());
  }

  void on_getxattr(const Request& r, erofs::Nid nid) {
    auto in = fusewire::fixed_arg<fuse_getxattr_in>(r);
    auto name = fusewire::name_arg(r, sizeof(fuse_getxattr_in));
    if (!in || !name) {
      return reply_err(r.header.unique, EINVAL);
    }
    auto v = image_->image().getxattr(nid, *name);
    if (!v) {
      return reply_err(r.header.unique, err_of(v.error()));
    }
    reply_xattr(r.header.unique, in->size, *v);
  }

  void on_listxattr(const Request& r, erofs::Nid nid) {
    auto in = fusewire::fixed_arg<fuse_getxattr_in>(r);
    if (!in) {
      return reply_err(r.header.unique, EINVAL);
    }
    auto xs = image_->image().xattrs(nid);
    if (!xs) {
      return reply_err(r.header.unique, err_of(xs.error()));
    }
    std::string list;
    for (const auto& x : *xs) {
      list += x.name;
      list.push_back('\0');
    }
    reply_xattr(r.header.unique, in->size, list);
  }

  // READDIR(PLUS) reads the directory from the bootstrap each time (no handle state);
  // the offset is the index of the next entry (each entry carries index + 1).
  void on_readdir(const Request& r, erofs::Nid nid, bool plus) {
    auto in = fusewire::fixed_arg<fuse_read_in>(r);
    if (!in) {
      return reply_err(r.header.unique, EINVAL);
    }
    auto entries = image_->image().readdir(nid);
    if (!entries) {
      return reply_err(r.header.unique, err_of(entries.error()));
    }
    const std::size_t size = std::min<std::size_t>(in->size, kWants.max_pages * 4096U);
    std::vector<std::byte> buf(size);
    std::size_t used = 0;
    for (std::uint64_t i = in->offset; i < entries->size(); ++i) {
      const auto& de = (*entries)[i];
      const auto type = static_cast<std::uint32_t>(erofs_ftype_to_dtype(de.file_type));
      std::size_t n;
      if (plus) {
        fuse_entry_out e{};
        auto a = make_attr(de.nid);
        if (!a) {
          return reply_err(r.header.unique, err_of(a.error()));
        }
        e.attr = *a;
        if (de.name != "." && de.name != "..") {
          e.nodeid = a->ino;  // node id 0 for the dots: the kernel looks nothing up
          e.generation = 1;
          e.entry_valid = kTimeoutS;
          e.attr_valid = kTimeoutS;
        }
        n = fusewire::add_direntplus(buf, used, e, i + 1, type, de.name);
      } else {
        n = fusewire::add_dirent(buf, used, to_nodeid(root_, de.nid), i + 1, type, de.name);
      }
      if (n == 0) {
        break;  // does not fit; the kernel asks again from this entry
      }
      used += n;
    }
    reply_bytes(r.header.unique, buf.data(), used);
  }

  // ---- reads ----

  void on_read(const Request& r, erofs::Nid nid) {
    auto in = fusewire::fixed_arg<fuse_read_in>(r);
    if (!in) {
      return reply_err(r.header.unique, EINVAL);
    }
    auto st = image_->image().stat(nid);
    if (!st) {
      return reply_err(r.header.unique, err_of(st.error()));
    }
    if (in->offset >= st->size) {
      return reply_bytes(r.header.unique, nullptr, 0);
    }
    const std::size_t cap = kWants.max_pages * 4096U;
    const FillJob j{r.header.unique, nid, in->offset,
                    static_cast<std::size_t>(std::min<std::uint64_t>(
                        std::min<std::uint64_t>(in->size, cap), st->size - in->offset))};
    serve_read(j, /*may_fill=*/false);
  }

  // Answer a read, or (without may_fill, when some of it is not cached) queue it for
  // a fill worker.
  void serve_read(const FillJob& j, bool may_fill) {
    std::vector<Piece> pieces;
    auto st = read_pieces(j.nid, j.off, j.len, may_fill, pieces);
    if (!st && st.error().code == EAGAIN && !may_fill) {
      fills_.push(j);
      return;
    }
    if (!st) {
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::error("fuse: read nid {} [{}, +{}): {}", j.nid, j.off, j.len,
                      st.error().to_string());
      }
      return reply_err(j.unique, EIO);  // never a zero where data belongs
    }
    send_read(j.unique, pieces, j.len);
  }

  // The reply for [off, off+len) of a file, as pieces: blob extents are filled in the
  // cache, then named by (cache fd, offset) so they are spliced from the cache file's
  // page cache into /dev/fuse; bootstrap extents point into the bootstrap, holes at
  // zeros. Every byte of the range is covered, or an error. Without may_fill, a blob
  // extent that is not all in the cache is EAGAIN (nothing filled).
  base::Status read_pieces(erofs::Nid nid, std::uint64_t off, std::uint64_t len, bool may_fill,
                           std::vector<Piece>& out) const {
    const auto& img = image_->image();
    CFN_ASSIGN_OR_RETURN(auto extents, img.map(nid, off, len));
    std::uint64_t pos = off;  // next file byte to cover
    auto zeros = [&](std::uint64_t n) {
      while (n > 0) {
        const std::uint64_t k = std::min<std::uint64_t>(n, sizeof g_zeros);
        out.push_back(Piece{g_zeros, -1, 0, static_cast<std::size_t>(k)});
        n -= k;
      }
    };
    for (const auto& e : extents) {
      if (e.file_offset < pos || e.file_offset - off > len ||
          e.length > len - (e.file_offset - off)) {
        return base::errorf(EIO, "nid {}: extent outside the read", nid);
      }
      zeros(e.file_offset - pos);  // a gap reads as a hole, as EROFS would
      pos = e.file_offset + e.length;
      if (e.length == 0) {
        continue;
      }
      switch (e.kind) {
        case erofs::Extent::Kind::kHole:
          zeros(e.length);
          break;
        case erofs::Extent::Kind::kBootstrap: {
          auto b = img.bytes();
          if (!base::in_bounds(e.offset, e.length, b.size())) {
            return base::errorf(EIO, "nid {}: inline data outside the bootstrap", nid);
          }
          out.push_back(Piece{b.data() + e.offset, -1, 0, static_cast<std::size_t>(e.length)});
          break;
        }
        case erofs::Extent::Kind::kBlob: {
          const auto& blobs = image_->blobs();
          if (e.blob_index >= blobs.size()) {
            return base::errorf(EIO, "nid {}: extent names blob {}", nid, e.blob_index);
          }
          const auto& blob = blobs[e.blob_index];
          // A short read of the cache file must never become zeros: stay inside it.
          if (!base::in_bounds(e.offset, e.length, blob->size())) {
            return base::errorf(EIO, "nid {}: extent outside blob {}", nid, blob->info().id);
          }
          if (!blob->ready(e.offset, e.length)) {
            if (!may_fill) {
              return base::make_error(EAGAIN, "not cached");
            }
            CFN_TRY(blob->fill(e.offset, e.length));
          }
          out.push_back(Piece{nullptr, blob->fd(), e.offset, static_cast<std::size_t>(e.length)});
          break;
        }
      }
    }
    if (pos > off + len) {
      return base::errorf(EIO, "nid {}: extent outside the read", nid);
    }
    zeros(off + len - pos);
    return {};
  }

  // Send a read reply: spliced (header and memory pieces vmspliced, file pieces spliced
  // into this thread's pipe, then the whole message spliced into /dev/fuse: no copy of
  // cache file bytes through our memory), or copied when a pipe cannot take it.
  void send_read(std::uint64_t unique, const std::vector<Piece>& pieces, std::size_t len) {
    const bool has_fd =
        std::any_of(pieces.begin(), pieces.end(), [](const Piece& p) { return p.mem == nullptr; });
    if (has_fd) {
      const int r = send_spliced(unique, pieces, len);
      if (r == 0) {
        return;
      }
      if (r != EAGAIN) {
        return reply_failed(r);  // /dev/fuse refused the message: it was not a pipe issue
      }
    }
    send_copied(unique, pieces, len);
  }

  // 0 when sent; EAGAIN when the pipe could not take the message (nothing was sent to
  // /dev/fuse: copy instead); else the errno of the final splice into /dev/fuse.
  int send_spliced(std::uint64_t unique, const std::vector<Piece>& pieces, std::size_t len) {
    auto h = fusewire::reply_header(unique, 0, len);
    const std::size_t total = sizeof h + len;
    SplicePipe& p = t_pipe;
    if (!p.ready(total)) {
      return EAGAIN;
    }
    auto fill = [&]() -> bool {
      if (::write(p.w.get(), &h, sizeof h) != static_cast<ssize_t>(sizeof h)) {
        return false;
      }
      for (const auto& pc : pieces) {
        std::size_t done = 0;
        while (done < pc.len) {
          ssize_t n;
          if (pc.mem != nullptr) {
            // Only immutable memory is vmspliced (the bootstrap, zeros): the pipe
            // refers to its pages until the splice below copies them.
            iovec v{const_cast<std::byte*>(pc.mem + done), pc.len - done};
            n = ::vmsplice(p.w.get(), &v, 1, SPLICE_F_NONBLOCK);
          } else {
            auto pos = static_cast<loff_t>(pc.pos + done);
            n = ::splice(pc.fd, &pos, p.w.get(), nullptr, pc.len - done, SPLICE_F_NONBLOCK);
          }
          if (n <= 0) {
            return false;  // 0: the cache file ended early (the copy path says EIO)
          }
          done += static_cast<std::size_t>(n);
        }
      }
      return true;
    };
    if (!fill()) {
      p.reset();  // drop what is in it
      return EAGAIN;
    }
    const ssize_t n = ::splice(p.r.get(), nullptr, dev_.get(), nullptr, total, 0);
    if (n == static_cast<ssize_t>(total)) {
      return 0;
    }
    const int e = n < 0 ? errno : EIO;
    p.reset();  // whatever the kernel left in it
    return e;
  }

  void send_copied(std::uint64_t unique, const std::vector<Piece>& pieces, std::size_t len) {
    thread_local std::vector<std::byte> buf;
    buf.resize(len);
    std::size_t at = 0;
    for (const auto& pc : pieces) {
      if (pc.mem != nullptr) {
        std::memcpy(buf.data() + at, pc.mem, pc.len);
      } else {
        auto st = base::pread_full(pc.fd, std::span<std::byte>(buf.data() + at, pc.len), pc.pos);
        if (!st) {
          static base::RateLimit rl;
          if (rl.allow()) {
            spdlog::error("fuse: reading a cache file for {}: {}", dir_, st.error().to_string());
          }
          return reply_err(unique, EIO);
        }
      }
      at += pc.len;
    }
    reply_bytes(unique, buf.data(), len);
  }

  std::mutex mu_;                      // unmount
  std::shared_ptr<BoundImage> image_;  // shared with the service's bound list
  erofs::Nid root_ = 0;
  std::string dir_;
  base::UniqueFd dev_;
  FuseOptions opts_;
  InitParams init_;  // written by the receiver thread only (INIT)
  std::atomic<bool> initialized_{false};
  bool mounted_ = false;
  bool resent_ = false;
  dev_t conn_dev_ = 0;
  base::UniqueFd stop_;  // eventfd: made readable to end the receiver
  std::vector<std::thread> receivers_;
  base::BlockingQueue<FillJob> fills_;
  std::vector<std::thread> fillers_;
};

}  // namespace

base::Result<base::UniqueFd> FuseMount::open_device() {
  return base::UniqueFd::open("/dev/fuse", O_RDWR);
}

base::Result<std::unique_ptr<FuseMount>> FuseMount::start(std::shared_ptr<BoundImage> image,
                                                          const std::string& dir,
                                                          base::UniqueFd dev, FuseOptions options) {
  auto m =
      std::make_unique<FuseMountImpl>(std::move(image), dir, std::move(dev), std::move(options));
  CFN_TRY(m->mount());
  return m;
}

base::Result<std::unique_ptr<FuseMount>> FuseMount::resume(
    std::shared_ptr<BoundImage> image, const std::string& dir, base::UniqueFd dev,
    const std::optional<fusewire::InitParams>& init, dev_t conn_dev, FuseOptions options) {
  auto m =
      std::make_unique<FuseMountImpl>(std::move(image), dir, std::move(dev), std::move(options));
  CFN_TRY(m->resume(init, conn_dev));
  return m;
}

}  // namespace cfnd
