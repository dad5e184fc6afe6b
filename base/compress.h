// SPDX-License-Identifier: Apache-2.0
// Chunk compressors: zstd frames, raw LZ4 blocks (no size prefix, as nydus writes),
// and none. Contexts are per thread and reused.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace base {

// kGzip is a chunk codec for reading only: eStargz layers keep each chunk in a gzip
// member of the original layer (docs/estargz.md). Nothing writes gzip chunks, so
// parse_compressor (the builder's --compressor) does not accept it.
enum class Compressor : std::uint8_t { kNone, kLz4Block, kZstd, kGzip };

std::string_view compressor_name(Compressor c);  // "none", "lz4_block", "zstd", "gzip"
std::optional<Compressor> parse_compressor(std::string_view name);  // not "gzip" (above)

// Compress src, replacing the contents of dst. level 0 means the library default.
// Errors: EINVAL for a size the codec cannot take or for kGzip, EIO from the codec.
[[nodiscard]] Status compress(Compressor c, Bytes src, std::vector<std::byte>& dst, int level = 0);

// Decompress src into exactly dst.size() bytes. Any corruption, short or long output
// is EBADMSG: a lying blob never yields a partially trusted buffer.
// kGzip differs in one way: dst takes the FIRST dst.size() bytes the gzip stream (one
// or more members) inflates to, and the rest of src is not looked at: an eStargz chunk's
// member goes on with the tar padding and the next entries' headers. A stream that
// ends (or breaks) before dst is full is EBADMSG. The caller's digest check over dst is
// what makes the bytes trusted.
[[nodiscard]] Status decompress(Compressor c, Bytes src, MutableBytes dst);

}  // namespace base
