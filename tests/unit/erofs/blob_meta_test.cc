// SPDX-License-Identifier: Apache-2.0
// Blob meta tests: the trailer we build parses back with our own parsers; corrupt,
// truncated and lying chunk-info arrays, headers, ToCs and tar headers are rejected.
#include "erofs/blob_meta.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace erofs {
namespace {

int err_code(const auto& r) {
  return r ? 0 : r.error().code;
}

// A blob of three chunks (one stored uncompressed) with its trailer.
struct Built {
  std::vector<std::byte> blob;
  std::vector<ChunkMeta> chunks;
  std::vector<base::Digest> digests;
  std::vector<std::vector<std::byte>> plain;
  BlobTrailer trailer;
  BlobInfo info;
};

Built build() {
  Built b;
  const std::size_t sizes[] = {10000, 4096, 70000};
  std::uint64_t uoff = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    std::vector<std::byte> p(sizes[i]);
    for (std::size_t k = 0; k < p.size(); ++k) {
      p[k] = static_cast<std::byte>(i == 1 ? (k * 131 + 7) % 256 : (k / 100) % 7);
    }
    std::vector<std::byte> z;
    EXPECT_TRUE(base::compress(base::Compressor::kZstd, p, z));
    const bool store_plain = i == 1 || z.size() >= p.size();
    const std::vector<std::byte>& stored = store_plain ? p : z;
    ChunkMeta c;
    c.compressed_offset = b.blob.size();
    c.compressed_size = static_cast<std::uint32_t>(stored.size());
    c.uncompressed_offset = uoff;
    c.uncompressed_size = static_cast<std::uint32_t>(p.size());
    c.compressed = !store_plain;
    b.blob.insert(b.blob.end(), stored.begin(), stored.end());
    b.chunks.push_back(c);
    b.digests.push_back(base::digest(base::DigestAlgo::kSha256, p));
    b.plain.push_back(p);
    uoff = base::align_up(uoff + p.size(), 4096);
  }
  const std::uint64_t data_size = b.blob.size();
  auto t = build_blob_trailer(b.chunks, b.digests, data_size);
  EXPECT_TRUE(t) << t.error().to_string();
  b.trailer = *t;
  b.blob.insert(b.blob.end(), t->bytes.begin(), t->bytes.end());
  BlobInfo& i = b.info;
  i.id = "test";
  i.chunk_size = 1U << 20;
  i.chunk_count = 3;
  i.compressor = base::Compressor::kZstd;
  i.digester = base::DigestAlgo::kSha256;
  i.features = t->features;
  i.compressed_size = b.blob.size();
  i.uncompressed_size = uoff;
  i.toc_size = t->toc_size;
  i.toc_digest = t->toc_digest;
  i.ci_compressor = t->ci_compressor;
  i.ci_offset = t->ci_offset;
  i.ci_compressed_size = t->ci_compressed_size;
  i.ci_uncompressed_size = t->ci_uncompressed_size;
  return b;
}

base::Bytes meta_of(const Built& b) {
  return base::Bytes(b.blob).subspan(b.info.ci_offset, b.info.ci_compressed_size + 4096);
}

