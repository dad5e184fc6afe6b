// SPDX-License-Identifier: Apache-2.0
#include "convert/sources.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/file.h"
#include "base/json_fields.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "estargz/bootstrap.h"
#include "estargz/toc.h"
#include "registry/manifest.h"
#include "registry/manifest_json.h"

namespace convert {
namespace {

using json = nlohmann::json;

constexpr std::size_t kMaxDepth = 2048;

// Reads up to buf.size() bytes; 0 at end of data.
using ReadFn = std::function<base::Result<std::size_t>(base::MutableBytes)>;

// Feed exactly `size` bytes of one file to the pipeline.
base::Result<std::vector<erofs::ChunkSlot>> feed_file(ChunkPipeline& pipeline, std::uint64_t size,
                                                      const ReadFn& read, std::string_view what) {
  std::vector<erofs::ChunkSlot> slots;
  slots.reserve((size + pipeline.chunk_size() - 1) / pipeline.chunk_size());
  std::uint64_t left = size;
  while (left > 0) {
    CFN_ASSIGN_OR_RETURN(ChunkBuffer buf, pipeline.acquire());
    std::size_t want = std::min<std::uint64_t>(left, pipeline.chunk_size());
    while (buf.size < want) {
      auto n = read(base::MutableBytes(buf.data.get() + buf.size, want - buf.size));
      if (!n) {
        pipeline.release(std::move(buf));
        return base::Unexpected(std::move(n).error().wrap(what));
      }
      if (*n == 0) {
        pipeline.release(std::move(buf));
        return base::errorf(EIO, "{}: data ends after {} of {} bytes (truncated or changed)", what,
                            size - left + buf.size, size);
      }
      buf.size += *n;
    }
    left -= buf.size;
    CFN_ASSIGN_OR_RETURN(erofs::ChunkSlot slot, pipeline.submit(std::move(buf)));
    slots.push_back(slot);
  }
  return slots;
}

bool storable_xattr(std::string_view name) {
  return name.starts_with("user.") || name.starts_with("trusted.") ||
         name.starts_with("security.") || name == "system.posix_acl_access" ||
         name == "system.posix_acl_default";
}

// ---- directory source ------------------------------------------------------------

struct DirWalker {
  ChunkPipeline& pipeline;
  erofs::FsTree& layer;
  std::map<std::pair<dev_t, ino_t>, erofs::NodeId> links;

  base::Status read_xattrs(const std::string& path, erofs::Node& n) {
    std::vector<char> names(1024);
    ssize_t len;
    for (;;) {
      len = ::llistxattr(path.c_str(), names.data(), names.size());
      if (len >= 0) {
        break;
      }
      if (errno == ENOTSUP) {
        return {};
      }
      if (errno != ERANGE) {
        return base::errno_error("listxattr " + path);
      }
      names.resize(names.size() * 4);
      if (names.size() > (1U << 24)) {
        return base::errorf(E2BIG, "listxattr {}: list too large", path);
      }
    }
    for (ssize_t off = 0; off < len;) {
      std::string name(names.data() + off);
      off += static_cast<ssize_t>(name.size()) + 1;
      if (!storable_xattr(name)) {
        spdlog::warn("{}: skipping xattr {} (EROFS cannot store its namespace)", path, name);
        continue;
      }
      std::string value(256, '\0');
      ssize_t vlen;
      for (;;) {
        vlen = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
        if (vlen >= 0) {
          break;
        }
        if (errno == ENODATA) {
          break;
        }
        if (errno != ERANGE || value.size() > 65536) {
          return base::errno_error("getxattr " + path + " " + name);
        }
        value.resize(value.size() * 4);
      }
      if (vlen < 0) {
        continue;
      }
      value.resize(static_cast<std::size_t>(vlen));
      n.xattrs.emplace_back(std::move(name), std::move(value));
    }
    std::sort(n.xattrs.begin(), n.xattrs.end());
    return {};
  }

