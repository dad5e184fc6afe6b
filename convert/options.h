// SPDX-License-Identifier: Apache-2.0
// Options of `nydus-convert build`, and parsing of their textual forms.
#pragma once

#include <cstdint>
#include <string_view>

#include "base/compress.h"
#include "base/digest.h"
#include "base/result.h"

namespace convert {

inline constexpr std::uint32_t kMinChunkSize = 4096;
inline constexpr std::uint32_t kMaxChunkSize = 16U << 20;
inline constexpr std::uint32_t kDefaultChunkSize = 1U << 20;

struct BuildOptions {
  base::Compressor compressor = base::Compressor::kZstd;
  base::DigestAlgo digester = base::DigestAlgo::kSha256;
  std::uint32_t chunk_size = kDefaultChunkSize;
  // Worker threads for hashing and compression; 0 = from hardware_concurrency.
  unsigned workers = 0;
};

// "1048576", "1M", "64K", "0x100000", "4k", "1MiB": a power of two in [4 KiB, 16 MiB].
// EINVAL with the offending text otherwise.
[[nodiscard]] base::Result<std::uint32_t> parse_chunk_size(std::string_view text);

}  // namespace convert
