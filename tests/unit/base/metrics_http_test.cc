// SPDX-License-Identifier: Apache-2.0
#include "base/metrics_http.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "base/unique_fd.h"

namespace base {
namespace {

UniqueFd connect_to(std::uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

void send_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      return;  // the server closed: the caller checks the answer
    }
    off += static_cast<std::size_t>(n);
  }
}

// Everything until the server closes (or 30 s of silence: a hang fails the test).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 30000) != 1) {
      ADD_FAILURE() << "no answer";
      return out;
    }
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      return out;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
}

std::string request(std::uint16_t port, const std::string& text) {
  auto fd = connect_to(port);
  send_all(fd.get(), text);
  return read_all(fd.get());
}

std::string get(std::uint16_t port, const std::string& path) {
  return request(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

class MetricsHttp : public ::testing::Test {
 protected:
  void SetUp() override {
    MetricsHttpOptions o;
    o.address = "127.0.0.1:0";
    o.metrics = [this] {
      ++scrapes_;
      return std::string("# HELP a_total A.\n# TYPE a_total counter\na_total 42\n");
    };
    o.healthy = [this] { return healthy_.load(); };
    o.timeout_s = 1;
    auto s = MetricsHttpServer::start(std::move(o));
    ASSERT_TRUE(s) << s.error().to_string();
    server_ = std::move(*s);
  }
  std::atomic<int> scrapes_{0};
  std::atomic<bool> healthy_{true};
  std::unique_ptr<MetricsHttpServer> server_;
};

TEST_F(MetricsHttp, ServesMetricsInTheTextFormat) {
  ASSERT_NE(server_->port(), 0);
  EXPECT_EQ(server_->address(), "127.0.0.1:" + std::to_string(server_->port()));
  const auto r = get(server_->port(), "/metrics");
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8"), std::string::npos)
      << r;
  EXPECT_NE(r.find("\r\n\r\n# HELP a_total A.\n# TYPE a_total counter\na_total 42\n"),
            std::string::npos)
      << r;
  EXPECT_EQ(scrapes_.load(), 1);
}

TEST_F(MetricsHttp, Healthz) {
  auto r = get(server_->port(), "/healthz");
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << r;
  EXPECT_NE(r.find("\r\n\r\nok\n"), std::string::npos);
  healthy_ = false;
  r = get(server_->port(), "/healthz");
  EXPECT_EQ(r.rfind("HTTP/1.1 503", 0), 0u) << r;
}

TEST_F(MetricsHttp, OtherPathsAndMethodsAreRefused) {
  EXPECT_EQ(get(server_->port(), "/").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(get(server_->port(), "/metrics/../etc/passwd").rfind("HTTP/1.1 404", 0), 0u);
  const auto r = request(server_->port(),
                         "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                         "Connection: close\r\n\r\nabc");
  EXPECT_EQ(r.rfind("HTTP/1.1 405", 0), 0u) << r;
  EXPECT_EQ(scrapes_.load(), 0);
}

TEST_F(MetricsHttp, AnOversizedRequestIsRefusedNotServed) {
  const std::string big(MetricsHttpServer::kMaxRequestBytes * 2, 'a');
  const auto r = request(server_->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + big +
                                              "\r\nConnection: close\r\n\r\n");
  // A 4xx answer or the connection closed: never the metrics.
  EXPECT_TRUE(r.empty() || r.rfind("HTTP/1.1 4", 0) == 0) << r.substr(0, 100);
  EXPECT_EQ(scrapes_.load(), 0);
  EXPECT_EQ(get(server_->port(), "/metrics").rfind("HTTP/1.1 200", 0), 0u);
}

TEST_F(MetricsHttp, AStalledClientDoesNotBlockOthersAndIsClosed) {
  auto stalled = connect_to(server_->port());
  send_all(stalled.get(), "GET /metr");
  // Another scraper is served while the first one sits on half a request line.
  EXPECT_EQ(get(server_->port(), "/metrics").rfind("HTTP/1.1 200", 0), 0u);
  // The stalled one is closed by the idle timeout (1 s here): read_all returns at EOF.
  EXPECT_EQ(read_all(stalled.get()), "");
}

TEST(MetricsHttpAddress, Parses) {
  auto a = parse_listen_address("127.0.0.1:9110");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->addr.ss_family, AF_INET);
  EXPECT_EQ(ntohs(reinterpret_cast<sockaddr_in*>(&a->addr)->sin_port), 9110);
  a = parse_listen_address("[::1]:80");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->addr.ss_family, AF_INET6);
  a = parse_listen_address(":9110");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->addr.ss_family, AF_INET);
  for (const char* bad : {"", "9110", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:x",
                          "::1:80", "[::1]80", "[::1"}) {
    auto r = parse_listen_address(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_NE(r.error().message.find("127.0.0.1:9110"), std::string::npos) << r.error().message;
  }
}

TEST(MetricsHttpAddress, APortInUseSaysSo) {
  MetricsHttpOptions o;
  o.address = "127.0.0.1:0";
  auto first = MetricsHttpServer::start(o);
  ASSERT_TRUE(first);
  o.address = (*first)->address();
  auto second = MetricsHttpServer::start(o);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, EADDRINUSE);
  EXPECT_NE(second.error().message.find("in use"), std::string::npos);
}

}  // namespace
}  // namespace base
