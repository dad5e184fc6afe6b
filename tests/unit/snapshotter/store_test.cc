// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/unit/temp_dir.h"

namespace snapshotter {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }

  void reopen() {
    store_.reset();
    auto s = Store::open(dir_.sub("root"));
    ASSERT_TRUE(s) << s.error().to_string();
    store_ = std::move(*s);
  }

  // Entries of ROOT/snapshots, sorted.
  std::vector<std::string> dirs() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(store_->root() + "/snapshots")) {
      out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  Snapshot prepare(const std::string& key, const std::string& parent = "", Labels labels = {}) {
    auto s = store_->create(Kind::kActive, key, parent, std::move(labels));
    EXPECT_TRUE(s) << key << ": " << (s ? "" : s.error().to_string());
    return s ? *s : Snapshot{};
  }

  void commit(const std::string& name, const std::string& key, Labels labels = {}) {
    auto st = store_->commit(name, key, std::move(labels));
    ASSERT_TRUE(st) << st.error().to_string();
  }

  std::vector<std::string> names(const std::vector<std::string>& filters) {
    auto f = Filter::parse_all(filters);
    EXPECT_TRUE(f);
    auto l = store_->list(*f);
    EXPECT_TRUE(l);
    std::vector<std::string> out;
    for (const auto& i : *l) {
      out.push_back(i.name);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  cfntest::TempDir dir_{"snapstore"};
  std::unique_ptr<Store> store_;
};

// The WAL is made its full size at open (zeros past SQLite's frames), so commits overwrite
// blocks it has: after a crash SQLite still finds exactly the committed transactions, not
// the zeros. The crash: the files copied while the store is open, never closed.
TEST_F(StoreTest, WalMadeFullSizeAndRecoveredAfterACrash) {
  struct stat st {};
  const std::string wal = store_->root() + "/metadata.db-wal";
  ASSERT_EQ(::stat(wal.c_str(), &st), 0);
  EXPECT_GE(st.st_size, 32 + 1000 * (4096 + 24));
  const off_t full = st.st_size;
  for (int i = 0; i < 30; ++i) {
    prepare("a" + std::to_string(i));
    commit("c" + std::to_string(i), "a" + std::to_string(i));
  }
  ASSERT_EQ(::stat(wal.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, full);  // written in place, not appended
  const std::string copy = dir_.sub("copy");
  fs::create_directories(copy);
  for (const char* f : {"metadata.db", "metadata.db-wal"}) {
    fs::copy_file(store_->root() + "/" + f, copy + "/" + f);
  }
  fs::copy(store_->root() + "/snapshots", copy + "/snapshots", fs::copy_options::recursive);
  auto s = Store::open(copy);
  ASSERT_TRUE(s) << s.error().to_string();
  for (int i = 0; i < 30; ++i) {
    auto info = (*s)->stat("c" + std::to_string(i));
    ASSERT_TRUE(info) << i;
    EXPECT_EQ(info->kind, Kind::kCommitted);
    EXPECT_FALSE((*s)->stat("a" + std::to_string(i)));
  }
  EXPECT_FALSE((*s)->stat("c30"));
}

TEST_F(StoreTest, PrepareMakesDirectoriesNamedById) {
  auto a = prepare("default/1/extract a/../b");
  EXPECT_GT(a.id, 0);
  EXPECT_TRUE(a.parent_ids.empty());
  struct stat st {};
  ASSERT_EQ(::stat(fs_path(store_->root(), a.id).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat(work_path(store_->root(), a.id).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0711u);
  auto v = store_->create(Kind::kView, "view", "", {});
  ASSERT_TRUE(v);
  EXPECT_FALSE(fs::exists(work_path(store_->root(), v->id)));  // a view has no work dir
  EXPECT_EQ(dirs(), (std::vector<std::string>{std::to_string(a.id), std::to_string(v->id)}));
}

TEST_F(StoreTest, StatCommitAndParents) {
  auto a = prepare("a", "", {{"x", "1"}, {"empty", ""}});
  auto info = store_->stat("a");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, Kind::kActive);
  EXPECT_EQ(info->parent, "");
  EXPECT_EQ(info->labels, (Labels{{"x", "1"}}));  // empty values are dropped
  EXPECT_EQ(info->created_ns, info->updated_ns);
  commit("c", "a", {{"y", "2"}});
  EXPECT_EQ(store_->stat("a").error().code, ENOENT);
  auto c = store_->stat("c");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->kind, Kind::kCommitted);
  EXPECT_EQ(c->labels, (Labels{{"y", "2"}}));  // replaced, not inherited
  EXPECT_GE(c->created_ns, info->created_ns);
  EXPECT_TRUE(fs::exists(fs_path(store_->root(), a.id)));  // the id and directory stay

  auto b = prepare("b", "c");
  EXPECT_EQ(b.parent_ids, (std::vector<int64_t>{a.id}));
  commit("c2", "b");
  auto top = prepare("top", "c2");
  EXPECT_EQ(top.parent_ids, (std::vector<int64_t>{b.id, a.id}));
  EXPECT_EQ(store_->stat("top")->parent, "c2");
  EXPECT_EQ(store_->stat("c2")->parent, "c");
}

TEST_F(StoreTest, Errors) {
  prepare("a");
  EXPECT_EQ(store_->create(Kind::kActive, "a", "", {}).error().code, EEXIST);
  EXPECT_EQ(store_->create(Kind::kView, "a", "", {}).error().code, EEXIST);
  EXPECT_EQ(store_->create(Kind::kActive, "b", "missing", {}).error().code, ENOENT);
  EXPECT_EQ(store_->create(Kind::kActive, "b", "a", {}).error().code, EINVAL);  // not committed
  EXPECT_EQ(store_->create(Kind::kCommitted, "b", "", {}).error().code, EINVAL);
  EXPECT_EQ(store_->create(Kind::kActive, "", "", {}).error().code, EINVAL);
  EXPECT_EQ(store_->create(Kind::kActive, std::string("a\0b", 3), "", {}).error().code, EINVAL);
  EXPECT_EQ(store_->create(Kind::kActive, std::string(4097, 'k'), "", {}).error().code, EINVAL);
  EXPECT_TRUE(store_->create(Kind::kActive, std::string(4096, 'k'), "", {}));
  EXPECT_EQ(store_->commit("c", "missing", {}).error().code, ENOENT);
  EXPECT_EQ(store_->commit("a", "a", {}).error().code, EEXIST);  // the name is taken
  ASSERT_TRUE(store_->create(Kind::kView, "v", "", {}));
  EXPECT_EQ(store_->commit("c", "v", {}).error().code, kErrFailedPrecondition);
  commit("c", "a");
  EXPECT_EQ(store_->commit("c2", "c", {}).error().code, kErrFailedPrecondition);
  EXPECT_EQ(store_->get("c").error().code, kErrFailedPrecondition);
  EXPECT_EQ(store_->get("nope").error().code, ENOENT);
  EXPECT_EQ(store_->stat("nope").error().code, ENOENT);
  EXPECT_EQ(store_->usage("nope").error().code, ENOENT);
  EXPECT_EQ(store_->remove("nope").error().code, ENOENT);
}

TEST_F(StoreTest, FailedCreateLeavesNothing) {
  prepare("p");
  commit("c", "p");
  auto before = dirs();
  EXPECT_FALSE(store_->create(Kind::kActive, "x", "missing", {}));
  EXPECT_FALSE(store_->create(Kind::kActive, "c", "", {}));
  Labels big{{"k", std::string(4096, 'v')}};
  EXPECT_EQ(store_->create(Kind::kActive, "x", "", big).error().code, EINVAL);
  Labels nul{{"k", std::string("a\0b", 3)}};
  EXPECT_EQ(store_->create(Kind::kActive, "x", "", nul).error().code, EINVAL);
  EXPECT_EQ(dirs(), before);
  EXPECT_EQ(store_->stat("x").error().code, ENOENT);
}

TEST_F(StoreTest, LabelLimits) {
  // containerd's limit is per label: key + value <= 4096 bytes.
  Labels ok{{"k", std::string(4095, 'v')}};
  EXPECT_TRUE(validate_labels(ok));
  Labels over{{"k", std::string(4096, 'v')}};
  EXPECT_EQ(validate_labels(over).error().code, EINVAL);
  Labels many;
  for (int i = 0; i < 17; ++i) {
    many["k" + std::to_string(i)] = std::string(4000, 'v');
  }
  EXPECT_EQ(validate_labels(many).error().code, EINVAL);  // our own total bound
  EXPECT_EQ(validate_labels({{"", "v"}}).error().code, EINVAL);
}

TEST_F(StoreTest, RemoveRefusesParentsAndRemovesDirectories) {
  auto a = prepare("a");
  commit("c", "a");
  auto b = prepare("b", "c");
  auto r = store_->remove("c");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, kErrFailedPrecondition);
  EXPECT_NE(r.error().message.find("remove"), std::string::npos);
  ASSERT_TRUE(store_->remove("b"));
  // The row is gone at once; the directory leaves its id once the delete is on disk (a
  // later sync), and the tree is removed in the background.
  EXPECT_EQ(store_->stat("b").error().code, ENOENT);
  store_->drain_removals();
  EXPECT_FALSE(fs::exists(store_->root() + "/snapshots/" + std::to_string(b.id)));
  ASSERT_TRUE(store_->remove("c"));
  store_->drain_removals();
  EXPECT_TRUE(dirs().empty());
  // The key is free again and gets a new id.
  auto again = prepare("a");
  EXPECT_GT(again.id, b.id);
}

// Directories the background thread had not removed when the store closed are Cleanup's.
TEST_F(StoreTest, RemovalsLeftAtCloseAreCleanedUp) {
  auto keep = prepare("keep");
  for (int i = 0; i < 20; ++i) {
    std::string k = "k" + std::to_string(i);
    auto s = prepare(k);
    fs::create_directories(fs_path(store_->root(), s.id) + "/a/b/c");
    ASSERT_TRUE(store_->remove(k));
  }
  reopen();  // may stop the remover with work queued
  auto removed = store_->cleanup();
  ASSERT_TRUE(removed);
  EXPECT_EQ(dirs(), (std::vector<std::string>{std::to_string(keep.id)}));
  // Removals queued now are done when Cleanup returns too.
  for (int i = 0; i < 5; ++i) {
    std::string k = "j" + std::to_string(i);
    prepare(k);
    ASSERT_TRUE(store_->remove(k));
  }
  ASSERT_TRUE(store_->cleanup());
  EXPECT_EQ(dirs(), (std::vector<std::string>{std::to_string(keep.id)}));
}

TEST_F(StoreTest, UpdateLikeContainerd) {
  prepare("a", "", {{"keep", "k"}});
  Info in;
  in.name = "a";
  in.parent = "ignored";
  in.labels = {{"l1", "v1"}, {"l2", "v2"}, {"l3", "v3"}};
  auto before = store_->stat("a");
  auto u = store_->update(in, {});
  ASSERT_TRUE(u);
  EXPECT_EQ(u->labels, in.labels);  // no paths: replace all
  EXPECT_EQ(u->parent, "");
  EXPECT_EQ(u->created_ns, before->created_ns);
  EXPECT_GE(u->updated_ns, before->updated_ns);
  in.labels = {{"l1", "updated"}, {"l4", "v4"}};
  std::vector<std::string> paths = {"labels.l1", "labels.l2"};
  u = store_->update(in, paths);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->labels, (Labels{{"l1", "updated"}, {"l3", "v3"}}));  // l2 deleted, l4 not set
  in.labels = {{"l4", "v4"}};
  paths = {"labels"};
  u = store_->update(in, paths);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->labels, (Labels{{"l4", "v4"}}));
  EXPECT_EQ(store_->stat("a")->labels, (Labels{{"l4", "v4"}}));
  for (std::string bad : {"parent", "name", "kind", "labels.", "created_at"}) {
    paths = {bad};
    auto e = store_->update(in, paths);
    ASSERT_FALSE(e) << bad;
    EXPECT_EQ(e.error().code, EINVAL) << bad;
  }
  in.name = "missing";
  EXPECT_EQ(store_->update(in, {}).error().code, ENOENT);
  in.name = "a";
  in.labels = {{"big", std::string(5000, 'x')}};
  EXPECT_EQ(store_->update(in, {}).error().code, EINVAL);
  EXPECT_EQ(store_->stat("a")->labels, (Labels{{"l4", "v4"}}));
}