TEST(BlobMeta, TrailerRoundTrip) {
  Built b = build();
  EXPECT_EQ(b.trailer.features, 0x70000021U);
  EXPECT_EQ(b.trailer.toc_size, 1024U);
  EXPECT_EQ(b.trailer.ci_compressed_size, 48U);
  auto meta = BlobMeta::parse(b.info, meta_of(b));
  ASSERT_TRUE(meta) << meta.error().to_string();
  ASSERT_EQ(meta->chunks().size(), 3U);
  for (std::size_t i = 0; i < 3; ++i) {
    const ChunkMeta& c = meta->chunks()[i];
    EXPECT_EQ(c.compressed_offset, b.chunks[i].compressed_offset);
    EXPECT_EQ(c.compressed_size, b.chunks[i].compressed_size);
    EXPECT_EQ(c.uncompressed_offset, b.chunks[i].uncompressed_offset);
    EXPECT_EQ(c.uncompressed_size, b.chunks[i].uncompressed_size);
    EXPECT_EQ(c.compressed, b.chunks[i].compressed);
  }
  const base::Bytes blob(b.blob);
  auto toc = parse_toc(blob.last(b.info.toc_size), blob.size(), &b.info.toc_digest);
  ASSERT_TRUE(toc) << toc.error().to_string();
  ASSERT_EQ(toc->size(), 4U);
  EXPECT_EQ((*toc)[0].name, "image.blob");
  EXPECT_EQ((*toc)[0].compressed_offset, 0U);
  EXPECT_EQ((*toc)[0].compressed_size,
            b.chunks.back().compressed_offset + b.chunks.back().compressed_size);
  for (std::size_t i = 1; i < 4; ++i) {
    const TocItem& t = (*toc)[i];
    EXPECT_EQ(base::sha256(blob.subspan(t.compressed_offset, t.compressed_size)),
              t.uncompressed_digest)
        << t.name;
  }
  EXPECT_EQ((*toc)[1].name, "blob.meta");
  EXPECT_EQ((*toc)[1].compressed_offset, b.info.ci_offset);
  EXPECT_EQ((*toc)[2].name, "blob.meta.header");
  EXPECT_EQ((*toc)[3].name, "blob.digest");
  auto digests = parse_digest_array(blob.subspan((*toc)[3].compressed_offset, 96), 3);
  ASSERT_TRUE(digests);
  EXPECT_EQ(*digests, b.digests);
  // Tar frames: image.blob right after the data, blob.meta after the header.
  auto h = parse_tar_header(blob.subspan(b.info.ci_offset - 512, 512));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->first, "image.blob");
  h = parse_tar_header(blob.subspan(b.info.ci_offset + 48 + 4096, 512));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->first, "blob.meta");
  EXPECT_EQ(h->second, 48U + 4096);
  // Every chunk decodes and verifies.
  for (std::size_t i = 0; i < 3; ++i) {
    const ChunkMeta& c = meta->chunks()[i];
    std::vector<std::byte> out(c.uncompressed_size);
    auto st = decode_chunk(b.info, c, blob.subspan(c.compressed_offset, c.compressed_size),
                           (*digests)[i], out);
    ASSERT_TRUE(st) << st.error().to_string();
    EXPECT_EQ(out, b.plain[i]);
  }
}

TEST(BlobMeta, EmptyTrailer) {
  auto t = build_blob_trailer({}, {}, 0);
  ASSERT_TRUE(t);
  BlobInfo i;
  i.features = t->features;
  i.ci_offset = t->ci_offset;
  i.compressed_size = t->bytes.size();
  auto meta = BlobMeta::parse(i, base::Bytes(t->bytes).subspan(t->ci_offset, 4096));
  ASSERT_TRUE(meta) << meta.error().to_string();
  EXPECT_TRUE(meta->chunks().empty());
  EXPECT_EQ(meta->chunks_in_range(0, 100), (std::pair<std::uint32_t, std::uint32_t>{0, 0}));
  auto toc = parse_toc(t->bytes, t->bytes.size(), &t->toc_digest);
  ASSERT_TRUE(toc) << toc.error().to_string();
}

TEST(BlobMeta, ChunksInRange) {
  Built b = build();
  auto meta = BlobMeta::parse(b.info, meta_of(b));
  ASSERT_TRUE(meta);
  using P = std::pair<std::uint32_t, std::uint32_t>;
  // Chunks: [0,10000) [12288,16384) [16384,86384).
  EXPECT_EQ(meta->chunks_in_range(0, 1), (P{0, 1}));
  EXPECT_EQ(meta->chunks_in_range(9999, 1), (P{0, 1}));
  EXPECT_EQ(meta->chunks_in_range(10000, 100), (P{1, 1}));  // gap
  EXPECT_EQ(meta->chunks_in_range(10000, 3000), (P{1, 2}));
  EXPECT_EQ(meta->chunks_in_range(0, UINT64_MAX), (P{0, 3}));
  EXPECT_EQ(meta->chunks_in_range(UINT64_MAX, UINT64_MAX), (P{3, 3}));
  EXPECT_EQ(meta->chunks_in_range(16384, 0), (P{2, 2}));
  EXPECT_EQ(meta->chunks_in_range(16000, 1000), (P{1, 3}));
}

