// SPDX-License-Identifier: Apache-2.0
// ImageMounts' sharing, its lifetime (the bootstrap snapshot's), its persistence and its
// background unbind, against a daemon stand-in that records binds (the daemon itself is tested in
// tests/unit/daemon and with containerd in tests/kernel).
#include "snapshotter/image_mounts.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <future>
#include <set>
#include <thread>

#include <sqlite3.h>

#include "tests/unit/temp_dir.h"

namespace snapshotter {
namespace {

class FakeDaemon final : public Daemon {
 public:
  base::Status ensure() override {
    std::lock_guard lk(mu_);
    ++ensures;
    return {};
  }
  base::Result<control::ImageInfo> bind(const control::BindRequest& r) override {
    if (block_bind) {
      bind_entered.set_value();
      bind_release.get_future().wait();
    }
    std::lock_guard lk(mu_);
    binds.push_back(r);
    if (fail_binds) {
      return base::make_error(EIO, "registry gone");
    }
    bound.insert(r.mountpoint);
    control::ImageInfo i;
    i.mountpoint = r.mountpoint;
    i.frontend = "fanotify";
    return i;
  }
  base::Status unbind(const control::UnbindRequest& r) override {
    if (block_unbind) {
      unbind_entered.set_value();
      unbind_release.get_future().wait();
    }
    std::lock_guard lk(mu_);
    unbinds.push_back(r.mountpoint);
    if (bound.erase(r.mountpoint) == 0) {
      return base::make_error(ENOENT, "no image bound");
    }
    return {};
  }
  base::Result<std::vector<control::ImageInfo>> list() override {
    std::lock_guard lk(mu_);
    std::vector<control::ImageInfo> out;
    for (const auto& mp : bound) {
      control::ImageInfo i;
      i.mountpoint = mp;
      out.push_back(i);
    }
    return out;
  }

  // fn(bound) under mu_: for a test that changes what the daemon has bound while
  // ImageMounts runs (its unbind thread lists the binds when it starts).
  template <typename Fn>
  void change_bound(Fn fn) {
    std::lock_guard lk(mu_);
    fn(bound);
  }

  std::mutex mu_;
  int ensures = 0;
  bool fail_binds = false;
  bool block_unbind = false;
  bool block_bind = false;
  std::promise<void> bind_entered;
  std::promise<void> bind_release;
  std::promise<void> unbind_entered;
  std::promise<void> unbind_release;
  std::vector<control::BindRequest> binds;
  std::vector<std::string> unbinds;
  std::set<std::string> bound;
};

// An image whose bootstrap snapshot is named boot-<id>.
NydusImage image(int64_t id, const std::string& ref = "reg/x:1") {
  NydusImage im;
  im.bootstrap_id = id;
  im.bootstrap_name = "boot-" + std::to_string(id);
  im.image_ref = ref;
  return im;
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Every key alive; boot-<id> is the committed snapshot <id> unless `gone` holds it.
SnapshotFacts facts(std::function<bool(const std::string&)> alive = nullptr,
                    std::set<int64_t> gone = {}) {
  SnapshotFacts f;
  f.alive = alive ? std::move(alive) : [](const std::string&) { return true; };
  f.committed_id = [gone](const std::string& name) -> std::optional<int64_t> {
    if (name.rfind("boot-", 0) != 0) {
      return std::nullopt;
    }
    int64_t id = std::stoll(name.substr(5));
    if (gone.contains(id)) {
      return std::nullopt;
    }
    return id;
  };
  return f;
}

TEST(ImageMounts, OneMountPerImageKeptUntilItsBootstrapSnapshotGoes) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  MountPolicy policy;
  policy.frontend = "fanotify";
  auto m = ImageMounts::open(dir.path(), d, policy, facts());
  ASSERT_TRUE(m) << m.error().to_string();
  auto a = (*m)->acquire("ns/1/c1", image(7), "/boot");
  ASSERT_TRUE(a) << a.error().to_string();
  EXPECT_EQ(*a, dir.path() + "/mnt/7");
  EXPECT_TRUE(is_dir(*a));
  auto b = (*m)->acquire("ns/1/c2", image(7), "/boot");
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, *a);
  ASSERT_EQ(d->binds.size(), 1U);
  EXPECT_EQ(d->binds[0].reference, "reg/x:1");
  EXPECT_EQ(d->binds[0].frontend, "fanotify");
  EXPECT_EQ(d->binds[0].mountpoint, *a);
  EXPECT_EQ((*m)->users(7), 2);
  auto use = (*m)->use_of("ns/1/c2");
  ASSERT_TRUE(use && use->has_value());
  EXPECT_EQ((*use)->mountpoint, *a);
  EXPECT_EQ((*use)->bootstrap_id, 7);