TEST_F(StoreTest, ListWithFilters) {
  Labels root{{"containerd.io/gc.root", "check-walk"}};
  auto with = [&](Labels extra) {
    extra.insert(root.begin(), root.end());
    return extra;
  };
  prepare("a-np", "", root);
  prepare("p-tmp", "", root);
  commit("p", "p-tmp", root);
  prepare("a", "p", root);
  ASSERT_TRUE(store_->create(Kind::kView, "v", "p", root));
  prepare("p-wl-tmp", "", root);
  commit("p-wl", "p-wl-tmp", with({{"l", "1"}}));
  prepare("a-wl", "p-wl", with({{"l", "2"}}));
  ASSERT_TRUE(store_->create(Kind::kView, "v-wl", "p-wl", with({{"l", "3"}})));
  prepare("a-np-wl", "", with({{"l", "2"}}));

  using V = std::vector<std::string>;
  EXPECT_EQ(names({"labels.\"containerd.io/gc.root\"==check-walk"}),
            (V{"a", "a-np", "a-np-wl", "a-wl", "p", "p-wl", "v", "v-wl"}));
  EXPECT_EQ(names({"kind==active,labels.\"containerd.io/gc.root\"==check-walk"}),
            (V{"a", "a-np", "a-np-wl", "a-wl"}));
  EXPECT_EQ(names({"kind==view"}), (V{"v", "v-wl"}));
  EXPECT_EQ(names({"kind==committed"}), (V{"p", "p-wl"}));
  EXPECT_EQ(names({"name==p", "name==a-np-wl"}), (V{"a-np-wl", "p"}));
  EXPECT_EQ(names({"name==a-wl,labels.l"}), (V{"a-wl"}));
  EXPECT_EQ(names({"parent==p"}), (V{"a", "v"}));
  EXPECT_EQ(names({"parent!=\"\",labels.\"containerd.io/gc.root\"==check-walk"}),
            (V{"a", "a-wl", "v", "v-wl"}));
  EXPECT_EQ(names({"labels.l"}), (V{"a-np-wl", "a-wl", "p-wl", "v-wl"}));
  EXPECT_EQ(names({"labels.l==2"}), (V{"a-np-wl", "a-wl"}));
  EXPECT_EQ(names({"name~=^a-"}), (V{"a-np", "a-np-wl", "a-wl"}));
  EXPECT_EQ(names({}).size(), 8u);
  // Through the label index (one alternative with labels.K==V), with the rest applied after.
  EXPECT_EQ(names({"labels.l==2,kind==active"}), (V{"a-np-wl", "a-wl"}));
  EXPECT_EQ(names({"labels.l==2,parent==\"\""}), (V{"a-np-wl"}));
  EXPECT_EQ(names({"labels.l==9"}), V{});
  EXPECT_EQ(names({"labels.l==\"\""}), V{});
  auto f = Filter::parse("labels.l==3");
  auto l = store_->list(*f);
  ASSERT_TRUE(l);
  ASSERT_EQ(l->size(), 1u);
  EXPECT_EQ(l->front().name, "v-wl");
  EXPECT_EQ(l->front().parent, "p-wl");
  EXPECT_EQ(l->front().kind, Kind::kView);
  EXPECT_EQ(
      l->front().labels.size(),
      2u);  // all its labels, not only the indexed one  // p-tmp and p-wl-tmp became p and p-wl
}

