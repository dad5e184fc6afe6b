// SPDX-License-Identifier: Apache-2.0
#include "daemon/config.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <type_traits>

#include <fmt/format.h>

namespace cfnd {
namespace {

TEST(Config, DefaultsAndOverrides) {
  auto c = parse_config(R"({"frontend":"fuse","cache_dir":"/c","socket":"/s","fill_threads":4})");
  ASSERT_TRUE(c) << c.error().to_string();
  EXPECT_EQ(c->frontend, Frontend::kFuse);
  EXPECT_EQ(c->cache_dir, "/c");
  EXPECT_EQ(c->socket_path, "/s");
  EXPECT_EQ(c->fill_threads, 4U);
  EXPECT_EQ(c->batch_size, 128U << 10);
  EXPECT_EQ(c->file_readahead, 8U << 20);
}

TEST(Config, LogLevel) {
  auto d = parse_config("{}");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->log_level, "info");
  for (const char* l : {"trace", "debug", "info", "warn", "error", "off"}) {
    auto c = parse_config(fmt::format(R"({{"log_level":"{}"}})", l));
    ASSERT_TRUE(c) << l << ": " << c.error().to_string();
    EXPECT_EQ(c->log_level, l);
    EXPECT_TRUE(check_log_level(l));
  }
  // spdlog reads an unknown name as "off": a typo must be an error, not silence.
  for (const char* bad : {"bogus", "INFO", "err", "critical", "warning"}) {
    auto r = parse_config(fmt::format(R"({{"log_level":"{}"}})", bad));
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, EINVAL) << bad;
    EXPECT_NE(r.error().to_string().find("log_level"), std::string::npos) << r.error().to_string();
    EXPECT_FALSE(check_log_level(bad)) << bad;
  }
  EXPECT_FALSE(parse_config(R"({"log_level":""})"));
}

TEST(Config, AllowFailOpen) {
  auto d = parse_config("{}");
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->allow_fail_open);
  auto c = parse_config(R"({"allow_fail_open":true})");
  ASSERT_TRUE(c) << c.error().to_string();
  EXPECT_TRUE(c->allow_fail_open);
  auto bad = parse_config(R"({"allow_fail_open":"yes"})");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EINVAL);
}

TEST(Config, MetricsAddress) {
  auto d = parse_config("{}");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->metrics_address, "");  // off
  auto c = parse_config(R"({"metrics_address":"127.0.0.1:9110"})");
  ASSERT_TRUE(c) << c.error().to_string();
  EXPECT_EQ(c->metrics_address, "127.0.0.1:9110");
  auto bad = parse_config(R"({"metrics_address":9110})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("metrics_address"), std::string::npos);
}

TEST(Config, FdHolder) {
  auto d = parse_config("{}");
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->fd_holder);
  EXPECT_EQ(d->fd_holder_grace_s, 300U);
  auto c = parse_config(R"({"fd_holder":true,"fd_holder_grace_s":0})");
  ASSERT_TRUE(c) << c.error().to_string();
  EXPECT_TRUE(c->fd_holder);
  EXPECT_EQ(c->fd_holder_grace_s, 0U);
  EXPECT_EQ(fd_holder_socket("/run/x/control.sock"), "/run/x/control.sock.fds");
  for (const char* bad :
       {R"({"fd_holder":1})", R"({"fd_holder_grace_s":-1})", R"({"fd_holder_grace_s":true})",
        R"({"fd_holder_grace_s":99999999999})"}) {
    auto r = parse_config(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, EINVAL) << bad;
  }
}

// An unsigned key: its default, values it takes, and values refused with EINVAL.
template <typename T>
void check_uint_key(const char* key, T Config::*field, std::type_identity_t<T> dflt,
                    std::initializer_list<std::type_identity_t<T>> good,
                    std::initializer_list<const char*> bad) {
  auto d = parse_config("{}");
  ASSERT_TRUE(d);
  EXPECT_EQ((*d).*field, dflt) << key;
  for (T v : good) {
    auto c = parse_config(fmt::format(R"({{"{}":{}}})", key, v));
    ASSERT_TRUE(c) << key << " " << v << ": " << c.error().to_string();
    EXPECT_EQ((*c).*field, v) << key;
  }
  for (const char* v : bad) {
    auto text = fmt::format(R"({{"{}":{}}})", key, v);
    auto r = parse_config(text);
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(r.error().code, EINVAL) << text;
  }
}

TEST(Config, ReadTimeout) {
  check_uint_key("read_timeout_s", &Config::read_timeout_s, 30, {3, 0, 3600},
                 {"-1", "1.5", R"("3")", "3601"});
}

TEST(Config, FileReadahead) {
  check_uint_key("file_readahead", &Config::file_readahead, 8ULL << 20, {0, 1048576, 1ULL << 30},
                 {"-1", "1073741825", R"("8M")"});
}

