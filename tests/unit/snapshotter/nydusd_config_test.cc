// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/nydusd_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace snapshotter {
namespace {

bool mentions(const std::vector<std::string>& v, std::string_view what) {
  for (const auto& s : v) {
    if (s.find(what) != std::string::npos) {
      return true;
    }
  }
  return false;
}

TEST(NydusdConfig, V1EveryKey) {
  auto s = translate_nydusd_config(R"({
    "device": {
      "backend": {"type": "registry", "config": {
        "scheme": "http", "skip_verify": true, "timeout": 5, "connect_timeout": 2.5,
        "retry_limit": 4, "auth": "dXNlcjpzZWNyZXQ=", "registry_token": "tok-secret",
        "proxy": {"url": "http://127.0.0.1:65001", "fallback": true},
        "mirrors": [{"host": "127.0.0.1:65002", "headers": {"X-Dragonfly-Registry": "https://r"},
                     "auth_through": false}],
        "frobnicate": 1}},
      "cache": {"type": "blobcache", "config": {"work_dir": "/var/cache/n"}}},
    "mode": "direct", "digest_validate": false, "iostats_files": false, "amplify_io": 2097152,
    "fs_prefetch": {"enable": true, "threads_count": 4, "merging_size": 131072,
                    "bandwidth_rate": 1048576},
    "something": {}})");
  ASSERT_TRUE(s) << s.error().to_string();
  EXPECT_EQ(s->registry.plain_http, true);
  EXPECT_EQ(s->registry.insecure, true);
  EXPECT_EQ(s->registry.request_timeout_ms, 5000U);
  EXPECT_EQ(s->registry.connect_timeout_ms, 2500U);
  EXPECT_EQ(s->registry.retries, 4U);
  EXPECT_EQ(s->auth, "dXNlcjpzZWNyZXQ=");
  EXPECT_EQ(s->mirror_urls,
            (std::vector<std::string>{"http://127.0.0.1:65002", "http://127.0.0.1:65001"}));
  EXPECT_EQ(s->cache_dir, "/var/cache/n");
  EXPECT_EQ(s->fs_driver, "");
  auto d = nlohmann::json::parse(s->daemon_config_json);
  EXPECT_EQ(d["fill_threads"], 4);
  EXPECT_EQ(d["prefetch_merge_size"], 131072);
  EXPECT_FALSE(d.contains("batch_size"));
  EXPECT_EQ(d["amplify_io"], 2097152);
  EXPECT_EQ(d["prefetch_bandwidth"], 1048576);
  EXPECT_EQ(s->unknown_keys,
            (std::vector<std::string>{"device.backend.config.frobnicate", "something"}));
  EXPECT_TRUE(mentions(s->unsupported, "registry_token"));
  // The mirror's headers go with its URL (the registry client sends them to it).
  ASSERT_TRUE(s->registry.mirror_headers);
  EXPECT_EQ(*s->registry.mirror_headers,
            (std::map<std::string, std::map<std::string, std::string>>{
                {"http://127.0.0.1:65002", {{"X-Dragonfly-Registry", "https://r"}}}}));
  EXPECT_FALSE(mentions(s->unsupported, "headers"));
  EXPECT_TRUE(mentions(s->unsupported, "digest_validate"));
  // Credentials never in what is logged.
  for (const auto& l : {s->unknown_keys, s->unsupported}) {
    EXPECT_FALSE(mentions(l, "dXNlcjpzZWNyZXQ=")) << "auth leaked";
    EXPECT_FALSE(mentions(l, "tok-secret")) << "token leaked";
  }
}

TEST(NydusdConfig, FscacheTemplate) {
  auto s = translate_nydusd_config(R"({"type": "bootstrap", "id": "", "domain_id": "dom",
    "config": {"id": "", "backend_type": "registry",
      "backend_config": {"scheme": "https", "retry_limit": 0},
      "cache_type": "fscache", "cache_config": {"work_dir": "/c"},
      "prefetch_config": {"enable": true, "threads_count": 8, "merging_size": 1048576}},
    "metadata_path": ""})");
  ASSERT_TRUE(s) << s.error().to_string();
  EXPECT_EQ(s->fs_driver, "fscache");
  EXPECT_EQ(s->domain_id, "dom");
  EXPECT_EQ(s->cache_dir, "/c");
  EXPECT_EQ(s->registry.plain_http, false);
  EXPECT_EQ(s->registry.retries, 0U);
  auto d = nlohmann::json::parse(s->daemon_config_json);
  EXPECT_EQ(d["fill_threads"], 8);
  EXPECT_EQ(d["prefetch_merge_size"], 1048576);
  EXPECT_GT(d["prefetch_bandwidth"].get<std::uint64_t>(), 0U);  // enabled, no rate: unbounded
  EXPECT_TRUE(s->unknown_keys.empty());
}