TEST_F(StoreTest, UsageCountsHardLinksOnceAndIsStoredAtCommit) {
  auto a = prepare("a");
  std::string fsd = fs_path(store_->root(), a.id);
  auto empty = store_->usage("a");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->inodes, 1);  // the fs dir itself
  {
    std::ofstream f(fsd + "/file");
    f << std::string(100000, 'x');
  }
  ASSERT_EQ(::link((fsd + "/file").c_str(), (fsd + "/hardlink").c_str()), 0);
  ASSERT_EQ(::mkdir((fsd + "/dir").c_str(), 0755), 0);
  auto u = store_->usage("a");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->inodes, 3);  // fs, file (twice linked), dir
  struct stat fst {};
  struct stat dst {};
  struct stat rst {};
  ASSERT_EQ(::stat((fsd + "/file").c_str(), &fst), 0);
  ASSERT_EQ(::stat((fsd + "/dir").c_str(), &dst), 0);
  ASSERT_EQ(::stat(fsd.c_str(), &rst), 0);
  EXPECT_EQ(u->size, (fst.st_blocks + dst.st_blocks + rst.st_blocks) * 512);
  commit("c", "a");
  // Stored at Commit: later changes to the directory do not show.
  { std::ofstream f(fsd + "/after"); }
  auto c = store_->usage("c");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->inodes, 3);
  EXPECT_EQ(c->size, u->size);
  ASSERT_TRUE(store_->create(Kind::kView, "v", "c", {}));
  EXPECT_EQ(store_->usage("v")->inodes, 0);  // a view's own usage, as containerd: zero
}

