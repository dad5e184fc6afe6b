// SPDX-License-Identifier: Apache-2.0
#define FUSE_USE_VERSION 34
#include "daemon/fuse_frontend.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "base/blocking_queue.h"
#include "base/file.h"
#include "base/log.h"

namespace cfnd {
namespace {

// The image never changes while mounted: let the kernel cache for a day.
constexpr double kTimeout = 86400.0;

// A read whose data is not all in the cache yet: served by a fill worker, so the
// threads reading /dev/fuse never wait for the network.
struct FillJob {
  fuse_req_t req = nullptr;
  erofs::Nid nid = 0;
  std::uint64_t off = 0;
  std::size_t len = 0;
};

struct Ctx {
  std::shared_ptr<BoundImage> image;
  erofs::Nid root = 0;
  base::BlockingQueue<FillJob>* fills = nullptr;
};

Ctx& ctx(fuse_req_t req) {
  return *static_cast<Ctx*>(fuse_req_userdata(req));
}

// FUSE_ROOT_ID (1) is the root whatever its nid; every other nid n is n + 2, so no other
// nid can collide with 1 and the mapping is reversible.
erofs::Nid to_nid(const Ctx& c, fuse_ino_t ino) {
  return ino == FUSE_ROOT_ID ? c.root : static_cast<erofs::Nid>(ino - 2);
}
fuse_ino_t to_ino(const Ctx& c, erofs::Nid nid) {
  return nid == c.root ? FUSE_ROOT_ID : static_cast<fuse_ino_t>(nid + 2);
}

mode_t erofs_ftype_to_mode(std::uint8_t t) {
  switch (t) {
    case erofs::kFtRegFile:
      return S_IFREG;
    case erofs::kFtDir:
      return S_IFDIR;
    case erofs::kFtChrdev:
      return S_IFCHR;
    case erofs::kFtBlkdev:
      return S_IFBLK;
    case erofs::kFtFifo:
      return S_IFIFO;
    case erofs::kFtSock:
      return S_IFSOCK;
    case erofs::kFtSymlink:
      return S_IFLNK;
    default:
      return 0;
  }
}

int err_of(const base::Error& e) {
  return e.code > 0 ? e.code : EIO;
}

base::Result<struct stat> make_stat(const Ctx& c, erofs::Nid nid) {
  CFN_ASSIGN_OR_RETURN(auto in, c.image->image().stat(nid));
  struct stat st {};
  st.st_ino = to_ino(c, nid);
  st.st_mode = in.mode;
  st.st_nlink = in.nlink;
  st.st_uid = in.uid;
  st.st_gid = in.gid;
  st.st_size = static_cast<off_t>(in.size);
  st.st_rdev = makedev(erofs::rdev_major(in.rdev), erofs::rdev_minor(in.rdev));
  st.st_blksize = static_cast<blksize_t>(c.image->image().block_size());
  st.st_blocks = static_cast<blkcnt_t>((in.size + 511) / 512);
  st.st_mtim.tv_sec = in.mtime;
  st.st_mtim.tv_nsec = in.mtime_nsec;
  st.st_ctim = st.st_mtim;
  st.st_atim = st.st_mtim;
  return st;
}

void reply_entry(fuse_req_t req, erofs::Nid nid) {
  auto& c = ctx(req);
  auto st = make_stat(c, nid);
  if (!st) {
    fuse_reply_err(req, err_of(st.error()));
    return;
  }
  fuse_entry_param e{};
  e.ino = st->st_ino;
  e.generation = 1;
  e.attr = *st;
  e.attr_timeout = kTimeout;
  e.entry_timeout = kTimeout;
  fuse_reply_entry(req, &e);
}

void op_init(void* userdata, fuse_conn_info* conn) {
  (void)userdata;
  // ACL xattrs are served like any other; with posix_acl the kernel asks us for them
  // (without it, getxattr of system.posix_acl_* fails EOPNOTSUPP for every file).
  if ((conn->capable & FUSE_CAP_POSIX_ACL) != 0) {
    conn->want |= FUSE_CAP_POSIX_ACL;
  }
  conn->max_readahead = std::max(conn->max_readahead, 1U << 20);
  // Replies of reads are spliced from the cache files (op_read). Not SPLICE_MOVE: a
  // page stolen from a cache file's page cache would leave that file.
  if ((conn->capable & FUSE_CAP_SPLICE_WRITE) != 0) {
    conn->want |= FUSE_CAP_SPLICE_WRITE;
  }
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto& c = ctx(req);
  auto nid = c.image->image().lookup(to_nid(c, parent), name);
  if (!nid) {
    fuse_reply_err(req, err_of(nid.error()));
    return;
  }
  reply_entry(req, *nid);
}

void op_forget(fuse_req_t req, fuse_ino_t, uint64_t) {
  fuse_reply_none(req);  // inodes are nids: nothing to release
}

void op_forget_multi(fuse_req_t req, size_t, fuse_forget_data*) {
  fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  auto& c = ctx(req);
  auto st = make_stat(c, to_nid(c, ino));
  if (!st) {
    fuse_reply_err(req, err_of(st.error()));
    return;
  }
  fuse_reply_attr(req, &*st, kTimeout);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  auto& c = ctx(req);
  auto target = c.image->image().readlink(to_nid(c, ino));
  if (!target) {
    fuse_reply_err(req, err_of(target.error()));
    return;
  }
  fuse_reply_readlink(req, target->c_str());
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto& c = ctx(req);
  if ((fi->flags & O_ACCMODE) != O_RDONLY) {
    fuse_reply_err(req, EROFS);
    return;
  }
  auto in = c.image->image().stat(to_nid(c, ino));
  if (!in) {
    fuse_reply_err(req, err_of(in.error()));
    return;
  }
  if (S_ISDIR(in->mode)) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  fi->keep_cache = 1;  // immutable: cached pages stay valid across opens
  fuse_reply_open(req, fi);
}

// Zeros for the holes of a reply: never written (so it stays in .bss, backed by the
// zero page). A FUSE read is at most max_pages (256 with libfuse 3.14) pages.
alignas(4096) std::byte g_zeros[1U << 20];

// A fuse_bufvec of up to n buffers (the struct ends in a one-element array).
class BufVec {
 public:
  explicit BufVec(std::size_t n)
      : mem_((sizeof(fuse_bufvec) + n * sizeof(fuse_buf) + sizeof(std::max_align_t) - 1) /
             sizeof(std::max_align_t)),
        cap_(n) {
    vec_ = new (mem_.data()) fuse_bufvec{};
    bufs_ = reinterpret_cast<fuse_buf*>(reinterpret_cast<char*>(vec_) + offsetof(fuse_bufvec, buf));
  }
  // True when an add found no room (the reply would be incomplete: answer EIO).
  [[nodiscard]] bool overflowed() const { return overflowed_; }
  void add_mem(const void* p, std::size_t len) {
    if (fuse_buf* b = add(len)) {
      b->mem = const_cast<void*>(p);  // only read: a reply's source
    }
  }
  void add_fd(int fd, std::uint64_t pos, std::size_t len) {
    if (fuse_buf* b = add(len)) {
      b->flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
      b->fd = fd;
      b->pos = static_cast<off_t>(pos);
    }
  }
  fuse_bufvec* get() { return vec_; }

