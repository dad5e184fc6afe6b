// SPDX-License-Identifier: Apache-2.0
// Blob meta (chunk-info table), ToC, digest array and reverse-tar framing. Written
// from shared/reference/erofs-format.md section 7.8.
#include "erofs/blob_meta.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace erofs {
namespace {

using base::Bytes;
using base::in_bounds;
using base::le32;
using base::le64;

constexpr std::uint64_t kMaxChunkSize = 16ULL << 20;
constexpr std::uint64_t kMaxTocEntriesSize = 64ULL << 10;

std::string fixed_name(const std::uint8_t* p, std::size_t max) {
  const auto* c = reinterpret_cast<const char*>(p);
  return std::string(c, strnlen(c, max));
}

void append(std::vector<std::byte>& v, Bytes b) {
  v.insert(v.end(), b.begin(), b.end());
}

template <typename T>
void append_struct(std::vector<std::byte>& v, const T& t) {
  const auto* p = reinterpret_cast<const std::byte*>(&t);
  v.insert(v.end(), p, p + sizeof(T));
}

}  // namespace

base::Result<BlobMeta> BlobMeta::parse(const BlobInfo& blob, base::Bytes meta) {
  constexpr std::uint32_t kUnsupported =
      kBlobFeatureZran | kBlobFeatureSeparate | kBlobFeatureBatch | kBlobFeatureEncrypted;
  if ((blob.features & kUnsupported) != 0) {
    return base::errorf(EOPNOTSUPP, "blob {}: unsupported blob features {:#x}", blob.id,
                        blob.features & kUnsupported);
  }
  if (meta.size() < kBlobMetaHeaderSize ||
      blob.ci_compressed_size != meta.size() - kBlobMetaHeaderSize) {
    return base::errorf(kECorrupted, "blob {}: blob meta is {} bytes, expected {} + {}", blob.id,
                        meta.size(), blob.ci_compressed_size, kBlobMetaHeaderSize);
  }
  const auto h = base::load<BlobMetaHeader>(meta, meta.size() - kBlobMetaHeaderSize);
  if (le32(h.s_magic) != kBlobMetaMagic || le32(h.s_magic2) != kBlobMetaMagic) {
    return base::errorf(kECorrupted, "blob {}: bad blob meta magic {:#x}/{:#x}", blob.id,
                        le32(h.s_magic), le32(h.s_magic2));
  }
  const std::uint32_t raw_ci_compressor = le32(h.s_ci_compressor);
  const bool header_gzip = raw_ci_compressor == kRafsComprGzip;
  if (le32(h.s_ci_entries) != blob.chunk_count || le64(h.s_ci_offset) != blob.ci_offset ||
      le64(h.s_ci_compressed_size) != blob.ci_compressed_size ||
      le64(h.s_ci_uncompressed_size) != blob.ci_uncompressed_size ||
      header_gzip != blob.unsupported_ci_compressor ||
      (!header_gzip && raw_ci_compressor != rafs_compressor_code(blob.ci_compressor))) {
    return base::errorf(kECorrupted, "blob {}: blob meta header disagrees with the blob table",
                        blob.id);
  }
  if ((le32(h.s_features) & kUnsupported) != 0) {
    return base::errorf(EOPNOTSUPP, "blob {}: unsupported blob meta features {:#x}", blob.id,
                        le32(h.s_features));
  }
  if (blob.unsupported_ci_compressor) {
    return base::errorf(EOPNOTSUPP, "blob {}: chunk-info array compressor is not supported",
                        blob.id);
  }
  const bool v2 = (blob.features & kBlobFeatureChunkInfoV2) != 0;
  const std::uint64_t unit = v2 ? sizeof(ChunkInfoV2) : sizeof(ChunkInfoV1);
  if (blob.chunk_count > (1U << 24) || blob.ci_uncompressed_size != blob.chunk_count * unit) {
    return base::errorf(kECorrupted, "blob {}: chunk-info array of {} bytes for {} chunks", blob.id,
                        blob.ci_uncompressed_size, blob.chunk_count);
  }
  const Bytes stored = meta.first(blob.ci_compressed_size);
  std::vector<std::byte> plain;
  Bytes array;
  if (blob.ci_compressor == base::Compressor::kNone) {
    if (blob.ci_compressed_size != blob.ci_uncompressed_size) {
      return base::errorf(kECorrupted, "blob {}: uncompressed chunk-info array size mismatch",
                          blob.id);
    }
    array = stored;
  } else {
    plain.resize(blob.ci_uncompressed_size);
    auto st = base::decompress(blob.ci_compressor, stored, plain);
    if (!st) {
      return base::Unexpected(st.error().wrap("blob " + blob.id + ": chunk-info array"));
    }
    array = plain;
  }

  // Chunk data precedes the blob meta in a native blob.
  const std::uint64_t data_end = std::min(blob.ci_offset, blob.compressed_size);
  BlobMeta bm;
  bm.chunks_.reserve(blob.chunk_count);
  std::uint64_t prev_end = 0;
  for (std::uint64_t i = 0; i < blob.chunk_count; ++i) {
    ChunkMeta c;
    if (v2) {
      const auto e = base::load<ChunkInfoV2>(array, i * unit);
      const std::uint64_t u = le64(e.uncomp_info);
      const std::uint64_t cm = le64(e.comp_info);
      const auto flags = static_cast<std::uint8_t>(u >> 56);
      if ((flags & (kChunkV2Zran | kChunkV2Batch | kChunkV2Encrypted)) != 0) {
        return base::errorf(EOPNOTSUPP, "blob {}: chunk {} has unsupported flags {:#x}", blob.id, i,
                            flags);
      }
      if ((flags & ~(kChunkV2Compressed | kChunkV2HasCrc32)) != 0) {
        return base::errorf(kECorrupted, "blob {}: chunk {} has invalid flags {:#x}", blob.id, i,
                            flags);
      }
      c.uncompressed_offset = (u & 0xFFFFFFFFULL) << 12;
      c.uncompressed_size = static_cast<std::uint32_t>(((u >> 32) & 0xFFFFFF) + 1);
      c.compressed_offset = cm & 0xFFFFFFFFFFULL;
      c.compressed_size = static_cast<std::uint32_t>(cm >> 40);
      c.compressed = (flags & kChunkV2Compressed) != 0;
    } else {
      const auto e = base::load<ChunkInfoV1>(array, i * unit);
      const std::uint64_t u = le64(e.uncomp_info);
      const std::uint64_t cm = le64(e.comp_info);
      c.uncompressed_offset = u & 0xFFFFFFFF000ULL;  // bits 12..43
      c.uncompressed_size = static_cast<std::uint32_t>((((u >> 8) & 0xF) << 20 | (u >> 44)) + 1);
      c.compressed_offset = cm & 0xFFFFFFFFFFULL;
      c.compressed_size = static_cast<std::uint32_t>((((cm >> 40) & 0xF) << 20 | (cm >> 44)) + 1);
      c.compressed = c.compressed_size != c.uncompressed_size;
    }
    if (c.compressed_size == 0 || c.compressed_size > kMaxChunkSize ||
        c.uncompressed_size > kMaxChunkSize) {
      return base::errorf(kECorrupted, "blob {}: chunk {} has invalid sizes {}/{}", blob.id, i,
                          c.compressed_size, c.uncompressed_size);
    }
    if (!in_bounds(c.compressed_offset, c.compressed_size, data_end)) {
      return base::errorf(kECorrupted, "blob {}: chunk {} data [{}, +{}) past the chunk area ({})",
                          blob.id, i, c.compressed_offset, c.compressed_size, data_end);
    }
    if (!in_bounds(c.uncompressed_offset, c.uncompressed_size, blob.uncompressed_size)) {
      return base::errorf(kECorrupted, "blob {}: chunk {} uncompressed range past {}", blob.id, i,
                          blob.uncompressed_size);
    }
    if ((blob.features & kBlobFeatureAligned) != 0 && c.uncompressed_offset % 4096 != 0) {
      return base::errorf(kECorrupted, "blob {}: chunk {} uncompressed offset {} not aligned",
                          blob.id, i, c.uncompressed_offset);
    }
    if (c.uncompressed_offset < prev_end) {
      return base::errorf(kECorrupted,
                          "blob {}: chunk {} uncompressed offset {} overlaps or is unsorted",
                          blob.id, i, c.uncompressed_offset);
    }
    if (!c.compressed && c.compressed_size != c.uncompressed_size) {
      return base::errorf(kECorrupted, "blob {}: uncompressed chunk {} with sizes {}/{}", blob.id,
                          i, c.compressed_size, c.uncompressed_size);
    }
    prev_end = c.uncompressed_offset + c.uncompressed_size;
    bm.chunks_.push_back(c);
  }
  return bm;
}

