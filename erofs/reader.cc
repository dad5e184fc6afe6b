// SPDX-License-Identifier: Apache-2.0
// EROFS / RAFS v6 reader. Written from shared/reference/erofs-format.md.
//
// Every offset that comes from the image is checked with base::in_bounds before a
// load; every loop is bounded by a count that was itself checked against the image
// size, so a hostile image costs at most O(image size) work per call.
#include "erofs/reader.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <string>

namespace erofs {
namespace {

using base::Bytes;
using base::in_bounds;
using base::le16;
using base::le32;
using base::le64;

constexpr std::uint64_t kMaxSymlinkSize = 4096;

// Copy a T from [off, off+sizeof(T)) or fail naming what was being read.
template <typename T>
base::Result<T> load_at(Bytes data, std::uint64_t off, std::string_view what) {
  if (!in_bounds(off, sizeof(T), data.size())) {
    return base::errorf(kECorrupted, "{} at offset {} past end of image ({} bytes)", what, off,
                        data.size());
  }
  return base::load<T>(data, static_cast<std::size_t>(off));
}

// CRC-32C (Castagnoli), reflected, no final xor, as EROFS stores it.
std::uint32_t crc32c_raw(std::uint32_t crc, Bytes b) {
  static const std::array<std::uint32_t, 256> kTable = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) {
        c = (c & 1) != 0 ? (c >> 1) ^ 0x82F63B78U : c >> 1;
      }
      t[i] = c;
    }
    return t;
  }();
  for (std::byte x : b) {
    crc = kTable[(crc ^ std::to_integer<std::uint32_t>(x)) & 0xff] ^ (crc >> 8);
  }
  return crc;
}

std::string fixed_string(const std::uint8_t* p, std::size_t max) {
  const auto* c = reinterpret_cast<const char*>(p);
  return std::string(c, strnlen(c, max));
}

SuperBlock to_host(SuperBlock s) {
  s.magic = le32(s.magic);
  s.checksum = le32(s.checksum);
  s.feature_compat = le32(s.feature_compat);
  s.root_nid = le16(s.root_nid);
  s.inos = le64(s.inos);
  s.epoch = le64(s.epoch);
  s.fixed_nsec = le32(s.fixed_nsec);
  s.blocks = le32(s.blocks);
  s.meta_blkaddr = le32(s.meta_blkaddr);
  s.xattr_blkaddr = le32(s.xattr_blkaddr);
  s.feature_incompat = le32(s.feature_incompat);
  s.u1 = le16(s.u1);
  s.extra_devices = le16(s.extra_devices);
  s.devt_slotoff = le16(s.devt_slotoff);
  s.xattr_prefix_start = le32(s.xattr_prefix_start);
  s.packed_nid = le64(s.packed_nid);
  s.build_time = le32(s.build_time);
  s.rootnid_8b = le64(s.rootnid_8b);
  return s;
}

// gzip_ok: gzip chunks decode (base::Compressor::kGzip, eStargz blobs); a gzip chunk-info
// table does not.
base::Result<base::Compressor> rafs_compressor(std::uint32_t v, bool* unsupported,
                                               std::string_view what, std::uint32_t blob,
                                               bool gzip_ok) {
  *unsupported = false;
  switch (v) {
    case kRafsComprNone:
      return base::Compressor::kNone;
    case kRafsComprLz4Block:
      return base::Compressor::kLz4Block;
    case kRafsComprZstd:
      return base::Compressor::kZstd;
    case kRafsComprGzip:
      if (gzip_ok) {
        return base::Compressor::kGzip;
      }
      // Representable on disk but not decodable here: keep parsing, fail on decode.
      *unsupported = true;
      return base::Compressor::kNone;
    default:
      return base::errorf(kECorrupted, "blob {}: unknown {} {}", blob, what, v);
  }
}

bool valid_file_type(std::uint16_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
    case S_IFSOCK:
      return true;
    default:
      return false;
  }
}

std::string_view xattr_prefix(std::uint8_t index) {
  switch (index) {
    case kXattrIndexUser:
      return "user.";
    case kXattrIndexPosixAclAccess:
      return "system.posix_acl_access";
    case kXattrIndexPosixAclDefault:
      return "system.posix_acl_default";
    case kXattrIndexTrusted:
      return "trusted.";
    case kXattrIndexLustre:
      return "lustre.";
    case kXattrIndexSecurity:
      return "security.";
    default:
      return {};
  }
}

// Everything the data paths need about one inode, derived once by load_inode().
struct InodeLoc {
  InodeInfo info;
  std::uint64_t off = 0;          // byte offset of the inode
  std::uint64_t isize = 0;        // 32 or 64
  std::uint64_t xattr_isize = 0;  // inline xattr body size
  std::uint64_t data_off = 0;     // off + isize + xattr_isize
  std::uint32_t i_u = 0;
  std::uint16_t xattr_icount = 0;
};