TEST_F(StoreTest, MountsInfoAndVolatile) {
  auto a = prepare("a");
  commit("c", "a");
  auto b = prepare("b", "c", {{kVolatileLabel, "true"}});
  EXPECT_TRUE(b.volatile_);
  auto g = store_->get("b");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->id, b.id);
  EXPECT_TRUE(g->volatile_);
  EXPECT_EQ(g->parent_ids, (std::vector<int64_t>{a.id}));
  auto v = store_->create(Kind::kView, "v", "c", {});
  ASSERT_TRUE(v);
  EXPECT_FALSE(store_->get("v")->volatile_);
  EXPECT_EQ(store_->get("v")->kind, Kind::kView);
}

// The parent ids Mounts gets come from what the store remembers of each row's parent once
// it has walked a chain: the same keys removed and made again on another chain must not get
// the old chain.
TEST_F(StoreTest, ParentIdsAfterTheSameKeysAreRemadeOnAnotherChain) {
  auto a = prepare("a");
  commit("A", "a");
  auto b = prepare("b", "A");
  commit("B", "b");
  prepare("top", "B");
  ASSERT_EQ(store_->get("top")->parent_ids, (std::vector<int64_t>{b.id, a.id}));
  ASSERT_EQ(store_->get("top")->parent_ids, (std::vector<int64_t>{b.id, a.id}));  // remembered
  ASSERT_TRUE(store_->remove("top"));
  ASSERT_TRUE(store_->remove("B"));
  ASSERT_TRUE(store_->remove("A"));
  auto x = prepare("x");
  commit("X", "x");
  auto b2 = prepare("b", "X");
  commit("B", "b");
  auto top = prepare("top", "B");
  EXPECT_EQ(top.parent_ids, (std::vector<int64_t>{b2.id, x.id}));
  EXPECT_EQ(store_->get("top")->parent_ids, (std::vector<int64_t>{b2.id, x.id}));
  // A view on the chain's middle: its own chain, from what is remembered.
  ASSERT_TRUE(store_->create(Kind::kView, "v", "X", {}));
  EXPECT_EQ(store_->get("v")->parent_ids, (std::vector<int64_t>{x.id}));
}

