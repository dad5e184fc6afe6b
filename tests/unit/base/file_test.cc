// SPDX-License-Identifier: Apache-2.0
#include "base/file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "base/unique_fd.h"

namespace base {
namespace {

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cfn-file-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
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