bool is_bootstrap_indexed(const BlobInfo& blob) {
  return blob.compressor == base::Compressor::kGzip && blob.ci_compressed_size == 0;
}

base::Result<BlobMeta> BlobMeta::from_records(const BlobInfo& blob,
                                              const std::vector<ChunkRecord>& records) {
  if (!is_bootstrap_indexed(blob)) {
    return base::errorf(EINVAL, "blob {}: has a chunk-info table of its own", blob.id);
  }
  if (blob.chunk_count > (1U << 24)) {
    return base::errorf(kECorrupted, "blob {}: {} chunks is over 2^24", blob.id, blob.chunk_count);
  }
  BlobMeta bm;
  bm.chunks_.resize(blob.chunk_count);
  std::vector<bool> seen(blob.chunk_count, false);
  for (const ChunkRecord& r : records) {
    if (r.blob_index != blob.index) {
      continue;
    }
    if (r.index >= blob.chunk_count) {
      return base::errorf(kECorrupted, "blob {}: chunk record ci {} beyond its {} chunks", blob.id,
                          r.index, blob.chunk_count);
    }
    ChunkMeta c;
    c.compressed_offset = r.compressed_offset;
    c.compressed_size = r.compressed_size;
    c.uncompressed_offset = r.uncompressed_offset;
    c.uncompressed_size = r.uncompressed_size;
    c.compressed = true;
    if (seen[r.index]) {
      const ChunkMeta& o = bm.chunks_[r.index];
      if (o.compressed_offset != c.compressed_offset || o.compressed_size != c.compressed_size ||
          o.uncompressed_offset != c.uncompressed_offset ||
          o.uncompressed_size != c.uncompressed_size) {
        return base::errorf(kECorrupted, "blob {}: chunk {}: two records disagree", blob.id,
                            r.index);
      }
      continue;
    }
    seen[r.index] = true;
    bm.chunks_[r.index] = c;
  }
  std::uint64_t prev_end = 0;
  for (std::uint64_t i = 0; i < blob.chunk_count; ++i) {
    const ChunkMeta& c = bm.chunks_[i];
    if (!seen[i]) {
      return base::errorf(kECorrupted, "blob {}: chunk {} has no record", blob.id, i);
    }
    if (c.compressed_size == 0 || c.compressed_size > kMaxGzipMember || c.uncompressed_size == 0 ||
        c.uncompressed_size > kMaxChunkSize) {
      return base::errorf(kECorrupted, "blob {}: chunk {} has invalid sizes {}/{}", blob.id, i,
                          c.compressed_size, c.uncompressed_size);
    }
    if (!in_bounds(c.compressed_offset, c.compressed_size, blob.compressed_size)) {
      return base::errorf(kECorrupted, "blob {}: chunk {} data [{}, +{}) past the blob ({})",
                          blob.id, i, c.compressed_offset, c.compressed_size, blob.compressed_size);
    }
    if (c.uncompressed_offset % 4096 != 0 || c.uncompressed_offset < prev_end ||
        !in_bounds(c.uncompressed_offset, c.uncompressed_size, blob.uncompressed_size)) {
      return base::errorf(kECorrupted,
                          "blob {}: chunk {} uncompressed [{}, +{}) unaligned, unsorted, "
                          "overlapping or past {}",
                          blob.id, i, c.uncompressed_offset, c.uncompressed_size,
                          blob.uncompressed_size);
    }
    prev_end = c.uncompressed_offset + c.uncompressed_size;
  }
  return bm;
}

