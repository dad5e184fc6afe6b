// SPDX-License-Identifier: Apache-2.0
// The control socket against hostile clients: oversized requests, silence, bad JSON.
#include "daemon/control.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <thread>
#include <vector>

#include "base/unix_socket.h"
#include "control/api.h"
#include "control/wire.h"
#include "tests/unit/temp_dir.h"

namespace cfnd {
namespace {

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_ + "/s/control.sock";
    auto s = ControlServer::listen(path_, [](const std::string& r) -> std::string {
      if (r.starts_with("throw")) {
        // What nlohmann's dump() throws on a string that is not UTF-8.
        throw std::runtime_error("[json.exception.type_error.316] invalid UTF-8 byte");
      }
      return "echo:" + r;
    });
    ASSERT_TRUE(s) << s.error().to_string();
    server_ = std::move(*s);
    pump_ = std::thread([this] {
      while (!stop_) {
        pollfd p{server_->fd(), POLLIN, 0};
        if (::poll(&p, 1, 20) > 0) {
          server_->on_readable();
        }
      }
    });
  }
  void TearDown() override {
    stop_ = true;
    pump_.join();
    server_.reset();
  }
  cfntest::TempDir tmp_{"cfn-control"};  // first: removed after the server is gone
  const std::string dir_ = tmp_.path();
  std::string path_;
  std::unique_ptr<ControlServer> server_;
  std::thread pump_;
  std::atomic<bool> stop_{false};
};

TEST_F(ControlTest, SocketIsPrivate) {
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
}

TEST_F(ControlTest, OneRequestOneAnswer) {
  auto r = control::call(path_, R"({"op":"ping"})", std::chrono::seconds(5));
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(*r, R"(echo:{"op":"ping"})");
}

// A handler that throws (it must not; a library may) costs its client an EIO answer,
// not the daemon: the next client is answered as usual.
TEST_F(ControlTest, HandlerThatThrowsIsAnErrorAnswer) {
  auto r = control::call(path_, "throw", std::chrono::seconds(5));
  ASSERT_TRUE(r) << r.error().to_string();
  auto e = control::ok_from_json(*r);
  ASSERT_FALSE(e) << *r;
  EXPECT_EQ(e.error().code, EIO);
  EXPECT_NE(e.error().message.find("invalid UTF-8"), std::string::npos) << e.error().message;
  auto ok = control::call(path_, R"({"op":"ping"})", std::chrono::seconds(5));
  ASSERT_TRUE(ok) << ok.error().to_string();
  EXPECT_EQ(*ok, R"(echo:{"op":"ping"})");
}

TEST_F(ControlTest, OversizedRequestIsRefused) {
  std::string big(control::kMaxRequest + 10, 'x');
  auto r = control::call(path_, big, std::chrono::seconds(5));
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_NE(r->find("\"ok\":false"), std::string::npos);
  EXPECT_NE(r->find("too large"), std::string::npos);
}

// Clients that send half a line and wait, more of them than there are workers and than
// the pending cap, hold nothing a well-behaved client needs: it is answered at once.
TEST_F(ControlTest, SilentClientsDoNotStarveOthers) {
  std::vector<base::UniqueFd> silent;
  for (int i = 0; i < kMaxPending + 40; ++i) {
    auto c = base::connect_unix(path_, SOCK_STREAM);
    ASSERT_TRUE(c) << c.error().to_string();
    ASSERT_TRUE(
        control::send_all(c->get(), R"({"op":)", control::Clock::now() + std::chrono::seconds(5)));
    silent.push_back(std::move(*c));
  }
  for (int i = 0; i < 20; ++i) {
    auto r = control::call(path_, R"({"op":"ping"})", std::chrono::seconds(5));
    ASSERT_TRUE(r) << i << ": " << r.error().to_string();
    EXPECT_EQ(*r, R"(echo:{"op":"ping"})");
  }
  // A half line followed by close is taken as the last line.
  auto c = base::connect_unix(path_, SOCK_STREAM);
  ASSERT_TRUE(c);
  ASSERT_TRUE(control::send_all(c->get(), "half", control::Clock::now() + std::chrono::seconds(5)));
  ::shutdown(c->get(), SHUT_WR);
  auto a = control::read_line(c->get(), control::kMaxResponse,
                              control::Clock::now() + std::chrono::seconds(5));
  ASSERT_TRUE(a) << a.error().to_string();
  EXPECT_EQ(*a, "echo:half");
}

TEST_F(ControlTest, SecondDaemonOnSameSocketIsRefused) {
  auto s = ControlServer::listen(path_, [](const std::string&) { return std::string(); });
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, EADDRINUSE);
}

TEST_F(ControlTest, NoDaemonIsConnectError) {
  auto r = control::call(dir_ + "/nothing.sock", "{}", std::chrono::seconds(1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
}

}  // namespace
}  // namespace cfnd
