// SPDX-License-Identifier: Apache-2.0
// Reader for EROFS images and RAFS v6 bootstraps. Pure: it parses a byte view that
// the caller keeps alive (a mapped or loaded bootstrap) and never does I/O.
// Every offset read from the image is bounds-checked; a corrupt image yields
// EFSCORRUPTED-style errors (EUCLEAN), never a crash or an out-of-bounds read.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/compress.h"
#include "base/digest.h"
#include "base/result.h"
#include "erofs/format.h"

namespace erofs {

using Nid = std::uint64_t;
// Error code for corrupt on-disk data (the kernel's EFSCORRUPTED).
inline constexpr int kECorrupted = EUCLEAN;

// One data blob as the bootstrap describes it (RAFS blob table, or a bare device slot).
struct BlobInfo {
  std::string id;  // opaque name: device tag / blob table id
  std::uint32_t index = 0;
  std::uint32_t chunk_size = 0;
  std::uint32_t chunk_count = 0;
  base::Compressor compressor = base::Compressor::kNone;
  base::DigestAlgo digester = base::DigestAlgo::kBlake3;
  std::uint32_t features = 0;
  std::uint64_t compressed_size = 0;  // blob file size
  std::uint64_t uncompressed_size = 0;
  std::uint32_t toc_size = 0;
  base::Digest toc_digest{};
  base::Compressor ci_compressor = base::Compressor::kNone;
  std::uint64_t ci_offset = 0;
  std::uint64_t ci_compressed_size = 0;
  std::uint64_t ci_uncompressed_size = 0;
  std::uint32_t device_blocks = 0;   // from the device slot
  std::uint32_t mapped_blkaddr = 0;  // device slot: start in the unified address space
  // The on-disk ci_compressor names a codec base cannot decode (gzip: gzip chunks
  // decode, as base::Compressor::kGzip, but a gzip chunk-info table does not).
  // Parsing goes on; decode_chunk / BlobMeta::parse fail with EOPNOTSUPP.
  bool unsupported_compressor = false;
  bool unsupported_ci_compressor = false;
};

struct InodeInfo {
  Nid nid = 0;
  std::uint64_t ino = 0;   // i_ino as stored
  std::uint16_t mode = 0;  // type and permission bits
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t size = 0;
  std::int64_t mtime = 0;
  std::uint32_t mtime_nsec = 0;
  std::uint32_t nlink = 0;
  std::uint32_t rdev = 0;   // Linux "new" dev encoding, as stored in i_u
  std::uint8_t layout = 0;  // kInodeFlatPlain / FlatInline / ChunkBased
  bool extended = false;
};

struct DirEntry {
  std::string name;
  Nid nid = 0;
  std::uint8_t file_type = kFtUnknown;
};

struct Xattr {
  std::string name;  // full name, prefix included
  std::string value;
};

// A piece of a file's data, in file order.
struct Extent {
  enum class Kind : std::uint8_t { kHole, kBootstrap, kBlob };
  Kind kind = Kind::kHole;
  std::uint64_t file_offset = 0;
  std::uint64_t length = 0;
  std::uint32_t blob_index = 0;  // kBlob
  std::uint64_t offset = 0;      // kBlob: uncompressed blob offset; kBootstrap: byte offset
  std::optional<std::uint32_t> ci_index;  // kBlob on RAFS: chunk-info index in the blob
};

// One RafsV5ChunkInfo of the bootstrap's chunk table.
struct ChunkRecord {
  base::Digest digest{};
  std::uint32_t blob_index = 0;
  std::uint32_t flags = 0;
  std::uint32_t compressed_size = 0;
  std::uint32_t uncompressed_size = 0;
  std::uint64_t compressed_offset = 0;
  std::uint64_t uncompressed_offset = 0;
  std::uint64_t file_offset = 0;
  std::uint32_t index = 0;
  std::uint32_t crc32 = 0;
};

class Image {
 public:
  // Parse and validate the superblock, device table and RAFS tables. The view must
  // outlive the Image. Errors: EINVAL (not EROFS), kECorrupted, EOPNOTSUPP (unknown
  // incompat features).
  [[nodiscard]] static base::Result<Image> parse(base::Bytes bootstrap);