// The one place that decodes an inode; the public functions go through it.
base::Result<InodeLoc> load_inode(Bytes data, const SuperBlock& sb, Nid nid) {
  const std::uint64_t bs = 1ULL << sb.blkszbits;
  const std::uint64_t meta = std::uint64_t{sb.meta_blkaddr} * bs;
  if (nid > data.size() / kSlotSize || !in_bounds(meta, nid * kSlotSize, data.size())) {
    return base::errorf(kECorrupted, "inode {}: past end of image", nid);
  }
  InodeLoc loc;
  loc.off = meta + nid * kSlotSize;
  CFN_ASSIGN_OR_RETURN(auto c, load_at<InodeCompact>(data, loc.off, "inode"));
  const std::uint16_t format = le16(c.i_format);
  if ((format & ~0x0FU) != 0) {
    return base::errorf(EOPNOTSUPP, "inode {}: unsupported i_format {:#x}", nid, format);
  }
  const std::uint8_t layout = (format >> kInodeDataLayoutBit) & 0x7;
  if (layout > kInodeChunkBased) {
    return base::errorf(kECorrupted, "inode {}: invalid data layout {}", nid, layout);
  }
  if (layout == kInodeCompressedFull || layout == kInodeCompressedCompact) {
    return base::errorf(EOPNOTSUPP, "inode {}: compressed data layout {}", nid, layout);
  }
  InodeInfo& in = loc.info;
  in.nid = nid;
  in.layout = layout;
  in.extended = (format & kInodeLayoutExtended) != 0;
  loc.xattr_icount = le16(c.i_xattr_icount);
  if (in.extended) {
    CFN_ASSIGN_OR_RETURN(auto e, load_at<InodeExtended>(data, loc.off, "extended inode"));
    loc.isize = sizeof(InodeExtended);
    in.mode = le16(e.i_mode);
    in.size = le64(e.i_size);
    loc.i_u = le32(e.i_u);
    in.ino = le32(e.i_ino);
    in.uid = le32(e.i_uid);
    in.gid = le32(e.i_gid);
    in.mtime = static_cast<std::int64_t>(le64(e.i_mtime));
    in.mtime_nsec = le32(e.i_mtime_nsec);
    in.nlink = le32(e.i_nlink);
  } else {
    loc.isize = sizeof(InodeCompact);
    in.mode = le16(c.i_mode);
    in.size = le32(c.i_size);
    loc.i_u = le32(c.i_u);
    in.ino = le32(c.i_ino);
    in.uid = le16(c.i_uid);
    in.gid = le16(c.i_gid);
    in.mtime = static_cast<std::int64_t>(sb.epoch);
    in.mtime_nsec = sb.fixed_nsec;
    in.nlink = le16(c.i_nlink);
  }
  if (!valid_file_type(in.mode)) {
    return base::errorf(kECorrupted, "inode {}: bogus i_mode {:#o}", nid, in.mode);
  }
  if (S_ISCHR(in.mode) || S_ISBLK(in.mode)) {
    in.rdev = loc.i_u;
  }
  loc.xattr_isize = xattr_ibody_size(loc.xattr_icount);
  if (!in_bounds(loc.off, loc.isize + loc.xattr_isize, data.size())) {
    return base::errorf(kECorrupted, "inode {}: xattr body past end of image", nid);
  }
  loc.data_off = loc.off + loc.isize + loc.xattr_isize;
  if (layout == kInodeFlatInline && in.size > 0) {
    const std::uint64_t tail = in.size - (in.size - 1) / bs * bs;
    if ((loc.data_off % bs) + tail > bs) {
      return base::errorf(kECorrupted, "inode {}: inline data across blocks", nid);
    }
    if (!in_bounds(loc.data_off, tail, data.size())) {
      return base::errorf(kECorrupted, "inode {}: inline data past end of image", nid);
    }
  }
  return loc;
}

// Chunk geometry of a CHUNK_BASED inode.
struct ChunkGeom {
  std::uint64_t base = 0;  // offset of entry 0
  std::uint64_t unit = 0;  // 4 or 8
  std::uint64_t count = 0;
  unsigned bits = 0;  // log2 chunk size used for mapping
};

}  // namespace

