// SPDX-License-Identifier: Apache-2.0
// A RAFS v6 bootstrap made from the TOCs of an eStargz image's layers, whose chunks
// point into the original gzip layers: per chunk, the compressed range is its gzip
// member ([offset, the next chunk's offset or the TOC)), the uncompressed size its
// chunk size, the digest its chunkDigest (sha256). The blobs are gzip and carry no
// chunk-info table: the bootstrap's chunk table is theirs (erofs::is_bootstrap_indexed).
// Pure. Why this shape: docs/estargz.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "erofs/fs_tree.h"
#include "erofs/reader.h"
#include "estargz/toc.h"

namespace estargz {

struct LayerToc {
  std::string blob_id;  // the layer's sha256 hex (its registry digest without "sha256:")
  std::uint64_t blob_size = 0;
  std::uint64_t toc_offset = 0;  // from the footer
  Toc toc;
};

struct Built {
  std::vector<std::byte> bootstrap;
  std::vector<erofs::BlobInfo> blobs;  // one per layer, in layer order
  // The prioritized files (before a .prefetch.landmark), top layer's last, as paths;
  // also the bootstrap's prefetch table.
  std::vector<std::string> prefetch;
  std::uint32_t chunk_size = 0;
};

// Merge the layers (lowest first) with OCI semantics, as a pull and unpack would (each
// TOC becomes a layer tree, merged by erofs::FsTree::merge_layer, the merge nydus-convert
// uses too): a `.wh.NAME` entry hides NAME of lower layers, `.wh..wh..opq` hides
// everything lower in its directory; whiteouts and the landmark files
// (.prefetch.landmark, .no.prefetch.landmark at the top) are not in the tree. A later
// entry replaces an earlier one of the same path (a directory meeting a directory keeps
// its children). Hardlinks name an earlier entry of the same layer or a file of a lower
// layer that this layer does not remove. Errors, naming the layer and entry:
// EINVAL for a bad name (clean_name), a parent that is not a directory, a hardlink to
// nothing or to a directory, a chunk that does not follow its file, chunks that do
// not tile their file, a chunk without offset or chunkDigest, a member not inside
// [0, TOC offset); EOPNOTSUPP for what RAFS cannot express: a non-zero innerOffset
// (layers made with --estargz-min-chunk-size), chunk sizes that are not one power of
// two from 4 KiB to 16 MiB, a member over erofs::kMaxGzipMember; and the writer's
// errors.
[[nodiscard]] base::Result<Built> build_bootstrap(const std::vector<LayerToc>& layers);

// One chunk of a regular file as the TOC gives it.
struct TocChunk {
  std::uint32_t layer = 0;
  std::uint32_t entry = 0;            // the file's TOC entry, for errors
  std::uint64_t offset = 0;           // its gzip member, in the layer
  std::uint64_t compressed_size = 0;  // to the next member or the TOC
  std::uint64_t inner_offset = 0;     // where it starts in the member's inflated bytes
  std::uint64_t file_offset = 0;
  std::uint64_t size = 0;  // chunkSize, or the rest of the file
  std::uint64_t declared_size = 0;
  base::Digest digest{};  // chunkDigest: sha256 of its bytes
};

// One layer's TOC as a layer tree (whiteouts and opaque markers recorded, landmarks left
// out; merge with erofs::FsTree::merge_layer), for a converter that inflates the chunks:
// a regular file node's chunk_slots index chunks, in file order, each checked to tile its
// file; a node's origin is its TOC entry index + 1. prefetch: the files before a
// .prefetch.landmark. The errors of build_bootstrap, but for the EOPNOTSUPP ones (any
// innerOffset and member size are fine when the bytes are inflated).
struct LayerTree {
  erofs::FsTree tree;
  std::vector<TocChunk> chunks;
  std::vector<std::string> prefetch;
};
[[nodiscard]] base::Result<LayerTree> layer_tree(const LayerToc& layer);

// A byte range of a layer: [offset, offset + length).
struct Range {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  friend bool operator==(const Range&, const Range&) = default;
};

// The gzip members of the layer's prioritized entries (those before a top-level
// .prefetch.landmark; none without one), each to the next member's start or the TOC,
// adjacent ones merged, in layer order, at most max_bytes in all (a range that would pass
// it is cut short, later ones left out). Read from the TOC alone, before any bootstrap, so
// a daemon can start fetching them while it builds one: the bytes are still checked
// against chunkDigest when they fill the cache. Members at or past the TOC offset are
// skipped (build_bootstrap refuses them). Pure.
[[nodiscard]] std::vector<Range> prefetch_ranges(const LayerToc& layer, std::uint64_t max_bytes);

}  // namespace estargz
