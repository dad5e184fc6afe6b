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

enum class Compressor : std::uint8_t { kNone, kLz4Block, kZstd };

std::string_view compressor_name(Compressor c);  // "none", "lz4_block", "zstd"
std::optional<Compressor> parse_compressor(std::string_view name);

// Compress src, replacing the contents of dst. level 0 means the library default.
// Errors: EINVAL for a size the codec cannot take, EIO from the codec.
[[nodiscard]] Status compress(Compressor c, Bytes src, std::vector<std::byte>& dst, int level = 0);

// Decompress src into exactly dst.size() bytes. Any corruption, short or long output
// is EBADMSG: a lying blob never yields a partially trusted buffer.
[[nodiscard]] Status decompress(Compressor c, Bytes src, MutableBytes dst);

}  // namespace base
