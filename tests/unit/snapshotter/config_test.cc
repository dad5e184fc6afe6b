// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/config.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/unit/temp_dir.h"

namespace snapshotter {
namespace {

TEST(Config, Toml) {
  Options o;
  auto st = apply_toml(R"(
version = 1
root = "/srv/nydus"
address = "/run/x.sock"
daemon_mode = "shared"
[log]
level = "debug"
log_to_stdout = true
rotate = 3
[daemon]
nydusd_path = "/usr/bin/nydusd"
)",
                       "config.toml", o);
  ASSERT_TRUE(st) << st.error().to_string();
  EXPECT_EQ(o.root, "/srv/nydus");
  EXPECT_EQ(o.address, "/run/x.sock");
  EXPECT_EQ(o.log_level, "debug");
  EXPECT_TRUE(o.log_to_stdout);
  EXPECT_EQ(o.nydusd_path, "/usr/bin/nydusd");
  EXPECT_EQ(o.unknown_keys, (std::vector<std::string>{"daemon_mode", "log.rotate"}));
}

TEST(Config, FlagsWin) {
  Options o;
  ASSERT_TRUE(apply_toml("root = \"/from/file\"\n[log]\nlevel = \"warn\"\n", "c", o));
  Overrides ov;
  ov.root = "/from/flag";
  apply_overrides(ov, o);
  EXPECT_EQ(o.root, "/from/flag");
  EXPECT_EQ(o.log_level, "warn");
  EXPECT_EQ(o.address, kDefaultAddress);
}

TEST(Config, EnableStargz) {
  Options o;
  EXPECT_FALSE(o.enable_stargz);
  ASSERT_TRUE(
      apply_toml("[experimental]\nenable_stargz = true\nenable_referrer_detect = true\n", "c", o));
  EXPECT_TRUE(o.enable_stargz);
  EXPECT_EQ(o.unknown_keys, (std::vector<std::string>{"experimental.enable_referrer_detect"}));
  EXPECT_FALSE(apply_toml("[experimental]\nenable_stargz = \"yes\"\n", "c", o));
  Options f;
  Overrides ov;
  ov.enable_stargz = true;
  apply_overrides(ov, f);
  EXPECT_TRUE(f.enable_stargz);
}

TEST(Config, Errors) {
  Options o;
  auto syntax = apply_toml("root = \n", "bad.toml", o);
  ASSERT_FALSE(syntax);
  EXPECT_EQ(syntax.error().code, EINVAL);
  EXPECT_NE(syntax.error().message.find("bad.toml"), std::string::npos);
  EXPECT_FALSE(apply_toml("root = 5\n", "c", o));
  EXPECT_FALSE(apply_toml("log = 5\n", "c", o));
  EXPECT_FALSE(apply_toml("[log]\nlog_to_stdout = \"yes\"\n", "c", o));
  EXPECT_TRUE(check_log_level("debug"));
  EXPECT_EQ(check_log_level("loud").error().code, EINVAL);
}

TEST(Config, NydusdConfigMustBeJson) {
  cfntest::TempDir dir("snapcfg");
  EXPECT_FALSE(check_nydusd_config(dir.sub("missing.json")));
  std::ofstream(dir.sub("bad.json")) << "{not json";
  EXPECT_EQ(check_nydusd_config(dir.sub("bad.json")).error().code, EINVAL);
  std::ofstream(dir.sub("ok.json")) << R"({"device":{"backend":{"type":"registry"}}})";
  EXPECT_TRUE(check_nydusd_config(dir.sub("ok.json")));
}

}  // namespace
}  // namespace snapshotter