std::pair<std::uint32_t, std::uint32_t> BlobMeta::chunks_in_range(std::uint64_t off,
                                                                  std::uint64_t len) const {
  // Chunks are sorted and disjoint, so ends are sorted too.
  auto first = std::partition_point(chunks_.begin(), chunks_.end(), [&](const ChunkMeta& c) {
    return c.uncompressed_offset + c.uncompressed_size <= off;
  });
  const std::uint64_t end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
  auto last = std::partition_point(first, chunks_.end(),
                                   [&](const ChunkMeta& c) { return c.uncompressed_offset < end; });
  if (len == 0) {
    last = first;
  }
  return {static_cast<std::uint32_t>(first - chunks_.begin()),
          static_cast<std::uint32_t>(last - chunks_.begin())};
}

std::vector<std::byte> make_tar_header(std::string_view name, std::uint64_t size) {
  return encode_tar_header(name, size);
}

base::Result<std::pair<std::string, std::uint64_t>> parse_tar_header(base::Bytes h) {
  CFN_ASSIGN_OR_RETURN(TarHeader th, decode_tar_header(h));
  if (th.magic != TarMagic::kGnu) {
    return base::errorf(EBADMSG, "tar header without the GNU magic");
  }
  return std::pair<std::string, std::uint64_t>{std::move(th.name), th.size};
}

