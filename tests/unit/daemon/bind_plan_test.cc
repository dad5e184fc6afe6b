// SPDX-License-Identifier: Apache-2.0
// plan_bind: every request error a client can cause, found before any download or mount.
#include "daemon/bind_plan.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/unit/temp_dir.h"

namespace cfnd {
namespace {

class BindPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(tmp_.sub("mnt"));
    std::filesystem::create_directories(tmp_.sub("blobs"));
    offer_.default_frontend = Frontend::kFuse;
    offer_.fanotify = true;
  }
  control::BindRequest local() const {
    control::BindRequest r;
    r.mountpoint = tmp_.sub("mnt") + "/.";
    r.bootstrap = tmp_.sub("image.boot");
    r.blob_dir = tmp_.sub("blobs");
    return r;
  }
  int error_of(const control::BindRequest& r) const {
    auto p = plan_bind(r, offer_);
    return p ? 0 : p.error().code;
  }
  cfntest::TempDir tmp_{"cfn-bind-plan"};
  BindOffer offer_;
};

TEST_F(BindPlanTest, LocalImage) {
  auto p = plan_bind(local(), offer_);
  ASSERT_TRUE(p) << p.error().to_string();
  EXPECT_EQ(p->mountpoint, tmp_.sub("mnt"));  // the real path
  EXPECT_EQ(p->frontend, Frontend::kFuse);
  EXPECT_FALSE(p->ref);
  EXPECT_EQ(p->blob_dir, tmp_.sub("blobs"));
  auto r = local();
  r.frontend = "auto";
  EXPECT_EQ(plan_bind(r, offer_)->frontend, Frontend::kFuse);
  r.frontend = "fanotify";
  EXPECT_EQ(plan_bind(r, offer_)->frontend, Frontend::kFanotify);
}

TEST_F(BindPlanTest, RegistryImageWithOverrides) {
  control::BindRequest r;
  r.mountpoint = tmp_.sub("mnt");
  r.reference = "127.0.0.1:5000/demo:latest";
  r.registry = control::RegistryOverrides{};
  r.registry->retries = 7;
  offer_.registry.request_timeout_ms = 1234;
  auto p = plan_bind(r, offer_);
  ASSERT_TRUE(p) << p.error().to_string();
  ASSERT_TRUE(p->ref);
  EXPECT_EQ(p->ref->host, "127.0.0.1:5000");
  EXPECT_EQ(p->registry.retries, 7U);
  EXPECT_EQ(p->registry.request_timeout_ms, 1234U);  // the daemon's default stays
  r.registry->connect_timeout_ms = 0;                // out of range
  EXPECT_EQ(error_of(r), EINVAL);
  r.registry.reset();
  r.reference = "UPPER/case:bad tag";
  EXPECT_EQ(error_of(r), EINVAL);
}

TEST_F(BindPlanTest, RegistryImageWithALocalBootstrap) {
  control::BindRequest r;
  r.mountpoint = tmp_.sub("mnt");
  r.reference = "127.0.0.1:5000/demo:latest";
  r.bootstrap = tmp_.sub("local.boot");
  EXPECT_EQ(error_of(r), EINVAL);  // missing
  { std::ofstream(r.bootstrap) << "boot"; }
  auto p = plan_bind(r, offer_);
  ASSERT_TRUE(p) << p.error().to_string();
  ASSERT_TRUE(p->ref);
  EXPECT_EQ(p->bootstrap, r.bootstrap);
  EXPECT_EQ(p->blob_dir, "");
  r.bootstrap = "local.boot";  // relative
  EXPECT_EQ(error_of(r), EINVAL);
  r.bootstrap = tmp_.path();  // not a regular file
  EXPECT_EQ(error_of(r), EINVAL);
}