  static void fill_stat(erofs::Node& n, const struct stat& st) {
    n.mode = static_cast<std::uint16_t>(st.st_mode & 0177777);
    n.uid = st.st_uid;
    n.gid = st.st_gid;
    n.mtime = st.st_mtim.tv_sec;
    n.mtime_nsec = static_cast<std::uint32_t>(st.st_mtim.tv_nsec);
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      n.rdev = erofs::encode_rdev(major(st.st_rdev), minor(st.st_rdev));
    }
  }

  base::Status walk(int dirfd, const std::string& path, erofs::NodeId dir, std::size_t depth) {
    if (depth > kMaxDepth) {
      return base::errorf(ELOOP, "{}: directory tree deeper than {}", path, kMaxDepth);
    }
    int dupfd = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0) {
      return base::errno_error("dup " + path);
    }
    DIR* d = ::fdopendir(dupfd);
    if (d == nullptr) {
      ::close(dupfd);
      return base::errno_error("opendir " + path);
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* de = ::readdir(d)) {
      std::string_view name(de->d_name);
      if (name != "." && name != "..") {
        names.emplace_back(name);
      }
    }
    int err = errno;
    ::closedir(d);
    if (err != 0) {
      return base::errno_error(err, "readdir " + path);
    }
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      std::string child_path = path + "/" + name;
      struct stat st {};
      if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return base::errno_error("stat " + child_path);
      }
      if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
        if (auto it = links.find({st.st_dev, st.st_ino}); it != links.end()) {
          CFN_TRY(layer.add_child(dir, name, it->second, child_path));
          continue;
        }
      }
      erofs::BuildNode n;
      fill_stat(n.meta, st);
      CFN_TRY(read_xattrs(child_path, n.meta));
      base::UniqueFd sub;
      if (S_ISREG(st.st_mode)) {
        CFN_ASSIGN_OR_RETURN(
            base::UniqueFd fd,
            base::UniqueFd::openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK));
        struct stat fst {};
        if (::fstat(fd.get(), &fst) != 0) {
          return base::errno_error("stat " + child_path);
        }
        if (!S_ISREG(fst.st_mode) || fst.st_ino != st.st_ino || fst.st_dev != st.st_dev) {
          return base::errorf(EAGAIN, "{}: changed while being read", child_path);
        }
        ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
        n.meta.size = static_cast<std::uint64_t>(st.st_size);
        int raw = fd.get();
        ReadFn read = [raw, &child_path](base::MutableBytes b) -> base::Result<std::size_t> {
          for (;;) {
            ssize_t r = ::read(raw, b.data(), b.size());
            if (r >= 0) {
              return static_cast<std::size_t>(r);
            }
            if (errno != EINTR) {
              return base::errno_error("read " + child_path);
            }
          }
        };
        CFN_ASSIGN_OR_RETURN(n.chunk_slots, feed_file(pipeline, n.meta.size, read, child_path));
      } else if (S_ISLNK(st.st_mode)) {
        std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
        ssize_t r = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
        if (r < 0) {
          return base::errno_error("readlink " + child_path);
        }
        if (static_cast<std::size_t>(r) >= target.size()) {
          return base::errorf(EAGAIN, "{}: symlink changed while being read", child_path);
        }
        target.resize(static_cast<std::size_t>(r));
        n.meta.size = target.size();
        n.meta.symlink = std::move(target);
      } else if (S_ISDIR(st.st_mode)) {
        CFN_ASSIGN_OR_RETURN(
            sub, base::UniqueFd::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
      }
      erofs::NodeId id = layer.add_node(std::move(n));
      CFN_TRY(layer.add_child(dir, name, id, child_path));
      if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
        links.emplace(std::make_pair(st.st_dev, st.st_ino), id);
      }
      if (sub) {
        CFN_TRY(walk(sub.get(), child_path, id, depth + 1));
      }
    }
    return {};
  }
};