 private:
  // The next buffer, cleared, of len bytes; nullptr (and overflowed) when full.
  fuse_buf* add(std::size_t len) {
    if (vec_->count == cap_) {
      overflowed_ = true;
      return nullptr;
    }
    fuse_buf& b = bufs_[vec_->count++];
    b = fuse_buf{};
    b.size = len;
    return &b;
  }
  std::vector<std::max_align_t> mem_;
  std::size_t cap_;
  fuse_bufvec* vec_;
  fuse_buf* bufs_;
  bool overflowed_ = false;
};

// The reply for [off, off+len) of a file, as buffers: blob extents are filled in the
// cache, then named by (cache fd, offset) so libfuse splices them from the cache file's
// page cache into /dev/fuse (no copy through our memory; FUSE_CAP_SPLICE_WRITE, else
// libfuse reads them itself); bootstrap extents point into the bootstrap, holes at
// zeros. Every byte of the range is covered, or an error. Without may_fill, a blob
// extent that is not all in the cache is EAGAIN (nothing filled).
base::Status read_bufs(const Ctx& c, erofs::Nid nid, std::uint64_t off, std::uint64_t len,
                       bool may_fill, std::unique_ptr<BufVec>& out) {
  const auto& img = c.image->image();
  CFN_ASSIGN_OR_RETURN(auto extents, img.map(nid, off, len));
  // Each extent, a hole before it and one after the last, plus the pieces holes are
  // cut into (sizeof g_zeros each).
  out = std::make_unique<BufVec>(2 * extents.size() + 2 + len / sizeof g_zeros);
  auto& v = *out;
  std::uint64_t pos = off;  // next file byte to cover
  auto zeros = [&](std::uint64_t n) {
    while (n > 0) {
      const std::uint64_t k = std::min<std::uint64_t>(n, sizeof g_zeros);
      v.add_mem(g_zeros, k);
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
        v.add_mem(b.data() + e.offset, e.length);
        break;
      }
      case erofs::Extent::Kind::kBlob: {
        const auto& blobs = c.image->blobs();
        if (e.blob_index >= blobs.size()) {
          return base::errorf(EIO, "nid {}: extent names blob {}", nid, e.blob_index);
        }
        const auto& blob = blobs[e.blob_index];
        // libfuse pads a short read of the cache file with zeros: never let one happen.
        if (!base::in_bounds(e.offset, e.length, blob->size())) {
          return base::errorf(EIO, "nid {}: extent outside blob {}", nid, blob->info().id);
        }
        if (!blob->ready(e.offset, e.length)) {
          if (!may_fill) {
            return base::make_error(EAGAIN, "not cached");
          }
          CFN_TRY(blob->fill(e.offset, e.length));
        }
        v.add_fd(blob->fd(), e.offset, e.length);
        break;
      }
    }
  }
  if (pos > off + len) {
    return base::errorf(EIO, "nid {}: extent outside the read", nid);
  }
  zeros(off + len - pos);
  if (v.overflowed()) {
    return base::errorf(EIO, "nid {}: {} extents in one read", nid, extents.size());
  }
  return {};
}

// Reply to a read with its buffers, or EIO when st failed: never a zero where data
// belongs.
void reply_read(fuse_req_t req, erofs::Nid nid, std::uint64_t off, std::size_t n,
                const base::Status& st, BufVec* bufs) {
  if (!st) {
    static std::atomic<long> last{0};
    long now = static_cast<long>(::time(nullptr));
    if (last.exchange(now) != now) {
      spdlog::error("fuse: read nid {} [{}, +{}): {}", nid, off, n, st.error().to_string());
    }
    fuse_reply_err(req, EIO);
    return;
  }
  // A failure to read the cache file is answered with its errno by libfuse itself.
  fuse_reply_data(req, bufs->get(), static_cast<fuse_buf_copy_flags>(0));
}

void serve_fill(const Ctx& c, const FillJob& j) {
  std::unique_ptr<BufVec> bufs;
  auto st = read_bufs(c, j.nid, j.off, j.len, /*may_fill=*/true, bufs);
  reply_read(j.req, j.nid, j.off, j.len, st, bufs.get());
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  auto& c = ctx(req);
  const auto nid = to_nid(c, ino);
  auto in = c.image->image().stat(nid);
  if (!in) {
    fuse_reply_err(req, err_of(in.error()));
    return;
  }
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  auto uoff = static_cast<std::uint64_t>(off);
  if (uoff >= in->size) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(size, in->size - uoff));
  std::unique_ptr<BufVec> bufs;
  auto st = read_bufs(c, nid, uoff, n, /*may_fill=*/false, bufs);
  if (!st && st.error().code == EAGAIN) {
    c.fills->push(FillJob{req, nid, uoff, n});
    return;
  }
  reply_read(req, nid, uoff, n, st, bufs.get());
}