base::Result<std::vector<TocItem>> parse_toc(base::Bytes tail, std::uint64_t blob_size,
                                             const base::Digest* expected_digest) {
  if (tail.size() < kTarHeaderSize || tail.size() > blob_size) {
    return base::errorf(kECorrupted, "blob ToC tail of {} bytes (blob {} bytes)", tail.size(),
                        blob_size);
  }
  auto hdr = parse_tar_header(tail.last(kTarHeaderSize));
  if (!hdr) {
    return base::Unexpected(std::move(hdr).error().wrap("blob ToC"));
  }
  if (hdr->first != "rafs.blob.toc") {
    return base::errorf(kECorrupted, "blob ToC: last tar header is '{}'", hdr->first);
  }
  const std::uint64_t size = hdr->second;
  if (size == 0 || size % sizeof(TocEntry) != 0 || size > kMaxTocEntriesSize) {
    return base::errorf(kECorrupted, "blob ToC: invalid size {}", size);
  }
  if (size > tail.size() - kTarHeaderSize) {
    return base::errorf(kECorrupted, "blob ToC: {} bytes of entries but only {} bytes given", size,
                        tail.size() - kTarHeaderSize);
  }
  const Bytes toc = tail.last(size + kTarHeaderSize);
  if (expected_digest != nullptr && base::sha256(toc) != *expected_digest) {
    return base::errorf(EBADMSG, "blob ToC: sha256 mismatch");
  }
  std::vector<TocItem> out;
  for (std::uint64_t i = 0; i < size / sizeof(TocEntry); ++i) {
    const auto e = base::load<TocEntry>(toc, i * sizeof(TocEntry));
    TocItem t;
    t.name = fixed_name(e.name, sizeof(e.name));
    t.flags = le32(e.flags);
    std::memcpy(t.uncompressed_digest.data(), e.uncompressed_digest, t.uncompressed_digest.size());
    t.compressed_offset = le64(e.compressed_offset);
    t.compressed_size = le64(e.compressed_size);
    t.uncompressed_size = le64(e.uncompressed_size);
    // nydus 2.2 stored image.blob's offset as that of its tar header, which equals the
    // data size; the chunk data itself always starts at 0.
    if (t.name == "image.blob" && t.compressed_offset == t.compressed_size) {
      t.compressed_offset = 0;
    }
    if (!in_bounds(t.compressed_offset, t.compressed_size, blob_size)) {
      return base::errorf(kECorrupted, "blob ToC: entry '{}' [{}, +{}) past end of blob ({})",
                          t.name, t.compressed_offset, t.compressed_size, blob_size);
    }
    out.push_back(std::move(t));
  }
  return out;
}

