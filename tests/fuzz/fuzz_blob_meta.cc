// SPDX-License-Identifier: Apache-2.0
// Fuzz target: blob meta, ToC, digest array and tar header parsers. The first 64
// bytes choose the BlobInfo fields (bounded so allocations stay small); the rest is
// the meta region and, read from its end, the ToC tail.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "erofs/blob_meta.h"

namespace {

std::uint64_t take(const std::uint8_t* p, std::size_t n) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, n);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr std::size_t kHead = 64;
  if (size < kHead) {
    return 0;
  }
  const base::Bytes rest(reinterpret_cast<const std::byte*>(data + kHead), size - kHead);
  erofs::BlobInfo b;
  b.id = "fuzz";
  b.chunk_count = static_cast<std::uint32_t>(take(data, 2));  // <= 65535 chunks
  b.features = static_cast<std::uint32_t>(take(data + 2, 4));
  b.compressed_size = take(data + 6, 5);
  b.uncompressed_size = take(data + 11, 6);
  b.ci_offset = take(data + 17, 5);
  b.ci_compressor = static_cast<base::Compressor>(data[22] % 3);
  b.unsupported_ci_compressor = (data[23] & 1) != 0;
  b.compressor = static_cast<base::Compressor>(data[24] % 3);
  b.digester = (data[25] & 1) != 0 ? base::DigestAlgo::kSha256 : base::DigestAlgo::kBlake3;
  b.ci_uncompressed_size = take(data + 26, 3);  // < 16 MiB
  b.ci_compressed_size = rest.size() >= 4096 ? rest.size() - 4096 : 0;

  auto meta = erofs::BlobMeta::parse(b, rest);
  if (meta) {
    (void)meta->chunks_in_range(take(data + 30, 4), take(data + 34, 4));
    (void)meta->chunks_in_range(0, UINT64_MAX);
    for (const erofs::ChunkMeta& c : meta->chunks()) {
      if (c.compressed_size <= rest.size() && c.uncompressed_size <= (1U << 20)) {
        std::vector<std::byte> out(c.uncompressed_size);
        (void)erofs::decode_chunk(b, c, rest.first(c.compressed_size), base::Digest{}, out);
        break;
      }
    }
  }
  const std::uint64_t blob_size = rest.size() + take(data + 40, 2);
  (void)erofs::parse_toc(rest, blob_size, nullptr);
  if (rest.size() >= 512) {
    (void)erofs::parse_tar_header(rest.first(512));
  }
  (void)erofs::parse_digest_array(rest, static_cast<std::uint32_t>(take(data + 42, 2)));
  return 0;
}