  [[nodiscard]] bool is_rafs() const { return rafs_; }
  [[nodiscard]] const SuperBlock& super() const { return sb_; }
  [[nodiscard]] std::uint64_t block_size() const { return 1ULL << sb_.blkszbits; }
  [[nodiscard]] Nid root() const { return root_nid_; }
  [[nodiscard]] std::uint64_t rafs_flags() const { return rafs_flags_; }
  [[nodiscard]] std::uint32_t chunk_size() const { return chunk_size_; }  // RAFS only
  [[nodiscard]] const std::vector<BlobInfo>& blobs() const { return blobs_; }
  [[nodiscard]] base::Bytes bytes() const { return data_; }

  [[nodiscard]] base::Result<InodeInfo> stat(Nid nid) const;
  // All entries of a directory, "." and ".." included, in on-disk (byte) order.
  [[nodiscard]] base::Result<std::vector<DirEntry>> readdir(Nid dir) const;
  // ENOENT when absent, ENOTDIR when dir is not a directory.
  [[nodiscard]] base::Result<Nid> lookup(Nid dir, std::string_view name) const;
  // Absolute path ("/", "/a/b"); symlinks are not followed.
  [[nodiscard]] base::Result<Nid> lookup_path(std::string_view path) const;
  // EINVAL when not a symlink.
  [[nodiscard]] base::Result<std::string> readlink(Nid nid) const;
  [[nodiscard]] base::Result<std::vector<Xattr>> xattrs(Nid nid) const;
  // ENODATA when absent.
  [[nodiscard]] base::Result<std::string> getxattr(Nid nid, std::string_view name) const;
  // Map [off, off+len) of a file (clipped at its size) to extents. Chunk-based data
  // maps to blobs; flat data maps into the bootstrap.
  [[nodiscard]] base::Result<std::vector<Extent>> map(Nid nid, std::uint64_t off,
                                                      std::uint64_t len) const;
  // Read file data that lives in the bootstrap itself (directories, symlinks, flat
  // files). EINVAL when some of the range lives in a blob.
  [[nodiscard]] base::Result<std::vector<std::byte>> read_inline(Nid nid, std::uint64_t off,
                                                                 std::uint64_t len) const;
  // RAFS chunk table (may be empty).
  [[nodiscard]] base::Result<std::vector<ChunkRecord>> chunk_table() const;
  // RAFS prefetch table: the nids of the files and directories to fetch first, in
  // table order (empty when the image has none). kECorrupted naming the entry when
  // one is not a readable inode.
  [[nodiscard]] base::Result<std::vector<Nid>> prefetch_table() const;
  // Visit dir and every inode under it once (a hard-linked file under its first
  // name), depth first in directory order: fn(path, nid, info), where path is
  // dir_path joined with the names. fn returns false to stop the walk. A directory
  // met twice (a cycle in a hostile image) is kECorrupted; a read error ends the walk
  // with that error.
  using WalkFn = std::function<bool(const std::string& path, Nid nid, const InodeInfo& info)>;
  [[nodiscard]] base::Status walk(Nid dir, const std::string& dir_path, const WalkFn& fn) const;

 private:
  Image() = default;
  base::Bytes data_;
  SuperBlock sb_{};
  bool rafs_ = false;
  Nid root_nid_ = 0;
  std::uint64_t rafs_flags_ = 0;
  std::uint32_t chunk_size_ = 0;
  std::uint64_t chunk_table_offset_ = 0;
  std::uint64_t chunk_table_size_ = 0;
  std::uint64_t prefetch_table_offset_ = 0;
  std::uint32_t prefetch_table_size_ = 0;
  std::uint32_t device_id_mask_ = 0;
  std::vector<BlobInfo> blobs_;
};

// The RAFS blob table's compression_algo / ci_compressor code of a compressor.
constexpr std::uint32_t rafs_compressor_code(base::Compressor c) {
  switch (c) {
    case base::Compressor::kLz4Block:
      return kRafsComprLz4Block;
    case base::Compressor::kZstd:
      return kRafsComprZstd;
    case base::Compressor::kGzip:
      return kRafsComprGzip;
    case base::Compressor::kNone:
      break;
  }
  return kRafsComprNone;
}

// Linux dev_t "new" encoding used by EROFS i_u for device nodes.
constexpr std::uint32_t encode_rdev(std::uint32_t major, std::uint32_t minor) {
  return (minor & 0xff) | (major << 8) | ((minor & ~0xffU) << 12);
}
constexpr std::uint32_t rdev_major(std::uint32_t r) {
  return (r >> 8) & 0xfff;
}
constexpr std::uint32_t rdev_minor(std::uint32_t r) {
  return (r & 0xff) | ((r >> 12) & 0xfff00);
}

}  // namespace erofs
