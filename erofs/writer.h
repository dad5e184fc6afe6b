// SPDX-License-Identifier: Apache-2.0
// Writer for RAFS v6 bootstraps: an in-memory tree plus the blob table in, the
// bootstrap bytes out. Pure. The layout follows what nydus-image writes (extended
// inodes, root at nid 128, blob table at 4096, chunk table at the end) so nydusd
// accepts it, and the kernel mounts it file-backed with one device= per blob.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/compress.h"
#include "base/digest.h"
#include "base/result.h"
#include "erofs/reader.h"

namespace erofs {

// Where one chunk of a regular file lives.
struct ChunkRef {
  std::uint32_t blob_index = 0;
  std::uint32_t ci_index = 0;  // chunk-info index in that blob
  std::uint64_t compressed_offset = 0;
  std::uint32_t compressed_size = 0;
  std::uint64_t uncompressed_offset = 0;  // 4 KiB aligned
  std::uint32_t uncompressed_size = 0;
  bool compressed = false;
  base::Digest digest{};
};

using NodeId = std::uint32_t;

// One inode. Hardlinks are several directory entries naming the same NodeId.
struct Node {
  std::uint16_t mode = 0;  // S_IFMT type | permission bits
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int64_t mtime = 0;
  std::uint32_t mtime_nsec = 0;
  std::uint64_t size = 0;  // regular files; symlinks: target length
  std::uint32_t rdev = 0;  // encode_rdev(major, minor) for devices
  std::vector<std::pair<std::string, std::string>> xattrs;  // full names
  std::string symlink;                                      // symlink target
  std::vector<ChunkRef> chunks;                             // regular files, in file order
  std::map<std::string, NodeId> children;  // directories; std::string orders bytes unsigned
};

struct Tree {
  std::vector<Node> nodes;  // nodes[kRootNode] is the root directory
  // The RAFS v6 prefetch table: nodes whose data a runtime fetches first, in order
  // (a directory stands for everything under it). Stored as their nids, as
  // nydus-image --prefetch-policy fs writes it. Duplicates are written once.
  std::vector<NodeId> prefetch;
  static constexpr NodeId kRootNode = 0;
};

struct WriteOptions {
  std::uint32_t chunk_size = 1U << 20;
  base::Compressor compressor = base::Compressor::kZstd;
  base::DigestAlgo digester = base::DigestAlgo::kSha256;
};

// Lay out and serialize the bootstrap. blobs[i].index must be i; every ChunkRef's
// blob_index must name one of them. Errors: EINVAL for a tree the format cannot hold
// (a name over 255 bytes or with '/', an xattr whose namespace EROFS cannot store,
// too many blobs, a symlink target over 4096 bytes, a directory cycle), with the
// offending path in the message.
//
// What the input must satisfy beyond that (each violation is EINVAL):
// - a regular file has exactly ceil(size / chunk_size) chunks, chunk i holding
//   min(chunk_size, size - i * chunk_size) bytes at a 4 KiB aligned uncompressed
//   offset inside its blob's uncompressed_size; ci_index < that blob's chunk_count;
//   refs to one (blob_index, ci_index) agree on every field. Holes are not
//   representable: give zero ranges a (deduplicated) chunk like any other data.
// - BlobInfo::chunk_size is 0 or options.chunk_size; ids are 1..64 bytes. Device
//   slot sizes come from uncompressed_size (BlobInfo::device_blocks is ignored).
// - symlinks: Node::size is 0 or the target length; every node is reachable once
//   (non-directories may be named many times: hardlinks).
// - Tree::prefetch names existing nodes.
// Output choices: empty regular files are CHUNK_BASED with no index entries;
// feature_incompat is CHUNKED_FILE|DEVICE_TABLE even with no blobs (nydusd demands
// exactly that; the kernel accepts zero extra devices); INLINED_CHUNK_DIGEST is set
// only when every blob has kBlobFeatureInlinedChunkDigest.
[[nodiscard]] base::Result<std::vector<std::byte>> write_bootstrap(
    const Tree& tree, const std::vector<BlobInfo>& blobs, const WriteOptions& options);

}  // namespace erofs
