// SPDX-License-Identifier: Apache-2.0
#include "daemon/config.h"

#include <gtest/gtest.h>

namespace cfnd {
namespace {

TEST(Config, DefaultsAndOverrides) {
  auto c = parse_config(R"({"frontend":"fuse","cache_dir":"/c","socket":"/s","fill_threads":4})");
  ASSERT_TRUE(c) << c.error().to_string();
  EXPECT_EQ(c->frontend, Frontend::kFuse);
  EXPECT_EQ(c->cache_dir, "/c");
  EXPECT_EQ(c->socket_path, "/s");
  EXPECT_EQ(c->fill_threads, 4U);
  EXPECT_EQ(c->batch_size, 1U << 20);
}

TEST(Config, RejectsBadInput) {
  for (const char* bad :
       {"", "[]", "{", R"({"nope":1})", R"({"frontend":"x"})", R"({"fill_threads":0})",
        R"({"batch_size":-1})", R"({"cache_dir":""})", R"({"cache_dir":5})"}) {
    auto c = parse_config(bad);
    ASSERT_FALSE(c) << bad;
    EXPECT_EQ(c.error().code, EINVAL) << bad;
  }
}

TEST(Config, FrontendNamesRoundTrip) {
  for (auto f : {Frontend::kAuto, Frontend::kCachefiles, Frontend::kFanotify, Frontend::kFuse}) {
    auto p = parse_frontend(frontend_name(f));
    ASSERT_TRUE(p);
    EXPECT_EQ(*p, f);
  }
}

}  // namespace
}  // namespace cfnd