base::Result<Image> Image::parse(base::Bytes bootstrap) {
  Image img;
  img.data_ = bootstrap;
  const Bytes d = bootstrap;
  if (d.size() < kSuperOffset + sizeof(SuperBlock)) {
    return base::errorf(EINVAL, "image too small for an EROFS superblock ({} bytes)", d.size());
  }
  img.sb_ = to_host(base::load<SuperBlock>(d, kSuperOffset));
  SuperBlock& sb = img.sb_;
  if (sb.magic != kMagic) {
    return base::errorf(EINVAL, "bad EROFS magic {:#010x}", +sb.magic);
  }
  if (sb.blkszbits < 9 || sb.blkszbits > 12) {
    return base::errorf(kECorrupted, "blkszbits {} outside 9..12", sb.blkszbits);
  }
  const std::uint64_t bs = 1ULL << sb.blkszbits;
  constexpr std::uint32_t kSupportedIncompat =
      kFeatureIncompatZeroPadding | kFeatureIncompatChunkedFile | kFeatureIncompatDeviceTable |
      kFeatureIncompatXattrPrefixes;
  if ((sb.feature_incompat & ~kSupportedIncompat) != 0) {
    return base::errorf(EOPNOTSUPP, "unsupported incompat features {:#x}",
                        sb.feature_incompat & ~kSupportedIncompat);
  }
  if (sb.dirblkbits != 0) {
    return base::errorf(EOPNOTSUPP, "dirblkbits {} is not supported", sb.dirblkbits);
  }
  const std::uint64_t sb_size = sizeof(SuperBlock) + 16ULL * sb.sb_extslots;
  if (!in_bounds(kSuperOffset, sb_size, d.size())) {
    return base::errorf(kECorrupted, "superblock with {} ext slots past end of image",
                        sb.sb_extslots);
  }
  if ((sb.feature_compat & kFeatureCompatSbChksum) != 0) {
    const std::uint64_t len = bs > kSuperOffset ? bs - kSuperOffset : bs;
    if (!in_bounds(kSuperOffset, len, d.size())) {
      return base::errorf(kECorrupted, "superblock checksum range past end of image");
    }
    std::array<std::byte, 8> head{};
    std::memcpy(head.data(), d.data() + kSuperOffset, 4);  // magic; checksum counts as 0
    std::uint32_t crc = crc32c_raw(0xFFFFFFFFU, head);
    crc = crc32c_raw(crc, d.subspan(kSuperOffset + 8, len - 8));
    if (crc != sb.checksum) {
      return base::errorf(kECorrupted, "superblock checksum {:#010x}, computed {:#010x}",
                          +sb.checksum, crc);
    }
  }
  img.root_nid_ = sb.root_nid;

  // Device table.
  std::vector<DeviceSlot> slots;
  if ((sb.feature_incompat & kFeatureIncompatDeviceTable) != 0 && sb.extra_devices > 0) {
    const std::uint64_t devt = std::uint64_t{sb.devt_slotoff} * sizeof(DeviceSlot);
    if (!in_bounds(devt, std::uint64_t{sb.extra_devices} * sizeof(DeviceSlot), d.size())) {
      return base::errorf(kECorrupted, "device table ({} slots at {}) past end of image",
                          +sb.extra_devices, devt);
    }
    for (std::uint32_t i = 0; i < sb.extra_devices; ++i) {
      slots.push_back(base::load<DeviceSlot>(d, devt + i * sizeof(DeviceSlot)));
    }
  } else {
    sb.extra_devices = 0;
  }
  std::uint32_t mask = 1;
  while (mask < std::uint32_t{sb.extra_devices} + 1) {
    mask <<= 1;
  }
  img.device_id_mask_ = mask - 1;

  img.rafs_ = (sb.feature_compat & kFeatureCompatRafsV6) != 0;
  if (img.rafs_) {
    if (sb.sb_extslots != 0) {
      return base::errorf(kECorrupted, "RAFS superblock with {} ext slots", sb.sb_extslots);
    }
    CFN_ASSIGN_OR_RETURN(auto ext,
                         load_at<RafsExtSuperBlock>(d, kRafsExtSuperOffset, "RAFS ext-superblock"));
    img.rafs_flags_ = le64(ext.s_flags);
    img.chunk_size_ = le32(ext.s_chunk_size);
    if (!base::is_pow2(img.chunk_size_) || img.chunk_size_ < 4096 ||
        img.chunk_size_ > (16U << 20)) {
      return base::errorf(kECorrupted, "RAFS chunk size {:#x} is not a power of two in 4K..16M",
                          img.chunk_size_);
    }
    const std::uint64_t bt_off = le64(ext.s_blob_table_offset);
    const std::uint32_t bt_size = le32(ext.s_blob_table_size);
    if (bt_size % sizeof(RafsV6Blob) != 0 || !in_bounds(bt_off, bt_size, d.size())) {
      return base::errorf(kECorrupted, "blob table ({} bytes at {}) invalid or past end of image",
                          bt_size, bt_off);
    }
    const std::uint32_t nblobs = bt_size / sizeof(RafsV6Blob);
    if (nblobs != sb.extra_devices) {
      return base::errorf(kECorrupted, "blob table has {} blobs but the device table {}", nblobs,
                          +sb.extra_devices);
    }
    for (std::uint32_t i = 0; i < nblobs; ++i) {
      const auto raw = base::load<RafsV6Blob>(d, bt_off + std::uint64_t{i} * sizeof(RafsV6Blob));
      BlobInfo b;
      b.id = fixed_string(raw.blob_id, sizeof(raw.blob_id));
      b.index = le32(raw.blob_index);
      if (b.index != i) {
        return base::errorf(kECorrupted, "blob {}: blob_index {} differs from its position", i,
                            b.index);
      }
      b.chunk_size = le32(raw.chunk_size);
      if (b.chunk_size != img.chunk_size_) {
        return base::errorf(kECorrupted, "blob {}: chunk size {:#x} differs from superblock {:#x}",
                            i, b.chunk_size, img.chunk_size_);
      }
      b.chunk_count = le32(raw.chunk_count);
      if (b.chunk_count > (1U << 24)) {
        return base::errorf(kECorrupted, "blob {}: chunk count {} over 2^24", i, b.chunk_count);
      }
      CFN_ASSIGN_OR_RETURN(b.compressor,
                           rafs_compressor(le32(raw.compression_algo), &b.unsupported_compressor,
                                           "compression_algo", i, true));
      CFN_ASSIGN_OR_RETURN(b.ci_compressor,
                           rafs_compressor(le32(raw.ci_compressor), &b.unsupported_ci_compressor,
                                           "ci_compressor", i, false));
      const std::uint32_t dalgo = le32(raw.digest_algo);
      if (dalgo == kRafsDigestBlake3) {
        b.digester = base::DigestAlgo::kBlake3;
      } else if (dalgo == kRafsDigestSha256) {
        b.digester = base::DigestAlgo::kSha256;
      } else {
        return base::errorf(kECorrupted, "blob {}: unknown digest_algo {}", i, dalgo);
      }
      b.features = le32(raw.features);
      if ((b.features & 0x8000F000U) != 0) {
        return base::errorf(EOPNOTSUPP, "blob {}: unsupported features {:#x}", i, b.features);
      }
      b.compressed_size = le64(raw.compressed_size);
      b.uncompressed_size = le64(raw.uncompressed_size);
      b.toc_size = le32(raw.blob_toc_size);
      std::memcpy(b.toc_digest.data(), raw.blob_toc_digest, b.toc_digest.size());
      b.ci_offset = le64(raw.ci_offset);
      b.ci_compressed_size = le64(raw.ci_compressed_size);
      b.ci_uncompressed_size = le64(raw.ci_uncompressed_size);
      b.device_blocks = le32(slots[i].blocks);
      b.mapped_blkaddr = le32(slots[i].mapped_blkaddr);
      img.blobs_.push_back(std::move(b));
    }
    img.chunk_table_offset_ = le64(ext.s_chunk_table_offset);
    img.chunk_table_size_ = le64(ext.s_chunk_table_size);
    if (img.chunk_table_size_ % sizeof(RafsV5ChunkInfo) != 0 ||
        !in_bounds(img.chunk_table_offset_, img.chunk_table_size_, d.size())) {
      return base::errorf(kECorrupted, "chunk table ({} bytes at {}) invalid or past end of image",
                          img.chunk_table_size_, img.chunk_table_offset_);
    }
    img.prefetch_table_offset_ = le64(ext.s_prefetch_table_offset);
    img.prefetch_table_size_ = le32(ext.s_prefetch_table_size);
    if (img.prefetch_table_size_ % 4 != 0 ||
        !in_bounds(img.prefetch_table_offset_, img.prefetch_table_size_, d.size())) {
      return base::errorf(kECorrupted,
                          "prefetch table ({} bytes at {}) invalid or past end of image",
                          img.prefetch_table_size_, img.prefetch_table_offset_);
    }
  } else {
    for (std::uint32_t i = 0; i < slots.size(); ++i) {
      BlobInfo b;
      b.id = fixed_string(slots[i].tag, sizeof(slots[i].tag));
      b.index = i;
      b.device_blocks = le32(slots[i].blocks);
      b.mapped_blkaddr = le32(slots[i].mapped_blkaddr);
      b.uncompressed_size = std::uint64_t{b.device_blocks} * bs;
      b.compressed_size = b.uncompressed_size;
      img.blobs_.push_back(std::move(b));
    }
  }

  CFN_ASSIGN_OR_RETURN(auto root, load_inode(d, sb, img.root_nid_));
  if (!S_ISDIR(root.info.mode)) {
    return base::errorf(kECorrupted, "root inode {} is not a directory", img.root_nid_);
  }
  return img;
}