TEST(Config, AmplifyIo) {
  check_uint_key("amplify_io", &Config::amplify_io, 512ULL << 10, {0, 131072, 64ULL << 20},
                 {"-1", "67108865", R"("1M")", "1.5"});
}

TEST(Config, PrefetchMergeSize) {
  check_uint_key("prefetch_merge_size", &Config::prefetch_merge_size, 1ULL << 20,
                 {0, 131072, 64ULL << 20}, {"-1", "67108865", R"("1M")"});
}

TEST(Config, FusePoll) {
  check_uint_key("fuse_poll_us", &Config::fuse_poll_us, 50, {0, 200, 10000},
                 {"-1", "10001", R"("50")"});
}

TEST(Config, CacheSpace) {
  auto d = parse_config("{}");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->cache_limit, 0U);  // no limit
  EXPECT_EQ(d->cache_limit_percent, 0U);
  EXPECT_EQ(d->cache_high_watermark, 90U);
  EXPECT_EQ(d->cache_low_watermark, 70U);
  EXPECT_EQ(d->cache_gc_interval_s, 60U);
  EXPECT_EQ(d->cache_orphan_grace_s, 600U);
  auto c = parse_config(
      R"({"cache":{"limit":"10G","high_watermark":80,"low_watermark":50,"gc_interval_s":5,"orphan_grace_s":0}})");
  ASSERT_TRUE(c) << c.error().to_string();
  EXPECT_EQ(c->cache_limit, 10ULL << 30);
  EXPECT_EQ(c->cache_high_watermark, 80U);
  EXPECT_EQ(c->cache_low_watermark, 50U);
  EXPECT_EQ(c->cache_gc_interval_s, 5U);
  EXPECT_EQ(c->cache_orphan_grace_s, 0U);
  c = parse_config(R"({"cache":{"limit":"25%"}})");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->cache_limit_percent, 25U);
  EXPECT_EQ(c->cache_limit, 0U);
  c = parse_config(R"({"cache":{"limit":1048576}})");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->cache_limit, 1048576U);
  Config cli;
  ASSERT_TRUE(set_cache_limit(cli, "512M"));
  EXPECT_EQ(cli.cache_limit, 512ULL << 20);
  EXPECT_FALSE(set_cache_limit(cli, "lots"));
  for (const char* bad :
       {R"({"cache":1})", R"({"cache":{"limit":-1}})", R"({"cache":{"limit":"0%"}})",
        R"({"cache":{"limit":true}})", R"({"cache":{"size":1}})",
        R"({"cache":{"high_watermark":101}})", R"({"cache":{"low_watermark":0}})",
        R"({"cache":{"high_watermark":60,"low_watermark":70}})",
        R"({"cache":{"gc_interval_s":0}})"}) {
    auto r = parse_config(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, EINVAL) << bad;
  }
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

TEST(Config, RegistryOptions) {
  auto c = parse_config(
      R"({"registry":{"plain_http":true,"ca_files":["/ca.pem"],"stall_timeout_ms":2000,)"
      R"("retries":1,"mirrors":{"docker.io":["http://127.0.0.1:5001"]}}})");
  ASSERT_TRUE(c) << c.error().to_string();
  EXPECT_TRUE(c->registry.plain_http);
  EXPECT_FALSE(c->registry.insecure);
  EXPECT_EQ(c->registry.ca_files, std::vector<std::string>{"/ca.pem"});
  EXPECT_EQ(c->registry.stall_timeout_ms, 2000U);
  EXPECT_EQ(c->registry.request_timeout_ms, 60000U);
  EXPECT_EQ(c->registry.retries, 1U);
  EXPECT_EQ(c->registry.mirrors.at("docker.io").size(), 1U);
  // A bind's overrides apply over the daemon's options, key by key.
  auto o = parse_registry_options(R"({"retries":0,"insecure":true})", c->registry);
  ASSERT_TRUE(o) << o.error().to_string();
  EXPECT_EQ(o->retries, 0U);
  EXPECT_TRUE(o->insecure);
  EXPECT_TRUE(o->plain_http);
  EXPECT_EQ(registry_options_json(*o), registry_options_json(*o));
  EXPECT_NE(registry_options_json(*o), registry_options_json(c->registry));
  for (const char* bad :
       {R"({"registry":[]})", R"({"registry":{"nope":1}})", R"({"registry":{"retries":-1}})",
        R"({"registry":{"plain_http":1}})", R"({"registry":{"ca_files":"x"}})",
        R"({"registry":{"mirrors":{"h":[""]}}})", R"({"registry":{"stall_timeout_ms":0}})"}) {
    auto b = parse_config(bad);
    ASSERT_FALSE(b) << bad;
    EXPECT_EQ(b.error().code, EINVAL) << bad;
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
