// SPDX-License-Identifier: Apache-2.0
#include "daemon/cache/read_plan.h"

#include <gtest/gtest.h>

#include <vector>

namespace cfnd::cache {
namespace {

// Chunks at the given compressed (offset, size).
std::vector<erofs::ChunkMeta> chunks(
    const std::vector<std::pair<std::uint64_t, std::uint32_t>>& at) {
  std::vector<erofs::ChunkMeta> out;
  for (const auto& [off, size] : at) {
    erofs::ChunkMeta c;
    c.compressed_offset = off;
    c.compressed_size = size;
    out.push_back(c);
  }
  return out;
}

TEST(ReadPlan, Empty) {
  const auto c = chunks({{0, 10}});
  const ReadPlan p = plan_reads(c, {}, 100);
  EXPECT_TRUE(p.order.empty());
  EXPECT_TRUE(p.reads.empty());
  EXPECT_EQ(p.total, 0U);
}

TEST(ReadPlan, AdjacentChunksMergeInOffsetOrder) {
  // Chunk 2 sits between 0 and 1 in the file; asked for out of order.
  const auto c = chunks({{0, 10}, {30, 5}, {10, 20}});
  const ReadPlan p = plan_reads(c, {1, 0, 2}, 100);
  EXPECT_EQ(p.order, (std::vector<std::uint32_t>{0, 2, 1}));
  ASSERT_EQ(p.reads.size(), 1U);
  EXPECT_EQ(p.reads[0].offset, 0U);
  EXPECT_EQ(p.reads[0].size, 35U);
  EXPECT_EQ(p.reads[0].first, 0U);
  EXPECT_EQ(p.reads[0].last, 3U);
  EXPECT_EQ(p.reads[0].buf_off, 0U);
  EXPECT_EQ(p.total, 35U);
}

TEST(ReadPlan, AGapSplitsTheRead) {
  const auto c = chunks({{0, 10}, {11, 10}, {21, 4}});
  const ReadPlan p = plan_reads(c, {0, 1, 2}, 100);
  ASSERT_EQ(p.reads.size(), 2U);
  EXPECT_EQ(p.reads[0].offset, 0U);
  EXPECT_EQ(p.reads[0].size, 10U);
  EXPECT_EQ(p.reads[1].offset, 11U);
  EXPECT_EQ(p.reads[1].size, 14U);
  EXPECT_EQ(p.reads[1].first, 1U);
  EXPECT_EQ(p.reads[1].last, 3U);
  EXPECT_EQ(p.reads[1].buf_off, 10U);  // the buffer has no gap
  EXPECT_EQ(p.total, 24U);
}

TEST(ReadPlan, NoReadBeyondTheLimitButABigChunkAlone) {
  const auto c = chunks({{0, 40}, {40, 40}, {80, 40}, {120, 500}, {620, 10}});
  const ReadPlan p = plan_reads(c, {0, 1, 2, 3, 4}, 100);
  ASSERT_EQ(p.reads.size(), 4U);
  EXPECT_EQ(p.reads[0].size, 80U);   // 0, 1: a third would pass 100
  EXPECT_EQ(p.reads[1].size, 40U);   // 2
  EXPECT_EQ(p.reads[2].size, 500U);  // 3, over the limit by itself
  EXPECT_EQ(p.reads[3].size, 10U);   // 4 does not join a read already over
  std::uint64_t pos = 0;
  for (const auto& r : p.reads) {
    EXPECT_EQ(r.buf_off, pos);
    pos += r.size;
  }
  EXPECT_EQ(p.total, pos);
}

TEST(ReadPlan, AGapUpToMaxGapIsReadThrough) {
  // An uncompressed blob: 4 KiB-aligned chunks of 40000 bytes, 960 bytes of padding
  // between them; chunk 3 is not asked for (present), so 2 and 4 are 40960 + 960 apart.
  const auto c = chunks({{0, 40000}, {40960, 40000}, {81920, 40000}, {122880, 40000},
                         {163840, 40000}});
  const ReadPlan p = plan_reads(c, {0, 1, 2, 4}, 1U << 20, 4096);
  ASSERT_EQ(p.reads.size(), 2U);
  EXPECT_EQ(p.reads[0].offset, 0U);
  EXPECT_EQ(p.reads[0].size, 121920U);  // 0..2 with the two paddings
  EXPECT_EQ(p.reads[0].last, 3U);
  EXPECT_EQ(p.reads[1].offset, 163840U);  // 40960 bytes after chunk 2's end: not a gap
  EXPECT_EQ(p.reads[1].buf_off, 121920U);
  EXPECT_EQ(p.total, 161920U);
  // Each chunk's bytes in the buffer: at its offset from its read's start.
  EXPECT_EQ(p.chunk_buf_off(p.reads[0], c[1]), 40960U);
  EXPECT_EQ(p.chunk_buf_off(p.reads[0], c[2]), 81920U);
  EXPECT_EQ(p.chunk_buf_off(p.reads[1], c[4]), 121920U);
  // Without a gap allowance, every chunk is a read of its own; the limit counts the gaps.
  EXPECT_EQ(plan_reads(c, {0, 1, 2}, 1U << 20).reads.size(), 3U);
  EXPECT_EQ(plan_reads(c, {0, 1, 2}, 121919, 4096).reads.size(), 2U);
}

TEST(ReadPlan, OverlappingChunksAreNotMerged) {
  const auto c = chunks({{0, 100}, {50, 100}});
  const ReadPlan p = plan_reads(c, {0, 1}, 1U << 20, 4096);
  ASSERT_EQ(p.reads.size(), 2U);
  EXPECT_EQ(p.total, 200U);
}

// Chunks at the given uncompressed (offset, size).
std::vector<erofs::ChunkMeta> uchunks(
    const std::vector<std::pair<std::uint64_t, std::uint32_t>>& at) {
  std::vector<erofs::ChunkMeta> out;
  for (const auto& [off, size] : at) {
    erofs::ChunkMeta c;
    c.uncompressed_offset = off;
    c.uncompressed_size = size;
    out.push_back(c);
  }
  return out;
}

TEST(WidenForward, UpToTheWindowFromTheFirstChunk) {
  // Four 16 KiB chunks, 4 KiB aligned (one has a 4 KiB tail gap).
  const auto c = uchunks({{0, 16384}, {16384, 12288}, {32768, 16384}, {49152, 16384}});
  EXPECT_EQ(widen_forward(c, 0, 1, 16384), 1U);   // the window holds only the chunk asked for
  EXPECT_EQ(widen_forward(c, 0, 1, 32767), 2U);   // chunk 1 ends at 28672: in
  EXPECT_EQ(widen_forward(c, 0, 1, 49151), 2U);   // chunk 2 ends at 49152: one byte short
  EXPECT_EQ(widen_forward(c, 0, 1, 49152), 3U);   // ... and in
  EXPECT_EQ(widen_forward(c, 1, 2, 1U << 20), 4U);  // never beyond the blob
  EXPECT_EQ(widen_forward(c, 2, 3, 32768), 4U);     // measured from chunk 2's start
}

TEST(WidenForward, NeverNarrowsTheRequest) {
  const auto c = uchunks({{0, 65536}, {65536, 65536}, {131072, 65536}});
  // The range asked for is wider than the window: it is fetched whole, not widened.
  EXPECT_EQ(widen_forward(c, 0, 3, 4096), 3U);
  EXPECT_EQ(widen_forward(c, 0, 2, 4096), 2U);
  // A chunk larger than the window alone.
  EXPECT_EQ(widen_forward(c, 1, 2, 0), 2U);
  // Degenerate input: returned as is.
  EXPECT_EQ(widen_forward(c, 3, 3, 1U << 20), 3U);
  EXPECT_EQ(widen_forward({}, 0, 0, 1U << 20), 0U);
}

}  // namespace
}  // namespace cfnd::cache
