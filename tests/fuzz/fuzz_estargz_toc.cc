// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the eStargz footer and TOC parser, and the bootstrap builder behind it.
// The input is a whole layer: footer -> TOC member -> TOC -> bootstrap, as the daemon
// reads one. With the first byte odd, the rest is taken as TOC JSON alone instead.
// Whatever is built must parse back as RAFS v6 with gzip, bootstrap-indexed blobs.
// The TOC JSON alone is also parsed a second time in its canonical form (through a JSON
// DOM: each key once with its last value, keys sorted, no whitespace): the SAX walk must
// decide the same (the same entries or the same error), whatever the order of the
// members, their repetition or what is nested in them.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

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

bool same(const estargz::Entry& a, const estargz::Entry& b) {
  return a.name == b.name && a.type == b.type && a.size == b.size && a.mode == b.mode &&
         a.uid == b.uid && a.gid == b.gid && a.link_name == b.link_name &&
         a.dev_major == b.dev_major && a.dev_minor == b.dev_minor && a.xattrs == b.xattrs &&
         a.mtime == b.mtime && a.mtime_nsec == b.mtime_nsec && a.offset == b.offset &&
         a.inner_offset == b.inner_offset && a.chunk_offset == b.chunk_offset &&
         a.chunk_size == b.chunk_size && a.chunk_digest == b.chunk_digest;
}

// A DOM holds "-0" as the integer 0 and writes it back as "0", an unsigned number: -1
// is what "-0" is to the TOC parser (a number that is not an unsigned integer).
void no_negative_zero(nlohmann::json& j) {
  if (j.is_number_integer() && !j.is_number_unsigned() && j.get<std::int64_t>() >= 0) {
    j = -1;
  } else if (j.is_structured()) {
    for (auto& v : j) {
      no_negative_zero(v);
    }
  }
}

void same_as_canonical(std::string_view text, const base::Result<estargz::Toc>& toc) {
  auto dom = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (dom.is_discarded()) {
    return;
  }
  no_negative_zero(dom);
  const auto canon = estargz::parse_toc_json(dom.dump());
  if (static_cast<bool>(toc) != static_cast<bool>(canon)) {
    std::abort();
  }
  if (!toc) {
    if (toc.error().code != canon.error().code || toc.error().message != canon.error().message) {
      std::abort();
    }
    return;
  }
  if (toc->entries.size() != canon->entries.size()) {
    std::abort();
  }
  for (std::size_t i = 0; i < toc->entries.size(); ++i) {
    if (!same(toc->entries[i], canon->entries[i])) {
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
    same_as_canonical(base::as_chars(in), toc);
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