struct DirHandle {
  std::vector<erofs::DirEntry> entries;
};

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto& c = ctx(req);
  auto entries = c.image->image().readdir(to_nid(c, ino));
  if (!entries) {
    fuse_reply_err(req, err_of(entries.error()));
    return;
  }
  auto* h = new DirHandle{std::move(*entries)};
  fi->fh = reinterpret_cast<std::uint64_t>(h);
  fi->keep_cache = 1;
  fi->cache_readdir = 1;
  if (fuse_reply_open(req, fi) != 0) {
    delete h;  // the open was interrupted: no releasedir will come
  }
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void do_readdir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  auto& c = ctx(req);
  const auto& entries = reinterpret_cast<DirHandle*>(fi->fh)->entries;
  std::vector<char> buf(size);
  std::size_t used = 0;
  // off is the index of the next entry (each entry carries index + 1 as its cookie).
  for (auto i = static_cast<std::size_t>(std::max<off_t>(off, 0)); i < entries.size(); ++i) {
    const auto& de = entries[i];
    std::size_t n;
    if (plus) {
      fuse_entry_param e{};
      bool dot = de.name == "." || de.name == "..";
      auto st = make_stat(c, de.nid);
      if (!st) {
        fuse_reply_err(req, err_of(st.error()));
        return;
      }
      e.attr = *st;
      if (!dot) {
        e.ino = st->st_ino;
        e.generation = 1;
        e.attr_timeout = kTimeout;
        e.entry_timeout = kTimeout;
      }
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, de.name.c_str(), &e,
                                 static_cast<off_t>(i + 1));
    } else {
      struct stat st {};
      st.st_ino = to_ino(c, de.nid);
      st.st_mode = static_cast<mode_t>(erofs_ftype_to_mode(de.file_type));
      n = fuse_add_direntry(req, buf.data() + used, size - used, de.name.c_str(), &st,
                            static_cast<off_t>(i + 1));
    }
    if (n > size - used) {
      break;  // does not fit; the kernel asks again from this entry
    }
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  do_readdir(req, ino, size, off, fi, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  do_readdir(req, ino, size, off, fi, true);
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
  auto& c = ctx(req);
  struct statvfs sv {};
  const auto bs = c.image->image().block_size();
  std::uint64_t bytes = c.image->image().bytes().size();
  for (const auto& b : c.image->blobs()) {
    bytes += b->size();
  }
  sv.f_bsize = bs;
  sv.f_frsize = bs;
  sv.f_blocks = (bytes + bs - 1) / bs;
  sv.f_namemax = 255;
  sv.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &sv);
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto& c = ctx(req);
  auto v = c.image->image().getxattr(to_nid(c, ino), name);
  if (!v) {
    fuse_reply_err(req, err_of(v.error()));
    return;
  }
  if (size == 0) {
    fuse_reply_xattr(req, v->size());
  } else if (size < v->size()) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, v->data(), v->size());
  }
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto& c = ctx(req);
  auto xs = c.image->image().xattrs(to_nid(c, ino));
  if (!xs) {
    fuse_reply_err(req, err_of(xs.error()));
    return;
  }
  std::string list;
  for (const auto& x : *xs) {
    list += x.name;
    list.push_back('\0');
  }
  if (size == 0) {
    fuse_reply_xattr(req, list.size());
  } else if (size < list.size()) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, list.data(), list.size());
  }
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops o{};
  o.init = op_init;
  o.lookup = op_lookup;
  o.forget = op_forget;
  o.forget_multi = op_forget_multi;
  o.getattr = op_getattr;
  o.readlink = op_readlink;
  o.open = op_open;
  o.read = op_read;
  o.opendir = op_opendir;
  o.readdir = op_readdir;
  o.readdirplus = op_readdirplus;
  o.releasedir = op_releasedir;
  o.statfs = op_statfs;
  o.getxattr = op_getxattr;
  o.listxattr = op_listxattr;
  return o;
}();