base::Result<InodeInfo> Image::stat(Nid nid) const {
  CFN_ASSIGN_OR_RETURN(auto loc, load_inode(data_, sb_, nid));
  return loc.info;
}

namespace {

// Resolve a unified (device 0) block address: inside a device's mapped range it goes
// to that device, otherwise to the primary image.
Extent unified_extent(const std::vector<BlobInfo>& blobs, std::uint64_t blk, std::uint64_t bs) {
  Extent e;
  for (const BlobInfo& b : blobs) {
    if (b.mapped_blkaddr != 0 && blk >= b.mapped_blkaddr &&
        blk - b.mapped_blkaddr < b.device_blocks) {
      e.kind = Extent::Kind::kBlob;
      e.blob_index = b.index;
      e.offset = (blk - b.mapped_blkaddr) * bs;
      return e;
    }
  }
  e.kind = Extent::Kind::kBootstrap;
  e.offset = blk * bs;
  return e;
}

void push_extent(std::vector<Extent>& out, Extent e) {
  if (!out.empty()) {
    Extent& p = out.back();
    const bool adjacent = p.file_offset + p.length == e.file_offset;
    if (adjacent && p.kind == e.kind && !p.ci_index && !e.ci_index) {
      if (e.kind == Extent::Kind::kHole) {
        p.length += e.length;
        return;
      }
      if (p.blob_index == e.blob_index && p.offset + p.length == e.offset) {
        p.length += e.length;
        return;
      }
    }
  }
  out.push_back(e);
}

}  // namespace

