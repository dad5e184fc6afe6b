// SPDX-License-Identifier: Apache-2.0
// RAFS v6 bootstrap writer. Two passes over the tree: the first validates it, puts
// every inode in BFS order and lays out inodes, out-of-line data blocks and the chunk
// table; the second serializes into a zeroed buffer of the final size.
//
// Image layout (byte offsets):
//   0            zeros
//   1024         EROFS superblock
//   1152         RAFS extended superblock
//   1408         device table, one slot per blob
//   4096         blob table (later when the device table passes 4 KiB)
//   right after  prefetch table (u32 nids, unaligned, as nydus-image places it)
//   meta_blkaddr first meta block, left empty so no inode gets nid 0
//   +4096        root inode (nid 128), then every inode in BFS order
//   ...          FLAT_PLAIN data blocks of directories and symlinks
//   4 KiB align  chunk table (RafsV5ChunkInfo, sorted by digest); file padded to 4 KiB
#include "erofs/writer.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <string_view>
#include <tuple>

#include "erofs/format.h"

namespace erofs {
namespace {

constexpr std::uint64_t kBs = kBlockSize;
constexpr std::uint64_t kInodeSize = sizeof(InodeExtended);
constexpr std::uint64_t kDirentSize = sizeof(Dirent);
// device_id's low byte is blob_index + 1 and is masked by the kernel with
// roundup_pow_of_two(devices + 1) - 1 <= 0xff, so at most 254 blobs.
constexpr std::size_t kMaxBlobs = 254;
constexpr std::size_t kMaxSymlink = 4096;  // nydusd's limit, and PATH_MAX
constexpr std::size_t kMaxXattrName = 255;
constexpr std::size_t kMaxXattrValue = std::numeric_limits<std::uint16_t>::max();
constexpr std::uint32_t kMaxCiIndex = 1U << 24;  // 24 bits in the nydus chunk address
// nydus maps the first blob device right after the bootstrap rounded up to 512 KiB.
constexpr std::uint64_t kMappedAlign = 512ULL * 1024;
constexpr Nid kRootNid = kBs / kSlotSize;  // root sits one block past meta_blkaddr
constexpr std::uint64_t kDevtOffset = std::uint64_t{kRafsDevtSlotOff} * 128;  // byte 1408

struct XattrRec {
  std::uint8_t index = 0;
  std::string_view suffix;
  std::string_view value;
};

// One inode as laid out. Indexed by BFS position.
struct Slot {
  NodeId node = 0;
  std::string path;
  NodeId parent = 0;  // directories: the node ".." names
  std::uint8_t ftype = kFtUnknown;
  std::uint8_t layout = kInodeFlatPlain;
  std::vector<XattrRec> xattrs;
  std::uint64_t xattr_isize = 0;
  std::uint64_t size = 0;         // i_size
  std::uint64_t tail = 0;         // FLAT_INLINE: bytes stored after the inode
  std::uint64_t full_blocks = 0;  // data blocks out of line
  std::uint32_t startblk = 0;
  std::uint32_t nlink = 0;
  std::uint64_t total = 0;   // inode + xattrs + inline tail or chunk indexes
  std::uint64_t offset = 0;  // absolute byte offset of the inode
  Nid nid = 0;
};

struct ChunkKey {
  std::uint32_t blob_index;
  std::uint32_t ci_index;
  auto operator<=>(const ChunkKey&) const = default;
};

struct ChunkUse {
  const ChunkRef* ref;
  std::uint64_t file_offset;  // in the first file (BFS order) using the chunk
};

std::string child_path(const std::string& parent, std::string_view name) {
  std::string p = parent == "/" ? std::string("/") : parent + "/";
  p.append(name);
  return p;
}

std::uint8_t file_type(std::uint16_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return kFtRegFile;
    case S_IFDIR:
      return kFtDir;
    case S_IFCHR:
      return kFtChrdev;
    case S_IFBLK:
      return kFtBlkdev;
    case S_IFIFO:
      return kFtFifo;
    case S_IFSOCK:
      return kFtSock;
    case S_IFLNK:
      return kFtSymlink;
    default:
      return kFtUnknown;
  }
}

// Only the short prefixes are stored: RAFS has no long-prefix table and no shared
// xattrs, so any other namespace cannot be represented.
base::Result<XattrRec> classify_xattr(const std::string& path, const std::string& name,
                                      const std::string& value) {
  XattrRec r;
  r.value = value;
  if (name == "system.posix_acl_access") {
    r.index = kXattrIndexPosixAclAccess;
  } else if (name == "system.posix_acl_default") {
    r.index = kXattrIndexPosixAclDefault;
  } else {
    static constexpr std::pair<std::string_view, std::uint8_t> kPrefixes[] = {
        {"user.", kXattrIndexUser},
        {"trusted.", kXattrIndexTrusted},
        {"security.", kXattrIndexSecurity},
    };
    for (const auto& [prefix, index] : kPrefixes) {
      if (std::string_view(name).starts_with(prefix)) {
        r.index = index;
        r.suffix = std::string_view(name).substr(prefix.size());
        break;
      }
    }
    if (r.index == 0) {
      return base::errorf(EINVAL, "{}: xattr {:?} is in a namespace EROFS cannot store", path,
                          name);
    }
    if (r.suffix.empty()) {
      return base::errorf(EINVAL, "{}: xattr {:?} has an empty name after its prefix", path, name);
    }
  }
  if (name.size() > kMaxXattrName) {
    return base::errorf(EINVAL, "{}: xattr name {:?} is longer than {} bytes", path, name,
                        kMaxXattrName);
  }
  if (value.size() > kMaxXattrValue) {
    return base::errorf(EINVAL, "{}: xattr {:?} value is {} bytes, over {}", path, name,
                        value.size(), kMaxXattrValue);
  }
  return r;
}

std::uint64_t xattr_entry_size(const XattrRec& x) {
  return base::align_up(sizeof(XattrEntry) + x.suffix.size() + x.value.size(), 4);
}

base::Status check_name(const std::string& dir_path, const std::string& name) {
  if (name.empty() || name.size() > kNameLen) {
    return base::errorf(EINVAL, "{}: entry name of {} bytes (must be 1..{})",
                        child_path(dir_path, name), name.size(), kNameLen);
  }
  if (name.find('/') != std::string::npos || name.find('\0') != std::string::npos) {
    return base::errorf(EINVAL, "{}: entry name {:?} contains '/' or NUL", dir_path, name);
  }
  if (name == "." || name == "..") {
    return base::errorf(EINVAL, "{}: entry name {:?} is reserved", dir_path, name);
  }
  return {};
}

struct DirEntryOut {
  std::string_view name;
  Nid nid;
  std::uint8_t ftype;
};

bool name_less(std::string_view a, std::string_view b) {
  // Raw unsigned bytes, shorter prefix first: what the kernel's binary search expects.
  const int c = std::memcmp(a.data(), b.data(), std::min(a.size(), b.size()));
  return c != 0 ? c < 0 : a.size() < b.size();
}

// Directory data: blocks of [dirents][names], filled greedily; an entry never spans
// blocks; the last block is not padded (its length ends i_size). `entries` is sorted.
std::vector<std::byte> build_dir(const std::vector<DirEntryOut>& entries) {
  std::vector<std::byte> out;
  std::size_t i = 0;
  while (i < entries.size()) {
    std::size_t end = i;
    std::uint64_t used = 0;
    while (end < entries.size() && used + kDirentSize + entries[end].name.size() <= kBs) {
      used += kDirentSize + entries[end].name.size();
      ++end;
    }
    const std::uint64_t block_start = out.size();
    if (block_start != 0) {
      // The previous block was full-size by construction; pad it to the boundary.
      out.resize(base::align_up(block_start, kBs));
    }
    const std::uint64_t base_off = out.size();
    out.resize(base_off + used);
    std::uint64_t nameoff = kDirentSize * (end - i);
    for (std::size_t k = i; k < end; ++k) {
      Dirent d{};
      d.nid = base::to_le64(entries[k].nid);
      d.nameoff = base::to_le16(static_cast<std::uint16_t>(nameoff));
      d.file_type = entries[k].ftype;
      std::memcpy(out.data() + base_off + kDirentSize * (k - i), &d, sizeof(d));
      std::memcpy(out.data() + base_off + nameoff, entries[k].name.data(), entries[k].name.size());
      nameoff += entries[k].name.size();
    }
    i = end;
  }
  return out;
}

template <typename T>
void put(std::vector<std::byte>& buf, std::uint64_t off, const T& v) {
  static_assert(std::is_trivially_copyable_v<T>);
  std::memcpy(buf.data() + off, &v, sizeof(T));
}

std::uint64_t compression_flag(base::Compressor c) {
  switch (c) {
    case base::Compressor::kNone:
      return kRafsFlagCompressionNone;
    case base::Compressor::kLz4Block:
      return kRafsFlagCompressionLz4;
    case base::Compressor::kZstd:
      return kRafsFlagCompressionZstd;
    case base::Compressor::kGzip:
      return kRafsFlagCompressionGzip;
  }
  return kRafsFlagCompressionNone;
}

class Writer {
 public:
  Writer(const Tree& tree, const std::vector<BlobInfo>& blobs, const WriteOptions& options)
      : tree_(tree), blobs_(blobs), options_(options) {}

