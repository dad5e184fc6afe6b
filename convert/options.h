// SPDX-License-Identifier: Apache-2.0
// Options of `nydus-convert build`, and parsing of their textual forms.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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
  // Absolute paths in the image whose data a runtime should fetch first (a directory:
  // everything under it), written as the RAFS v6 prefetch table. Paths not in the
  // image are skipped with a warning (a list recorded on an older image still helps).
  std::vector<std::string> prefetch_files;
};

// "1048576", "1M", "64K", "0x100000", "4k", "1MiB": a power of two in [4 KiB, 16 MiB].
// EINVAL with the offending text otherwise.
[[nodiscard]] base::Result<std::uint32_t> parse_chunk_size(std::string_view text);

// A prefetch list as text: one path a line, as nydus-image --prefetch-policy fs
// reads it. Blank lines and lines starting with '#' are skipped, surrounding blanks
// trimmed, "." and ".." refused (EINVAL naming the line), a relative path taken
// from the root, repeated slashes and a trailing slash dropped.
[[nodiscard]] base::Result<std::vector<std::string>> parse_prefetch_list(std::string_view text);

}  // namespace convert
