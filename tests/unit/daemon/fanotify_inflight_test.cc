// SPDX-License-Identifier: Apache-2.0
#include "daemon/fanotify_inflight.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>

#include "base/file.h"
#include "tests/unit/temp_dir.h"

namespace cfnd {
namespace {

const InflightRecord kA{3, 2049, 131, 0, 4096};
const InflightRecord kB{17, 2049, 132, 1U << 20, 128U << 10};

std::size_t slot_at(int fd) {
  return kInflightHeaderSize + std::size_t(fd) * kInflightSlotSize;
}

TEST(FanInflight, FormatParseRoundTrip) {
  const InflightRecord recs[] = {kA, kB};
  const auto bytes = format_inflight(64, 20000, recs);
  EXPECT_EQ(bytes.size(), kInflightHeaderSize + 64 * kInflightSlotSize);
  auto f = parse_inflight(bytes);
  ASSERT_TRUE(f) << f.error().to_string();
  EXPECT_EQ(f->slots, 64U);
  EXPECT_EQ(f->fd_bound, 20000U);
  EXPECT_EQ(f->torn, 0U);
  ASSERT_EQ(f->records.size(), 2U);
  EXPECT_EQ(f->records[0], kA);
  EXPECT_EQ(f->records[1], kB);
}

TEST(FanInflight, RecordsOutOfRangeAreDropped) {
  const InflightRecord recs[] = {{64, 1, 1, 0, 1}, {-1, 1, 1, 0, 1}};
  auto f = parse_inflight(format_inflight(64, 100, recs));
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->records.empty());
}

TEST(FanInflight, TornSlotsAreNotRecords) {
  const InflightRecord recs[] = {kA, kB};
  auto bytes = format_inflight(64, 100, recs);
  // A field changed after the check was written (the daemon died mid-record).
  bytes[slot_at(kA.fd) + 32] ^= std::byte{1};
  // A slot whose fd is not its index.
  std::int32_t other = 5;
  std::memcpy(bytes.data() + slot_at(kB.fd) + 8, &other, sizeof other);
  auto f = parse_inflight(bytes);
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->records.empty());
  EXPECT_EQ(f->torn, 2U);
  // An unknown state word.
  auto b2 = format_inflight(64, 100, recs);
  std::uint32_t state = 7;
  std::memcpy(b2.data() + slot_at(kA.fd), &state, sizeof state);
  auto g = parse_inflight(b2);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->records.size(), 1U);
  EXPECT_EQ(g->torn, 1U);
}

TEST(FanInflight, BadFilesAreErrors) {
  const auto good = format_inflight(8, 100, {});
  for (std::size_t n = 0; n < good.size(); n += 7) {
    auto r = parse_inflight(std::span(good).first(n));
    ASSERT_FALSE(r) << n;
    EXPECT_EQ(r.error().code, EINVAL);
  }
  auto longer = good;
  longer.push_back(std::byte{0});
  EXPECT_FALSE(parse_inflight(longer));
  for (std::size_t at : {std::size_t{0}, std::size_t{8}, std::size_t{12}, std::size_t{16}}) {
    auto bad = good;
    bad[at] ^= std::byte{0x40};
    EXPECT_FALSE(parse_inflight(bad)) << at;
  }
  auto zero_bound = format_inflight(8, 0, {});
  EXPECT_FALSE(parse_inflight(zero_bound));
  // A lying slot count cannot make the parser read past the end.
  auto lying = good;
  std::uint32_t slots = 0xffffffffU;
  std::memcpy(lying.data() + 16, &slots, sizeof slots);
  EXPECT_FALSE(parse_inflight(lying));
}

TEST(FanInflight, LogWritesWhatASuccessorReads) {
  cfntest::TempDir tmp("fan-inflight");
  const std::string path = inflight_path(tmp.path());
  EXPECT_EQ(path, tmp.path() + "/state/fanotify-inflight");
  const InflightRecord keep[] = {kB};
  {
    auto log = InflightLog::open(path, 4096, keep);
    ASSERT_TRUE(log) << log.error().to_string();
    (*log)->record(kA);
    (*log)->record({kInflightSlots + 1, 1, 1, 0, 1});  // out of range: ignored
    auto f = load_inflight(path);                      // while mapped: the stores are the file's
    ASSERT_TRUE(f) << f.error().to_string();
    EXPECT_EQ(f->fd_bound, 4096U);
    EXPECT_EQ(f->slots, kInflightSlots);
    ASSERT_EQ(f->records.size(), 2U);
    EXPECT_EQ(f->records[0], kA);
    EXPECT_EQ(f->records[1], kB);
    (*log)->clear(kB.fd);
    (*log)->clear(-1);  // ignored
  }
  // Unmapped (the process gone): what was stored stays.
  auto f = load_inflight(path);
  ASSERT_TRUE(f);
  ASSERT_EQ(f->records.size(), 1U);
  EXPECT_EQ(f->records[0], kA);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  // A fresh log starts empty.
  auto again = InflightLog::open(path, 4096);
  ASSERT_TRUE(again);
  auto g = load_inflight(path);
  ASSERT_TRUE(g);
  EXPECT_TRUE(g->records.empty());
  auto none = load_inflight(tmp.path() + "/nothing");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ENOENT);
}

}  // namespace
}  // namespace cfnd
