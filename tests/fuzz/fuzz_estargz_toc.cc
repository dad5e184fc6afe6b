// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the eStargz footer and TOC parser, and the bootstrap builder behind it.
// The input is a whole layer: footer -> TOC member -> TOC -> bootstrap, as the daemon
// reads one. With the first byte odd, the rest is taken as TOC JSON alone instead.
// Whatever is built must parse back as RAFS v6 with gzip, bootstrap-indexed blobs.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "erofs/blob_meta.h"
#include "erofs/reader.h"
#include "estargz/bootstrap.h"
#include "estargz/toc.h"

namespace {

void build(estargz::Toc toc, std::uint64_t size, std::uint64_t toc_offset) {
  estargz::LayerToc l;
  l.blob_id = std::string(64, 'f');
  l.blob_size = size;
  l.toc_offset = toc_offset;
  l.toc = std::move(toc);
  auto built = estargz::build_bootstrap({l});
  if (!built) {
    return;
  }
  auto img = erofs::Image::parse(built->bootstrap);
  if (!img || !img->is_rafs()) {
    std::abort();
  }
  auto records = img->chunk_table();
  if (!records) {
    std::abort();
  }
  for (const auto& b : img->blobs()) {
    if (!erofs::is_bootstrap_indexed(b) || !erofs::BlobMeta::from_records(b, *records)) {
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  const base::Bytes in(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  if ((data[0] & 1) != 0) {
    auto toc = estargz::parse_toc_json(base::as_chars(in));
    if (toc) {
      build(std::move(*toc), 1ULL << 40, (1ULL << 40) - 4096);
    }
    return 0;
  }
  auto off = estargz::parse_footer(in, in.size());
  if (!off) {
    return 0;
  }
  if (*off >= in.size() - estargz::kFooterSize) {
    std::abort();
  }
  auto toc = estargz::parse_toc(in.subspan(*off, in.size() - estargz::kFooterSize - *off), nullptr);
  if (toc) {
    build(std::move(*toc), in.size(), *off);
  }
  return 0;
}
