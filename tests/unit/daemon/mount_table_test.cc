// SPDX-License-Identifier: Apache-2.0
// mounted_on through libmount, with a mount point whose name the kernel escapes
// (root: a tmpfs is mounted; skipped otherwise).
#include "daemon/mount_table.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "tests/unit/temp_dir.h"

namespace cfnd {
namespace {

TEST(MountTable, FindsAMountByTargetAndType) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root (mount)";
  }
  cfntest::TempDir tmp("cfn-mount-table");
  const std::string dir = tmp.sub("a b\\c\td");
  std::filesystem::create_directories(dir);
  EXPECT_FALSE(mounted_on(dir, "tmpfs"));
  ASSERT_EQ(::mount("none", dir.c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  EXPECT_TRUE(mounted_on(dir, "tmpfs"));
  EXPECT_FALSE(mounted_on(dir, "erofs"));
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(mounted_dev(dir, "tmpfs"), std::optional<dev_t>(st.st_dev));
  EXPECT_EQ(mounted_dev(dir, "erofs"), std::nullopt);
  EXPECT_FALSE(mounted_on(tmp.path(), "tmpfs"));
  ASSERT_EQ(::umount2(dir.c_str(), 0), 0);
  EXPECT_FALSE(mounted_on(dir, "tmpfs"));
}

}  // namespace
}  // namespace cfnd
