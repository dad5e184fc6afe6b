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

}  // namespace
}  // namespace cfnd::cache
