// SPDX-License-Identifier: Apache-2.0
// Blob meta: the chunk-info ("compression context") table that nydus keeps inside
// each data blob, the chunk digest array and the blob ToC, with their reverse-tar
// framing. Pure: bytes in, values or errors out; bytes out for the writer.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/compress.h"
#include "base/digest.h"
#include "base/result.h"
#include "erofs/reader.h"
#include "erofs/tar_header.h"

namespace erofs {

// One chunk of a blob, indexed by its ci index.
struct ChunkMeta {
  std::uint64_t compressed_offset = 0;  // in the blob file
  std::uint32_t compressed_size = 0;
  std::uint64_t uncompressed_offset = 0;  // in the blob's uncompressed space (4K aligned)
  std::uint32_t uncompressed_size = 0;
  bool compressed = false;
};

class BlobMeta {
 public:
  // meta: the ci_compressed_size + 4096 bytes at blob.ci_offset (the possibly
  // compressed chunk-info array followed by the 4096-byte header). Validates both
  // magics, that the header agrees with the blob table, that every chunk lies inside
  // the blob and its uncompressed space, and that uncompressed ranges are sorted and
  // do not overlap. Unsupported kinds (zran, batch, encrypted, separate) are EOPNOTSUPP.
  [[nodiscard]] static base::Result<BlobMeta> parse(const BlobInfo& blob, base::Bytes meta);

  // A blob whose chunk table is the bootstrap's (is_bootstrap_indexed): an eStargz
  // layer, where each chunk is a gzip member of the original layer. Every ci index of
  // blob must have a record (records of other blobs are skipped; repeats must agree),
  // each lying inside the blob and, 4 KiB aligned, sorted and disjoint, inside its
  // uncompressed space; the stored (gzip) range is 1..kMaxGzipMember bytes. Every chunk
  // counts as compressed. kECorrupted naming the chunk otherwise; EINVAL when blob is
  // not bootstrap-indexed.
  [[nodiscard]] static base::Result<BlobMeta> from_records(const BlobInfo& blob,
                                                           const std::vector<ChunkRecord>& records);

  [[nodiscard]] const std::vector<ChunkMeta>& chunks() const { return chunks_; }
  // ci indices [first, last) of the chunks overlapping uncompressed [off, off+len).
  [[nodiscard]] std::pair<std::uint32_t, std::uint32_t> chunks_in_range(std::uint64_t off,
                                                                        std::uint64_t len) const;

 private:
  std::vector<ChunkMeta> chunks_;  // sorted by uncompressed_offset
};

// gzip chunks with no chunk-info table in the blob (ci_compressed_size 0): the
// chunk table of the bootstrap is the only one (BlobMeta::from_records).
[[nodiscard]] bool is_bootstrap_indexed(const BlobInfo& blob);
// The largest stored range of one such chunk: its gzip member, which after the chunk
// carries the tar padding and the headers of the entries up to the next chunk.
inline constexpr std::uint64_t kMaxGzipMember = 64ULL << 20;

struct TocItem {
  std::string name;
  std::uint32_t flags = 0;
  base::Digest uncompressed_digest{};
  std::uint64_t compressed_offset = 0;
  std::uint64_t compressed_size = 0;
  std::uint64_t uncompressed_size = 0;
};

// Parse the ToC from the tail of a blob. tail: the last bytes of the blob (at least
// the ToC entries and the 512-byte "rafs.blob.toc" tar header); blob_size: the whole
// blob's size, so offsets can be checked. When expected_digest is given, the sha256
// of entries + header must match it.
[[nodiscard]] base::Result<std::vector<TocItem>> parse_toc(base::Bytes tail,
                                                           std::uint64_t blob_size,
                                                           const base::Digest* expected_digest);

// The chunk digest array ("blob.digest"): count * 32 bytes, indexed by ci.
[[nodiscard]] base::Result<std::vector<base::Digest>> parse_digest_array(base::Bytes bytes,
                                                                         std::uint32_t count);

// Verify and decompress one chunk: stored bytes -> exactly chunk.uncompressed_size
// bytes in out, whose digest must equal expected. EBADMSG on any mismatch.
[[nodiscard]] base::Status decode_chunk(const BlobInfo& blob, const ChunkMeta& chunk,
                                        base::Bytes stored, const base::Digest& expected,
                                        base::MutableBytes out);

// A GNU tar header as nydus frames blob sections (encode_tar_header).
[[nodiscard]] std::vector<std::byte> make_tar_header(std::string_view name, std::uint64_t size);
// Parse one such header (decode_tar_header, and the GNU magic required); returns
// (name, size). EBADMSG on a bad checksum, size or magic.
[[nodiscard]] base::Result<std::pair<std::string, std::uint64_t>> parse_tar_header(base::Bytes h);

// Writer side: everything after the chunk data of a blob we build.
struct BlobTrailer {
  std::vector<std::byte> bytes;  // append to the blob after the chunk data
  std::uint64_t ci_offset = 0;   // absolute, in the finished blob
  std::uint64_t ci_compressed_size = 0;
  std::uint64_t ci_uncompressed_size = 0;
  base::Compressor ci_compressor = base::Compressor::kNone;
  std::uint32_t toc_size = 0;
  base::Digest toc_digest{};
  std::uint32_t features = 0;  // BlobFeatures of the blob
};

// Build the trailer for chunks (in ci order) written at [0, data_size) of a blob:
//   tar hdr "image.blob" | chunk-info v1 array | header | tar hdr "blob.meta"
//   | digests | tar hdr "blob.digest" | ToC entries | tar hdr "rafs.blob.toc"
// The features are ALIGNED | INLINED_CHUNK_DIGEST | HAS_TAR_HEADER | HAS_TOC | CAP_TAR_TOC.
[[nodiscard]] base::Result<BlobTrailer> build_blob_trailer(const std::vector<ChunkMeta>& chunks,
                                                           const std::vector<base::Digest>& digests,
                                                           std::uint64_t data_size);

}  // namespace erofs