  (*m)->release("ns/1/c1");
  (*m)->release("ns/1/c1");  // twice: nothing
  (*m)->release("no-such-key");
  EXPECT_EQ((*m)->users(7), 1);
  (*m)->release("ns/1/c2");
  (*m)->drain();
  // The last user going leaves the image mounted and bound.
  EXPECT_TRUE(d->unbinds.empty());
  EXPECT_TRUE((*m)->mounted(7));
  EXPECT_TRUE(is_dir(*a));
  EXPECT_EQ((*m)->users(7), 0);
  auto none = (*m)->use_of("ns/1/c2");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());

  // The next container finds it, without a bind.
  auto c = (*m)->acquire("ns/1/c3", image(7), "/boot");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, *a);
  EXPECT_EQ(d->binds.size(), 1U);
  (*m)->release("ns/1/c3");

  // The bootstrap snapshot's Remove: unmounted and unbound in the background.
  (*m)->release("boot-7");
  (*m)->drain();
  EXPECT_EQ(d->unbinds, std::vector<std::string>{*a});
  EXPECT_FALSE(is_dir(*a));
  EXPECT_FALSE((*m)->mounted(7));
  // A Prepare that raced with the removal gets no new mount of the removed image.
  auto late = (*m)->acquire("ns/1/c4", image(7), "/boot");
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, ENOENT);
  EXPECT_EQ(d->binds.size(), 1U);
}

TEST(ImageMounts, CachefilesGetsTheDomain) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  MountPolicy policy;
  policy.frontend = "cachefiles";
  policy.domain_id = "dom";
  auto m = ImageMounts::open(dir.path(), d, policy, facts());
  ASSERT_TRUE(m);
  ASSERT_TRUE((*m)->acquire("k", image(1), "/boot"));
  ASSERT_EQ(d->binds.size(), 1U);
  EXPECT_EQ(d->binds[0].domain_id, "dom");
  EXPECT_EQ(d->binds[0].frontend, "cachefiles");
}

TEST(ImageMounts, MirrorsAndAuthGoWithTheImagesHost) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  MountPolicy policy;
  policy.mirror_urls = {"http://127.0.0.1:65001"};
  policy.auth = "dXNlcjpwYXNz";
  auto m = ImageMounts::open(dir.path(), d, policy, facts());
  ASSERT_TRUE(m);
  ASSERT_TRUE((*m)->acquire("k", image(4, "reg.example:5000/a/b:t"), "/boot"));
  ASSERT_EQ(d->binds.size(), 1U);
  ASSERT_TRUE(d->binds[0].registry);
  const auto& r = *d->binds[0].registry;
  ASSERT_TRUE(r.mirrors);
  EXPECT_EQ(r.mirrors->at("reg.example:5000"), policy.mirror_urls);
  ASSERT_TRUE(r.docker_config);
  struct stat st {};
  ASSERT_EQ(::stat(r.docker_config->c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  // The credentials are in the file, not in the request.
  EXPECT_EQ(control::to_json(control::Request(d->binds[0])).value().find("dXNlcjpwYXNz"),
            std::string::npos);
}

TEST(ImageMounts, MountsSurviveARestartAndGoneBootstrapsAreUnbound) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  std::string mp;
  {
    auto m = ImageMounts::open(dir.path(), d, {}, facts());
    ASSERT_TRUE(m);
    mp = *(*m)->acquire("a", image(5), "/boot");
    ASSERT_TRUE((*m)->acquire("b", image(5), "/boot"));
    ASSERT_TRUE((*m)->acquire("c", image(6), "/boot"));
    ASSERT_TRUE((*m)->acquire("e", image(8), "/boot"));
    (*m)->release("e");
  }
  // Restart: "b" was removed while we were down (a crash between Remove and release), and
  // so were image 6's only user "c" and image 6 itself. Image 8 has no user but is still
  // pulled: it stays.
  auto m = ImageMounts::open(dir.path(), d, {},
                             facts([](const std::string& k) { return k == "a"; }, {6}));
  ASSERT_TRUE(m);
  (*m)->drain();
  EXPECT_EQ((*m)->users(5), 1);
  EXPECT_EQ((*m)->users(6), 0);
  EXPECT_EQ(d->unbinds, std::vector<std::string>{dir.path() + "/mnt/6"});
  EXPECT_TRUE((*m)->mounted(5));
  EXPECT_FALSE((*m)->mounted(6));
  EXPECT_TRUE((*m)->mounted(8));
  // The live mounts are used again without a bind.
  auto again = (*m)->acquire("d", image(5), "/boot");
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, mp);
  ASSERT_TRUE((*m)->acquire("f", image(8), "/boot"));
  EXPECT_EQ(d->binds.size(), 3U);
  // The names were kept: Remove of image 8's bootstrap unbinds it.
  (*m)->release("f");
  (*m)->release("boot-8");
  (*m)->drain();
  EXPECT_EQ(d->unbinds.back(), dir.path() + "/mnt/8");
}