TEST(BlobMeta, RejectsLyingMeta) {
  Built base = build();
  auto expect_err = [&](int code, auto mutate, const char* what) {
    SCOPED_TRACE(what);
    Built b = base;
    std::vector<std::byte> meta(meta_of(b).begin(), meta_of(b).end());
    mutate(b.info, meta);
    EXPECT_EQ(err_code(BlobMeta::parse(b.info, meta)), code);
  };
  auto set64 = [](std::vector<std::byte>& m, std::size_t off, std::uint64_t v) {
    v = base::to_le64(v);
    std::memcpy(m.data() + off, &v, 8);
  };
  expect_err(
      kECorrupted, [](BlobInfo&, std::vector<std::byte>& m) { m.pop_back(); }, "short");
  expect_err(
      kECorrupted, [](BlobInfo&, std::vector<std::byte>& m) { m.resize(100); }, "truncated");
  expect_err(
      kECorrupted, [](BlobInfo&, std::vector<std::byte>& m) { m[48] = std::byte{0}; }, "magic");
  expect_err(
      kECorrupted, [](BlobInfo&, std::vector<std::byte>& m) { m.back() = std::byte{0}; }, "magic2");
  expect_err(
      kECorrupted, [](BlobInfo& i, std::vector<std::byte>&) { i.chunk_count = 2; }, "entries");
  expect_err(
      kECorrupted, [](BlobInfo& i, std::vector<std::byte>&) { i.ci_offset += 1; }, "ci_offset");
  expect_err(
      kECorrupted,
      [](BlobInfo& i, std::vector<std::byte>&) { i.ci_compressor = base::Compressor::kZstd; },
      "ci compressor");
  expect_err(
      EOPNOTSUPP, [](BlobInfo& i, std::vector<std::byte>&) { i.features |= 0x8; }, "zran");
  expect_err(
      EOPNOTSUPP, [](BlobInfo& i, std::vector<std::byte>&) { i.features |= 0x100; }, "encrypted");
  expect_err(
      EOPNOTSUPP, [](BlobInfo& i, std::vector<std::byte>&) { i.features |= 0x10; }, "separate");
  expect_err(
      kECorrupted, [](BlobInfo& i, std::vector<std::byte>&) { i.uncompressed_size = 4096; },
      "uncompressed range past the blob");
  expect_err(
      kECorrupted, [](BlobInfo& i, std::vector<std::byte>&) { i.compressed_size = 100; },
      "compressed range past the blob");
  // Chunk 1 moved to overlap chunk 0 (uncompressed offset 4096).
  expect_err(
      kECorrupted, [&](BlobInfo&, std::vector<std::byte>& m) { set64(m, 16, 0x0FFF000000001000); },
      "overlap");
  // Chunk 0 at an unaligned offset.
  expect_err(
      kECorrupted,
      [&](BlobInfo&, std::vector<std::byte>& m) {
        std::uint64_t v = 0;
        std::memcpy(&v, m.data(), 8);
        set64(m, 0, base::le64(v) | 0x100);
      },
      "size bits");
  // Compressed offset past the chunk area.
  expect_err(
      kECorrupted,
      [&](BlobInfo&, std::vector<std::byte>& m) {
        std::uint64_t v = 0;
        std::memcpy(&v, m.data() + 8, 8);
        set64(m, 8, base::le64(v) | 0xFFFFFFFFFFULL);
      },
      "compressed offset");
}

TEST(BlobMeta, CompressedChunkInfoArray) {
  Built b = build();
  // Rewrite the meta with a zstd-compressed ci array; header fields updated.
  const base::Bytes meta = meta_of(b);
  std::vector<std::byte> array(meta.begin(), meta.begin() + 48);
  std::vector<std::byte> z;
  ASSERT_TRUE(base::compress(base::Compressor::kZstd, array, z));
  std::vector<std::byte> header(meta.begin() + 48, meta.end());
  BlobMetaHeader h{};
  std::memcpy(&h, header.data(), sizeof(h));
  h.s_ci_compressor = base::to_le32(kRafsComprZstd);
  h.s_ci_compressed_size = base::to_le64(z.size());
  std::memcpy(header.data(), &h, sizeof(h));
  std::vector<std::byte> m2 = z;
  m2.insert(m2.end(), header.begin(), header.end());
  BlobInfo i = b.info;
  i.ci_compressor = base::Compressor::kZstd;
  i.ci_compressed_size = z.size();
  auto parsed = BlobMeta::parse(i, m2);
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  EXPECT_EQ(parsed->chunks().size(), 3U);
  // Garbage compressed bytes are EBADMSG from the decompressor.
  m2[0] ^= std::byte{0xff};
  EXPECT_FALSE(BlobMeta::parse(i, m2));
  // gzip (representable, not supported) is EOPNOTSUPP.
  h.s_ci_compressor = base::to_le32(kRafsComprGzip);
  std::memcpy(m2.data() + z.size(), &h, sizeof(h));
  i.unsupported_ci_compressor = true;
  i.ci_compressor = base::Compressor::kNone;
  EXPECT_EQ(err_code(BlobMeta::parse(i, m2)), EOPNOTSUPP);
}