struct SessionDeleter {
  void operator()(fuse_session* s) const { fuse_session_destroy(s); }
};

class FuseMountImpl final : public FuseMount {
 public:
  ~FuseMountImpl() override {
    if (!workers_.empty() || !fillers_.empty()) {
      (void)unmount(true);
    }
  }

  base::Status start(std::shared_ptr<BoundImage> image, const std::string& dir, unsigned threads,
                     unsigned poll_us) {
    dir_ = dir;
    ctx_.image = std::move(image);
    ctx_.root = ctx_.image->image().root();
    std::string fsname = "fsname=" + ctx_.image->bootstrap_path();
    for (auto& ch : fsname) {
      if (ch == ',') {
        ch = '_';
      }
    }
    std::vector<std::string> args = {"cachefilesd-nydus", "-o",
                                     "ro,default_permissions,allow_other,subtype=nydus", "-o",
                                     fsname};
    std::vector<char*> argv;
    for (auto& a : args) {
      argv.push_back(a.data());
    }
    fuse_args fa = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
    session_.reset(fuse_session_new(&fa, &kOps, sizeof kOps, &ctx_));
    fuse_opt_free_args(&fa);
    if (!session_) {
      return base::make_error(EINVAL, "fuse_session_new failed");
    }
    if (fuse_session_mount(session_.get(), dir.c_str()) != 0) {
      return base::errorf(EIO, "fuse mount on {} failed (see log)", dir);
    }
    threads_ = threads;
    poll_us_ = poll_us;
    CFN_TRY(start_workers());
    // Only now: stat(2) of the mount waits for the INIT reply that the session serves.
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) {
      conn_dev_ = st.st_dev;  // names the connection under /sys/fs/fuse/connections
    }
    return {};
  }

  // Our own threads over the public session API instead of fuse_session_loop_mt.
  // kReceivers threads read /dev/fuse and answer every request that needs no download
  // at once (metadata from the bootstrap, reads of cached data); a read that needs a
  // fill goes to one of `threads` fill workers, so the receivers never wait on the
  // network. /dev/fuse is non-blocking: a receiver waits in its own epoll (EPOLLEXCLUSIVE:
  // one is woken per request, as a blocking read would) and, after serving a request,
  // keeps polling /dev/fuse for up to poll_us before it sleeps again. A reader's next
  // request is then picked up without a wakeup; the price is up to poll_us of CPU after
  // each burst of requests.
  static constexpr unsigned kReceivers = 1;

  base::Status start_workers() {
    ctx_.fills = &fills_;
    for (unsigned i = 0; i < threads_; ++i) {
      fillers_.emplace_back([this] {
        FillJob j;
        while (fills_.pop(j)) {
          serve_fill(ctx_, j);
        }
      });
    }
    int fd = fuse_session_fd(session_.get());
    int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
      return base::errno_error(errno, "fuse: O_NONBLOCK on /dev/fuse");
    }
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
      return base::errno_error(errno, "fuse: eventfd");
    }
    stop_ = base::UniqueFd(efd);
    for (unsigned i = 0; i < kReceivers; ++i) {
      base::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
      if (!ep) {
        return base::errno_error(errno, "fuse: epoll_create1");
      }
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLEXCLUSIVE;
      ev.data.fd = fd;
      if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        return base::errno_error(errno, "fuse: epoll_ctl /dev/fuse");
      }
      ev.events = EPOLLIN;
      ev.data.fd = stop_.get();
      if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, stop_.get(), &ev) != 0) {
        return base::errno_error(errno, "fuse: epoll_ctl eventfd");
      }
      workers_.emplace_back([this, ep = std::move(ep)] { work(ep.get()); });
    }
    return {};
  }

  void work(int ep) {
    fuse_session* se = session_.get();
    fuse_buf buf{};
    const auto spin = std::chrono::microseconds(poll_us_);
    std::chrono::steady_clock::time_point poll_until{};  // past: sleep when idle
    while (!fuse_session_exited(se)) {
      const int r = fuse_session_receive_buf(se, &buf);
      if (r > 0) {
        fuse_session_process_buf(se, &buf);
        if (poll_us_ > 0) {
          poll_until = std::chrono::steady_clock::now() + spin;
        }
        continue;
      }
      if (r == -EINTR || (r == -EAGAIN && std::chrono::steady_clock::now() < poll_until)) {
        continue;
      }
      if (r == -EAGAIN) {
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
      if (r < 0) {  // 0: the connection ended (ENODEV)
        spdlog::warn("fuse: reading /dev/fuse for {}: {}", dir_, std::strerror(-r));
      }
      break;
    }
    std::free(buf.mem);
    fuse_session_exit(se);
    wake_receivers();  // the others end too
  }

  // Make the stop eventfd readable: every receiver's epoll_wait returns.
  void wake_receivers() {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto w = ::write(stop_.get(), &one, sizeof one);
  }

  void stop_workers() {
    wake_receivers();
    for (auto& t : workers_) {
      t.join();
    }
    workers_.clear();
    fills_.close();  // the fill workers answer what is queued, then end
    for (auto& t : fillers_) {
      t.join();
    }
    fillers_.clear();
  }

  base::Status unmount(bool force) override {
    std::lock_guard lk(mu_);
    if (workers_.empty() && fillers_.empty()) {
      return {};
    }
    // Unmounting aborts the connection: the session threads' reads of /dev/fuse fail
    // with ENODEV and the loop returns.
    if (::umount2(dir_.c_str(), force ? MNT_DETACH : 0) != 0) {
      int e = errno;
      if (e != EINVAL || !force) {
        return base::errno_error(e, "umount " + dir_);
      }
    }
    fuse_session_exit(session_.get());
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
    stop_workers();
    fuse_session_unmount(session_.get());
    session_.reset();
    return {};
  }

 private:
  std::mutex mu_;
  Ctx ctx_;
  std::string dir_;
  unsigned threads_ = 8;
  unsigned poll_us_ = 0;
  dev_t conn_dev_ = 0;
  std::unique_ptr<fuse_session, SessionDeleter> session_;
  base::UniqueFd stop_;               // eventfd: made readable to end the workers
  std::vector<std::thread> workers_;  // receivers
  base::BlockingQueue<FillJob> fills_;
  std::vector<std::thread> fillers_;
};

}  // namespace

base::Result<std::unique_ptr<FuseMount>> FuseMount::start(std::shared_ptr<BoundImage> image,
                                                          const std::string& dir, unsigned threads,
                                                          unsigned poll_us) {
  auto m = std::make_unique<FuseMountImpl>();
  CFN_TRY(m->start(std::move(image), dir, threads, poll_us));
  return m;
}

}  // namespace cfnd