base::Result<std::vector<Extent>> Image::map(Nid nid, std::uint64_t off, std::uint64_t len) const {
  CFN_ASSIGN_OR_RETURN(auto loc, load_inode(data_, sb_, nid));
  const InodeInfo& in = loc.info;
  std::vector<Extent> out;
  if (off >= in.size || len == 0) {
    return out;
  }
  const std::uint64_t end = in.size - off < len ? in.size : off + len;
  const std::uint64_t bs = block_size();

  auto check_boot = [&](const Extent& e) -> base::Status {
    if (e.kind == Extent::Kind::kBootstrap && !in_bounds(e.offset, e.length, data_.size())) {
      return base::errorf(kECorrupted, "inode {}: data at {} (+{}) past end of image", nid,
                          e.offset, e.length);
    }
    return {};
  };

  if (in.layout == kInodeFlatPlain || in.layout == kInodeFlatInline) {
    const std::uint64_t nblocks = (in.size + bs - 1) / bs;
    // Bytes that live in whole blocks at startblk; the rest is the inline tail.
    const std::uint64_t block_bytes = in.layout == kInodeFlatInline ? (nblocks - 1) * bs : in.size;
    if (off < block_bytes) {
      Extent e;
      e.file_offset = off;
      e.length = std::min(end, block_bytes) - off;
      if (loc.i_u == kNullAddr) {
        e.kind = Extent::Kind::kHole;
      } else {
        const std::uint64_t startblk = loc.i_u;
        Extent u = unified_extent(blobs_, startblk, bs);
        if (off > UINT64_MAX - u.offset) {
          return base::errorf(kECorrupted, "inode {}: data offset overflows", nid);
        }
        e.kind = u.kind;
        e.blob_index = u.blob_index;
        e.offset = u.offset + off;
        if (e.kind == Extent::Kind::kBlob &&
            !in_bounds(e.offset, e.length, blobs_[e.blob_index].uncompressed_size)) {
          return base::errorf(kECorrupted, "inode {}: data past end of device {}", nid,
                              e.blob_index + 1);
        }
      }
      CFN_TRY(check_boot(e));
      push_extent(out, e);
    }
    if (end > block_bytes) {
      Extent e;
      e.kind = Extent::Kind::kBootstrap;
      const std::uint64_t from = std::max(off, block_bytes);
      e.file_offset = from;
      e.length = end - from;
      e.offset = loc.data_off + (from - block_bytes);
      CFN_TRY(check_boot(e));
      push_extent(out, e);
    }
    return out;
  }

  // CHUNK_BASED.
  const std::uint16_t cfmt = static_cast<std::uint16_t>(loc.i_u & 0xFFFF);
  if ((cfmt & ~(kChunkFormatBlkbitsMask | kChunkFormatIndexes)) != 0) {
    return base::errorf(EOPNOTSUPP, "inode {}: unsupported chunk format {:#x}", nid, cfmt);
  }
  const bool indexes = (cfmt & kChunkFormatIndexes) != 0;
  const std::uint64_t unit = indexes ? sizeof(ChunkIndex) : 4;
  unsigned bits = sb_.blkszbits + (cfmt & kChunkFormatBlkbitsMask);
  if (rafs_ && indexes) {
    // nydusd reads one index entry per RAFS chunk whatever chunkbits claims (the
    // contiguous-chunk trick widens chunkbits; the entries still cover s_chunk_size).
    bits = static_cast<unsigned>(__builtin_ctz(chunk_size_));
  }
  const std::uint64_t count = ((in.size - 1) >> bits) + 1;
  const std::uint64_t base_off = base::align_up(loc.data_off, unit);
  if (count > data_.size() / unit || !in_bounds(base_off, count * unit, data_.size())) {
    return base::errorf(kECorrupted, "inode {}: chunk index array past end of image", nid);
  }
  const std::uint64_t csize = 1ULL << bits;
  for (std::uint64_t i = off >> bits; i < count && (i << bits) < end; ++i) {
    const std::uint64_t cstart = i << bits;
    const std::uint64_t from = std::max(off, cstart);
    const std::uint64_t to = end - cstart < csize ? end : cstart + csize;
    Extent e;
    e.file_offset = from;
    e.length = to - from;
    std::uint32_t blk = 0;
    std::uint32_t dev = 0;
    if (indexes) {
      const auto ci = base::load<ChunkIndex>(data_, base_off + i * unit);
      blk = le32(ci.startblk_lo);
      const std::uint16_t raw_dev = le16(ci.device_id);
      dev = raw_dev & device_id_mask_;
      if (rafs_ && blk != kNullAddr) {
        e.ci_index = (std::uint32_t{raw_dev} >> 8) << 16 | le16(ci.startblk_hi);
      }
    } else {
      std::uint32_t v = 0;
      std::memcpy(&v, data_.data() + base_off + i * unit, 4);
      blk = le32(v);
    }
    if (blk == kNullAddr) {
      e.kind = Extent::Kind::kHole;
      e.ci_index.reset();
    } else if (dev == 0) {
      Extent u = unified_extent(blobs_, blk, bs);
      e.kind = u.kind;
      e.blob_index = u.blob_index;
      e.offset = u.offset + (from - cstart);
      e.ci_index.reset();
    } else {
      if (dev > blobs_.size()) {
        return base::errorf(kECorrupted, "inode {}: chunk {} names device {} of {}", nid, i, dev,
                            blobs_.size());
      }
      e.kind = Extent::Kind::kBlob;
      e.blob_index = dev - 1;
      e.offset = std::uint64_t{blk} * bs + (from - cstart);
      const BlobInfo& b = blobs_[e.blob_index];
      if (e.ci_index && b.chunk_count != 0 && *e.ci_index >= b.chunk_count) {
        return base::errorf(kECorrupted, "inode {}: chunk {} ci index {} >= blob chunk count {}",
                            nid, i, *e.ci_index, b.chunk_count);
      }
    }
    CFN_TRY(check_boot(e));
    push_extent(out, e);
  }
  return out;
}