  base::Result<std::vector<std::byte>> run() {
    CFN_TRY(check_globals());
    CFN_TRY(collect());
    CFN_TRY(layout());
    return emit();
  }

 private:
  base::Status check_globals() {
    if (!base::is_pow2(options_.chunk_size) || options_.chunk_size < kBs ||
        options_.chunk_size > (16U << 20)) {
      return base::errorf(EINVAL, "chunk size {:#x} is not a power of two in 4 KiB..16 MiB",
                          options_.chunk_size);
    }
    if (blobs_.size() > kMaxBlobs) {
      return base::errorf(EINVAL, "{} blobs; a bootstrap holds at most {}", blobs_.size(),
                          kMaxBlobs);
    }
    for (std::size_t i = 0; i < blobs_.size(); ++i) {
      const BlobInfo& b = blobs_[i];
      if (b.index != i) {
        return base::errorf(EINVAL, "blob {} has index {}", i, b.index);
      }
      if (b.id.empty() || b.id.size() > sizeof(RafsV6Blob::blob_id) ||
          b.id.find('\0') != std::string::npos) {
        return base::errorf(EINVAL, "blob {}: id {:?} must be 1..64 bytes without NUL", i, b.id);
      }
      if (b.chunk_size != 0 && b.chunk_size != options_.chunk_size) {
        return base::errorf(EINVAL, "blob {}: chunk size {:#x} differs from the image's {:#x}", i,
                            b.chunk_size, options_.chunk_size);
      }
      if (b.chunk_count > kMaxCiIndex) {
        return base::errorf(EINVAL, "blob {}: {} chunks, over 2^24", i, b.chunk_count);
      }
      const std::uint64_t blocks = base::align_up(b.uncompressed_size, kBs) / kBs;
      if (blocks > std::numeric_limits<std::uint32_t>::max()) {
        return base::errorf(EINVAL, "blob {}: uncompressed size {} too large", i,
                            b.uncompressed_size);
      }
      total_blob_blocks_ += blocks;
    }
    if (total_blob_blocks_ > std::numeric_limits<std::uint32_t>::max()) {
      return base::errorf(EINVAL, "blobs total {} blocks, over 2^32", total_blob_blocks_);
    }
    if (tree_.nodes.empty() || (tree_.nodes[Tree::kRootNode].mode & S_IFMT) != S_IFDIR) {
      return base::errorf(EINVAL, "/: the root node is missing or not a directory");
    }
    return {};
  }