TEST_F(StoreTest, RestartKeepsIdsAndNames) {
  auto a = prepare("a", "", {{"l", "1"}});
  commit("c", "a", {{"l", "2"}});
  auto b = prepare("b", "c");
  auto before = store_->stat("c");
  reopen();
  auto c = store_->stat("c");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->labels, (Labels{{"l", "2"}}));
  EXPECT_EQ(c->created_ns, before->created_ns);
  auto g = store_->get("b");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->id, b.id);
  EXPECT_EQ(g->parent_ids, (std::vector<int64_t>{a.id}));
  auto n = prepare("new");
  EXPECT_GT(n.id, b.id);
  EXPECT_EQ(dirs().size(), 3u);
}

TEST_F(StoreTest, CleanupRemovesDirectoriesNoRowOwns) {
  auto a = prepare("a");
  std::string snaps = store_->root() + "/snapshots";
  for (std::string d : {"new-abc123", "999", "rm-5-0", "junk", "0012"}) {
    fs::create_directories(snaps + "/" + d + "/fs/deep");
  }
  { std::ofstream f(snaps + "/stray-file"); }
  // Trees a crash left in ROOT/removing, renamed there by a Remove or by this Cleanup.
  std::string removing = store_->root() + "/removing";
  for (std::string d : {"rm-7-0", "rm-8-3"}) {
    fs::create_directories(removing + "/" + d + "/fs/deep");
  }
  auto removed = store_->cleanup();
  ASSERT_TRUE(removed) << removed.error().to_string();
  EXPECT_EQ(removed->size(), 8u);
  EXPECT_EQ(dirs(), (std::vector<std::string>{std::to_string(a.id)}));
  EXPECT_TRUE(fs::is_empty(removing));
}

