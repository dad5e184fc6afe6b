// SPDX-License-Identifier: Apache-2.0
#include "registry/reference.h"

#include <gtest/gtest.h>

#include <string>

namespace registry {
namespace {

const std::string kHex(64, 'a');
const std::string kDigest = "sha256:" + kHex;

TEST(Reference, DockerHubDefaults) {
  auto r = Reference::parse("busybox");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->host, "docker.io");
  EXPECT_EQ(r->repository, "library/busybox");
  EXPECT_EQ(r->tag, "latest");
  EXPECT_EQ(r->digest, "");
  EXPECT_EQ(r->to_string(), "docker.io/library/busybox:latest");
  EXPECT_EQ(r->api_host(), "registry-1.docker.io");
  EXPECT_EQ(r->manifest_ref(), "latest");
}

TEST(Reference, DockerHubForms) {
  for (const char* s : {"docker.io/busybox", "docker.io/library/busybox", "index.docker.io/busybox",
                        "library/busybox:latest"}) {
    auto r = Reference::parse(s);
    ASSERT_TRUE(r) << s;
    EXPECT_EQ(r->to_string(), "docker.io/library/busybox:latest") << s;
  }
  auto r = Reference::parse("team/app:v1.2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->host, "docker.io");
  EXPECT_EQ(r->repository, "team/app");
  EXPECT_EQ(r->tag, "v1.2");
}

TEST(Reference, HostPortAndDigest) {
  auto r = Reference::parse("localhost:5000/a/b@" + kDigest);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->host, "localhost:5000");
  EXPECT_EQ(r->repository, "a/b");
  EXPECT_EQ(r->tag, "");
  EXPECT_EQ(r->digest, kDigest);
  EXPECT_EQ(r->manifest_ref(), kDigest);
  EXPECT_EQ(r->api_host(), "localhost:5000");
  EXPECT_EQ(r->to_string(), "localhost:5000/a/b@" + kDigest);

  auto both = Reference::parse("127.0.0.1:15000/x/y:tag@" + kDigest);
  ASSERT_TRUE(both);
  EXPECT_EQ(both->tag, "tag");
  EXPECT_EQ(both->manifest_ref(), kDigest);
  EXPECT_EQ(both->to_string(), "127.0.0.1:15000/x/y:tag@" + kDigest);

  auto lh = Reference::parse("localhost/foo");
  ASSERT_TRUE(lh);
  EXPECT_EQ(lh->host, "localhost");
  EXPECT_EQ(lh->repository, "foo");

  auto reg = Reference::parse("registry.example.com/ns/app:1");
  ASSERT_TRUE(reg);
  EXPECT_EQ(reg->host, "registry.example.com");
  auto v6 = Reference::parse("[::1]:5000/app");
  ASSERT_TRUE(v6) << v6.error().message;
  EXPECT_EQ(v6->host, "[::1]:5000");
}

TEST(Reference, Separators) {
  for (const char* s : {"a/b.c", "a/b_c", "a/b__c", "a/b---c", "a0/1b"}) {
    EXPECT_TRUE(Reference::parse(s)) << s;
  }
  for (const char* s : {"a/b...c", "a/b___c", "a/-b", "a/b-", "a//b", "a/", "/a", "a/.b"}) {
    EXPECT_FALSE(Reference::parse(s)) << s;
  }
}

TEST(Reference, Rejects) {
  const std::string long_tag(129, 't');
  for (const std::string& s :
       {std::string(""), std::string("Busybox"), std::string("docker.io/Library/busybox"),
        std::string("busybox:"), std::string("busybox:-x"), "busybox:" + long_tag,
        std::string("busybox@sha256:abc"), "busybox@sha256:" + std::string(64, 'A'),
        std::string("busybox@md5:0123"), std::string("host:port/x"), std::string(":tag"),
        std::string("a b"), std::string("ex ample.com/x"), std::string("-host.com/x"),
        std::string("host.com:99999999/x")}) {
    auto r = Reference::parse(s);
    EXPECT_FALSE(r) << "'" << s << "'";
    if (!r) {
      EXPECT_EQ(r.error().code, EINVAL);
    }
  }
  auto upper = Reference::parse("Busybox");
  ASSERT_FALSE(upper);
  EXPECT_NE(upper.error().message.find("upper case"), std::string::npos);
  auto algo = Reference::parse("busybox@sha512:" + std::string(128, 'a'));
  ASSERT_FALSE(algo);
  EXPECT_NE(algo.error().message.find("sha512"), std::string::npos);
  EXPECT_FALSE(Reference::parse("a/" + std::string(300, 'b')));
}

TEST(Reference, UpperCaseHostAllowed) {
  auto r = Reference::parse("Registry.Example.com/x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->host, "Registry.Example.com");
}

TEST(Loopback, Hosts) {
  for (const char* h : {"localhost", "localhost:5000", "LOCALHOST", "127.0.0.1", "127.0.0.1:15000",
                        "127.1.2.3", "127.255.255.254:1", "[::1]", "[::1]:5000", "::1"}) {
    EXPECT_TRUE(is_loopback_host(h)) << h;
  }
  for (const char* h :
       {"docker.io", "128.0.0.1", "10.0.0.1:5000", "localhost.example.com", "127.0.0.1.nip.io",
        "[::2]", "", "127.0.0", "0.0.0.0", "[::ffff:1.2.3.4]"}) {
    EXPECT_FALSE(is_loopback_host(h)) << h;
  }
}

}  // namespace
}  // namespace registry