// A mount point or blob dir whose real path is not UTF-8 (reached through a symlink
// with a UTF-8 name) is refused: the daemon answers, lists and records its mount points
// in JSON, which carries only UTF-8 (nlohmann's dump() threw on it and ended the daemon).
TEST_F(BindPlanTest, RealPathThatIsNotUtf8IsRefused) {
  const std::string bad = tmp_.sub("caf\xe9");
  std::filesystem::create_directories(bad);
  std::filesystem::create_directory_symlink(bad, tmp_.sub("to-cafe"));
  auto r = local();
  r.mountpoint = tmp_.sub("to-cafe");
  auto p = plan_bind(r, offer_);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, EINVAL);
  EXPECT_NE(p.error().message.find("mountpoint"), std::string::npos) << p.error().message;
  EXPECT_NE(p.error().message.find("not valid UTF-8"), std::string::npos) << p.error().message;
  r = local();
  r.blob_dir = tmp_.sub("to-cafe");
  EXPECT_EQ(error_of(r), EINVAL);
  auto d = real_dir(bad, "mountpoint");
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, EINVAL);
}

TEST_F(BindPlanTest, Refusals) {
  auto r = local();
  r.frontend = "nfs";
  EXPECT_EQ(error_of(r), EINVAL);
  r.frontend = "cachefiles";
  EXPECT_EQ(error_of(r), EOPNOTSUPP);
  r.frontend = "";
  r.fsid = "abc";
  EXPECT_EQ(error_of(r), EINVAL);  // fsid without cachefiles
  r.fsid = "";
  offer_.fanotify = false;
  r.frontend = "fanotify";
  EXPECT_EQ(error_of(r), EOPNOTSUPP);
  r.frontend = "";
  r.mountpoint = tmp_.sub("missing");
  EXPECT_EQ(error_of(r), ENOENT);
  r.mountpoint = tmp_.sub("mnt");
  r.blob_dir = tmp_.sub("image.boot");
  EXPECT_EQ(error_of(r), ENOENT);
  const std::string f = tmp_.sub("file");
  std::ofstream(f) << "x";
  r.blob_dir = f;
  EXPECT_EQ(error_of(r), ENOTDIR);
}

TEST_F(BindPlanTest, PrefetchTakesAReferenceAndALocalBootstrap) {
  std::ofstream(tmp_.sub("image.boot")) << "boot";
  control::PrefetchRequest r{"127.0.0.1:5000/demo:v1", tmp_.sub("image.boot"), std::nullopt};
  offer_.registry.request_timeout_ms = 1234;
  auto p = plan_prefetch(r, offer_.registry);
  ASSERT_TRUE(p) << p.error().to_string();
  EXPECT_EQ(p->ref.to_string(), "127.0.0.1:5000/demo:v1");
  EXPECT_EQ(p->bootstrap, tmp_.sub("image.boot"));
  EXPECT_EQ(p->registry.request_timeout_ms, 1234U);
  r.registry = control::RegistryOverrides{};
  r.registry->retries = 7;
  p = plan_prefetch(r, offer_.registry);
  ASSERT_TRUE(p) << p.error().to_string();
  EXPECT_EQ(p->registry.retries, 7U);
  EXPECT_EQ(p->registry.request_timeout_ms, 1234U);

  auto code = [&](control::PrefetchRequest q) {
    auto x = plan_prefetch(q, offer_.registry);
    return x ? 0 : x.error().code;
  };
  auto bad = r;
  bad.reference = "UPPER/Case::";
  EXPECT_EQ(code(bad), EINVAL);
  bad = r;
  bad.bootstrap = tmp_.sub("missing.boot");
  EXPECT_EQ(code(bad), EINVAL);
  bad.bootstrap = "image.boot";  // relative
  EXPECT_EQ(code(bad), EINVAL);
  bad.bootstrap = tmp_.sub("mnt");  // a directory
  EXPECT_EQ(code(bad), EINVAL);
  bad = r;
  bad.registry->retries = 1000000;
  EXPECT_EQ(code(bad), EINVAL);
}

}  // namespace
}  // namespace cfnd
