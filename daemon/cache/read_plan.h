// SPDX-License-Identifier: Apache-2.0
// The merge of a round's chunk reads: chunks that continue each other in the blob
// file (compressed space), or follow each other across a gap of at most max_gap bytes
// (an uncompressed blob pads each chunk to a 4 KiB block), become one backend read, no
// read beyond a limit (a batch or a fill's window), so a registry backend can run the
// reads of a round in parallel. Pure.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "erofs/blob_meta.h"

namespace cfnd::cache {

struct ReadPlan {
  struct Read {
    std::uint64_t offset = 0;  // in the blob file
    std::uint64_t size = 0;    // compressed bytes, the gaps between its chunks included
    std::size_t first = 0;     // its chunks: order[first, last)
    std::size_t last = 0;
    std::uint64_t buf_off = 0;  // where its bytes start in a buffer of `total` bytes
  };
  std::vector<std::uint32_t> order;  // the chunk indexes by compressed offset
  std::vector<Read> reads;           // in order; buf_off rises by size
  std::uint64_t total = 0;           // bytes of all reads
  // Where chunk order[i]'s bytes start in the buffer.
  [[nodiscard]] std::uint64_t chunk_buf_off(const Read& r, const erofs::ChunkMeta& c) const {
    return r.buf_off + (c.compressed_offset - r.offset);
  }
};

// The gap a fill's read spans: a 4 KiB block's padding.
inline constexpr std::uint64_t kMaxReadGap = 4096;

// chunks: the blob's chunk table; cis: indexes into it (each < chunks.size(), no
// repeats). A chunk larger than max_read is a read of its own. Chunks that overlap in
// the blob file are never merged.
[[nodiscard]] ReadPlan plan_reads(std::span<const erofs::ChunkMeta> chunks,
                                  std::vector<std::uint32_t> cis, std::uint64_t max_read,
                                  std::uint64_t max_gap = 0);

// An on-demand fill's window (read amplification, nydus's amplify_io): the chunks
// [first, last) the reader asked for, widened forward over the chunks after them while
// each ends within `window` uncompressed bytes of chunks[first]'s start (and never
// beyond the blob). Returns the widened end (>= last). Pure.
[[nodiscard]] std::uint32_t widen_forward(std::span<const erofs::ChunkMeta> chunks,
                                          std::uint32_t first, std::uint32_t last,
                                          std::uint64_t window);

}  // namespace cfnd::cache
