// SPDX-License-Identifier: Apache-2.0
#include "daemon/cache/read_plan.h"

#include <algorithm>

namespace cfnd::cache {

ReadPlan plan_reads(std::span<const erofs::ChunkMeta> chunks, std::vector<std::uint32_t> cis,
                    std::uint64_t max_read, std::uint64_t max_gap) {
  ReadPlan p;
  p.order = std::move(cis);
  std::sort(p.order.begin(), p.order.end(), [&](std::uint32_t a, std::uint32_t b) {
    return chunks[a].compressed_offset < chunks[b].compressed_offset;
  });
  for (std::size_t i = 0; i < p.order.size(); ++i) {
    const erofs::ChunkMeta& c = chunks[p.order[i]];
    if (!p.reads.empty()) {
      ReadPlan::Read& r = p.reads.back();
      const std::uint64_t end = r.offset + r.size;
      if (c.compressed_offset >= end && c.compressed_offset - end <= max_gap &&
          c.compressed_offset + c.compressed_size - r.offset <= max_read) {
        const std::uint64_t grow = c.compressed_offset + c.compressed_size - end;
        r.size += grow;
        r.last = i + 1;
        p.total += grow;
        continue;
      }
    }
    p.reads.push_back(ReadPlan::Read{c.compressed_offset, c.compressed_size, i, i + 1, p.total});
    p.total += c.compressed_size;
  }
  return p;
}

std::uint32_t widen_forward(std::span<const erofs::ChunkMeta> chunks, std::uint32_t first,
                            std::uint32_t last, std::uint64_t window) {
  if (first >= chunks.size() || last <= first) {
    return last;
  }
  const std::uint64_t base_off = chunks[first].uncompressed_offset;
  std::uint32_t end = last;
  while (end < chunks.size() && chunks[end].uncompressed_offset >= base_off &&
         chunks[end].uncompressed_offset + chunks[end].uncompressed_size - base_off <= window) {
    ++end;
  }
  return end;
}

}  // namespace cfnd::cache