// A Remove's tree goes through ROOT/removing, never as rm-* in ROOT/snapshots (where a
// Prepare's mkdir would wait for its rmdir).
TEST_F(StoreTest, RemovedTreeLeavesNothingInEitherDirectory) {
  auto a = prepare("a");
  { std::ofstream f(fs_path(store_->root(), a.id) + "/file"); }
  ASSERT_TRUE(store_->remove("a"));
  store_->drain_removals();
  EXPECT_TRUE(dirs().empty());
  EXPECT_TRUE(fs::is_empty(store_->root() + "/removing"));
}

// A crash between the rename to the id and COMMIT leaves ROOT/snapshots/ID with no row; the
// id comes again (the insert rolled back) and must not fail or adopt the stale contents.
TEST_F(StoreTest, StaleDirectoryAtTheNextIdIsMovedAside) {
  auto a = prepare("a");
  std::string stale = store_->root() + "/snapshots/" + std::to_string(a.id + 1);
  fs::create_directories(stale + "/fs");
  { std::ofstream f(stale + "/fs/old"); }
  auto b = prepare("b");
  EXPECT_EQ(b.id, a.id + 1);
  EXPECT_FALSE(fs::exists(fs_path(store_->root(), b.id) + "/old"));
  ASSERT_TRUE(store_->cleanup());
  EXPECT_EQ(dirs(), (std::vector<std::string>{std::to_string(a.id), std::to_string(b.id)}));
}

TEST_F(StoreTest, ConcurrentPrepareOfOneKeyHasOneWinner) {
  constexpr int kThreads = 8;
  std::atomic<int> wins{0};
  std::atomic<int> exists{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      auto s = store_->create(Kind::kActive, "same", "", {});
      if (s) {
        ++wins;
      } else if (s.error().code == EEXIST) {
        ++exists;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(exists.load(), kThreads - 1);
  EXPECT_EQ(dirs().size(), 1u);
}

// Writers and readers at once on their two connections: every call succeeds (no
// SQLITE_BUSY, no deadlock) and the end state is what the writers did.
TEST_F(StoreTest, ConcurrentWritersAndReaders) {
  prepare("base");
  commit("c", "base");
  constexpr int kWriters = 4;
  constexpr int kRounds = 15;
  std::atomic<int> failures{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kRounds; ++i) {
        std::string k = "w" + std::to_string(w) + "-" + std::to_string(i);
        bool ok = store_->create(Kind::kActive, k, "c", {{"w", std::to_string(w)}}).has_value() &&
                  store_->commit(k + "-c", k, {{"w", std::to_string(w)}}).has_value();
        if (ok && i % 2 == 0) {
          ok = store_->remove(k + "-c").has_value();
        }
        if (!ok) {
          ++failures;
        }
      }
    });
  }
  std::atomic<int> reads{0};
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      auto f = Filter::parse("labels.w==1");
      do {                          // at least once, however late the thread starts
        auto g = store_->get("c");  // committed: FailedPrecondition, read consistently
        if (!store_->list(*f) || !store_->stat("c") || !store_->usage("c") || g.has_value() ||
            g.error().code != kErrFailedPrecondition) {
          ++failures;
        }
        ++reads;
      } while (!done.load());
    });
  }
  for (int w = 0; w < kWriters; ++w) {
    threads[w].join();
  }
  done = true;
  for (size_t t = kWriters; t < threads.size(); ++t) {
    threads[t].join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(reads.load(), 0);
  // Each writer keeps its odd rounds: 7 committed snapshots, plus base's "c".
  EXPECT_EQ(names({"kind==committed"}).size(), static_cast<size_t>(kWriters * 7 + 1));
  EXPECT_EQ(names({"labels.w==1"}).size(), 7u);
  ASSERT_TRUE(store_->cleanup());
  EXPECT_EQ(dirs().size(), static_cast<size_t>(kWriters * 7 + 1));
}