TEST(ImageMounts, ABootstrapNameOfAnotherSnapshotNowIsUnbound) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  {
    auto m = ImageMounts::open(dir.path(), d, {}, facts());
    ASSERT_TRUE(m);
    ASSERT_TRUE((*m)->acquire("a", image(5), "/boot"));
  }
  // While we were down, the image was removed and pulled again: boot-5 is snapshot 9 now.
  SnapshotFacts f = facts();
  f.committed_id = [](const std::string&) { return std::optional<int64_t>(9); };
  auto m = ImageMounts::open(dir.path(), d, {}, f);
  ASSERT_TRUE(m);
  (*m)->drain();
  EXPECT_EQ(d->unbinds, std::vector<std::string>{dir.path() + "/mnt/5"});
  EXPECT_FALSE((*m)->mounted(5));
}

TEST(ImageMounts, RowsOfAnOlderSnapshotterGoWithTheirLastUser) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  // nydus.db as the snapshotter that unbound with the last user wrote it: no names.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(::sqlite3_open((dir.path() + "/nydus.db").c_str(), &db), SQLITE_OK);
    const std::string mp3 = dir.path() + "/mnt/3";
    const std::string mp4 = dir.path() + "/mnt/4";
    const std::string sql =
        "CREATE TABLE images (bootstrap_id INTEGER PRIMARY KEY, mountpoint TEXT NOT NULL,"
        " generation INTEGER NOT NULL);"
        "CREATE TABLE users (key TEXT PRIMARY KEY, bootstrap_id INTEGER NOT NULL);"
        "INSERT INTO images VALUES (3, '" +
        mp3 + "', 0), (4, '" + mp4 +
        "', 0);"
        "INSERT INTO users VALUES ('a', 3);";
    ASSERT_EQ(::sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    ::sqlite3_close(db);
    d->bound = {mp3, mp4};
  }
  auto m = ImageMounts::open(dir.path(), d, {}, facts());
  ASSERT_TRUE(m) << m.error().to_string();
  (*m)->drain();
  // Image 4 had no user: unbound as before; image 3 stays with its user.
  EXPECT_EQ(d->unbinds, std::vector<std::string>{dir.path() + "/mnt/4"});
  EXPECT_TRUE((*m)->mounted(3));
  (*m)->release("a");
  (*m)->drain();
  EXPECT_EQ(d->unbinds.back(), dir.path() + "/mnt/3");
}

TEST(ImageMounts, ADaemonThatLostTheMountGetsANewOne) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  auto m = ImageMounts::open(dir.path(), d, {}, facts());
  ASSERT_TRUE(m);
  auto first = (*m)->acquire("a", image(5), "/boot");
  ASSERT_TRUE(first);
  // A fanotify or FUSE daemon restarted: its binds are gone.
  d->change_bound([](auto& bound) { bound.clear(); });
  auto second = (*m)->acquire("b", image(5), "/boot");
  ASSERT_TRUE(second);
  EXPECT_NE(*second, *first);
  EXPECT_EQ(*second, dir.path() + "/mnt/5-1");
  EXPECT_EQ(d->binds.size(), 2U);
  EXPECT_EQ((*m)->users(5), 2);
  // Both users now count on the new mount; the bootstrap's removal unbinds it.
  (*m)->release("a");
  (*m)->release("b");
  (*m)->drain();
  (*m)->release("boot-5");
  (*m)->drain();
  ASSERT_FALSE(d->unbinds.empty());
  EXPECT_EQ(d->unbinds.back(), *second);
}

