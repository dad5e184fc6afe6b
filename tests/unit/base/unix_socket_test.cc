// SPDX-License-Identifier: Apache-2.0
#include "base/unix_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "tests/unit/temp_dir.h"

namespace base {
namespace {

class UnixSocketTest : public ::testing::Test {
 protected:
  cfntest::TempDir tmp_{"cfn-unix-socket-test"};
  const std::string dir_ = tmp_.path();
};

TEST_F(UnixSocketTest, ListenIsPrivateAndConnectable) {
  const std::string path = dir_ + "/s";
  auto l = listen_private(path, SOCK_STREAM, 4);
  ASSERT_TRUE(l) << l.error().to_string();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  auto c = connect_unix(path, SOCK_STREAM);
  ASSERT_TRUE(c) << c.error().to_string();
  // A second listener on the same path fails at bind and names it.
  auto again = listen_private(path, SOCK_STREAM, 4);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, EADDRINUSE);
  EXPECT_NE(again.error().message.find("bind " + path), std::string::npos);
}

TEST_F(UnixSocketTest, BadPathsAreRefused) {
  EXPECT_EQ(unix_address("").error().code, ENAMETOOLONG);
  EXPECT_EQ(unix_address(std::string(200, 'x')).error().code, ENAMETOOLONG);
  auto c = connect_unix(dir_ + "/nobody", SOCK_STREAM);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ENOENT);
  EXPECT_NE(c.error().message.find("connect " + dir_ + "/nobody"), std::string::npos);
}

}  // namespace
}  // namespace base