base::Result<std::vector<std::byte>> Image::read_inline(Nid nid, std::uint64_t off,
                                                        std::uint64_t len) const {
  CFN_ASSIGN_OR_RETURN(auto extents, map(nid, off, len));
  std::uint64_t total = 0;
  for (const Extent& e : extents) {
    if (e.kind == Extent::Kind::kBlob) {
      return base::errorf(EINVAL, "inode {}: data at {} lives in blob {}", nid, e.file_offset,
                          e.blob_index);
    }
    total += e.length;
  }
  // Holes read as zeros; refuse to materialise more zeros than the image could hold
  // data for, so a lying i_size cannot make us allocate gigabytes.
  if (total > data_.size() + (64ULL << 20)) {
    return base::errorf(EFBIG, "inode {}: {} bytes is too large to read from the bootstrap", nid,
                        total);
  }
  std::vector<std::byte> out(total);
  std::uint64_t pos = 0;
  for (const Extent& e : extents) {
    if (e.kind == Extent::Kind::kBootstrap) {
      std::memcpy(out.data() + pos, data_.data() + e.offset, e.length);
    }
    pos += e.length;
  }
  return out;
}

namespace {

struct RawDirent {
  std::string_view name;
  Nid nid = 0;
  std::uint8_t file_type = 0;
};

// Parse one directory block (maxsize bytes: the block, or the last partial block).
base::Status parse_dir_block(Bytes blk, Nid dir, std::uint64_t blkno, std::vector<RawDirent>& out) {
  out.clear();
  if (blk.size() < sizeof(Dirent)) {
    return base::errorf(kECorrupted, "dir {}: block {} shorter than one dirent", dir, blkno);
  }
  const auto d0 = base::load<Dirent>(blk, 0);
  const std::uint64_t nameoff0 = le16(d0.nameoff);
  if (nameoff0 < sizeof(Dirent) || nameoff0 >= blk.size() || nameoff0 % sizeof(Dirent) != 0) {
    return base::errorf(kECorrupted, "dir {}: block {} has invalid nameoff0 {}", dir, blkno,
                        nameoff0);
  }
  const std::uint64_t n = nameoff0 / sizeof(Dirent);
  out.reserve(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    const auto de = base::load<Dirent>(blk, i * sizeof(Dirent));
    const std::uint64_t start = le16(de.nameoff);
    std::uint64_t stop = 0;
    if (i + 1 < n) {
      stop = le16(base::load<Dirent>(blk, (i + 1) * sizeof(Dirent)).nameoff);
    } else if (start < blk.size()) {
      const auto* p = reinterpret_cast<const char*>(blk.data() + start);
      stop = start + strnlen(p, blk.size() - start);
    }
    if (start < nameoff0 || start >= blk.size() || stop < start || stop > blk.size()) {
      return base::errorf(kECorrupted, "dir {}: block {} dirent {} has invalid nameoff {}", dir,
                          blkno, i, start);
    }
    if (stop == start || stop - start > kNameLen) {
      return base::errorf(kECorrupted, "dir {}: block {} dirent {} has name length {}", dir, blkno,
                          i, stop - start);
    }
    RawDirent r;
    r.name = base::as_chars(blk.subspan(start, stop - start));
    r.nid = le64(de.nid);
    r.file_type = de.file_type;
    out.push_back(r);
  }
  return {};
}

// A view of directory block `i` inside the bootstrap (each block is contiguous).
base::Result<Bytes> dir_block(const Image& img, const InodeLoc& loc, std::uint64_t i) {
  const std::uint64_t bs = img.block_size();
  const std::uint64_t start = i * bs;
  const std::uint64_t len = std::min(bs, loc.info.size - start);
  CFN_ASSIGN_OR_RETURN(auto ext, img.map(loc.info.nid, start, len));
  if (ext.size() != 1 || ext[0].kind != Extent::Kind::kBootstrap || ext[0].length != len) {
    return base::errorf(kECorrupted, "dir {}: block {} is not stored in the bootstrap",
                        loc.info.nid, i);
  }
  return img.bytes().subspan(ext[0].offset, len);
}

base::Result<InodeLoc> load_dir(Bytes data, const SuperBlock& sb, Nid nid) {
  CFN_ASSIGN_OR_RETURN(auto loc, load_inode(data, sb, nid));
  if (!S_ISDIR(loc.info.mode)) {
    return base::errorf(ENOTDIR, "inode {} is not a directory", nid);
  }
  if (loc.info.size > data.size()) {
    return base::errorf(kECorrupted, "dir {}: size {} larger than the image", nid, loc.info.size);
  }
  return loc;
}

}  // namespace

base::Result<std::vector<DirEntry>> Image::readdir(Nid dir) const {
  CFN_ASSIGN_OR_RETURN(auto loc, load_dir(data_, sb_, dir));
  const std::uint64_t nblocks = (loc.info.size + block_size() - 1) / block_size();
  std::vector<DirEntry> out;
  std::vector<RawDirent> raw;
  for (std::uint64_t i = 0; i < nblocks; ++i) {
    CFN_ASSIGN_OR_RETURN(auto blk, dir_block(*this, loc, i));
    CFN_TRY(parse_dir_block(blk, dir, i, raw));
    for (const RawDirent& r : raw) {
      out.push_back(DirEntry{std::string(r.name), r.nid, r.file_type});
    }
  }
  return out;
}