base::Result<std::vector<base::Digest>> parse_digest_array(base::Bytes bytes, std::uint32_t count) {
  if (bytes.size() != std::uint64_t{count} * sizeof(base::Digest)) {
    return base::errorf(kECorrupted, "chunk digest array is {} bytes, expected {} x 32",
                        bytes.size(), count);
  }
  std::vector<base::Digest> out(count);
  for (std::uint64_t i = 0; i < count; ++i) {
    std::memcpy(out[i].data(), bytes.data() + i * sizeof(base::Digest), sizeof(base::Digest));
  }
  return out;
}

base::Status decode_chunk(const BlobInfo& blob, const ChunkMeta& chunk, base::Bytes stored,
                          const base::Digest& expected, base::MutableBytes out) {
  if (stored.size() != chunk.compressed_size || out.size() != chunk.uncompressed_size) {
    return base::errorf(EINVAL, "chunk at {}: buffers {}/{} for sizes {}/{}",
                        chunk.compressed_offset, stored.size(), out.size(), chunk.compressed_size,
                        chunk.uncompressed_size);
  }
  if (chunk.compressed) {
    if (blob.unsupported_compressor) {
      return base::errorf(EOPNOTSUPP, "blob {}: chunk compressor is not supported", blob.id);
    }
    if (blob.compressor == base::Compressor::kNone) {
      return base::errorf(EBADMSG, "blob {}: compressed chunk at {} in an uncompressed blob",
                          blob.id, chunk.compressed_offset);
    }
    auto st = base::decompress(blob.compressor, stored, out);
    if (!st) {
      return base::errorf(EBADMSG, "blob {}: chunk at {}: {}", blob.id, chunk.compressed_offset,
                          st.error().message);
    }
  } else {
    if (stored.size() != out.size()) {
      return base::errorf(EBADMSG, "blob {}: stored chunk size mismatch", blob.id);
    }
    std::memcpy(out.data(), stored.data(), out.size());
  }
  if (base::digest(blob.digester, out) != expected) {
    return base::errorf(EBADMSG, "blob {}: chunk at {}: digest mismatch", blob.id,
                        chunk.compressed_offset);
  }
  return {};
}