TEST(BlobMeta, ChunkInfoV2) {
  // Two v2 entries: compressed at 0 (100 -> 5000 bytes), plain at 100 (200 bytes).
  std::vector<std::byte> meta(48 + 4096);
  auto put64 = [&](std::size_t off, std::uint64_t v) {
    v = base::to_le64(v);
    std::memcpy(meta.data() + off, &v, 8);
  };
  put64(0, (std::uint64_t{kChunkV2Compressed} << 56) | (4999ULL << 32) | 0);
  put64(8, (100ULL << 40) | 0);
  put64(24, (199ULL << 32) | 2);  // uoff 2 << 12 = 8192
  put64(32, (200ULL << 40) | 100);
  BlobInfo i;
  i.features = kBlobFeatureAligned | kBlobFeatureChunkInfoV2;
  i.chunk_count = 2;
  i.ci_offset = 300;
  i.ci_compressed_size = 48;
  i.ci_uncompressed_size = 48;
  i.compressed_size = 5000;
  i.uncompressed_size = 12288;
  BlobMetaHeader h{};
  h.s_magic = h.s_magic2 = base::to_le32(kBlobMetaMagic);
  h.s_ci_entries = base::to_le32(2);
  h.s_ci_offset = base::to_le64(300);
  h.s_ci_compressed_size = h.s_ci_uncompressed_size = base::to_le64(48);
  std::memcpy(meta.data() + 48, &h, sizeof(h));
  auto m = BlobMeta::parse(i, meta);
  ASSERT_TRUE(m) << m.error().to_string();
  EXPECT_TRUE(m->chunks()[0].compressed);
  EXPECT_EQ(m->chunks()[0].uncompressed_size, 5000U);
  EXPECT_EQ(m->chunks()[1].uncompressed_offset, 8192U);
  EXPECT_FALSE(m->chunks()[1].compressed);
  put64(0, (std::uint64_t{kChunkV2Zran} << 56) | (4999ULL << 32));
  EXPECT_EQ(err_code(BlobMeta::parse(i, meta)), EOPNOTSUPP);
  put64(0, (0x40ULL << 56) | (4999ULL << 32));
  EXPECT_EQ(err_code(BlobMeta::parse(i, meta)), kECorrupted);
}

TEST(BlobMeta, TocValidation) {
  Built b = build();
  const base::Bytes blob(b.blob);
  const base::Bytes tail = blob.last(b.info.toc_size);
  // Digest mismatch.
  base::Digest wrong = b.info.toc_digest;
  wrong[3] ^= std::byte{1};
  EXPECT_EQ(err_code(parse_toc(tail, blob.size(), &wrong)), EBADMSG);
  // Without a digest, and with a longer tail (unknown size: read the last 4 KiB).
  EXPECT_TRUE(parse_toc(blob.last(4096), blob.size(), nullptr));
  // Tail too short for the header's size.
  EXPECT_EQ(err_code(parse_toc(blob.last(600), blob.size(), nullptr)), kECorrupted);
  EXPECT_EQ(err_code(parse_toc(blob.last(100), blob.size(), nullptr)), kECorrupted);
  EXPECT_EQ(err_code(parse_toc(tail, 10, nullptr)), kECorrupted);
  // Entry pointing past the blob.
  std::vector<std::byte> t(tail.begin(), tail.end());
  std::uint64_t far = base::to_le64(1ULL << 50);
  std::memcpy(t.data() + 128 + offsetof(TocEntry, compressed_offset), &far, 8);
  EXPECT_EQ(err_code(parse_toc(t, blob.size(), nullptr)), kECorrupted);
  // Wrong last header name, and a size that is not a multiple of 128.
  auto h = make_tar_header("image.boot", 512);
  std::memcpy(t.data() + 512, h.data(), 512);
  EXPECT_EQ(err_code(parse_toc(t, blob.size(), nullptr)), kECorrupted);
  h = make_tar_header("rafs.blob.toc", 500);
  std::memcpy(t.data() + 512, h.data(), 512);
  EXPECT_EQ(err_code(parse_toc(t, blob.size(), nullptr)), kECorrupted);
}