base::Result<Nid> Image::lookup(Nid dir, std::string_view name) const {
  CFN_ASSIGN_OR_RETURN(auto loc, load_dir(data_, sb_, dir));
  if (name.empty() || name.size() > kNameLen) {
    return base::errorf(ENOENT, "dir {}: no entry '{}'", dir, name);
  }
  // Names are byte-sorted across and within blocks: binary search the blocks by
  // their first and last names, then the entries of the one block that may hold it.
  std::uint64_t lo = 0;
  std::uint64_t hi = (loc.info.size + block_size() - 1) / block_size();
  std::vector<RawDirent> raw;
  while (lo < hi) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    CFN_ASSIGN_OR_RETURN(auto blk, dir_block(*this, loc, mid));
    CFN_TRY(parse_dir_block(blk, dir, mid, raw));
    if (name < raw.front().name) {
      hi = mid;
    } else if (name > raw.back().name) {
      lo = mid + 1;
    } else {
      auto it = std::lower_bound(raw.begin(), raw.end(), name,
                                 [](const RawDirent& r, std::string_view n) { return r.name < n; });
      if (it != raw.end() && it->name == name) {
        return it->nid;
      }
      break;
    }
  }
  return base::errorf(ENOENT, "dir {}: no entry '{}'", dir, name);
}

base::Result<Nid> Image::lookup_path(std::string_view path) const {
  if (path.empty() || path.front() != '/') {
    return base::errorf(EINVAL, "path '{}' is not absolute", path);
  }
  // One lookup per component and symlinks are not followed, so the work is bounded
  // by the path length even when the image has directory cycles.
  Nid cur = root_nid_;
  std::size_t pos = 0;
  while (pos < path.size()) {
    const std::size_t slash = path.find('/', pos);
    const std::size_t stop = slash == std::string_view::npos ? path.size() : slash;
    const std::string_view comp = path.substr(pos, stop - pos);
    pos = stop + 1;
    if (comp.empty()) {
      continue;
    }
    CFN_ASSIGN_OR_RETURN(cur, lookup(cur, comp));
  }
  return cur;
}

base::Status Image::walk(Nid dir, const std::string& dir_path, const WalkFn& fn) const {
  CFN_ASSIGN_OR_RETURN(auto top, stat(dir));
  if (!fn(dir_path, dir, top)) {
    return {};
  }
  if (!S_ISDIR(top.mode)) {
    return {};
  }
  std::set<Nid> seen{dir};
  // An explicit stack: a hostile image's depth must not become recursion depth.
  std::vector<std::pair<Nid, std::string>> stack{{dir, dir_path}};
  while (!stack.empty()) {
    auto [d, path] = std::move(stack.back());
    stack.pop_back();
    CFN_ASSIGN_OR_RETURN(auto entries, readdir(d));
    std::vector<std::pair<Nid, std::string>> subdirs;
    for (const DirEntry& e : entries) {
      if (e.name == "." || e.name == "..") {
        continue;
      }
      if (!seen.insert(e.nid).second) {
        if (e.file_type == kFtDir) {
          return base::errorf(kECorrupted, "directory nid {} is linked twice", e.nid);
        }
        continue;  // a hard link
      }
      const std::string p = path == "/" ? "/" + e.name : path + "/" + e.name;
      CFN_ASSIGN_OR_RETURN(auto info, stat(e.nid));
      if (!fn(p, e.nid, info)) {
        return {};
      }
      if (S_ISDIR(info.mode)) {
        subdirs.emplace_back(e.nid, p);
      }
    }
    // Reversed so the stack pops them in directory order.
    stack.insert(stack.end(), std::make_move_iterator(subdirs.rbegin()),
                 std::make_move_iterator(subdirs.rend()));
  }
  return {};
}

base::Result<std::string> Image::readlink(Nid nid) const {
  CFN_ASSIGN_OR_RETURN(auto loc, load_inode(data_, sb_, nid));
  if (!S_ISLNK(loc.info.mode)) {
    return base::errorf(EINVAL, "inode {} is not a symlink", nid);
  }
  if (loc.info.size == 0 || loc.info.size > kMaxSymlinkSize) {
    return base::errorf(kECorrupted, "symlink {}: target length {}", nid, loc.info.size);
  }
  CFN_ASSIGN_OR_RETURN(auto bytes, read_inline(nid, 0, loc.info.size));
  return std::string(base::as_chars(bytes));
}