// ---- tar source ------------------------------------------------------------------

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// libarchive read callbacks over our fd: large reads, and a sha256 of every byte.
struct TarInput {
  int fd = -1;
  std::vector<std::byte> buf = std::vector<std::byte>(1U << 20);
  std::unique_ptr<base::Hasher> hasher;
  int err = 0;

  static la_ssize_t read_cb(struct archive* /*a*/, void* self, const void** out) {
    auto* in = static_cast<TarInput*>(self);
    for (;;) {
      ssize_t r = ::read(in->fd, in->buf.data(), in->buf.size());
      if (r >= 0) {
        if (in->hasher && r > 0) {
          in->hasher->update(base::Bytes(in->buf.data(), static_cast<std::size_t>(r)));
        }
        *out = in->buf.data();
        return r;
      }
      if (errno != EINTR) {
        in->err = errno;
        return -1;
      }
    }
  }
};

std::string archive_err(struct archive* a) {
  const char* s = archive_error_string(a);
  return s != nullptr ? s : "unknown libarchive error";
}

base::Status read_tar_entries(struct archive* a, const std::string& label, erofs::FsTree& layer,
                              ChunkPipeline& pipeline) {
  std::uint64_t index = 0;
  for (;;) {
    struct archive_entry* e = nullptr;
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) {
      return {};
    }
    if (r == ARCHIVE_WARN) {
      spdlog::warn("{}: entry #{}: {}", label, index, archive_err(a));
    } else if (r != ARCHIVE_OK) {
      return base::errorf(EINVAL, "{}: after entry #{}: {}", label, index, archive_err(a));
    }
    ++index;
    const char* raw_path = archive_entry_pathname(e);
    if (raw_path == nullptr) {
      return base::errorf(EINVAL, "{}: entry #{}: path cannot be decoded", label, index);
    }
    std::string path(raw_path);
    std::string what = fmt::format("{}: entry '{}'", label, path);
    auto comps_r = erofs::split_entry_path(path);
    if (!comps_r) {
      return base::Unexpected(std::move(comps_r).error().wrap(label));
    }
    std::vector<std::string> comps = std::move(*comps_r);

    if (const char* hl = archive_entry_hardlink(e); hl != nullptr) {
      auto tcomps = erofs::split_entry_path(hl);
      if (!tcomps) {
        return base::Unexpected(std::move(tcomps).error().wrap(what + ": hardlink target"));
      }
      auto target = layer.lookup(*tcomps);
      if (!target) {
        return base::errorf(
            ENOENT, "{}: hardlink target '{}' is not an earlier entry of this layer", what, hl);
      }
      if (is_dir(layer.node(*target))) {
        return base::errorf(EINVAL, "{}: hardlink to a directory '{}'", what, hl);
      }
      if (comps.empty()) {
        return base::errorf(EINVAL, "{}: a hardlink cannot be the root", what);
      }
      CFN_ASSIGN_OR_RETURN(erofs::NodeId parent, layer.make_parents(comps, what));
      CFN_TRY(layer.add_child(parent, comps.back(), *target, what));
      continue;
    }

    erofs::BuildNode n;
    auto type = archive_entry_filetype(e);
    n.meta.mode = static_cast<std::uint16_t>((type & 0170000) | (archive_entry_perm(e) & 07777));
    n.meta.uid = static_cast<std::uint32_t>(archive_entry_uid(e));
    n.meta.gid = static_cast<std::uint32_t>(archive_entry_gid(e));
    if (archive_entry_mtime_is_set(e) != 0) {
      n.meta.mtime = archive_entry_mtime(e);
      long nsec = archive_entry_mtime_nsec(e);
      n.meta.mtime_nsec = nsec >= 0 && nsec < 1000000000 ? static_cast<std::uint32_t>(nsec) : 0;
    }
    archive_entry_xattr_reset(e);
    const char* xname = nullptr;
    const void* xvalue = nullptr;
    std::size_t xsize = 0;
    while (archive_entry_xattr_next(e, &xname, &xvalue, &xsize) == ARCHIVE_OK) {
      if (!storable_xattr(xname)) {
        spdlog::warn("{}: skipping xattr {} (EROFS cannot store its namespace)", what, xname);
        continue;
      }
      n.meta.xattrs.emplace_back(xname, std::string(static_cast<const char*>(xvalue), xsize));
    }
    // pax archives may carry an xattr twice (SCHILY.xattr and LIBARCHIVE.xattr
    // records): keep one value per name, the last one given.
    std::stable_sort(n.meta.xattrs.begin(), n.meta.xattrs.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t i = 0; i + 1 < n.meta.xattrs.size();) {
      if (n.meta.xattrs[i].first == n.meta.xattrs[i + 1].first) {
        n.meta.xattrs.erase(n.meta.xattrs.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }

    if (comps.empty()) {
      if (type != AE_IFDIR) {
        return base::errorf(EINVAL, "{}: the root must be a directory", what);
      }
      erofs::BuildNode& root = layer.node(erofs::Tree::kRootNode);
      n.meta.children = std::move(root.meta.children);
      n.whiteouts = std::move(root.whiteouts);
      n.opaque = root.opaque;
      root = std::move(n);
      continue;
    }
    // Parents first: an entry below a symlink or a file fails before its data is read.
    CFN_ASSIGN_OR_RETURN(erofs::NodeId parent, layer.make_parents(comps, what));
    const std::string& name = comps.back();
    bool whiteout = std::string_view(name).starts_with(erofs::kWhiteoutPrefix);

    switch (type) {
      case AE_IFREG: {
        la_int64_t size = archive_entry_size(e);
        if (size < 0) {
          return base::errorf(EINVAL, "{}: negative size", what);
        }
        n.meta.size = static_cast<std::uint64_t>(size);
        if (whiteout) {
          break;  // whiteouts carry no data we keep
        }
        ReadFn read = [a](base::MutableBytes b) -> base::Result<std::size_t> {
          la_ssize_t got = archive_read_data(a, b.data(), b.size());
          if (got < 0) {
            return base::errorf(EIO, "reading data: {}", archive_err(a));
          }
          return static_cast<std::size_t>(got);
        };
        CFN_ASSIGN_OR_RETURN(n.chunk_slots, feed_file(pipeline, n.meta.size, read, what));
        break;
      }
      case AE_IFDIR:
        break;
      case AE_IFLNK: {
        const char* target = archive_entry_symlink(e);
        if (target == nullptr || *target == '\0') {
          return base::errorf(EINVAL, "{}: symlink without a target", what);
        }
        n.meta.symlink = target;
        n.meta.size = n.meta.symlink.size();
        break;
      }
      case AE_IFCHR:
      case AE_IFBLK:
        n.meta.rdev = erofs::encode_rdev(static_cast<std::uint32_t>(archive_entry_rdevmajor(e)),
                                         static_cast<std::uint32_t>(archive_entry_rdevminor(e)));
        break;
      case AE_IFIFO:
      case AE_IFSOCK:
        break;
      default:
        return base::errorf(EINVAL, "{}: unsupported entry type {:#o}", what,
                            static_cast<unsigned>(type));
    }
    erofs::NodeId id = layer.add_node(std::move(n));
    CFN_TRY(layer.add_child(parent, name, id, what));
  }
}

// ---- OCI layout --------------------------------------------------------------------

// The member key of j, nullptr when absent or j is not an object.
const json* member(const json& j, const char* key) {
  return base::JsonFields(j, "").find(key);
}

// Whether index entry m names linux on this machine's architecture. A malformed
// platform matches nothing (the chosen entry is then checked whole by the parser).
bool for_this_machine(const json& m) {
  const json* p = member(m, "platform");
  if (p == nullptr) {
    return false;
  }
  const base::JsonFields f(*p, "");
  const auto os = f.opt_string("os");
  const auto arch = f.opt_string("architecture");
  return os && *os && **os == "linux" && arch && *arch && **arch == registry::host_architecture();
}

// A descriptor of the layout (registry::parse_descriptor's checks), with its digest
// as bytes and as the canonical hex used in blob paths.
struct Descriptor {
  std::string media_type;
  base::Digest digest{};
  std::string hex;
  std::uint64_t size = 0;
  std::map<std::string, std::string> annotations;
};

base::Result<Descriptor> parse_descriptor(const json& j, std::string_view what) {
  CFN_ASSIGN_OR_RETURN(registry::Descriptor rd, registry::parse_descriptor(j, what));
  Descriptor d;
  if (!base::from_hex(std::string_view(rd.digest).substr(7), d.digest)) {
    return base::errorf(EINVAL, "{}: malformed digest '{}'", what, rd.digest);  // not reached
  }
  d.hex = base::hex(d.digest);
  d.media_type = std::move(rd.media_type);
  d.size = rd.size;
  d.annotations = std::move(rd.annotations);
  return d;
}

base::Result<std::string> read_verified(const std::string& dir, const Descriptor& d,
                                        std::string_view what) {
  std::string path = dir + "/blobs/sha256/" + d.hex;
  CFN_ASSIGN_OR_RETURN(auto bytes, base::read_file(path));
  if (base::sha256(bytes) != d.digest) {
    return base::errorf(EBADMSG, "{} {}: content does not match its digest", what, path);
  }
  return std::string(base::as_chars(bytes));
}

bool is_index_type(std::string_view mt) {
  return mt == registry::kMediaOciIndex || mt == registry::kMediaDockerManifestList;
}

base::Result<Descriptor> pick_manifest(const json& index, std::string_view what) {
  const json* manifests = member(index, "manifests");
  if (manifests == nullptr || !manifests->is_array() || manifests->empty()) {
    return base::errorf(EINVAL, "{}: no manifests", what);
  }
  if (manifests->size() == 1) {
    return parse_descriptor((*manifests)[0], what);
  }
  for (const auto& m : *manifests) {
    if (for_this_machine(m)) {
      return parse_descriptor(m, what);
    }
  }
  return base::errorf(ENOENT, "{}: {} manifests and none for linux/{}", what, manifests->size(),
                      registry::host_architecture());
}

bool supported_layer_type(std::string_view mt) {
  return mt.starts_with("application/vnd.oci.image.layer.v1.tar") ||
         mt.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar") ||
         mt == "application/vnd.docker.image.rootfs.diff.tar.gzip" ||
         mt == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
}

// ---- eStargz layer source ----------------------------------------------------------

// A read-only mapping of a whole file.
class Mapping {
 public:
  static base::Result<Mapping> open(const std::string& path) {
    CFN_ASSIGN_OR_RETURN(base::UniqueFd fd, base::UniqueFd::open(path, O_RDONLY));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
      return base::errno_error("stat " + path);
    }
    Mapping m;
    m.size_ = static_cast<std::size_t>(st.st_size);
    if (m.size_ > 0) {
      void* p = ::mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
      if (p == MAP_FAILED) {
        return base::errno_error("mmap " + path);
      }
      m.data_ = static_cast<const std::byte*>(p);
      ::madvise(p, m.size_, MADV_SEQUENTIAL);
    }
    return m;
  }
  Mapping() = default;
  Mapping(Mapping&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(o.size_) {}
  Mapping& operator=(Mapping&&) = delete;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (data_ != nullptr) {
      ::munmap(const_cast<std::byte*>(data_), size_);
    }
  }
  [[nodiscard]] base::Bytes bytes() const { return {data_, size_}; }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// The regular files of a layer tree that the root reaches, each once, in node order
// (for an eStargz layer: TOC order, so the members are read front to back).
std::vector<erofs::NodeId> reachable_files(const erofs::FsTree& tree) {
  std::vector<bool> seen(tree.size(), false);
  std::vector<erofs::NodeId> stack{erofs::Tree::kRootNode};
  seen[erofs::Tree::kRootNode] = true;
  std::vector<erofs::NodeId> files;
  while (!stack.empty()) {
    const erofs::NodeId id = stack.back();
    stack.pop_back();
    const erofs::BuildNode& n = tree.node(id);
    if ((n.meta.mode & S_IFMT) == S_IFREG && !n.chunk_slots.empty()) {
      files.push_back(id);
    }
    for (const auto& [name, c] : n.meta.children) {
      if (!seen[c]) {
        seen[c] = true;
        stack.push_back(c);
      }
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Each gzip member the files' chunks are in, inflated once: as far as the furthest chunk
// in it ends (a member of several chunks, --estargz-min-chunk-size, is inflated once for
// all of them as long as they are read in order).
class MemberInflater {
 public:
  MemberInflater(base::Bytes layer, const std::vector<estargz::TocChunk>& chunks) : layer_(layer) {
    for (const auto& c : chunks) {
      auto& need = need_[c.offset];
      need = std::max(need, c.inner_offset + c.size);
    }
  }

  // The chunk's bytes, checked against its chunkDigest (errors: the caller adds the file).
  base::Result<base::Bytes> chunk(const estargz::TocChunk& c) {
    if (c.offset != member_ || !have_) {
      const std::uint64_t need = need_.at(c.offset);
      if (need > kMaxInflate) {
        return base::errorf(EFBIG, "a gzip member of more than {} bytes", kMaxInflate);
      }
      plain_.resize(need);
      const base::Bytes src = layer_.subspan(c.offset, c.compressed_size);
      if (auto st = base::decompress(base::Compressor::kGzip, src, plain_); !st) {
        have_ = false;
        return base::Unexpected(
            std::move(st).error().wrap(fmt::format("the gzip member at {}", c.offset)));
      }
      member_ = c.offset;
      have_ = true;
    }
    const base::Bytes b = base::Bytes(plain_).subspan(c.inner_offset, c.size);
    if (base::sha256(b) != c.digest) {
      return base::errorf(EBADMSG,
                          "the chunk at file offset {} ({} bytes, gzip member at {}) does "
                          "not match its chunkDigest",
                          c.file_offset, c.size, c.offset);
    }
    return b;
  }

 private:
  static constexpr std::uint64_t kMaxInflate = 1ULL << 30;
  base::Bytes layer_;
  std::map<std::uint64_t, std::uint64_t> need_;  // member offset -> bytes to inflate
  std::vector<std::byte> plain_;
  std::uint64_t member_ = 0;
  bool have_ = false;
};

}  // namespace

base::Result<bool> is_estargz(const std::string& path) {
  CFN_ASSIGN_OR_RETURN(base::UniqueFd fd, base::UniqueFd::open(path, O_RDONLY));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return base::errno_error("stat " + path);
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < estargz::kFooterSize) {
    return false;
  }
  std::vector<std::byte> tail(estargz::kFooterSize);
  CFN_TRY(base::pread_full(fd.get(), tail, size - estargz::kFooterSize));
  return estargz::parse_footer(tail, size).has_value();
}

base::Status read_estargz(const std::string& path, const std::string& label, erofs::FsTree& layer,
                          ChunkPipeline& pipeline, const base::Digest* expected_sha256) {
  CFN_ASSIGN_OR_RETURN(const Mapping map, Mapping::open(path));
  const base::Bytes blob = map.bytes();
  if (expected_sha256 != nullptr && base::sha256(blob) != *expected_sha256) {
    return base::errorf(EBADMSG, "{}: content does not match its digest", label);
  }
  const std::uint64_t size = blob.size();
  if (size < estargz::kFooterSize) {
    return base::errorf(EINVAL, "{}: not an eStargz layer ({} bytes)", label, size);
  }
  auto toc_offset = estargz::parse_footer(blob.subspan(size - estargz::kFooterSize), size);
  if (!toc_offset) {
    return base::Unexpected(std::move(toc_offset).error().wrap(label + ": footer"));
  }
  estargz::LayerToc lt;
  lt.blob_size = size;
  lt.toc_offset = *toc_offset;
  auto toc = estargz::parse_toc(
      blob.subspan(*toc_offset, size - estargz::kFooterSize - *toc_offset), nullptr);
  if (!toc) {
    return base::Unexpected(std::move(toc).error().wrap(label));
  }
  lt.toc = std::move(*toc);
  auto tree = estargz::layer_tree(lt);
  if (!tree) {
    return base::Unexpected(std::move(tree).error().wrap(label));
  }
  MemberInflater inflater(blob, tree->chunks);
  const std::vector<erofs::NodeId> files = reachable_files(tree->tree);
  // What the root does not reach (a file the layer replaced itself, the landmarks) is
  // never merged: its chunk slots (the TOC's, not the pipeline's) go.
  for (erofs::NodeId id = 0; id < tree->tree.size(); ++id) {
    if (!std::binary_search(files.begin(), files.end(), id)) {
      tree->tree.node(id).chunk_slots.clear();
    }
  }
  for (const erofs::NodeId id : files) {
    erofs::BuildNode& n = tree->tree.node(id);
    const std::vector<erofs::ChunkSlot> toc_chunks = std::move(n.chunk_slots);
    const std::string what = fmt::format(
        "{}: entry '{}'", label, lt.toc.entries.at(tree->chunks.at(toc_chunks.front()).entry).name);
    // The file's bytes, chunk after chunk, into the pipeline's own chunks.
    std::size_t k = 0;
    base::Bytes cur;
    ReadFn read = [&](base::MutableBytes out) -> base::Result<std::size_t> {
      while (cur.empty()) {
        if (k == toc_chunks.size()) {
          return 0;
        }
        CFN_ASSIGN_OR_RETURN(cur, inflater.chunk(tree->chunks[toc_chunks[k]]));
        ++k;
      }
      const std::size_t n_out = std::min(out.size(), cur.size());
      std::memcpy(out.data(), cur.data(), n_out);
      cur = cur.subspan(n_out);
      return n_out;
    };
    CFN_ASSIGN_OR_RETURN(n.chunk_slots, feed_file(pipeline, n.meta.size, read, what));
  }
  layer = std::move(tree->tree);
  return {};
}

base::Result<SourceKind> detect_source(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return base::errno_error("source " + path);
  }
  if (S_ISDIR(st.st_mode)) {
    struct stat lst {};
    bool layout = ::stat((path + "/oci-layout").c_str(), &lst) == 0 && S_ISREG(lst.st_mode) &&
                  ::stat((path + "/index.json").c_str(), &lst) == 0 && S_ISREG(lst.st_mode);
    return layout ? SourceKind::kOciLayout : SourceKind::kDirectory;
  }
  if (S_ISREG(st.st_mode)) {
    return SourceKind::kTar;
  }
  return base::errorf(EINVAL, "source {}: neither a directory nor a file", path);
}

base::Status read_directory(const std::string& path, erofs::FsTree& layer,
                            ChunkPipeline& pipeline) {
  CFN_ASSIGN_OR_RETURN(base::UniqueFd root, base::UniqueFd::open(path, O_RDONLY | O_DIRECTORY));
  struct stat st {};
  if (::fstat(root.get(), &st) != 0) {
    return base::errno_error("stat " + path);
  }
  DirWalker w{pipeline, layer, {}};
  erofs::BuildNode& r = layer.node(erofs::Tree::kRootNode);
  DirWalker::fill_stat(r.meta, st);
  r.implicit = false;
  CFN_TRY(w.read_xattrs(path, r.meta));
  return w.walk(root.get(), path, erofs::Tree::kRootNode, 0);
}

base::Status read_tar(const std::string& path, const std::string& label, erofs::FsTree& layer,
                      ChunkPipeline& pipeline, const base::Digest* expected_sha256) {
  CFN_ASSIGN_OR_RETURN(base::UniqueFd fd, base::UniqueFd::open(path, O_RDONLY));
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  TarInput in;
  in.fd = fd.get();
  if (expected_sha256 != nullptr) {
    in.hasher = std::make_unique<base::Hasher>(base::DigestAlgo::kSha256);
  }
  std::unique_ptr<struct archive, ArchiveDeleter> a(archive_read_new());
  if (!a) {
    return base::errorf(ENOMEM, "{}: archive_read_new failed", label);
  }
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  archive_read_support_format_gnutar(a.get());
  if (archive_read_open(a.get(), &in, nullptr, &TarInput::read_cb, nullptr) != ARCHIVE_OK) {
    return base::errorf(EINVAL, "{}: not a readable tar: {}", label, archive_err(a.get()));
  }
  auto st = read_tar_entries(a.get(), label, layer, pipeline);
  if (!st) {
    if (in.err != 0) {
      return base::errno_error(in.err, "reading " + path);
    }
    return st;
  }
  if (in.hasher) {
    // Hash whatever follows the end-of-archive marker too: the digest covers the file.
    for (;;) {
      const void* p = nullptr;
      la_ssize_t r = TarInput::read_cb(nullptr, &in, &p);
      if (r < 0) {
        return base::errno_error(in.err, "reading " + path);
      }
      if (r == 0) {
        break;
      }
    }
    if (in.hasher->finish() != *expected_sha256) {
      return base::errorf(EBADMSG, "{}: content does not match its digest", label);
    }
  }
  return {};
}

base::Result<OciSourceImage> open_oci_layout(const std::string& dir) {
  CFN_ASSIGN_OR_RETURN(auto index_bytes, base::read_file(dir + "/index.json"));
  CFN_ASSIGN_OR_RETURN(json index,
                       base::parse_json_object(base::as_chars(index_bytes), dir + "/index.json"));
  OciSourceImage img;
  CFN_ASSIGN_OR_RETURN(Descriptor mdesc, pick_manifest(index, dir + "/index.json"));
  if (const auto it = mdesc.annotations.find("org.opencontainers.image.ref.name");
      it != mdesc.annotations.end()) {
    img.ref_name = it->second;
  }
  CFN_ASSIGN_OR_RETURN(std::string mtext, read_verified(dir, mdesc, "manifest"));
  CFN_ASSIGN_OR_RETURN(json manifest, base::parse_json_object(mtext, "manifest " + mdesc.hex));
  if (is_index_type(mdesc.media_type) || member(manifest, "manifests") != nullptr) {
    CFN_ASSIGN_OR_RETURN(Descriptor inner, pick_manifest(manifest, "index " + mdesc.hex));
    CFN_ASSIGN_OR_RETURN(mtext, read_verified(dir, inner, "manifest"));
    CFN_ASSIGN_OR_RETURN(manifest, base::parse_json_object(mtext, "manifest " + inner.hex));
    mdesc = inner;
  }
  const json* cfg = member(manifest, "config");
  if (cfg == nullptr) {
    return base::errorf(EINVAL, "manifest {}: no config", mdesc.hex);
  }
  CFN_ASSIGN_OR_RETURN(Descriptor cdesc, parse_descriptor(*cfg, "manifest config"));
  CFN_ASSIGN_OR_RETURN(img.config_json, read_verified(dir, cdesc, "config"));
  const json* layers = member(manifest, "layers");
  if (layers == nullptr || !layers->is_array()) {
    return base::errorf(EINVAL, "manifest {}: no layers", mdesc.hex);
  }
  for (const auto& l : *layers) {
    CFN_ASSIGN_OR_RETURN(Descriptor ld, parse_descriptor(l, "layer"));
    if (!supported_layer_type(ld.media_type)) {
      return base::errorf(EOPNOTSUPP, "layer sha256:{}: unsupported media type '{}'", ld.hex,
                          ld.media_type);
    }
    img.layers.push_back({dir + "/blobs/sha256/" + ld.hex, ld.digest, ld.media_type, ld.size});
  }
  return img;
}

}  // namespace convert