TEST(BlobMeta, TarHeader) {
  auto h = make_tar_header("blob.digest", 64);
  ASSERT_EQ(h.size(), 512U);
  EXPECT_EQ(base::as_chars(base::Bytes(h).subspan(124, 12)), std::string_view("00000000100\0", 12));
  EXPECT_EQ(base::as_chars(base::Bytes(h).subspan(257, 8)), std::string_view("ustar  \0", 8));
  EXPECT_EQ(static_cast<char>(h[156]), '0');
  auto p = parse_tar_header(h);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->first, "blob.digest");
  EXPECT_EQ(p->second, 64U);
  // Large sizes use GNU base-256 and round-trip.
  auto big = make_tar_header("x", 1ULL << 40);
  EXPECT_EQ(parse_tar_header(big)->second, 1ULL << 40);
  auto bad = h;
  bad[0] = std::byte{'c'};  // checksum no longer matches
  EXPECT_EQ(err_code(parse_tar_header(bad)), EBADMSG);
  bad = h;
  bad[258] = std::byte{'x'};
  EXPECT_EQ(err_code(parse_tar_header(bad)), EBADMSG);
  EXPECT_EQ(err_code(parse_tar_header(base::Bytes(h).first(511))), EBADMSG);
}

TEST(BlobMeta, DigestArrayAndDecodeErrors) {
  std::vector<std::byte> d(64);
  EXPECT_TRUE(parse_digest_array(d, 2));
  EXPECT_EQ(err_code(parse_digest_array(d, 3)), kECorrupted);
  EXPECT_EQ(err_code(parse_digest_array(base::Bytes(d).first(63), 2)), kECorrupted);

  Built b = build();
  const base::Bytes blob(b.blob);
  const ChunkMeta& c = b.chunks[0];
  ASSERT_TRUE(c.compressed);
  std::vector<std::byte> out(c.uncompressed_size);
  std::vector<std::byte> stored(blob.begin() + c.compressed_offset,
                                blob.begin() + c.compressed_offset + c.compressed_size);
  EXPECT_TRUE(decode_chunk(b.info, c, stored, b.digests[0], out));
  EXPECT_EQ(err_code(decode_chunk(b.info, c, stored, b.digests[1], out)), EBADMSG);
  stored[stored.size() / 2] ^= std::byte{0x55};
  EXPECT_EQ(err_code(decode_chunk(b.info, c, stored, b.digests[0], out)), EBADMSG);
  std::vector<std::byte> small(10);
  EXPECT_EQ(err_code(decode_chunk(b.info, c, stored, b.digests[0], small)), EINVAL);
  BlobInfo gz = b.info;
  gz.unsupported_compressor = true;
  EXPECT_EQ(err_code(decode_chunk(gz, c, stored, b.digests[0], out)), EOPNOTSUPP);
}

TEST(BlobMeta, BuildRejectsBadChunks) {
  ChunkMeta c;
  c.compressed_size = 10;
  c.uncompressed_size = 10;
  base::Digest d{};
  EXPECT_TRUE(build_blob_trailer({c}, {d}, 10));
  EXPECT_EQ(err_code(build_blob_trailer({c}, {}, 10)), EINVAL);
  EXPECT_EQ(err_code(build_blob_trailer({c}, {d}, 5)), EINVAL);
  ChunkMeta bad = c;
  bad.compressed = true;  // v1 cannot say "compressed" with equal sizes
  EXPECT_EQ(err_code(build_blob_trailer({bad}, {d}, 10)), EINVAL);
  bad = c;
  bad.uncompressed_offset = 100;
  EXPECT_EQ(err_code(build_blob_trailer({bad}, {d}, 10)), EINVAL);
  EXPECT_EQ(err_code(build_blob_trailer({c, c}, {d, d}, 20)), EINVAL);  // overlapping
}

}  // namespace
}  // namespace erofs
