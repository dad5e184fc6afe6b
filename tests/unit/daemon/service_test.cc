// SPDX-License-Identifier: Apache-2.0
// The service end to end on this host: local images bound through the FUSE front end
// (root and /dev/fuse; skipped without them), bind / unbind / list, and the ordering of
// binds against shutdown and against each other.
#include "daemon/service.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/unit/convert/test_util.h"
#include "tests/unit/temp_dir.h"

namespace cfnd {
namespace {

using nlohmann::json;

// True when something is mounted on dir (in this mount namespace).
bool mounted_on(const std::string& dir) {
  std::ifstream in("/proc/self/mounts");
  std::string src;
  std::string target;
  std::string rest;
  while (in >> src >> target && std::getline(in, rest)) {
    if (target == dir) {
      return true;
    }
  }
  return false;
}

// One thread stops at arrive() until the test calls open(); the test waits for the
// arrival with wait_arrived().
class Gate {
 public:
  void arrive() {
    std::unique_lock lk(mu_);
    arrived_ = true;
    cv_.notify_all();
    cv_.wait(lk, [this] { return open_; });
  }
  void wait_arrived() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [this] { return arrived_; });
  }
  void open() {
    std::lock_guard lk(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool arrived_ = false;
  bool open_ = false;
};

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    std::filesystem::create_directories(tmp_.sub("src/dir"));
    convert::testing::write_string(tmp_.sub("src/hello"), "hello, lazy world\n");
    convert::testing::write_string(tmp_.sub("src/dir/big"), std::string(300000, 'b'));
    auto st = convert::testing::build(tmp_.sub("src"), tmp_.sub("img"));
    ASSERT_TRUE(st) << st.error().to_string();
    for (const char* m : {"m1", "m2"}) {
      std::filesystem::create_directories(tmp_.sub(m));
    }
    config_.frontend = Frontend::kFuse;
    config_.cache_dir = tmp_.sub("cache");
    config_.socket_path = tmp_.sub("control.sock");
    config_.fuse_threads = 2;
    config_.file_readahead = 0;
  }

  void TearDown() override {
    if (svc_) {
      svc_->stop();
    }
    if (runner_.joinable()) {
      runner_.join();
    }
    svc_.reset();
  }

  void start(ServiceHooks hooks = {}) {
    auto s = Service::create(config_, std::move(hooks));
    ASSERT_TRUE(s) << s.error().to_string();
    svc_ = std::move(*s);
    runner_ = std::thread([this] { run_status_ = svc_->run(); });
  }

  // Stop and wait for run() to return.
  void stop_and_wait() {
    svc_->stop();
    runner_.join();
    ASSERT_TRUE(run_status_) << run_status_.error().to_string();
  }

  json call(const json& req) {
    auto a = json::parse(svc_->handle(req.dump()), nullptr, false);
    EXPECT_TRUE(a.is_object());
    return a;
  }

  json bind(const std::string& mp) {
    return call({{"op", "bind"},
                 {"bootstrap", tmp_.sub("img/image.boot")},
                 {"blob_dir", tmp_.sub("img/blobs")},
                 {"mountpoint", mp},
                 {"frontend", "fuse"}});
  }

  cfntest::TempDir tmp_{"cfn-service"};
  Config config_;
  std::unique_ptr<Service> svc_;
  std::thread runner_;
  base::Status run_status_;
};

TEST_F(ServiceTest, BindListReadUnbind) {
  start();
  const std::string mp = tmp_.sub("m1");
  auto a = bind(mp);
  ASSERT_EQ(a["ok"], true) << a.dump();
  EXPECT_EQ(a["mountpoint"], mp);
  EXPECT_EQ(a["frontend"], "fuse");
  EXPECT_TRUE(mounted_on(mp));
  EXPECT_EQ(convert::testing::read_string(mp + "/hello"), "hello, lazy world\n");
  EXPECT_EQ(convert::testing::read_string(mp + "/dir/big"), std::string(300000, 'b'));

  auto again = bind(mp);
  EXPECT_EQ(again["ok"], false);
  EXPECT_EQ(again["errno"], EBUSY);

  auto l = call({{"op", "list"}});
  ASSERT_EQ(l["images"].size(), 1U);
  EXPECT_EQ(l["images"][0]["mountpoint"], mp);
  EXPECT_EQ(l["images"][0]["blob_dir"], tmp_.sub("img/blobs"));

  auto u = call({{"op", "unbind"}, {"mountpoint", mp}});
  ASSERT_EQ(u["ok"], true) << u.dump();
  EXPECT_FALSE(mounted_on(mp));
  EXPECT_TRUE(call({{"op", "list"}})["images"].empty());
  auto u2 = call({{"op", "unbind"}, {"mountpoint", mp}});
  EXPECT_EQ(u2["ok"], false);
  EXPECT_EQ(u2["errno"], ENOENT);
  stop_and_wait();
}