TEST(ImageMounts, TheCheckBindsAgainWhatTheDaemonLost) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  auto m = ImageMounts::open(dir.path(), d, {}, facts());
  ASSERT_TRUE(m);
  const std::string boot5 = dir.path() + "/boot5";
  const std::string boot6 = dir.path() + "/boot6";
  std::ofstream(boot5) << "b5";
  std::ofstream(boot6) << "b6";
  auto first = (*m)->acquire("a", image(5), boot5);
  ASSERT_TRUE(first);
  ASSERT_TRUE((*m)->acquire("b", image(6), boot6));
  EXPECT_EQ((*m)->check_now(), 0);  // all served: nothing bound again
  EXPECT_EQ(d->binds.size(), 2U);
  // The daemon restarted and image 6 was bound again elsewhere.
  d->change_bound([&](auto& bound) { bound.erase(*first); });
  EXPECT_EQ((*m)->check_now(), 1);
  ASSERT_EQ(d->binds.size(), 3U);
  EXPECT_EQ(d->binds[2].reference, "reg/x:1");
  EXPECT_EQ(d->binds[2].mountpoint, dir.path() + "/mnt/5-1");
  EXPECT_EQ(d->binds[2].bootstrap, boot5);
  auto use = (*m)->use_of("a");
  ASSERT_TRUE(use && use->has_value());
  EXPECT_EQ((*use)->mountpoint, dir.path() + "/mnt/5-1");
  // The next container takes the new mount without a bind.
  auto c = (*m)->acquire("c", image(5), boot5);
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, dir.path() + "/mnt/5-1");
  EXPECT_EQ(d->binds.size(), 3U);
  // After a restart the check still knows what to bind (reference and bootstrap kept).
  m->reset();
  d->bound.clear();
  auto again = ImageMounts::open(dir.path(), d, {}, facts());
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)->check_now(), 2);
  ASSERT_EQ(d->binds.size(), 5U);
  std::set<std::string> boots = {d->binds[3].bootstrap, d->binds[4].bootstrap};
  EXPECT_EQ(boots, (std::set<std::string>{boot5, boot6}));
  EXPECT_TRUE((*again)->mounted(5));
  EXPECT_TRUE((*again)->mounted(6));
}

TEST(ImageMounts, AFailedBindLeavesNoUse) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  auto m = ImageMounts::open(dir.path(), d, {}, facts());
  ASSERT_TRUE(m);
  d->fail_binds = true;
  auto a = (*m)->acquire("a", image(5), "/boot");
  ASSERT_FALSE(a);
  EXPECT_NE(a.error().message.find("registry gone"), std::string::npos);
  EXPECT_EQ((*m)->users(5), 0);
  EXPECT_FALSE((*m)->mounted(5));
  d->fail_binds = false;
  auto b = (*m)->acquire("a", image(5), "/boot");
  ASSERT_TRUE(b) << b.error().to_string();
  EXPECT_EQ(*b, dir.path() + "/mnt/5");
}

TEST(ImageMounts, ABootstrapRemovedWhileBindingIsUnbound) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  auto m = ImageMounts::open(dir.path(), d, {}, facts());
  ASSERT_TRUE(m);
  d->block_bind = true;
  auto entered = d->bind_entered.get_future();
  base::Result<std::string> got = base::make_error(EIO, "not run");
  std::thread t([&] { got = (*m)->acquire("a", image(3), "/boot"); });
  entered.wait();
  (*m)->release("boot-3");  // Remove of the bootstrap raced with the Prepare on it
  d->bind_release.set_value();
  t.join();
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, ENOENT);
  (*m)->drain();
  EXPECT_EQ(d->unbinds, std::vector<std::string>{dir.path() + "/mnt/3"});
  EXPECT_EQ((*m)->users(3), 0);
  EXPECT_FALSE((*m)->mounted(3));
}

TEST(ImageMounts, ASlowUnbindHoldsUpNoOtherImage) {
  cfntest::TempDir dir("image-mounts");
  auto d = std::make_shared<FakeDaemon>();
  auto m = ImageMounts::open(dir.path(), d, {}, facts());
  ASSERT_TRUE(m);
  ASSERT_TRUE((*m)->acquire("a", image(1), "/boot"));
  d->block_unbind = true;
  auto entered = d->unbind_entered.get_future();
  (*m)->release("a");
  (*m)->release("boot-1");  // returns at once: the unbind runs in the background
  entered.wait();           // ... and is now stuck in the daemon
  auto b = (*m)->acquire("b", image(2), "/boot");
  ASSERT_TRUE(b);
  EXPECT_EQ((*m)->users(2), 1);
  d->unbind_release.set_value();
  (*m)->drain();
  EXPECT_EQ(d->unbinds, std::vector<std::string>{dir.path() + "/mnt/1"});
}

}  // namespace
}  // namespace snapshotter