base::Result<BlobTrailer> build_blob_trailer(const std::vector<ChunkMeta>& chunks,
                                             const std::vector<base::Digest>& digests,
                                             std::uint64_t data_size) {
  if (chunks.size() != digests.size()) {
    return base::errorf(EINVAL, "{} chunks but {} digests", chunks.size(), digests.size());
  }
  if (chunks.size() > (1U << 24)) {
    return base::errorf(EINVAL, "{} chunks is over 2^24", chunks.size());
  }
  const std::uint64_t n = chunks.size();
  std::uint64_t prev_end = 0;
  std::vector<std::byte> ci;
  ci.reserve(n * sizeof(ChunkInfoV1));
  for (std::uint64_t i = 0; i < n; ++i) {
    const ChunkMeta& c = chunks[i];
    if (c.compressed_size == 0 || c.compressed_size > kMaxChunkSize || c.uncompressed_size == 0 ||
        c.uncompressed_size > kMaxChunkSize) {
      return base::errorf(EINVAL, "chunk {}: sizes {}/{} outside 1..16M", i, c.compressed_size,
                          c.uncompressed_size);
    }
    // Chunk info v1 has no flag: a chunk is compressed iff its sizes differ.
    if (c.compressed != (c.compressed_size != c.uncompressed_size)) {
      return base::errorf(EINVAL, "chunk {}: compressed={} with sizes {}/{}", i, c.compressed,
                          c.compressed_size, c.uncompressed_size);
    }
    if (!in_bounds(c.compressed_offset, c.compressed_size, data_size) ||
        c.compressed_offset >= (1ULL << 40)) {
      return base::errorf(EINVAL, "chunk {}: data [{}, +{}) past {}", i, c.compressed_offset,
                          c.compressed_size, data_size);
    }
    if (c.uncompressed_offset % 4096 != 0 || c.uncompressed_offset >= (1ULL << 44) ||
        c.uncompressed_offset < prev_end) {
      return base::errorf(EINVAL, "chunk {}: uncompressed offset {} unaligned or unsorted", i,
                          c.uncompressed_offset);
    }
    prev_end = c.uncompressed_offset + c.uncompressed_size;
    const std::uint64_t us = c.uncompressed_size - 1;
    const std::uint64_t cs = c.compressed_size - 1;
    ChunkInfoV1 e{};
    e.uncomp_info =
        base::to_le64(((us >> 20) & 0xF) << 8 | c.uncompressed_offset | (us & 0xFFFFF) << 44);
    e.comp_info =
        base::to_le64(c.compressed_offset | ((cs >> 20) & 0xF) << 40 | (cs & 0xFFFFF) << 44);
    append_struct(ci, e);
  }
  const std::uint64_t usize = base::align_up(prev_end, 4096);
  constexpr std::uint32_t kFeatures = kBlobFeatureAligned | kBlobFeatureInlinedChunkDigest |
                                      kBlobFeatureHasTarHeader | kBlobFeatureHasToc |
                                      kBlobFeatureCapTarToc;
  BlobTrailer t;
  t.features = kFeatures;
  t.ci_compressor = base::Compressor::kNone;
  t.ci_offset = data_size + kTarHeaderSize;
  t.ci_compressed_size = ci.size();
  t.ci_uncompressed_size = ci.size();

  BlobMetaHeader h{};
  h.s_magic = base::to_le32(kBlobMetaMagic);
  h.s_features = base::to_le32(kFeatures);
  h.s_ci_compressor = base::to_le32(kRafsComprNone);
  h.s_ci_entries = base::to_le32(static_cast<std::uint32_t>(n));
  h.s_ci_offset = base::to_le64(t.ci_offset);
  h.s_ci_compressed_size = base::to_le64(ci.size());
  h.s_ci_uncompressed_size = base::to_le64(ci.size());
  h.s_magic2 = base::to_le32(kBlobMetaMagic);
  std::vector<std::byte> header;
  append_struct(header, h);

  std::vector<std::byte> dig;
  for (const base::Digest& d : digests) {
    append(dig, d);
  }

  std::vector<std::byte>& b = t.bytes;
  append(b, make_tar_header("image.blob", data_size));
  append(b, ci);
  append(b, header);
  append(b, make_tar_header("blob.meta", ci.size() + header.size()));
  const std::uint64_t digest_off = data_size + b.size();
  append(b, dig);
  append(b, make_tar_header("blob.digest", dig.size()));

  auto entry = [](std::string_view name, std::uint64_t off, std::uint64_t size,
                  std::uint64_t uncompressed, const base::Digest& d) {
    TocEntry e{};
    e.flags = base::to_le32(kTocFlagNone);
    std::memcpy(e.name, name.data(), std::min(name.size(), sizeof(e.name)));
    std::memcpy(e.uncompressed_digest, d.data(), d.size());
    e.compressed_offset = base::to_le64(off);
    e.compressed_size = base::to_le64(size);
    e.uncompressed_size = base::to_le64(uncompressed);
    return e;
  };
  // The chunk data's own sha256 is unknown here (only its chunks' digests are given),
  // so image.blob carries a zero digest; readers must not rely on it (nydus 2.2's
  // value was not a plain content digest either).
  std::vector<std::byte> toc;
  append_struct(toc, entry("image.blob", 0, data_size, usize, base::Digest{}));
  append_struct(toc, entry("blob.meta", t.ci_offset, ci.size(), ci.size(), base::sha256(ci)));
  append_struct(toc, entry("blob.meta.header", t.ci_offset + ci.size(), header.size(),
                           header.size(), base::sha256(header)));
  append_struct(toc, entry("blob.digest", digest_off, dig.size(), dig.size(), base::sha256(dig)));
  append(toc, make_tar_header("rafs.blob.toc", toc.size()));
  append(b, toc);
  t.toc_size = static_cast<std::uint32_t>(toc.size());
  t.toc_digest = base::sha256(toc);
  return t;
}

}  // namespace erofs