// The image's file map: the files whose chunks were read, and only those, by path.
TEST_F(ServiceTest, AccessedNamesTheFilesRead) {
  start();
  const std::string mp = tmp_.sub("m1");
  ASSERT_EQ(bind(mp)["ok"], true);
  EXPECT_EQ(convert::testing::read_string(mp + "/dir/big"), std::string(300000, 'b'));
  auto a = call({{"op", "accessed"}, {"mountpoint", mp}});
  ASSERT_EQ(a["ok"], true) << a.dump();
  EXPECT_EQ(a["files"], json::array({"/dir/big"}));
  auto none = call({{"op", "accessed"}, {"mountpoint", tmp_.sub("m2")}});
  EXPECT_EQ(none["ok"], false);
  EXPECT_EQ(none["errno"], ENOENT);
  auto l = call({{"op", "list"}});
  ASSERT_EQ(l["images"].size(), 1U);
  const auto& blob = l["images"][0]["blobs"][0];
  EXPECT_GE(blob["ready_chunks"].get<std::uint64_t>(), 1U);
  EXPECT_LE(blob["ready_chunks"], blob["chunk_count"]);
  stop_and_wait();
}

TEST_F(ServiceTest, ShutdownUnmountsEveryImage) {
  start();
  ASSERT_EQ(bind(tmp_.sub("m1"))["ok"], true);
  ASSERT_EQ(bind(tmp_.sub("m2"))["ok"], true);
  stop_and_wait();
  EXPECT_FALSE(mounted_on(tmp_.sub("m1")));
  EXPECT_FALSE(mounted_on(tmp_.sub("m2")));
}

TEST_F(ServiceTest, BindIsRefusedOnceStopping) {
  start();
  stop_and_wait();
  auto a = bind(tmp_.sub("m1"));
  EXPECT_EQ(a["ok"], false) << a.dump();
  EXPECT_EQ(a["errno"], ESHUTDOWN);
  EXPECT_FALSE(mounted_on(tmp_.sub("m1")));
}

// A bind past its download when shutdown begins does not mount: the loop may already
// be gone, and nothing would unmount it.
TEST_F(ServiceTest, BindInFlightAtShutdownIsCancelled) {
  Gate gate;
  start({.before_mount = [&](const std::string&) { gate.arrive(); }, .after_mount = {}});
  const std::string mp = tmp_.sub("m1");
  json answer;
  std::thread binder([&] { answer = bind(mp); });
  gate.wait_arrived();
  svc_->stop();
  gate.open();
  binder.join();
  runner_.join();
  EXPECT_EQ(answer["ok"], false) << answer.dump();
  EXPECT_EQ(answer["errno"], ESHUTDOWN);
  EXPECT_FALSE(mounted_on(mp));
}

// A bind already mounting when shutdown begins finishes first, and shutdown then
// unmounts it.
TEST_F(ServiceTest, BindMountingAtShutdownFinishesThenIsUnmounted) {
  Gate gate;
  start({.before_mount = {}, .after_mount = [&](const std::string&) { gate.arrive(); }});
  const std::string mp = tmp_.sub("m1");
  json answer;
  std::thread binder([&] { answer = bind(mp); });
  gate.wait_arrived();
  svc_->stop();
  gate.open();
  binder.join();
  runner_.join();
  EXPECT_EQ(answer["ok"], true) << answer.dump();
  EXPECT_FALSE(mounted_on(mp));
}

// One bind's mount does not hold up another image's unbind, nor list.
TEST_F(ServiceTest, MountDoesNotHoldUpOtherImages) {
  Gate gate;
  const std::string m1 = tmp_.sub("m1");
  const std::string m2 = tmp_.sub("m2");
  start({.before_mount = {}, .after_mount = [&](const std::string& mp) {
           if (mp == m2) {
             gate.arrive();
           }
         }});
  ASSERT_EQ(bind(m1)["ok"], true);
  json answer;
  std::thread binder([&] { answer = bind(m2); });
  gate.wait_arrived();
  // m2's bind is inside its mount step: m1 unbinds meanwhile.
  auto l = call({{"op", "list"}});
  EXPECT_EQ(l["images"].size(), 1U);
  auto u = call({{"op", "unbind"}, {"mountpoint", m1}});
  EXPECT_EQ(u["ok"], true) << u.dump();
  EXPECT_FALSE(mounted_on(m1));
  gate.open();
  binder.join();
  EXPECT_EQ(answer["ok"], true) << answer.dump();
  stop_and_wait();
  EXPECT_FALSE(mounted_on(m2));
}

}  // namespace
}  // namespace cfnd
