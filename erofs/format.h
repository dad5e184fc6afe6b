// SPDX-License-Identifier: Apache-2.0
// EROFS and RAFS v6 on-disk format, and nothing else. Written from the format
// documentation (shared/reference/erofs-format.md); names follow the kernel's
// erofs_fs.h and nydus's v6.rs so a grep works across all three.
//
// All integers are little-endian on disk. Parsers memcpy bytes into these structs
// after a length check and convert each field with base::le16/le32/le64; they never
// cast unchecked bytes. Every size and key offset is pinned at the end of this file.
#pragma once

#include <cstddef>
#include <cstdint>

namespace erofs {

// ---- constants ---------------------------------------------------------------

inline constexpr std::uint32_t kMagic = 0xE0F5E1E2;
inline constexpr std::uint64_t kSuperOffset = 1024;
inline constexpr unsigned kBlkSzBits = 12;  // 4 KiB blocks, what we write
inline constexpr std::uint64_t kBlockSize = 1ULL << kBlkSzBits;
inline constexpr std::uint32_t kNullAddr = 0xFFFFFFFF;  // hole / no block
inline constexpr unsigned kIsSlotBits = 5;              // inode slots are 32 bytes
inline constexpr std::uint64_t kSlotSize = 1ULL << kIsSlotBits;
inline constexpr std::size_t kNameLen = 255;

// feature_compat
inline constexpr std::uint32_t kFeatureCompatSbChksum = 0x00000001;
inline constexpr std::uint32_t kFeatureCompatMtime = 0x00000002;
inline constexpr std::uint32_t kFeatureCompatXattrFilter = 0x00000004;
inline constexpr std::uint32_t kFeatureCompatRafsV6 = 0x40000000;  // nydus private

// feature_incompat
inline constexpr std::uint32_t kFeatureIncompatZeroPadding = 0x001;
inline constexpr std::uint32_t kFeatureIncompatComprCfgs = 0x002;
inline constexpr std::uint32_t kFeatureIncompatChunkedFile = 0x004;
inline constexpr std::uint32_t kFeatureIncompatDeviceTable = 0x008;
inline constexpr std::uint32_t kFeatureIncompatZtailpacking = 0x010;
inline constexpr std::uint32_t kFeatureIncompatFragments = 0x020;
inline constexpr std::uint32_t kFeatureIncompatXattrPrefixes = 0x040;
inline constexpr std::uint32_t kFeatureIncompat48Bit = 0x080;
inline constexpr std::uint32_t kFeatureIncompatMetabox = 0x100;

// i_format: bit 0 = extended inode, bits 1..3 = data layout.
inline constexpr std::uint16_t kInodeLayoutExtended = 0x1;
inline constexpr unsigned kInodeDataLayoutBit = 1;
enum : std::uint8_t {
  kInodeFlatPlain = 0,
  kInodeCompressedFull = 1,
  kInodeFlatInline = 2,
  kInodeCompressedCompact = 3,
  kInodeChunkBased = 4,
};

// Chunk format (low u16 of i_u for CHUNK_BASED inodes).
inline constexpr std::uint16_t kChunkFormatBlkbitsMask = 0x001F;
inline constexpr std::uint16_t kChunkFormatIndexes = 0x0020;  // 8-byte index entries
inline constexpr std::uint16_t kChunkFormat48Bit = 0x0040;    // never set by RAFS writers

// Directory entry file types.
enum : std::uint8_t {
  kFtUnknown = 0,
  kFtRegFile = 1,
  kFtDir = 2,
  kFtChrdev = 3,
  kFtBlkdev = 4,
  kFtFifo = 5,
  kFtSock = 6,
  kFtSymlink = 7,
};

// Short xattr name prefixes (e_name_index).
enum : std::uint8_t {
  kXattrIndexUser = 1,
  kXattrIndexPosixAclAccess = 2,
  kXattrIndexPosixAclDefault = 3,
  kXattrIndexTrusted = 4,
  kXattrIndexLustre = 5,
  kXattrIndexSecurity = 6,
};
inline constexpr std::uint8_t kXattrLongPrefixBit = 0x80;

// ---- superblock (at byte 1024, 128 bytes) ---------------------------------------

struct SuperBlock {
  std::uint32_t magic;     // kMagic
  std::uint32_t checksum;  // crc32c when SB_CHKSUM; RAFS writes 0
  std::uint32_t feature_compat;
  std::uint8_t blkszbits;    // 9..12
  std::uint8_t sb_extslots;  // RAFS: 0 (its ext-superblock sits at 1152)
  std::uint16_t root_nid;    // u16: the root must be an early inode
  std::uint64_t inos;        // total inode count (statfs only)
  std::uint64_t epoch;       // build time: mtime of compact inodes
  std::uint32_t fixed_nsec;
  std::uint32_t blocks;         // RAFS: sum of the blob devices' blocks
  std::uint32_t meta_blkaddr;   // inode base: meta_blkaddr*bs + nid*32
  std::uint32_t xattr_blkaddr;  // shared xattr base; RAFS: 0
  std::uint8_t uuid[16];
  std::uint8_t volume_name[16];
  std::uint32_t feature_incompat;
  std::uint16_t u1;             // available_compr_algs / lz4_max_distance; 0
  std::uint16_t extra_devices;  // device slots, with INCOMPAT_DEVICE_TABLE
  std::uint16_t devt_slotoff;   // device table at devt_slotoff*128; RAFS: 11
  std::uint8_t dirblkbits;      // must be 0
  std::uint8_t xattr_prefix_count;
  std::uint32_t xattr_prefix_start;
  std::uint64_t packed_nid;
  std::uint8_t xattr_filter_reserved;
  std::uint8_t ishare_xattr_prefix_id;
  std::uint8_t reserved[2];
  std::uint32_t build_time;  // 48BIT only
  std::uint64_t rootnid_8b;  // 48BIT only
  std::uint8_t reserved2[8];
} __attribute__((packed));

// ---- device slot (128 bytes each, at devt_slotoff*128) --------------------------

struct DeviceSlot {
  std::uint8_t tag[64];          // RAFS: the 64-hex blob id (fscache cookie / device name)
  std::uint32_t blocks;          // device size in blocks
  std::uint32_t mapped_blkaddr;  // start in the unified (flat) address space
  std::uint16_t blocks_hi;       // 48BIT only
  std::uint16_t uniaddr_hi;      // 48BIT only
  std::uint8_t reserved[52];
} __attribute__((packed));

// ---- inodes ---------------------------------------------------------------------

struct InodeCompact {  // 32 bytes
  std::uint16_t i_format;
  std::uint16_t i_xattr_icount;
  std::uint16_t i_mode;
  std::uint16_t i_nlink;
  std::uint32_t i_size;
  std::uint32_t i_mtime;  // >= 6.15 with 48BIT semantics; else reserved
  std::uint32_t i_u;      // startblk / rdev / chunk info
  std::uint32_t i_ino;
  std::uint16_t i_uid;
  std::uint16_t i_gid;
  std::uint32_t i_reserved2;
} __attribute__((packed));

struct InodeExtended {  // 64 bytes
  std::uint16_t i_format;
  std::uint16_t i_xattr_icount;
  std::uint16_t i_mode;
  std::uint16_t i_nb;  // reserved; 0
  std::uint64_t i_size;
  std::uint32_t i_u;  // startblk / rdev / chunk info
  std::uint32_t i_ino;
  std::uint32_t i_uid;
  std::uint32_t i_gid;
  std::uint64_t i_mtime;  // seconds, read as s64
  std::uint32_t i_mtime_nsec;
  std::uint32_t i_nlink;
  std::uint8_t i_reserved2[16];
} __attribute__((packed));

// 8-byte chunk index entry (EROFS_CHUNK_FORMAT_INDEXES). nydus reuses the fields:
// startblk_hi = ci_index & 0xffff; device_id low byte = blob_index + 1, high byte =
// (ci_index >> 16) & 0xff; startblk_lo = uncompressed offset / block size.
struct ChunkIndex {
  std::uint16_t startblk_hi;  // nydus: c_blob_addr_lo
  std::uint16_t device_id;    // nydus: c_blob_addr_hi
  std::uint32_t startblk_lo;  // nydus: c_blk_addr
} __attribute__((packed));

// ---- directories ----------------------------------------------------------------

struct Dirent {  // 12 bytes; names follow the dirent array in a block
  std::uint64_t nid;
  std::uint16_t nameoff;  // offset of the name within this block
  std::uint8_t file_type;
  std::uint8_t reserved;
} __attribute__((packed));

// ---- xattrs ---------------------------------------------------------------------

struct XattrIbodyHeader {       // 12 bytes, right after the inode
  std::uint32_t h_name_filter;  // inverted bloom filter; 0 is always safe
  std::uint8_t h_shared_count;
  std::uint8_t h_reserved2[7];
  // u32 h_shared_xattrs[h_shared_count] follow
} __attribute__((packed));

struct XattrEntry {           // 4 bytes + name + value, padded to 4
  std::uint8_t e_name_len;    // suffix length after the prefix
  std::uint8_t e_name_index;  // short prefix index, or 0x80|long prefix index
  std::uint16_t e_value_size;
} __attribute__((packed));

// xattr_isize for an icount (0 = no xattrs).
constexpr std::uint64_t xattr_ibody_size(std::uint16_t icount) {
  return icount == 0 ? 0 : sizeof(XattrIbodyHeader) + (std::uint64_t{icount} - 1) * 4;
}

// ---- RAFS v6: extended superblock (256 bytes at byte 1152) ----------------------

inline constexpr std::uint64_t kRafsExtSuperOffset = 1152;
inline constexpr std::uint16_t kRafsDevtSlotOff = 11;  // device table at byte 1408

// RafsSuperFlags (s_flags).
inline constexpr std::uint64_t kRafsFlagCompressionNone = 0x1;
inline constexpr std::uint64_t kRafsFlagCompressionLz4 = 0x2;
inline constexpr std::uint64_t kRafsFlagHashBlake3 = 0x4;
inline constexpr std::uint64_t kRafsFlagHashSha256 = 0x8;
inline constexpr std::uint64_t kRafsFlagExplicitUidGid = 0x10;
inline constexpr std::uint64_t kRafsFlagHasXattr = 0x20;
inline constexpr std::uint64_t kRafsFlagCompressionGzip = 0x40;
inline constexpr std::uint64_t kRafsFlagCompressionZstd = 0x80;
inline constexpr std::uint64_t kRafsFlagInlinedChunkDigest = 0x100;
inline constexpr std::uint64_t kRafsFlagTarfsMode = 0x200;
inline constexpr std::uint64_t kRafsFlagEncryptionNone = 0x01000000;
inline constexpr std::uint64_t kRafsFlagEncryptionAes128Xts = 0x02000000;

struct RafsExtSuperBlock {
  std::uint64_t s_flags;
  std::uint64_t s_blob_table_offset;   // 4 KiB aligned, after the device table
  std::uint32_t s_blob_table_size;     // multiple of 256
  std::uint32_t s_chunk_size;          // power of two, 4 KiB..16 MiB
  std::uint64_t s_chunk_table_offset;  // RafsV5ChunkInfo table, 4 KiB aligned
  std::uint64_t s_chunk_table_size;    // multiple of 80
  std::uint64_t s_prefetch_table_offset;
  std::uint32_t s_prefetch_table_size;  // 4 * entries (u32 nids)
  std::uint32_t s_padding;
  std::uint8_t s_reserved[200];
} __attribute__((packed));

// ---- RAFS v6: blob table entry (256 bytes) ---------------------------------------

// compression_algo / ci_compressor values.
enum : std::uint32_t {
  kRafsComprNone = 0,
  kRafsComprLz4Block = 1,
  kRafsComprGzip = 2,
  kRafsComprZstd = 3
};
// digest_algo values.
enum : std::uint32_t { kRafsDigestBlake3 = 0, kRafsDigestSha256 = 1 };

// BlobFeatures.
inline constexpr std::uint32_t kBlobFeatureAligned = 0x1;
inline constexpr std::uint32_t kBlobFeatureInlinedFsMeta = 0x2;
inline constexpr std::uint32_t kBlobFeatureChunkInfoV2 = 0x4;
inline constexpr std::uint32_t kBlobFeatureZran = 0x8;
inline constexpr std::uint32_t kBlobFeatureSeparate = 0x10;
inline constexpr std::uint32_t kBlobFeatureInlinedChunkDigest = 0x20;
inline constexpr std::uint32_t kBlobFeatureTarfs = 0x40;
inline constexpr std::uint32_t kBlobFeatureBatch = 0x80;
inline constexpr std::uint32_t kBlobFeatureEncrypted = 0x100;
inline constexpr std::uint32_t kBlobFeatureHasTarHeader = 0x10000000;
inline constexpr std::uint32_t kBlobFeatureHasToc = 0x20000000;
inline constexpr std::uint32_t kBlobFeatureCapTarToc = 0x40000000;

struct RafsV6Blob {
  std::uint8_t blob_id[64];         // ASCII hex, an opaque name
  std::uint32_t blob_index;         // == position in the table
  std::uint32_t chunk_size;         // == s_chunk_size
  std::uint32_t chunk_count;        // chunk-info entries (<= 2^24)
  std::uint32_t compression_algo;   // kRafsCompr*
  std::uint32_t digest_algo;        // kRafsDigest*
  std::uint32_t features;           // kBlobFeature*
  std::uint64_t compressed_size;    // size of the blob file
  std::uint64_t uncompressed_size;  // align4K(end of last chunk), uncompressed space
  std::uint32_t blob_toc_size;      // ToC entries + its 512-byte tar header; 0 = none
  std::uint32_t ci_compressor;      // compressor of the chunk-info array
  std::uint64_t ci_offset;          // chunk-info array offset in the blob
  std::uint64_t ci_compressed_size;
  std::uint64_t ci_uncompressed_size;  // chunk_count * 16 (v1) or * 24 (v2)
  std::uint8_t blob_toc_digest[32];    // sha256 of the last blob_toc_size bytes
  std::uint8_t blob_meta_digest[32];   // SEPARATE: meta blob id
  std::uint64_t blob_meta_size;        // SEPARATE: meta blob size
  std::uint64_t cipher_iv;
  std::uint32_t cipher_algo;  // 0 = none
  std::uint8_t reserved[36];
} __attribute__((packed));

// ---- RAFS v6: chunk table entry (RafsV5ChunkInfo, 80 bytes) ----------------------

// Chunk table flags (these differ from the blob meta's chunk-info v2 flags).
inline constexpr std::uint32_t kChunkFlagCompressed = 0x1;
inline constexpr std::uint32_t kChunkFlagHole = 0x2;
inline constexpr std::uint32_t kChunkFlagEncrypted = 0x4;
inline constexpr std::uint32_t kChunkFlagBatch = 0x8;
inline constexpr std::uint32_t kChunkFlagHasCrc32 = 0x10;

struct RafsV5ChunkInfo {
  std::uint8_t block_id[32];  // digest of the uncompressed chunk
  std::uint32_t blob_index;
  std::uint32_t flags;
  std::uint32_t compressed_size;
  std::uint32_t uncompressed_size;
  std::uint64_t compressed_offset;
  std::uint64_t uncompressed_offset;  // 4 KiB aligned
  std::uint64_t file_offset;          // in the first file using the chunk
  std::uint32_t index;                // ci index in its blob
  std::uint32_t crc32;
} __attribute__((packed));

// ---- blob meta (in the data blob) ---------------------------------------------------

inline constexpr std::uint32_t kBlobMetaMagic = 0xb10bb10b;
inline constexpr std::uint64_t kBlobMetaHeaderSize = 4096;

// The chunk-info ("compression context") table header, 4096 bytes.
struct BlobMetaHeader {
  std::uint32_t s_magic;     // kBlobMetaMagic
  std::uint32_t s_features;  // BlobFeatures
  std::uint32_t s_ci_compressor;
  std::uint32_t s_ci_entries;  // == chunk_count
  std::uint64_t s_ci_offset;   // == blob table ci_offset
  std::uint64_t s_ci_compressed_size;
  std::uint64_t s_ci_uncompressed_size;
  std::uint64_t s_ci_zran_offset;
  std::uint64_t s_ci_zran_size;
  std::uint32_t s_ci_zran_count;
  std::uint8_t s_reserved[4032];
  std::uint32_t s_magic2;  // kBlobMetaMagic
} __attribute__((packed));

// Chunk info v1: two u64 words.
//   uncomp_info: bits 8..11 (usize-1)>>20; bits 12..43 uncompressed byte offset (4K
//                aligned, stored in place); bits 44..63 (usize-1) & 0xfffff.
//   comp_info:   bits 0..39 compressed offset; bits 40..43 (csize-1)>>20;
//                bits 44..63 (csize-1) & 0xfffff.
// A v1 chunk is compressed iff csize != usize.
struct ChunkInfoV1 {
  std::uint64_t uncomp_info;
  std::uint64_t comp_info;
} __attribute__((packed));

// Chunk info v2: three u64 words.
//   uncomp_info: bits 0..31 uoff>>12; bits 32..55 usize-1; bits 56..63 flags.
//   comp_info:   bits 0..39 compressed offset; bits 40..63 csize (not minus 1).
inline constexpr std::uint8_t kChunkV2Compressed = 0x01;
inline constexpr std::uint8_t kChunkV2Zran = 0x02;
inline constexpr std::uint8_t kChunkV2Batch = 0x04;
inline constexpr std::uint8_t kChunkV2Encrypted = 0x08;
inline constexpr std::uint8_t kChunkV2HasCrc32 = 0x10;
struct ChunkInfoV2 {
  std::uint64_t uncomp_info;
  std::uint64_t comp_info;
  std::uint64_t data;
} __attribute__((packed));

// ---- blob ToC and its reverse-tar framing -------------------------------------------

inline constexpr std::uint64_t kTarHeaderSize = 512;
// ToC entry flags (compressor of the entry's data).
inline constexpr std::uint32_t kTocFlagNone = 0x1;
inline constexpr std::uint32_t kTocFlagZstd = 0x2;
inline constexpr std::uint32_t kTocFlagLz4Block = 0x4;

struct TocEntry {  // 128 bytes
  std::uint32_t flags;
  std::uint32_t reserved1;
  std::uint8_t name[16];                 // NUL-padded: image.blob, blob.meta, ...
  std::uint8_t uncompressed_digest[32];  // sha256 of the uncompressed content
  std::uint64_t compressed_offset;
  std::uint64_t compressed_size;
  std::uint64_t uncompressed_size;
  std::uint8_t reserved2[48];  // may hold garbage in real blobs: ignore
} __attribute__((packed));

// ---- layout pins ------------------------------------------------------------------

static_assert(sizeof(SuperBlock) == 128);
static_assert(offsetof(SuperBlock, checksum) == 0x04);
static_assert(offsetof(SuperBlock, blkszbits) == 0x0C);
static_assert(offsetof(SuperBlock, root_nid) == 0x0E);
static_assert(offsetof(SuperBlock, inos) == 0x10);
static_assert(offsetof(SuperBlock, blocks) == 0x24);
static_assert(offsetof(SuperBlock, meta_blkaddr) == 0x28);
static_assert(offsetof(SuperBlock, xattr_blkaddr) == 0x2C);
static_assert(offsetof(SuperBlock, uuid) == 0x30);
static_assert(offsetof(SuperBlock, volume_name) == 0x40);
static_assert(offsetof(SuperBlock, feature_incompat) == 0x50);
static_assert(offsetof(SuperBlock, extra_devices) == 0x56);
static_assert(offsetof(SuperBlock, devt_slotoff) == 0x58);
static_assert(offsetof(SuperBlock, dirblkbits) == 0x5A);
static_assert(offsetof(SuperBlock, packed_nid) == 0x60);
static_assert(offsetof(SuperBlock, rootnid_8b) == 0x70);
static_assert(sizeof(DeviceSlot) == 128);
static_assert(offsetof(DeviceSlot, blocks) == 0x40);
static_assert(offsetof(DeviceSlot, mapped_blkaddr) == 0x44);
static_assert(sizeof(InodeCompact) == 32);
static_assert(offsetof(InodeCompact, i_u) == 0x10);
static_assert(sizeof(InodeExtended) == 64);
static_assert(offsetof(InodeExtended, i_size) == 0x08);
static_assert(offsetof(InodeExtended, i_u) == 0x10);
static_assert(offsetof(InodeExtended, i_uid) == 0x18);
static_assert(offsetof(InodeExtended, i_mtime) == 0x20);
static_assert(offsetof(InodeExtended, i_nlink) == 0x2C);
static_assert(sizeof(ChunkIndex) == 8);
static_assert(sizeof(Dirent) == 12);
static_assert(sizeof(XattrIbodyHeader) == 12);
static_assert(sizeof(XattrEntry) == 4);
static_assert(sizeof(RafsExtSuperBlock) == 256);
static_assert(offsetof(RafsExtSuperBlock, s_chunk_size) == 0x14);
static_assert(offsetof(RafsExtSuperBlock, s_chunk_table_offset) == 0x18);
static_assert(offsetof(RafsExtSuperBlock, s_prefetch_table_offset) == 0x28);
static_assert(kRafsExtSuperOffset + sizeof(RafsExtSuperBlock) == kRafsDevtSlotOff * 128);
static_assert(sizeof(RafsV6Blob) == 256);
static_assert(offsetof(RafsV6Blob, compressed_size) == 0x58);
static_assert(offsetof(RafsV6Blob, blob_toc_size) == 0x68);
static_assert(offsetof(RafsV6Blob, ci_offset) == 0x70);
static_assert(offsetof(RafsV6Blob, blob_toc_digest) == 0x88);
static_assert(offsetof(RafsV6Blob, blob_meta_digest) == 0xA8);
static_assert(offsetof(RafsV6Blob, cipher_algo) == 0xD8);
static_assert(sizeof(RafsV5ChunkInfo) == 80);
static_assert(offsetof(RafsV5ChunkInfo, compressed_offset) == 0x30);
static_assert(offsetof(RafsV5ChunkInfo, index) == 0x48);
static_assert(sizeof(BlobMetaHeader) == kBlobMetaHeaderSize);
static_assert(offsetof(BlobMetaHeader, s_ci_zran_count) == 56);
static_assert(offsetof(BlobMetaHeader, s_magic2) == 4092);
static_assert(sizeof(ChunkInfoV1) == 16);
static_assert(sizeof(ChunkInfoV2) == 24);
static_assert(sizeof(TocEntry) == 128);
static_assert(offsetof(TocEntry, uncompressed_digest) == 0x18);
static_assert(offsetof(TocEntry, compressed_offset) == 0x38);

}  // namespace erofs
