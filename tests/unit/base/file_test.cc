// SPDX-License-Identifier: Apache-2.0
#include "base/file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <set>
#include <string>

#include "base/unique_fd.h"
#include "tests/unit/temp_dir.h"

namespace base {
namespace {

class FileTest : public ::testing::Test {
 protected:
  cfntest::TempDir tmp_{"cfn-file-test"};
  const std::string dir_ = tmp_.path();
};

TEST_F(FileTest, AtomicWriteThenRead) {
  std::string path = dir_ + "/f";
  ASSERT_TRUE(write_file_atomic(path, as_bytes("hello")));
  auto data = read_file(path);
  ASSERT_TRUE(data);
  EXPECT_EQ(as_chars(*data), "hello");
  // Nothing but the file is left in the directory.
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename(), "f");
    ++n;
  }
  EXPECT_EQ(n, 1U);
}

// Without the fsync: the same file, replaced whole, mode as asked, no temporary left.
TEST_F(FileTest, AtomicWriteRenameOnlyReplacesWhole) {
  std::string path = dir_ + "/f";
  ASSERT_TRUE(write_file_atomic(path, as_bytes("a longer first version"), 0600));
  ASSERT_TRUE(write_file_atomic(path, as_bytes("second"), 0600, Durability::kRenameOnly));
  auto data = read_file(path);
  ASSERT_TRUE(data);
  EXPECT_EQ(as_chars(*data), "second");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600U);
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename(), "f");
    ++n;
  }
  EXPECT_EQ(n, 1U);
}

TEST_F(FileTest, AtomicTemporaryNames) {
  EXPECT_TRUE(is_atomic_temporary("f.tmp.AbC123"));
  EXPECT_TRUE(is_atomic_temporary("abc.meta.tmp.000000"));
  EXPECT_TRUE(is_atomic_temporary("x.tmp.tmp.zzzzzz"));
  EXPECT_FALSE(is_atomic_temporary(".tmp.AbC123"));    // no name before it
  EXPECT_FALSE(is_atomic_temporary("f.tmp.AbC12"));    // five letters
  EXPECT_FALSE(is_atomic_temporary("f.tmp.AbC1234"));  // seven
  EXPECT_FALSE(is_atomic_temporary("f.tmp.AbC-12"));   // not mkostemp's alphabet
  EXPECT_FALSE(is_atomic_temporary("f.tmp"));
  EXPECT_FALSE(is_atomic_temporary("f.blob"));
  EXPECT_FALSE(is_atomic_temporary("f.TMP.AbC123"));
  EXPECT_FALSE(is_atomic_temporary("f.tmpXAbC123"));
}

TEST_F(FileTest, RemoveAtomicTemporariesRemovesOnlyOurs) {
  auto touch = [&](const std::string& name) {
    ASSERT_TRUE(write_file_atomic(dir_ + "/" + name, as_bytes("x")));
  };
  // What a writer that died before its rename leaves, and what must stay.
  touch("a.meta.tmp.Qx7Zp0");
  touch("state.json.tmp.abcdef");
  touch("a.meta");
  touch("a.blob");
  touch(".tmp.abcdef");
  touch("other.tmp.abcde");
  touch("y.partial");
  std::filesystem::create_directory(dir_ + "/sub.tmp.dirdir");
  ASSERT_TRUE(write_file_atomic(dir_ + "/sub.tmp.dirdir/in.tmp.abcdef", as_bytes("x")));
  std::filesystem::create_directory(dir_ + "/nested");
  ASSERT_TRUE(write_file_atomic(dir_ + "/nested/n.tmp.abcdef", as_bytes("x")));
  std::filesystem::create_symlink(dir_ + "/a.blob", dir_ + "/link.tmp.abcdef");

  auto n = remove_atomic_temporaries(dir_);
  ASSERT_TRUE(n) << n.error().to_string();
  EXPECT_EQ(*n, 2U);
  std::set<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    left.insert(e.path().filename());
  }
  EXPECT_EQ(left,
            (std::set<std::string>{"a.meta", "a.blob", ".tmp.abcdef", "other.tmp.abcde",
                                   "y.partial", "sub.tmp.dirdir", "nested", "link.tmp.abcdef"}));
  // Not recursive: subdirectories are someone else's.
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/sub.tmp.dirdir/in.tmp.abcdef"));
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/nested/n.tmp.abcdef"));
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/a.blob"));  // the symlink's target

  n = remove_atomic_temporaries(dir_);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0U);
}

TEST_F(FileTest, RemoveAtomicTemporariesOfMissingDirIsNothingOfAFileAnError) {
  auto n = remove_atomic_temporaries(dir_ + "/missing");
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0U);
  ASSERT_TRUE(write_file_atomic(dir_ + "/file", as_bytes("x")));
  n = remove_atomic_temporaries(dir_ + "/file");
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code, ENOTDIR);
}

TEST_F(FileTest, ReadMissingFileNamesPath) {
  auto data = read_file(dir_ + "/missing");
  ASSERT_FALSE(data);
  EXPECT_EQ(data.error().code, ENOENT);
  EXPECT_NE(data.error().message.find("missing"), std::string::npos);
}

TEST_F(FileTest, ReadDirectoryIsRejected) {
  auto data = read_file(dir_);
  ASSERT_FALSE(data);
  EXPECT_EQ(data.error().code, EINVAL);
}

TEST_F(FileTest, PreadPastEndIsShortRead) {
  std::string path = dir_ + "/f";
  ASSERT_TRUE(write_file_atomic(path, as_bytes("abc")));
  auto fd = UniqueFd::open(path, O_RDONLY);
  ASSERT_TRUE(fd);
  std::vector<std::byte> buf(4);
  auto st = pread_full(fd->get(), buf, 0);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EIO);
}

TEST_F(FileTest, UniqueFdIsCloexecAndMoves) {
  auto fd = UniqueFd::open(dir_, O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(fd);
  EXPECT_TRUE(fcntl(fd->get(), F_GETFD) & FD_CLOEXEC);
  int raw = fd->get();
  UniqueFd moved = std::move(*fd);
  EXPECT_EQ(moved.get(), raw);
  EXPECT_FALSE(fd->valid());
}

}  // namespace
}  // namespace base
