// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/mounts.h"

#include <gtest/gtest.h>

namespace snapshotter {
namespace {

const std::string kRoot = "/var/lib/containerd-nydus";

TEST(Mounts, NoParentIsBind) {
  auto m = build_mounts(kRoot, Kind::kActive, 7, {}, {});
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].type, "bind");
  EXPECT_EQ(m[0].source, kRoot + "/snapshots/7/fs");
  EXPECT_EQ(m[0].options, (std::vector<std::string>{"rw", "rbind"}));
  auto v = build_mounts(kRoot, Kind::kView, 7, {}, {true, true});
  EXPECT_EQ(v[0].options, (std::vector<std::string>{"ro", "rbind"}));
}

TEST(Mounts, ViewOnOneParentIsReadOnlyBindOfParent) {
  std::vector<int64_t> parents = {3};
  auto m = build_mounts(kRoot, Kind::kView, 9, parents, {true, false});
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].type, "bind");
  EXPECT_EQ(m[0].source, kRoot + "/snapshots/3/fs");
  EXPECT_EQ(m[0].options, (std::vector<std::string>{"ro", "rbind"}));
}

TEST(Mounts, ActiveOverlay) {
  std::vector<int64_t> parents = {5, 2};
  auto m = build_mounts(kRoot, Kind::kActive, 9, parents, {true, false});
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].type, "overlay");
  EXPECT_EQ(m[0].source, "overlay");
  EXPECT_EQ(m[0].options,
            (std::vector<std::string>{
                "index=off", "workdir=" + kRoot + "/snapshots/9/work",
                "upperdir=" + kRoot + "/snapshots/9/fs",
                "lowerdir=" + kRoot + "/snapshots/5/fs:" + kRoot + "/snapshots/2/fs"}));
  auto noindex = build_mounts(kRoot, Kind::kActive, 9, parents, {false, false});
  EXPECT_EQ(noindex[0].options.front(), "workdir=" + kRoot + "/snapshots/9/work");
}

TEST(Mounts, Volatile) {
  std::vector<int64_t> parents = {5};
  auto m = build_mounts(kRoot, Kind::kActive, 9, parents, {true, true});
  EXPECT_EQ(m[0].options[0], "index=off");
  EXPECT_EQ(m[0].options[1], "volatile");
  // A read-only overlay has no upper dir to be volatile about.
  std::vector<int64_t> two = {5, 4};
  auto v = build_mounts(kRoot, Kind::kView, 9, two, {false, true});
  EXPECT_EQ(v[0].options, (std::vector<std::string>{"lowerdir=" + kRoot + "/snapshots/5/fs:" +
                                                    kRoot + "/snapshots/4/fs"}));
}

// containerd's mount helper (mount.All) passes overlay options over 3584 bytes (a page less
// 512) relative to the lowerdirs' common directory after a chdir. 128 layers must fit in a
// page that way: every lowerdir shares ROOT/snapshots/ and is short after it.
TEST(Mounts, HundredTwentyEightLayersFitOnePageAsContainerdCompactsThem) {
  const std::string root = "/tmp/snapshot-suite-Proxy-1234567890/root/data";
  std::vector<int64_t> parents;
  for (int64_t id = 128; id >= 1; --id) {
    parents.push_back(id);
  }
  auto m = build_mounts(root, Kind::kActive, 129, parents, {true, true});
  ASSERT_EQ(m.size(), 1u);
  const std::string& lower = m[0].options.back();
  ASSERT_EQ(lower.rfind("lowerdir=", 0), 0u);
  std::string common = root + "/snapshots/";
  size_t compact = 0;
  size_t start = 9;
  int n = 0;
  while (start <= lower.size()) {
    size_t end = lower.find(':', start);
    if (end == std::string::npos) {
      end = lower.size();
    }
    std::string dir = lower.substr(start, end - start);
    ASSERT_EQ(dir.rfind(common, 0), 0u) << dir;
    compact += dir.size() - common.size() + 1;
    ++n;
    start = end + 1;
  }
  EXPECT_EQ(n, 128);
  size_t total = 9 + compact;
  for (size_t i = 0; i + 1 < m[0].options.size(); ++i) {
    total += m[0].options[i].size() + 1;
  }
  EXPECT_LT(total, 4096u);
}

}  // namespace
}  // namespace snapshotter
