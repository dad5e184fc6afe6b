// SPDX-License-Identifier: Apache-2.0
#include "registry/www_authenticate.h"

#include <gtest/gtest.h>

#include <string>

namespace registry {
namespace {

TEST(WwwAuthenticate, Bearer) {
  auto r = parse_www_authenticate(
      R"(Bearer realm="http://127.0.0.1:15080/token",service="test-registry",scope="repository:test/apitest:pull")");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 1U);
  const Challenge& c = (*r)[0];
  EXPECT_EQ(c.scheme, "bearer");
  EXPECT_EQ(c.params.at("realm"), "http://127.0.0.1:15080/token");
  EXPECT_EQ(c.params.at("service"), "test-registry");
  EXPECT_EQ(c.params.at("scope"), "repository:test/apitest:pull");
}

TEST(WwwAuthenticate, Basic) {
  auto r = parse_www_authenticate(R"(Basic realm="test-realm")");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 1U);
  EXPECT_EQ((*r)[0].scheme, "basic");
  EXPECT_EQ((*r)[0].params.at("realm"), "test-realm");
  auto bare = parse_www_authenticate("Basic");
  ASSERT_TRUE(bare);
  EXPECT_TRUE((*bare)[0].params.empty());
}

TEST(WwwAuthenticate, MultipleChallengesAndCommasInQuotes) {
  auto r = parse_www_authenticate(
      R"(Basic realm="a, b", BEARER Realm="https://x/t?a=1,2" , service=reg,  error="insufficient_scope", Negotiate)");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 3U);
  EXPECT_EQ((*r)[0].params.at("realm"), "a, b");
  EXPECT_EQ((*r)[1].scheme, "bearer");
  EXPECT_EQ((*r)[1].params.at("realm"), "https://x/t?a=1,2");
  EXPECT_EQ((*r)[1].params.at("service"), "reg");
  EXPECT_EQ((*r)[1].params.at("error"), "insufficient_scope");
  EXPECT_EQ((*r)[2].scheme, "negotiate");
}

TEST(WwwAuthenticate, Escapes) {
  auto r = parse_www_authenticate(R"(Bearer realm="a\"b\\c\d")");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)[0].params.at("realm"), "a\"b\\cd");
}

TEST(WwwAuthenticate, Token68) {
  auto r = parse_www_authenticate("Negotiate abc==, Basic realm=x");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 2U);
  EXPECT_EQ((*r)[0].params.at("token68"), "abc==");
  EXPECT_EQ((*r)[1].params.at("realm"), "x");
}

TEST(WwwAuthenticate, Junk) {
  for (const std::string& s :
       {std::string(""), std::string("   "), std::string(","), std::string("Bearer realm=\"x"),
        std::string("Bearer realm=\"x\\"), std::string("Bearer realm=\"x\" junk\"y\""),
        std::string("Bearer realm=\"a\",realm=\"b\""), std::string("\"Bearer\""),
        std::string("Bearer realm=\"a\x01\""), std::string("Bearer realm=@"),
        std::string("Bearer=x"), std::string("Bearer realm=x y=z")}) {
    auto r = parse_www_authenticate(s);
    EXPECT_FALSE(r) << "'" << s << "'";
    if (!r) {
      EXPECT_EQ(r.error().code, EINVAL);
    }
  }
}

TEST(WwwAuthenticate, Limits) {
  std::string huge = "Bearer realm=\"" + std::string(9000, 'x') + "\"";
  auto r = parse_www_authenticate(huge);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("too long"), std::string::npos);
  std::string many = "Bearer ";
  for (int i = 0; i < 40; ++i) {
    many += "k" + std::to_string(i) + "=v,";
  }
  EXPECT_FALSE(parse_www_authenticate(many));
}

}  // namespace
}  // namespace registry