TEST(NydusdConfig, PrefetchOffAndEmpty) {
  auto s = translate_nydusd_config(R"({"fs_prefetch": {"enable": false}})");
  ASSERT_TRUE(s);
  EXPECT_EQ(nlohmann::json::parse(s->daemon_config_json)["prefetch_bandwidth"], 0);
  s = translate_nydusd_config("{}");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->daemon_config_json, "{}");
  EXPECT_TRUE(s->registry_empty());
}

TEST(NydusdConfig, BadInputNamesTheKey) {
  struct Case {
    const char* text;
    const char* key;
  };
  const Case cases[] = {
      {"not json", "not JSON"},
      {"[1]", "not a JSON object"},
      {R"({"device": 1})", "device"},
      {R"({"device": {"backend": {"type": "oss"}}})", "device.backend.type"},
      {R"({"device": {"backend": {"config": {"scheme": "ftp"}}}})", "scheme"},
      {R"({"device": {"backend": {"config": {"skip_verify": "yes"}}}})", "skip_verify"},
      {R"({"device": {"backend": {"config": {"timeout": -1}}}})", "timeout"},
      {R"({"device": {"backend": {"config": {"retry_limit": 1.5}}}})", "retry_limit"},
      {R"({"device": {"backend": {"config": {"auth": 5}}}})", "auth"},
      {R"({"device": {"backend": {"config": {"mirrors": {}}}}})", "mirrors"},
      {R"({"device": {"backend": {"config": {"mirrors": [{"host": 1}]}}}})", "mirrors[0].host"},
      {R"({"device": {"cache": {"config": {"work_dir": 1}}}})", "work_dir"},
      {R"({"mode": "fast"})", "mode"},
      {R"({"fs_prefetch": {"threads_count": "8"}})", "threads_count"},
      {R"({"amplify_io": "1M"})", "amplify_io"},
      {R"({"type": "blob", "config": {}})", "type"},
      {R"({"type": "bootstrap", "config": {"backend_type": "localfs"}})", "backend_type"},
  };
  for (const auto& c : cases) {
    auto s = translate_nydusd_config(c.text);
    ASSERT_FALSE(s) << c.text;
    EXPECT_EQ(s.error().code, EINVAL) << c.text;
    EXPECT_NE(s.error().message.find(c.key), std::string::npos) << s.error().message;
  }
}

// What fuzz_nydusd_config checks: values nydusd takes but the daemon refuses (every bind or
// the daemon's start would fail) are brought into the daemon's ranges and reported; a
// timeout too large for a 64-bit millisecond count does not overflow.
TEST(NydusdConfig, NumbersBeyondTheDaemonsRanges) {
  auto s = translate_nydusd_config(R"({
    "device": {"backend": {"type": "registry", "config": {
      "timeout": 1e300, "connect_timeout": 7200, "retry_limit": 1000}}},
    "amplify_io": 1099511627776,
    "fs_prefetch": {"enable": true, "threads_count": 5000, "merging_size": 4096}})");
  ASSERT_TRUE(s) << s.error().to_string();
  EXPECT_EQ(s->registry.request_timeout_ms, 24U * 3600000U);
  EXPECT_EQ(s->registry.connect_timeout_ms, 3600000U);
  EXPECT_EQ(s->registry.retries, 100U);
  auto d = nlohmann::json::parse(s->daemon_config_json);
  EXPECT_EQ(d["fill_threads"], 1024);
  EXPECT_EQ(d["prefetch_merge_size"], 131072);
  EXPECT_EQ(d["amplify_io"], 64U << 20);
  for (const char* key : {"timeout", "connect_timeout", "retry_limit", "threads_count",
                          "merging_size", "amplify_io"}) {
    EXPECT_TRUE(mentions(s->unsupported, key)) << key;
  }
}

// What fuzz_nydusd_config checks: an auth the daemon's docker config reader refuses is refused
// here, at start, naming the key and never quoting the value.
TEST(NydusdConfig, AuthMustBeBase64UserPassword) {
  for (const char* auth : {"not base64!", "bm9jb2xvbg=="}) {  // the second: "nocolon"
    auto s = translate_nydusd_config(
        std::string(R"({"device": {"backend": {"config": {"auth": ")") + auth + "\"}}}}");
    ASSERT_FALSE(s) << auth;
    EXPECT_EQ(s.error().code, EINVAL);
    EXPECT_NE(s.error().message.find("device.backend.config.auth"), std::string::npos)
        << s.error().message;
    EXPECT_EQ(s.error().message.find(auth), std::string::npos) << s.error().message;
  }
}

TEST(NydusdConfig, DockerConfigWithAuth) {
  auto j = nlohmann::json::parse(docker_config_with_auth("reg:5000", "YTpi"));
  EXPECT_EQ(j["auths"]["reg:5000"]["auth"], "YTpi");
}

}  // namespace
}  // namespace snapshotter