  // BFS from the root: assigns each node its slot, counts names, validates.
  base::Status collect() {
    slot_of_.assign(tree_.nodes.size(), kNoSlot);
    CFN_TRY(add_slot(Tree::kRootNode, "/", Tree::kRootNode));
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].ftype != kFtDir) {
        continue;
      }
      const NodeId dir_node = slots_[i].node;
      std::uint32_t subdirs = 0;
      for (const auto& [name, child] : tree_.nodes[dir_node].children) {
        const std::string& dir_path = slots_[i].path;
        CFN_TRY(check_name(dir_path, name));
        const std::string path = child_path(dir_path, name);
        if (child >= tree_.nodes.size()) {
          return base::errorf(EINVAL, "{}: names node {}, which does not exist", path, child);
        }
        if (slot_of_[child] != kNoSlot) {
          Slot& s = slots_[slot_of_[child]];
          if (s.ftype == kFtDir) {
            return base::errorf(EINVAL,
                                "{}: directory already linked at {} (directory hardlink or cycle)",
                                path, s.path);
          }
          ++s.nlink;
          continue;
        }
        CFN_TRY(add_slot(child, path, dir_node));
        if (file_type(tree_.nodes[child].mode) == kFtDir) {
          ++subdirs;
        }
      }
      slots_[i].nlink = 2 + subdirs;
    }
    if (slots_.size() != tree_.nodes.size()) {
      for (NodeId n = 0; n < tree_.nodes.size(); ++n) {
        if (slot_of_[n] == kNoSlot) {
          return base::errorf(EINVAL, "node {} is not reachable from the root", n);
        }
      }
    }
    std::vector<bool> seen(tree_.nodes.size(), false);
    for (NodeId n : tree_.prefetch) {
      if (n >= tree_.nodes.size()) {
        return base::errorf(EINVAL, "prefetch table names node {}, which does not exist", n);
      }
      if (!seen[n]) {
        seen[n] = true;
        prefetch_.push_back(n);
      }
    }
    return {};
  }

  base::Status add_slot(NodeId id, std::string path, NodeId parent) {
    const Node& n = tree_.nodes[id];
    Slot s;
    s.node = id;
    s.parent = parent;
    s.nlink = 1;
    s.ftype = file_type(n.mode);
    if (s.ftype == kFtUnknown) {
      return base::errorf(EINVAL, "{}: mode {:#o} has no valid file type", path, n.mode);
    }
    if (s.ftype != kFtDir && !n.children.empty()) {
      return base::errorf(EINVAL, "{}: only directories have children", path);
    }
    if (s.ftype != kFtRegFile && !n.chunks.empty()) {
      return base::errorf(EINVAL, "{}: only regular files have chunks", path);
    }
    for (const auto& [name, value] : n.xattrs) {
      CFN_ASSIGN_OR_RETURN(XattrRec x, classify_xattr(path, name, value));
      s.xattrs.push_back(x);
    }
    std::sort(s.xattrs.begin(), s.xattrs.end(), [](const XattrRec& a, const XattrRec& b) {
      return std::tie(a.index, a.suffix) < std::tie(b.index, b.suffix);
    });
    for (std::size_t k = 1; k < s.xattrs.size(); ++k) {
      if (s.xattrs[k].index == s.xattrs[k - 1].index &&
          s.xattrs[k].suffix == s.xattrs[k - 1].suffix) {
        return base::errorf(EINVAL, "{}: duplicate xattr {:?}", path,
                            std::string(s.xattrs[k].suffix));
      }
    }
    if (!s.xattrs.empty()) {
      std::uint64_t body = sizeof(XattrIbodyHeader);
      for (const XattrRec& x : s.xattrs) {
        body += xattr_entry_size(x);
      }
      // i_xattr_icount is a u16 counting 4-byte units past the 12-byte header, plus 1.
      if ((body - sizeof(XattrIbodyHeader)) / 4 + 1 > std::numeric_limits<std::uint16_t>::max()) {
        return base::errorf(EINVAL, "{}: xattrs take {} bytes, too many for one inode", path, body);
      }
      s.xattr_isize = body;
      has_xattr_ = true;
    }
    if (s.ftype == kFtSymlink) {
      if (n.symlink.empty() || n.symlink.size() > kMaxSymlink) {
        return base::errorf(EINVAL, "{}: symlink target of {} bytes (must be 1..{})", path,
                            n.symlink.size(), kMaxSymlink);
      }
      if (n.symlink.find('\0') != std::string::npos) {
        return base::errorf(EINVAL, "{}: symlink target contains NUL", path);
      }
      if (n.size != 0 && n.size != n.symlink.size()) {
        return base::errorf(EINVAL, "{}: size {} differs from the target length {}", path, n.size,
                            n.symlink.size());
      }
    }
    if (s.ftype == kFtRegFile) {
      CFN_TRY(check_chunks(path, n));
    }
    s.path = std::move(path);
    slot_of_[id] = static_cast<std::uint32_t>(slots_.size());
    slots_.push_back(std::move(s));
    return {};
  }

  base::Status check_chunks(const std::string& path, const Node& n) {
    const std::uint64_t cs = options_.chunk_size;
    const std::uint64_t want = (n.size + cs - 1) / cs;
    if (n.chunks.size() != want) {
      return base::errorf(EINVAL, "{}: {} chunks for {} bytes; chunk size {:#x} needs {}", path,
                          n.chunks.size(), n.size, cs, want);
    }
    for (std::size_t i = 0; i < n.chunks.size(); ++i) {
      const ChunkRef& c = n.chunks[i];
      const std::uint64_t len = std::min<std::uint64_t>(cs, n.size - i * cs);
      if (c.blob_index >= blobs_.size()) {
        return base::errorf(EINVAL, "{}: chunk {} names blob {}, but there are {}", path, i,
                            c.blob_index, blobs_.size());
      }
      const BlobInfo& b = blobs_[c.blob_index];
      if (c.ci_index >= kMaxCiIndex || c.ci_index >= b.chunk_count) {
        return base::errorf(EINVAL, "{}: chunk {} has ci index {}; blob {} has {} chunks", path, i,
                            c.ci_index, c.blob_index, b.chunk_count);
      }
      if (c.uncompressed_offset % kBs != 0) {
        return base::errorf(EINVAL, "{}: chunk {} uncompressed offset {:#x} not 4 KiB aligned",
                            path, i, c.uncompressed_offset);
      }
      if (c.uncompressed_size != len) {
        return base::errorf(EINVAL, "{}: chunk {} holds {} bytes, the file needs {}", path, i,
                            c.uncompressed_size, len);
      }
      if (c.uncompressed_offset / kBs > std::numeric_limits<std::uint32_t>::max() ||
          c.uncompressed_offset + len > base::align_up(b.uncompressed_size, kBs)) {
        return base::errorf(EINVAL, "{}: chunk {} at {:#x}+{} lies past blob {}'s {} bytes", path,
                            i, c.uncompressed_offset, len, c.blob_index, b.uncompressed_size);
      }
      const ChunkKey key{c.blob_index, c.ci_index};
      auto [it, fresh] = chunks_.try_emplace(key, ChunkUse{&c, i * cs});
      if (!fresh) {
        const ChunkRef& o = *it->second.ref;
        if (o.uncompressed_offset != c.uncompressed_offset ||
            o.uncompressed_size != c.uncompressed_size ||
            o.compressed_offset != c.compressed_offset || o.compressed_size != c.compressed_size ||
            o.compressed != c.compressed || o.digest != c.digest) {
          return base::errorf(EINVAL, "{}: chunk {} (blob {}, ci {}) disagrees with its other use",
                              path, i, c.blob_index, c.ci_index);
        }
      }
    }
    return {};
  }

  std::vector<DirEntryOut> dir_entries(const Slot& s) const {
    std::vector<DirEntryOut> entries;
    const Node& n = tree_.nodes[s.node];
    entries.reserve(n.children.size() + 2);
    entries.push_back({".", s.nid, kFtDir});
    entries.push_back({"..", slots_[slot_of_[s.parent]].nid, kFtDir});
    for (const auto& [name, child] : n.children) {
      const Slot& c = slots_[slot_of_[child]];
      entries.push_back({name, c.nid, c.ftype});
    }
    std::sort(entries.begin(), entries.end(),
              [](const DirEntryOut& a, const DirEntryOut& b) { return name_less(a.name, b.name); });
    return entries;
  }

  // Place every inode and its out-of-line data.
  base::Status layout() {
    blob_table_off_ = std::max<std::uint64_t>(
        kBs, base::align_up(kDevtOffset + sizeof(DeviceSlot) * blobs_.size(), kBs));
    prefetch_table_off_ = blob_table_off_ + sizeof(RafsV6Blob) * blobs_.size();
    const std::uint64_t tables_end = prefetch_table_off_ + 4 * prefetch_.size();
    meta_blkaddr_ = base::align_up(tables_end, kBs) / kBs;
    const std::uint64_t meta_off = meta_blkaddr_ * kBs;

    std::uint64_t pos = meta_off + kBs;  // the first meta block stays empty
    for (Slot& s : slots_) {
      const Node& n = tree_.nodes[s.node];
      const std::uint64_t head = kInodeSize + s.xattr_isize;
      std::uint64_t data = 0;  // bytes of flat data (directories, symlinks)
      if (s.ftype == kFtRegFile) {
        s.layout = kInodeChunkBased;
        s.size = n.size;
        s.total = base::align_up(head, sizeof(ChunkIndex)) + sizeof(ChunkIndex) * n.chunks.size();
      } else if (s.ftype == kFtDir) {
        // Names only matter for the size; nids are filled in by emit().
        data = build_dir(dir_entries(s)).size();
      } else if (s.ftype == kFtSymlink) {
        data = n.symlink.size();
      } else {
        s.total = head;
      }
      if (s.ftype == kFtDir || s.ftype == kFtSymlink) {
        s.size = data;
        const std::uint64_t tail = data % kBs;
        if (tail != 0 && head + tail <= kBs) {
          s.layout = kInodeFlatInline;
          s.tail = tail;
        } else {
          s.layout = kInodeFlatPlain;
        }
        // FLAT_PLAIN keeps all data out of line, a partial last block included.
        s.full_blocks = base::align_up(data - s.tail, kBs) / kBs;
        s.total = head + s.tail;
      }
      // Keep inode, xattrs and inline tail (or chunk indexes) inside one block when
      // they fit in one: the kernel refuses an inline tail crossing a block, and older
      // kernels and simple readers cannot read an inode straddling a block.
      if (pos % kBs + std::min(s.total, kBs) > kBs) {
        pos = base::align_up(pos, kBs);
      }
      s.offset = pos;
      s.nid = (pos - meta_off) / kSlotSize;
      pos += base::align_up(s.total, kSlotSize);
    }
    if (slots_[0].nid != kRootNid) {
      return base::errorf(EINVAL, "/: root landed at nid {}", slots_[0].nid);
    }
    std::uint64_t blk = base::align_up(pos, kBs) / kBs;
    for (Slot& s : slots_) {
      if (s.full_blocks != 0) {
        s.startblk = static_cast<std::uint32_t>(blk);
        blk += s.full_blocks;
      }
    }
    if (blk > std::numeric_limits<std::uint32_t>::max()) {
      return base::errorf(EINVAL, "bootstrap would exceed 2^32 blocks");
    }
    chunk_table_off_ = blk * kBs;
    file_size_ = base::align_up(chunk_table_off_ + sizeof(RafsV5ChunkInfo) * chunks_.size(), kBs);
    for (NodeId n : prefetch_) {
      if (slots_[slot_of_[n]].nid > std::numeric_limits<std::uint32_t>::max()) {
        return base::errorf(EINVAL, "{}: nid {} does not fit the prefetch table",
                            slots_[slot_of_[n]].path, slots_[slot_of_[n]].nid);
      }
    }
    return {};
  }

  std::vector<std::byte> emit() const {
    std::vector<std::byte> out(file_size_);
    emit_super(out);
    for (const Slot& s : slots_) {
      emit_inode(out, s);
    }
    emit_chunk_table(out);
    return out;
  }

  void emit_super(std::vector<std::byte>& out) const {
    SuperBlock sb{};
    sb.magic = base::to_le32(kMagic);
    sb.feature_compat = base::to_le32(kFeatureCompatRafsV6);
    sb.blkszbits = kBlkSzBits;
    sb.root_nid = base::to_le16(static_cast<std::uint16_t>(kRootNid));
    sb.inos = base::to_le64(slots_.size());
    sb.blocks = base::to_le32(static_cast<std::uint32_t>(total_blob_blocks_));
    sb.meta_blkaddr = base::to_le32(static_cast<std::uint32_t>(meta_blkaddr_));
    // nydusd insists on exactly CHUNKED_FILE|DEVICE_TABLE even without blobs; the
    // kernel accepts DEVICE_TABLE with zero extra devices, so write it always.
    sb.feature_incompat = base::to_le32(kFeatureIncompatChunkedFile | kFeatureIncompatDeviceTable);
    sb.extra_devices = base::to_le16(static_cast<std::uint16_t>(blobs_.size()));
    sb.devt_slotoff = base::to_le16(kRafsDevtSlotOff);
    put(out, kSuperOffset, sb);

    bool all_inline_digests = true;
    for (const BlobInfo& b : blobs_) {
      all_inline_digests = all_inline_digests && (b.features & kBlobFeatureInlinedChunkDigest);
    }
    std::uint64_t flags =
        compression_flag(options_.compressor) | kRafsFlagExplicitUidGid | kRafsFlagEncryptionNone;
    flags |=
        options_.digester == base::DigestAlgo::kSha256 ? kRafsFlagHashSha256 : kRafsFlagHashBlake3;
    if (has_xattr_) {
      flags |= kRafsFlagHasXattr;
    }
    // The flag tells nydusd to take chunk digests from each blob's blob.digest array;
    // claim it only when every blob has one.
    if (all_inline_digests) {
      flags |= kRafsFlagInlinedChunkDigest;
    }
    RafsExtSuperBlock ext{};
    ext.s_flags = base::to_le64(flags);
    ext.s_blob_table_offset = base::to_le64(blob_table_off_);
    ext.s_blob_table_size =
        base::to_le32(static_cast<std::uint32_t>(sizeof(RafsV6Blob) * blobs_.size()));
    ext.s_chunk_size = base::to_le32(options_.chunk_size);
    ext.s_chunk_table_offset = base::to_le64(chunk_table_off_);
    ext.s_chunk_table_size = base::to_le64(sizeof(RafsV5ChunkInfo) * chunks_.size());
    if (!prefetch_.empty()) {
      ext.s_prefetch_table_offset = base::to_le64(prefetch_table_off_);
      ext.s_prefetch_table_size = base::to_le32(static_cast<std::uint32_t>(4 * prefetch_.size()));
    }
    put(out, kRafsExtSuperOffset, ext);
    for (std::size_t i = 0; i < prefetch_.size(); ++i) {
      const auto nid = static_cast<std::uint32_t>(slots_[slot_of_[prefetch_[i]]].nid);
      put(out, prefetch_table_off_ + 4 * i, base::to_le32(nid));
    }

    std::uint64_t mapped = base::align_up(file_size_, kMappedAlign) / kBs;
    for (std::size_t i = 0; i < blobs_.size(); ++i) {
      const BlobInfo& b = blobs_[i];
      const std::uint64_t blocks = base::align_up(b.uncompressed_size, kBs) / kBs;
      DeviceSlot d{};
      std::memcpy(d.tag, b.id.data(), b.id.size());
      d.blocks = base::to_le32(static_cast<std::uint32_t>(blocks));
      d.mapped_blkaddr = base::to_le32(static_cast<std::uint32_t>(mapped));
      mapped += blocks;
      put(out, kDevtOffset + sizeof(DeviceSlot) * i, d);

      RafsV6Blob e{};
      std::memcpy(e.blob_id, b.id.data(), b.id.size());
      e.blob_index = base::to_le32(static_cast<std::uint32_t>(i));
      e.chunk_size = base::to_le32(options_.chunk_size);
      e.chunk_count = base::to_le32(b.chunk_count);
      e.compression_algo = base::to_le32(rafs_compressor_code(b.compressor));
      e.digest_algo = base::to_le32(b.digester == base::DigestAlgo::kSha256 ? kRafsDigestSha256
                                                                            : kRafsDigestBlake3);
      e.features = base::to_le32(b.features);
      e.compressed_size = base::to_le64(b.compressed_size);
      e.uncompressed_size = base::to_le64(b.uncompressed_size);
      e.blob_toc_size = base::to_le32(b.toc_size);
      e.ci_compressor = base::to_le32(rafs_compressor_code(b.ci_compressor));
      e.ci_offset = base::to_le64(b.ci_offset);
      e.ci_compressed_size = base::to_le64(b.ci_compressed_size);
      e.ci_uncompressed_size = base::to_le64(b.ci_uncompressed_size);
      if (b.toc_size != 0) {
        std::memcpy(e.blob_toc_digest, b.toc_digest.data(), sizeof(e.blob_toc_digest));
      }
      put(out, blob_table_off_ + sizeof(RafsV6Blob) * i, e);
    }
  }

  void emit_inode(std::vector<std::byte>& out, const Slot& s) const {
    const Node& n = tree_.nodes[s.node];
    InodeExtended ino{};
    ino.i_format = base::to_le16(
        static_cast<std::uint16_t>(kInodeLayoutExtended | (s.layout << kInodeDataLayoutBit)));
    ino.i_xattr_icount = base::to_le16(
        s.xattr_isize == 0
            ? 0
            : static_cast<std::uint16_t>((s.xattr_isize - sizeof(XattrIbodyHeader)) / 4 + 1));
    ino.i_mode = base::to_le16(n.mode);
    ino.i_size = base::to_le64(s.size);
    std::uint32_t i_u = 0;
    if (s.ftype == kFtRegFile) {
      // log2(chunk_size / block size) in the low bits; 8-byte index entries.
      const auto bits = static_cast<std::uint16_t>(std::countr_zero(options_.chunk_size) -
                                                   static_cast<int>(kBlkSzBits));
      i_u = kChunkFormatIndexes | bits;
    } else if (s.ftype == kFtChrdev || s.ftype == kFtBlkdev) {
      i_u = n.rdev;
    } else if (s.ftype == kFtDir || s.ftype == kFtSymlink) {
      i_u = s.startblk;
    }
    ino.i_u = base::to_le32(i_u);
    ino.i_ino = base::to_le32(static_cast<std::uint32_t>(slot_of_[s.node] + 1));
    ino.i_uid = base::to_le32(n.uid);
    ino.i_gid = base::to_le32(n.gid);
    ino.i_mtime = base::to_le64(static_cast<std::uint64_t>(n.mtime));
    ino.i_mtime_nsec = base::to_le32(n.mtime_nsec);
    ino.i_nlink = base::to_le32(s.nlink);
    put(out, s.offset, ino);

    std::uint64_t off = s.offset + kInodeSize;
    if (s.xattr_isize != 0) {
      XattrIbodyHeader h{};  // h_name_filter 0: no filter; no shared xattrs
      put(out, off, h);
      std::uint64_t p = off + sizeof(h);
      for (const XattrRec& x : s.xattrs) {
        XattrEntry e{};
        e.e_name_len = static_cast<std::uint8_t>(x.suffix.size());
        e.e_name_index = x.index;
        e.e_value_size = base::to_le16(static_cast<std::uint16_t>(x.value.size()));
        put(out, p, e);
        // std::copy_n, not memcpy: an empty suffix or value may be a string_view with a
        // null data(), and memcpy from null is undefined even for 0 bytes (UBSan).
        std::copy_n(reinterpret_cast<const std::byte*>(x.suffix.data()), x.suffix.size(),
                    out.data() + p + sizeof(e));
        std::copy_n(reinterpret_cast<const std::byte*>(x.value.data()), x.value.size(),
                    out.data() + p + sizeof(e) + x.suffix.size());
        p += xattr_entry_size(x);
      }
      off += s.xattr_isize;
    }

    if (s.ftype == kFtRegFile) {
      std::uint64_t p = base::align_up(off, sizeof(ChunkIndex));
      for (const ChunkRef& c : n.chunks) {
        // nydus encoding: the ci index rides in bits the kernel masks off.
        ChunkIndex ci{};
        ci.startblk_hi = base::to_le16(static_cast<std::uint16_t>(c.ci_index & 0xffff));
        ci.device_id = base::to_le16(
            static_cast<std::uint16_t>((c.blob_index + 1) | (((c.ci_index >> 16) & 0xff) << 8)));
        ci.startblk_lo = base::to_le32(static_cast<std::uint32_t>(c.uncompressed_offset / kBs));
        put(out, p, ci);
        p += sizeof(ci);
      }
      return;
    }
    if (s.ftype != kFtDir && s.ftype != kFtSymlink) {
      return;
    }
    std::vector<std::byte> dir_bytes;
    base::Bytes data;
    if (s.ftype == kFtDir) {
      dir_bytes = build_dir(dir_entries(s));
      data = dir_bytes;
    } else {
      data = base::as_bytes(n.symlink);
    }
    const std::uint64_t full = data.size() - s.tail;
    if (full != 0) {
      std::memcpy(out.data() + std::uint64_t{s.startblk} * kBs, data.data(), full);
    }
    if (s.tail != 0) {
      std::memcpy(out.data() + off, data.data() + full, s.tail);
    }
  }

  void emit_chunk_table(std::vector<std::byte>& out) const {
    std::vector<const std::pair<const ChunkKey, ChunkUse>*> order;
    order.reserve(chunks_.size());
    for (const auto& entry : chunks_) {
      order.push_back(&entry);
    }
    // nydus keeps the table in a map keyed by digest; ties broken by (blob, ci).
    std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
      return std::tie(a->second.ref->digest, a->first) < std::tie(b->second.ref->digest, b->first);
    });
    std::uint64_t p = chunk_table_off_;
    for (const auto* entry : order) {
      const ChunkRef& c = *entry->second.ref;
      RafsV5ChunkInfo ci{};
      std::memcpy(ci.block_id, c.digest.data(), sizeof(ci.block_id));
      ci.blob_index = base::to_le32(c.blob_index);
      ci.flags = base::to_le32(c.compressed ? kChunkFlagCompressed : 0);
      ci.compressed_size = base::to_le32(c.compressed_size);
      ci.uncompressed_size = base::to_le32(c.uncompressed_size);
      ci.compressed_offset = base::to_le64(c.compressed_offset);
      ci.uncompressed_offset = base::to_le64(c.uncompressed_offset);
      ci.file_offset = base::to_le64(entry->second.file_offset);
      ci.index = base::to_le32(c.ci_index);
      put(out, p, ci);
      p += sizeof(ci);
    }
  }

  static constexpr std::uint32_t kNoSlot = std::numeric_limits<std::uint32_t>::max();

  const Tree& tree_;
  const std::vector<BlobInfo>& blobs_;
  const WriteOptions& options_;
  std::vector<Slot> slots_;             // BFS order; slots_[0] is the root
  std::vector<std::uint32_t> slot_of_;  // node id -> slot index
  std::map<ChunkKey, ChunkUse> chunks_;
  bool has_xattr_ = false;
  std::uint64_t total_blob_blocks_ = 0;
  std::uint64_t blob_table_off_ = 0;
  std::uint64_t meta_blkaddr_ = 0;
  std::uint64_t chunk_table_off_ = 0;
  std::uint64_t file_size_ = 0;
  std::vector<NodeId> prefetch_;  // Tree::prefetch without duplicates
  std::uint64_t prefetch_table_off_ = 0;
};

}  // namespace

base::Result<std::vector<std::byte>> write_bootstrap(const Tree& tree,
                                                     const std::vector<BlobInfo>& blobs,
                                                     const WriteOptions& options) {
  return Writer(tree, blobs, options).run();
}

}  // namespace erofs
