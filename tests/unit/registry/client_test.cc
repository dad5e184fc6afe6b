// SPDX-License-Identifier: Apache-2.0
// Client checks that need no network: configuration and argument validation.
#include "registry/client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace registry {
namespace {

TEST(Client, CreateValidatesConfig) {
  ClientConfig ok;
  ok.hosts["127.0.0.1:5000"].mirrors = {"http://127.0.0.1:5001", "https://mirror.example/prefix"};
  EXPECT_TRUE(Client::create(ok));

  ClientConfig bad_mirror;
  bad_mirror.hosts["h.example"].mirrors = {"mirror.example"};
  auto r = Client::create(bad_mirror);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);

  ClientConfig bad_proxy;
  bad_proxy.proxy = "socks5://127.0.0.1:1080";
  EXPECT_FALSE(Client::create(bad_proxy));

  ClientConfig bad_ca;
  bad_ca.hosts["h.example"].ca_files = {"/nonexistent/ca.pem"};
  auto ca = Client::create(bad_ca);
  ASSERT_FALSE(ca);
  EXPECT_NE(ca.error().message.find("/nonexistent/ca.pem"), std::string::npos);

  ClientConfig zero;
  zero.max_parallel = 0;
  EXPECT_FALSE(Client::create(zero));
}

TEST(Client, MirrorHeadersWithBadNamesOrValuesAreRefused) {
  ClientConfig cfg;
  cfg.hosts["h.example"].mirrors = {"http://127.0.0.1:5001"};
  cfg.hosts["h.example"].mirror_headers["http://127.0.0.1:5001"] = {{"X-Ok", "a\r\nX-Evil: 1"}};
  auto r = Client::create(cfg);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
  cfg.hosts["h.example"].mirror_headers["http://127.0.0.1:5001"] = {{"Bad Name", "v"}};
  EXPECT_FALSE(Client::create(cfg));
  cfg.hosts["h.example"].mirror_headers["http://127.0.0.1:5001"] = {{"X-Good", "v w"}};
  EXPECT_TRUE(Client::create(cfg));
}

TEST(Client, DeadlineScopesNestAndEnd) {
  using Clock = std::chrono::steady_clock;
  EXPECT_FALSE(DeadlineScope::current());
  const auto t = Clock::now() + std::chrono::seconds(10);
  {
    DeadlineScope outer(t);
    EXPECT_EQ(DeadlineScope::current(), t);
    {
      DeadlineScope later(t + std::chrono::seconds(5));  // the earlier one still wins
      EXPECT_EQ(DeadlineScope::current(), t);
      DeadlineScope earlier(t - std::chrono::seconds(5));
      EXPECT_EQ(DeadlineScope::current(), t - std::chrono::seconds(5));
    }
    EXPECT_EQ(DeadlineScope::current(), t);
  }
  EXPECT_FALSE(DeadlineScope::current());
}

TEST(Client, DeadlineScopePassed) {
  using Clock = std::chrono::steady_clock;
  EXPECT_FALSE(DeadlineScope::passed());  // no scope: no deadline to pass
  {
    DeadlineScope later(Clock::now() + std::chrono::seconds(60));
    EXPECT_FALSE(DeadlineScope::passed());
    DeadlineScope gone(Clock::now() - std::chrono::milliseconds(1));
    EXPECT_TRUE(DeadlineScope::passed());
  }
  {
    // Within curl's timer rounding of the deadline counts as the deadline.
    DeadlineScope almost(Clock::now() + DeadlineScope::kTimerSlack / 2);
    EXPECT_TRUE(DeadlineScope::passed());
  }
  EXPECT_FALSE(DeadlineScope::passed());
}

// A deadline already passed: no request starts (127.0.0.1:1 is never contacted,
// so this needs no network) and the read is ETIMEDOUT.
TEST(Client, PassedDeadlineStartsNoRequest) {
  ClientConfig cfg;
  cfg.retry.max_retries = 3;
  auto c = Client::create(cfg);
  ASSERT_TRUE(c);
  auto ref = Reference::parse("127.0.0.1:1/a/b:t");
  ASSERT_TRUE(ref);
  std::vector<std::byte> buf(10);
  DeadlineScope scope(std::chrono::steady_clock::now() - std::chrono::milliseconds(1));
  auto s = (*c)->read_blob_range(*ref, "sha256:" + std::string(64, 'a'), 0, buf);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ETIMEDOUT) << s.error().to_string();
  EXPECT_NE(s.error().message.find("deadline passed"), std::string::npos) << s.error().message;
}

TEST(Client, RejectsUnsupportedDigestsBeforeAnyRequest) {
  ClientConfig cfg;
  cfg.connect_timeout = std::chrono::milliseconds(1);
  auto c = Client::create(cfg);
  ASSERT_TRUE(c);
  auto repo = Reference::parse("registry.invalid/a/b");
  ASSERT_TRUE(repo);
  const std::string sha512 = "sha512:" + std::string(128, 'a');
  auto b = (*c)->get_blob(*repo, sha512, 100);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, EINVAL);
  EXPECT_NE(b.error().message.find("sha512"), std::string::npos);
  std::byte buf[4];
  auto rr = (*c)->read_blob_range(*repo, "sha256:xyz", 0, buf);
  ASSERT_FALSE(rr);
  EXPECT_EQ(rr.error().code, EINVAL);
  auto h = (*c)->head_blob(*repo, "");
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, EINVAL);
  const std::string body = "{}";
  auto m =
      (*c)->push_manifest(*Reference::parse("registry.invalid/a/b@sha256:" + std::string(64, 'a')),
                          kMediaOciManifest, base::as_bytes(body));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, EINVAL);
}

}  // namespace
}  // namespace registry