// Removes from many threads at once (committed in batches, one transaction each): every
// one answers as it would alone: removed, NotFound for a key removed twice, refused for a
// parent whose child is still there; the rows and directories of the removed go.
TEST_F(StoreTest, ConcurrentRemovesEachAnswerAsAlone) {
  constexpr int kChains = 24;
  std::vector<int64_t> ids;
  for (int c = 0; c < kChains; ++c) {
    const std::string n = std::to_string(c);
    ids.push_back(prepare("p" + n).id);
    commit("parent" + n, "p" + n);
    ids.push_back(prepare("child" + n, "parent" + n).id);
  }
  std::atomic<int> removed{0};
  std::atomic<int> not_found{0};
  std::atomic<int> refused{0};
  std::atomic<int> other{0};
  auto tally = [&](const base::Status& st) {
    if (st) {
      ++removed;
    } else if (st.error().code == ENOENT) {
      ++not_found;
    } else if (st.error().code == kErrFailedPrecondition) {
      ++refused;
    } else {
      ++other;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int c = t; c < kChains; c += 8) {
        const std::string n = std::to_string(c);
        if (c % 3 == 0) {
          tally(store_->remove("parent" + n));  // its child is there: refused
        }
        tally(store_->remove("child" + n));
        tally(store_->remove("child" + n));  // again: NotFound
        tally(store_->remove("parent" + n));
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  EXPECT_EQ(removed.load(), 2 * kChains);
  EXPECT_EQ(not_found.load(), kChains);
  EXPECT_EQ(refused.load(), kChains / 3);
  EXPECT_EQ(other.load(), 0);
  EXPECT_TRUE(names({}).empty());
  store_->drain_removals();
  EXPECT_TRUE(dirs().empty());
  // Ids are never reused.
  EXPECT_GT(prepare("after").id, *std::max_element(ids.begin(), ids.end()));
}

// Writers commit without SQLite's fsync and share the store's own fdatasync of the WAL
// (group commit): every call that returned is there after a reopen, with its directory,
// and the removed are gone.
TEST_F(StoreTest, GroupCommittedWritesSurviveReopen) {
  prepare("base");
  commit("c", "base");
  constexpr int kThreads = 8;
  constexpr int kEach = 10;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const std::string k = "t" + std::to_string(t) + "-" + std::to_string(i);
        bool ok = store_->create(Kind::kActive, k, "c", {}).has_value();
        ok = ok && store_->commit(k + "-c", k, {{"t", std::to_string(t)}}).has_value();
        if (ok && i % 2 == 1) {
          ok = store_->remove(k + "-c").has_value();
        }
        if (!ok) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  ASSERT_EQ(failures.load(), 0);
  store_->drain_removals();
  reopen();
  EXPECT_EQ(names({"kind==committed"}).size(), static_cast<size_t>(kThreads * kEach / 2 + 1));
  EXPECT_EQ(names({"labels.t==3"}).size(), static_cast<size_t>(kEach / 2));
  auto cleaned = store_->cleanup();
  ASSERT_TRUE(cleaned);
  EXPECT_TRUE(cleaned->empty());
  EXPECT_EQ(dirs().size(), static_cast<size_t>(kThreads * kEach / 2 + 1));
}

// Directories are not fsynced: an OS crash may keep a synced row and lose the directory
// its Prepare made. At open an active snapshot's and a view's are made again, empty.
TEST_F(StoreTest, OpenMakesLostDirectoriesOfActiveSnapshotsAndViewsAgain) {
  prepare("base");
  commit("c", "base");
  const int64_t a = prepare("a", "c").id;
  auto v = store_->create(Kind::kView, "v", "c", {});
  ASSERT_TRUE(v);
  const int64_t b = prepare("b").id;
  store_.reset();
  const std::string snaps = dir_.sub("root") + "/snapshots/";
  fs::remove_all(snaps + std::to_string(a));
  fs::remove_all(snaps + std::to_string(v->id));
  fs::remove_all(work_path(dir_.sub("root"), b));
  reopen();
  for (int64_t id : {a, v->id, b}) {
    EXPECT_TRUE(fs::is_directory(fs_path(store_->root(), id))) << id;
    EXPECT_TRUE(fs::is_empty(fs_path(store_->root(), id))) << id;
  }
  EXPECT_TRUE(fs::is_directory(work_path(store_->root(), a)));
  EXPECT_TRUE(fs::is_directory(work_path(store_->root(), b)));
  EXPECT_FALSE(fs::exists(work_path(store_->root(), v->id)));
  struct stat st {};
  ASSERT_EQ(::stat(fs_path(store_->root(), a).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755U);
  auto cleaned = store_->cleanup();
  ASSERT_TRUE(cleaned);
  EXPECT_TRUE(cleaned->empty());
  EXPECT_TRUE(store_->commit("a-c", "a", {}));
}

// The WAL replaced behind the store's back: the descriptor make_durable() syncs is no
// longer the file a restart reads, so the call that synced answers EIO and the store
// refuses every change after it (Cleanup too), as after a failed fdatasync; the refusals
// say that the WAL was replaced, not that an fdatasync failed. With the original WAL back
// in place a new store has everything the answered calls committed.
TEST_F(StoreTest, ReplacedWalFailsTheSyncAndTheStoreRefusesAfterIt) {
  prepare("a");
  commit("A", "a");
  prepare("x");
  const std::string wal = store_->root() + "/metadata.db-wal";
  const std::string kept = wal + ".kept";
  ASSERT_EQ(::rename(wal.c_str(), kept.c_str()), 0);
  std::ofstream(wal).put('\0');
  auto b = store_->create(Kind::kActive, "b", "A", {});
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, EIO);
  EXPECT_NE(b.error().message.find("no longer the file the store synced"), std::string::npos)
      << b.error().message;
  // The refusals say that the WAL was replaced, not that an fdatasync failed.
  const auto says_replaced = [&](const base::Error& e) {
    return e.code == EIO &&
           e.message.find(wal + " was removed or replaced behind the store's back earlier") !=
               std::string::npos &&
           e.message.find("fdatasync") == std::string::npos &&
           e.message.find("restart the snapshotter") != std::string::npos;
  };
  auto c = store_->create(Kind::kActive, "c", "A", {});
  ASSERT_FALSE(c);
  EXPECT_TRUE(says_replaced(c.error())) << c.error().message;
  auto rm = store_->remove("x");
  ASSERT_FALSE(rm);
  EXPECT_TRUE(says_replaced(rm.error())) << rm.error().message;
  auto cleaned = store_->cleanup();
  ASSERT_FALSE(cleaned);
  EXPECT_TRUE(says_replaced(cleaned.error())) << cleaned.error().message;
  EXPECT_NE(cleaned.error().message.find("not removing directories"), std::string::npos);

  store_.reset();
  ASSERT_EQ(::rename(kept.c_str(), wal.c_str()), 0);
  reopen();
  auto a = store_->stat("A");
  ASSERT_TRUE(a) << a.error().to_string();
  EXPECT_EQ(a->kind, Kind::kCommitted);
  EXPECT_TRUE(store_->cleanup());
  prepare("d", "A");
  commit("D", "d");
}

TEST(StoreOpen, RejectsBadRoots) {
  EXPECT_EQ(Store::open("relative/root").error().code, EINVAL);
  EXPECT_EQ(Store::open("/tmp/a:b").error().code, EINVAL);
  EXPECT_EQ(Store::open("/tmp/a,b").error().code, EINVAL);
}

TEST(DiskUsage, MissingDirectoryIsNotFound) {
  auto u = disk_usage("/nonexistent/cfn-du");
  ASSERT_FALSE(u);
  EXPECT_EQ(u.error().code, ENOENT);
}

}  // namespace
}  // namespace snapshotter
