// SPDX-License-Identifier: Apache-2.0
// parse_fan_events on byte arrays: the wire layout verified on 6.18, then truncated,
// lying and duplicated records.
#include "daemon/fanotify_frontend.h"

#include <gtest/gtest.h>
#include <sys/sysmacros.h>

#include <cstring>
#include <string>
#include <vector>

namespace cfnd {
namespace {

void put(std::vector<std::byte>& b, const void* p, std::size_t n) {
  const auto* c = static_cast<const std::byte*>(p);
  b.insert(b.end(), c, c + n);
}

std::vector<std::byte> event(int fd, std::uint64_t off, std::uint64_t count, int ranges = 1,
                             std::uint16_t range_len = 24) {
  std::vector<std::byte> b;
  FanEventMetadata m{
      static_cast<std::uint32_t>(24 + ranges * range_len), 3, 0, 24, kFanPreAccess, fd, 77};
  put(b, &m, sizeof m);
  for (int i = 0; i < ranges; ++i) {
    FanInfoRange r{{kFanEventInfoTypeRange, 0, range_len}, 0, off, count};
    put(b, &r, range_len);
  }
  return b;
}

TEST(ParseFanEvents, WireLayoutFromRawDump) {
  // 48 bytes read on 6.18 for pread(fd, 100, 0x3004) on a marked file.
  const unsigned char raw[] = {0x30, 0x00, 0x00, 0x00, 0x03, 0x00, 0x18, 0x00, 0x00, 0x00,
                               0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
                               0x0c, 0x79, 0x00, 0x00, 0x06, 0x00, 0x18, 0x00, 0x00, 0x00,
                               0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                               0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  auto evs = parse_fan_events(std::as_bytes(std::span(raw)));
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_EQ(evs[0].fd, 4);
  EXPECT_EQ(evs[0].pid, 30988);
  EXPECT_EQ(evs[0].mask, kFanPreAccess);
  EXPECT_FALSE(evs[0].malformed);
  ASSERT_TRUE(evs[0].range_offset);
  EXPECT_EQ(*evs[0].range_offset, 0x3000U);
  EXPECT_EQ(evs[0].range_count, 0x1000U);
}

TEST(ParseFanEvents, SeveralEventsInOneRead) {
  auto b = event(5, 0, 4096);
  auto b2 = event(6, 8192, 131072);
  b.insert(b.end(), b2.begin(), b2.end());
  auto evs = parse_fan_events(b);
  ASSERT_EQ(evs.size(), 2U);
  EXPECT_EQ(evs[1].fd, 6);
  EXPECT_EQ(*evs[1].range_offset, 8192U);
  EXPECT_EQ(evs[1].range_count, 131072U);
}

TEST(ParseFanEvents, TruncatedHeaderYieldsNothing) {
  auto b = event(5, 0, 4096);
  b.resize(20);
  EXPECT_TRUE(parse_fan_events(b).empty());
}

TEST(ParseFanEvents, LyingEventLenIsMalformedAndStops) {
  auto b = event(5, 0, 4096);
  std::uint32_t len = 4096;
  std::memcpy(b.data(), &len, 4);
  auto evs = parse_fan_events(b);
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_TRUE(evs[0].malformed);
  EXPECT_EQ(evs[0].fd, 5);  // still answered and closed
}

TEST(ParseFanEvents, ShortRangeRecordIsMalformed) {
  auto evs = parse_fan_events(event(5, 0, 4096, 1, 16));
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_TRUE(evs[0].malformed);
}

TEST(ParseFanEvents, TwoRangesAreMalformed) {
  auto evs = parse_fan_events(event(5, 0, 4096, 2));
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_TRUE(evs[0].malformed);
}

TEST(ParseFanEvents, OverflowingRangeIsMalformed) {
  auto evs = parse_fan_events(event(5, UINT64_MAX - 10, 4096));
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_TRUE(evs[0].malformed);
}

TEST(ParseFanEvents, WrongVersionIsMalformed) {
  auto b = event(5, 0, 4096);
  b[4] = std::byte{2};
  auto evs = parse_fan_events(b);
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_TRUE(evs[0].malformed);
}

TEST(ParseFanEvents, ZeroLengthInfoRecordIsMalformed) {
  auto b = event(5, 0, 4096);
  b[24 + 2] = std::byte{0};
  b[24 + 3] = std::byte{0};
  auto evs = parse_fan_events(b);
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_TRUE(evs[0].malformed);
}

TEST(ParseFanEvents, NoRangeIsReportedAsMissing) {
  std::vector<std::byte> b;
  FanEventMetadata m{24, 3, 0, 24, kFanPreAccess, 9, 1};
  put(b, &m, sizeof m);
  auto evs = parse_fan_events(b);
  ASSERT_EQ(evs.size(), 1U);
  EXPECT_FALSE(evs[0].malformed);
  EXPECT_FALSE(evs[0].range_offset);
}

TEST(FanDenyErrno, EncodesErrnoInTopByte) {
  EXPECT_EQ(fan_deny_errno(EIO), 0x05000002U);
}

// An inotify fd's fdinfo as 6.18 prints it (two watches; the second on an anonymous
// device numbered above 255, whose kernel and user encodings differ).
TEST(ParseInotifyFdinfo, WatchesFromRealText) {
  const std::string text =
      "pos:\t0\nflags:\t02004000\nmnt_id:\t17\nino:\t1039\n"
      "inotify wd:1 ino:3c51a sdev:fe00000 mask:0 ignored_mask:0 fhandle-bytes:8 "
      "fhandle-type:1 f_handle:1ac5030000000000\n"
      "inotify wd:1a ino:24 sdev:12c mask:2000 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 "
      "f_handle:2400000000000000\n";
  const auto w = parse_inotify_fdinfo(text);
  ASSERT_EQ(w.size(), 2U);
  EXPECT_EQ(w[0], (InotifyWatchInfo{1, 0x3c51a, ::makedev(254, 0)}));
  EXPECT_EQ(w[1], (InotifyWatchInfo{0x1a, 0x24, ::makedev(0, 300)}));
  EXPECT_EQ(::makedev(0, 300), static_cast<dev_t>(0x10002c));  // not the kernel's 0x12c
}

TEST(ParseInotifyFdinfo, BadLinesAreSkipped) {
  const char* bad[] = {
      "inotify wd: ino:1 sdev:1\n",           // empty value
      "inotify wd:1 ino:1\n",                 // no sdev
      "inotify wd:zz ino:1 sdev:1\n",         // not hex
      "inotify wd:0 ino:1 sdev:1\n",          // wd 0 is never a watch
      "inotify wd:80000000 ino:1 sdev:1\n",   // above INT_MAX
      "inotify wd:1 ino:1 sdev:100000000\n",  // wider than a kernel dev_t
      "inotify wd:1x ino:1 sdev:1\n",
      "fanotify ino:1 sdev:1 mflags:0 mask:0\n",
      "",
      "\n\n",
      "inotify",
  };
  for (const char* t : bad) {
    EXPECT_TRUE(parse_inotify_fdinfo(t).empty()) << t;
  }
  // No trailing newline, and a good line after a bad one.
  const auto w = parse_inotify_fdinfo("inotify wd:zz\ninotify wd:2 ino:5 sdev:7");
  ASSERT_EQ(w.size(), 1U);
  EXPECT_EQ(w[0], (InotifyWatchInfo{2, 5, ::makedev(0, 7)}));
}

}  // namespace
}  // namespace cfnd