namespace {

// Decode one xattr entry at `off` of `data`, not reaching beyond `limit`.
// Returns the entry's padded size.
base::Result<std::uint64_t> parse_xattr_entry(Bytes data, std::uint64_t off, std::uint64_t limit,
                                              Nid nid, Xattr& out) {
  if (limit > data.size() || off > limit || limit - off < sizeof(XattrEntry)) {
    return base::errorf(kECorrupted, "inode {}: xattr entry at {} truncated", nid, off);
  }
  const auto e = base::load<XattrEntry>(data, off);
  const std::uint64_t nlen = e.e_name_len;
  const std::uint64_t vlen = le16(e.e_value_size);
  const std::uint64_t total = base::align_up(sizeof(XattrEntry) + nlen + vlen, 4);
  if (limit - off < sizeof(XattrEntry) + nlen + vlen) {
    return base::errorf(kECorrupted, "inode {}: xattr entry at {} ({} + {} bytes) overruns", nid,
                        off, nlen, vlen);
  }
  if ((e.e_name_index & kXattrLongPrefixBit) != 0) {
    return base::errorf(EOPNOTSUPP, "inode {}: long xattr name prefixes are not supported", nid);
  }
  const std::string_view prefix = xattr_prefix(e.e_name_index);
  if (prefix.empty()) {
    return base::errorf(kECorrupted, "inode {}: unknown xattr name index {}", nid, e.e_name_index);
  }
  out.name = std::string(prefix);
  out.name += base::as_chars(data.subspan(off + sizeof(XattrEntry), nlen));
  out.value = std::string(base::as_chars(data.subspan(off + sizeof(XattrEntry) + nlen, vlen)));
  return total;
}

}  // namespace

base::Result<std::vector<Xattr>> Image::xattrs(Nid nid) const {
  CFN_ASSIGN_OR_RETURN(auto loc, load_inode(data_, sb_, nid));
  std::vector<Xattr> out;
  if (loc.xattr_icount == 0) {
    return out;
  }
  const std::uint64_t body = loc.off + loc.isize;
  const std::uint64_t body_end = body + loc.xattr_isize;  // checked in load_inode
  const auto h = base::load<XattrIbodyHeader>(data_, body);
  const std::uint64_t shared = h.h_shared_count;
  if (sizeof(XattrIbodyHeader) + shared * 4 > loc.xattr_isize) {
    return base::errorf(kECorrupted, "inode {}: {} shared xattr ids overrun the xattr body", nid,
                        shared);
  }
  const std::uint64_t xbase = std::uint64_t{sb_.xattr_blkaddr} * block_size();
  for (std::uint64_t i = 0; i < shared; ++i) {
    std::uint32_t id = 0;
    std::memcpy(&id, data_.data() + body + sizeof(XattrIbodyHeader) + i * 4, 4);
    const std::uint64_t at = xbase + std::uint64_t{le32(id)} * 4;
    Xattr x;
    CFN_TRY(parse_xattr_entry(data_, at, data_.size(), nid, x));
    out.push_back(std::move(x));
  }
  std::uint64_t pos = body + sizeof(XattrIbodyHeader) + shared * 4;
  while (pos < body_end) {
    Xattr x;
    CFN_ASSIGN_OR_RETURN(auto used, parse_xattr_entry(data_, pos, body_end, nid, x));
    if (used > body_end - pos) {
      return base::errorf(kECorrupted, "inode {}: xattr entry padding overruns the body", nid);
    }
    pos += used;
    out.push_back(std::move(x));
  }
  return out;
}

base::Result<std::string> Image::getxattr(Nid nid, std::string_view name) const {
  CFN_ASSIGN_OR_RETURN(auto all, xattrs(nid));
  for (Xattr& x : all) {
    if (x.name == name) {
      return std::move(x.value);
    }
  }
  return base::errorf(ENODATA, "inode {}: no xattr '{}'", nid, name);
}

base::Result<std::vector<ChunkRecord>> Image::chunk_table() const {
  std::vector<ChunkRecord> out;
  const std::uint64_t n = chunk_table_size_ / sizeof(RafsV5ChunkInfo);
  out.reserve(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    const auto raw =
        base::load<RafsV5ChunkInfo>(data_, chunk_table_offset_ + i * sizeof(RafsV5ChunkInfo));
    ChunkRecord r;
    std::memcpy(r.digest.data(), raw.block_id, r.digest.size());
    r.blob_index = le32(raw.blob_index);
    if (r.blob_index >= blobs_.size()) {
      return base::errorf(kECorrupted, "chunk table entry {}: blob index {} of {}", i, r.blob_index,
                          blobs_.size());
    }
    r.flags = le32(raw.flags);
    r.compressed_size = le32(raw.compressed_size);
    r.uncompressed_size = le32(raw.uncompressed_size);
    r.compressed_offset = le64(raw.compressed_offset);
    r.uncompressed_offset = le64(raw.uncompressed_offset);
    r.file_offset = le64(raw.file_offset);
    r.index = le32(raw.index);
    r.crc32 = le32(raw.crc32);
    out.push_back(r);
  }
  return out;
}

base::Result<std::vector<Nid>> Image::prefetch_table() const {
  std::vector<Nid> out;
  const std::uint64_t n = prefetch_table_size_ / 4;
  out.reserve(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    std::uint32_t v = 0;
    std::memcpy(&v, data_.data() + prefetch_table_offset_ + i * 4, 4);
    const Nid nid = le32(v);
    // Each entry must name an inode this image can read: a runtime acts on them.
    if (auto st = stat(nid); !st) {
      return base::errorf(kECorrupted, "prefetch table entry {} (nid {}): {}", i, nid,
                          st.error().to_string());
    }
    out.push_back(nid);
  }
  return out;
}

}  // namespace erofs
