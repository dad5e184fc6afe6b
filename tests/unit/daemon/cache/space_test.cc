// SPDX-License-Identifier: Apache-2.0
#include "daemon/cache/space.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "base/file.h"
#include "base/unique_fd.h"
#include "tests/unit/temp_dir.h"

namespace cfnd::cache {
namespace {

using cfntest::TempDir;

SpaceEntry entry(std::string id, std::uint64_t bytes, std::int64_t last_use, bool in_use = false) {
  SpaceEntry e;
  e.id = std::move(id);
  e.bytes = bytes;
  e.last_use_ns = last_use;
  e.in_use = in_use;
  return e;
}

std::vector<std::string> ids(const std::vector<SpaceEntry>& es,
                             const std::vector<std::size_t>& is) {
  std::vector<std::string> out;
  for (std::size_t i : is) {
    out.push_back(es[i].id);
  }
  return out;
}

TEST(SpaceWatermarks, BytesAndPercent) {
  SpaceOptions o;
  EXPECT_EQ(watermarks(o, 1000).limit, 0U);  // no limit
  EXPECT_EQ(watermarks(o, 1000).high, 0U);
  o.limit = 1000;
  auto w = watermarks(o, 1ULL << 40);
  EXPECT_EQ(w.limit, 1000U);
  EXPECT_EQ(w.high, 900U);
  EXPECT_EQ(w.low, 700U);
  o.limit = 0;
  o.limit_percent = 50;
  o.high_watermark = 80;
  o.low_watermark = 60;
  w = watermarks(o, 10000);
  EXPECT_EQ(w.limit, 5000U);
  EXPECT_EQ(w.high, 4000U);
  EXPECT_EQ(w.low, 3000U);
  // A low watermark above the high one is clipped to it.
  o.low_watermark = 95;
  EXPECT_EQ(watermarks(o, 10000).low, 4000U);
}

TEST(SpaceParseLimit, Forms) {
  EXPECT_EQ(parse_limit("1073741824")->bytes, 1073741824U);
  EXPECT_EQ(parse_limit("512M")->bytes, 512ULL << 20);
  EXPECT_EQ(parse_limit("10g")->bytes, 10ULL << 30);
  EXPECT_EQ(parse_limit("2GiB")->bytes, 2ULL << 30);
  EXPECT_EQ(parse_limit("3KB")->bytes, 3ULL << 10);
  EXPECT_EQ(parse_limit("0")->bytes, 0U);
  EXPECT_EQ(parse_limit("25%")->percent, 25U);
  EXPECT_EQ(parse_limit("25%")->bytes, 0U);
  for (const char* bad : {"", "%", "0%", "101%", "-1", "1.5G", "12X", "G", "1 G",
                          "99999999999999999999", "20000000000000P", "1Gx"}) {
    auto r = parse_limit(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code, EINVAL);
    }
  }
}

TEST(SpacePickVictims, LeastRecentlyUsedFirstUntilTheTarget) {
  std::vector<SpaceEntry> es = {entry("c", 100, 30), entry("a", 100, 10), entry("d", 100, 40),
                                entry("b", 100, 20)};
  EXPECT_EQ(ids(es, pick_victims(es, 400, 400)), std::vector<std::string>{});
  EXPECT_EQ(ids(es, pick_victims(es, 400, 399)), std::vector<std::string>({"a"}));
  EXPECT_EQ(ids(es, pick_victims(es, 400, 200)), std::vector<std::string>({"a", "b"}));
  EXPECT_EQ(ids(es, pick_victims(es, 400, 150)), std::vector<std::string>({"a", "b", "c"}));
  EXPECT_EQ(ids(es, pick_victims(es, 400, 0)), std::vector<std::string>({"a", "b", "c", "d"}));
}

TEST(SpacePickVictims, InUseIsNeverPicked) {
  std::vector<SpaceEntry> es = {entry("old", 500, 1, /*in_use=*/true), entry("mid", 100, 2),
                                entry("new", 100, 3)};
  // Only the unused are enough for nothing: both are picked, the old one never.
  EXPECT_EQ(ids(es, pick_victims(es, 700, 100)), std::vector<std::string>({"mid", "new"}));
  // Equal last use: by id, so the order is stable.
  std::vector<SpaceEntry> tie = {entry("y", 10, 5), entry("x", 10, 5)};
  EXPECT_EQ(ids(tie, pick_victims(tie, 20, 0)), std::vector<std::string>({"x", "y"}));
}

TEST(SpaceScan, CountsAllocatedBlocksNotApparentSize) {
  TempDir d;
  const std::string dir = d.path();
  {
    // 64 MiB apparent, 8 KiB written: a sparse blob.
    auto fd = base::UniqueFd::open(dir + "/abc.blob", O_RDWR | O_CREAT, 0600);
    ASSERT_TRUE(fd);
    ASSERT_EQ(::ftruncate(fd->get(), 64 << 20), 0);
    std::vector<std::byte> block(8192, std::byte{1});
    ASSERT_TRUE(base::pwrite_full(fd->get(), block, 1 << 20));
  }
  std::vector<std::byte> meta(1000, std::byte{2});
  ASSERT_TRUE(base::write_file_atomic(dir + "/abc.meta", meta, 0600));
  ASSERT_TRUE(base::write_file_atomic(dir + "/lonely.meta", meta, 0600));
  std::filesystem::create_directories(dir + "/bootstraps");
  ASSERT_TRUE(base::write_file_atomic(dir + "/bootstraps/m1.boot", meta, 0600));
  // Not ours: ignored, never counted (and so never removed).
  ASSERT_TRUE(base::write_file_atomic(dir + "/daemon.log", meta, 0600));
  ASSERT_TRUE(base::write_file_atomic(dir + "/x.blob.tmp.AbC123", meta, 0600));
  TempDir outside;
  ASSERT_TRUE(base::write_file_atomic(outside.path() + "/victim.blob", meta, 0600));
  ASSERT_EQ(::symlink((outside.path() + "/victim.blob").c_str(), (dir + "/link.blob").c_str()), 0);
  std::filesystem::create_directories(dir + "/sub.blob");

  auto es = scan_cache_dir(dir);
  ASSERT_EQ(es.size(), 3U);
  const SpaceEntry& abc = es.at("abc");
  EXPECT_EQ(abc.kind, EntryKind::kBlob);
  EXPECT_FALSE(abc.incomplete);
  EXPECT_EQ(abc.files, std::vector<std::string>({dir + "/abc.blob", dir + "/abc.meta"}));
  EXPECT_EQ(abc.bytes, allocated_bytes(dir + "/abc.blob") + allocated_bytes(dir + "/abc.meta"));
  // What du says: the written blocks (file systems may allocate a little more), far
  // from the 64 MiB apparent size.
  EXPECT_GE(allocated_bytes(dir + "/abc.blob"), 8192U);
  EXPECT_LT(allocated_bytes(dir + "/abc.blob"), 1U << 20);
  EXPECT_GT(abc.last_use_ns, 0);
  EXPECT_TRUE(es.at("lonely").incomplete);
  const SpaceEntry& boot = es.at("bootstraps/m1.boot");
  EXPECT_EQ(boot.kind, EntryKind::kBootstrap);
  EXPECT_EQ(boot.files, std::vector<std::string>({dir + "/bootstraps/m1.boot"}));
  EXPECT_EQ(scan_bootstraps(dir).size(), 1U);
  EXPECT_EQ(allocated_bytes(dir + "/link.blob"), 0U);  // a symlink is not followed
  EXPECT_EQ(allocated_bytes(dir + "/missing"), 0U);
  EXPECT_TRUE(scan_cache_dir(dir + "/none").empty());
}

// cachefiles' names: I<volume key>/@<fan>/D<cookie key>; a blob id cookie joins its
// blob's entry, any other cookie (an fsid: the bootstrap's copy) is its own entry.
TEST(SpaceFscache, NameMapping) {
  EXPECT_EQ(fscache_cookie("Dabc"), "abc");
  EXPECT_EQ(fscache_cookie("D"), "");
  EXPECT_EQ(fscache_cookie("Sabc"), "");  // a binary key's form: not one of ours
  EXPECT_EQ(fscache_cookie(".Dabc"), "");
  EXPECT_EQ(fscache_volume("Ierofs,dom"), "erofs,dom");
  EXPECT_EQ(fscache_volume("I"), "");
  EXPECT_EQ(fscache_volume("graveyard"), "");
  EXPECT_TRUE(is_fscache_fan("@3f"));
  EXPECT_TRUE(is_fscache_fan("@00"));
  EXPECT_FALSE(is_fscache_fan("@3F"));
  EXPECT_FALSE(is_fscache_fan("@3"));
  EXPECT_FALSE(is_fscache_fan("@3fa"));
  EXPECT_FALSE(is_fscache_fan("x3f"));
  const std::string id(64, 'e');
  EXPECT_TRUE(is_blob_id(id));
  EXPECT_FALSE(is_blob_id(std::string(63, 'e')));
  EXPECT_FALSE(is_blob_id(std::string(64, 'E')));
  EXPECT_FALSE(is_blob_id(std::string(64, 'g')));
  EXPECT_EQ(fscache_entry_id({"Ierofs,dom", "@01", "D" + id}), id);
  EXPECT_EQ(fscache_entry_id({"Ierofs,f1", "@c4", "Df1"}), "fscache/erofs,f1/f1");
  EXPECT_EQ(fscache_entry_id({"Ierofs,f1", "@c4", "Sf1"}), "");
  EXPECT_EQ(fscache_entry_id({"Xerofs,f1", "@c4", "Df1"}), "");
  EXPECT_EQ(fscache_entry_id({"Ierofs,f1", "c4", "Df1"}), "");
}

// The scan walks cache/volume/fan, counts allocated blocks, takes only the kernel's
// names, and follows no symlink; the graveyard and loose files are not objects.
TEST(SpaceFscache, ScanCountsTheKernelsObjects) {
  TempDir t;
  const std::string fs = t.path() + "/fscache";
  const std::string id(64, 'a');
  const std::vector<std::byte> data(8192, std::byte{1});
  auto put = [&](const std::string& rel) {
    const auto p = std::filesystem::path(fs) / rel;
    std::filesystem::create_directories(p.parent_path());
    ASSERT_TRUE(base::write_file_atomic(p.string(), data, 0600));
  };
  put("cache/Ierofs,d/@01/D" + id);
  put("cache/Ierofs,f2/@9c/D" + id);
  put("cache/Ierofs,d/@02/Dfsid1");
  put("cache/Ierofs,d/@02/Sbinary");   // not a printable key: not ours
  put("cache/Ierofs,d/loose");         // not in a fan
  put("cache/Ierofs,d/@zz/Dfsid9");    // not a fan
  put("cache/notavolume/@01/Dfsid8");  // not a volume
  put("graveyard/Dfsid7");             // the graveyard is not the cache
  TempDir outside;
  ASSERT_TRUE(base::write_file_atomic(outside.path() + "/secret", data, 0600));
  ASSERT_EQ(
      ::symlink((outside.path() + "/secret").c_str(), (fs + "/cache/Ierofs,d/@02/Dlinked").c_str()),
      0);
  ASSERT_EQ(::symlink(outside.path().c_str(), (fs + "/cache/Ierofs,d/@03").c_str()), 0);

  auto es = scan_fscache(fs);
  ASSERT_EQ(es.size(), 2U);
  const SpaceEntry& blob = es.at(id);
  EXPECT_EQ(blob.kind, EntryKind::kBlob);
  EXPECT_TRUE(blob.files.empty());  // the daemon's files are scan_cache_dir's
  ASSERT_EQ(blob.kernel.size(), 2U);
  EXPECT_EQ(blob.kernel[0].volume_dir, "Ierofs,d");
  EXPECT_EQ(blob.kernel[0].fan, "@01");
  EXPECT_EQ(blob.kernel[0].name, "D" + id);
  EXPECT_EQ(blob.kernel[1].volume_dir, "Ierofs,f2");
  const std::uint64_t one = allocated_bytes(fs + "/cache/Ierofs,d/@01/D" + id);
  EXPECT_GE(one, 8192U);
  EXPECT_EQ(blob.bytes, 2 * one);
  EXPECT_EQ(blob.kernel_bytes, 2 * one);
  EXPECT_GT(blob.last_use_ns, 0);
  const SpaceEntry& boot = es.at("fscache/erofs,d/fsid1");
  EXPECT_EQ(boot.kind, EntryKind::kFscache);
  EXPECT_EQ(boot.kernel_bytes, one);
  EXPECT_TRUE(scan_fscache(t.path() + "/none").empty());
}

// RangeSet: overlapping, adjacent and nested writes are counted once.
TEST(SpaceRangeSet, MergesAndCountsEachByteOnce) {
  RangeSet r;
  EXPECT_EQ(r.bytes(), 0U);
  r.add(0, 0);
  EXPECT_EQ(r.ranges(), 0U);
  r.add(4096, 4096);
  r.add(4096, 4096);  // the same again
  EXPECT_EQ(r.bytes(), 4096U);
  r.add(12288, 4096);  // a gap between
  EXPECT_EQ(r.bytes(), 8192U);
  EXPECT_EQ(r.ranges(), 2U);
  r.add(8192, 4096);  // fills the gap: adjacent to both
  EXPECT_EQ(r.bytes(), 12288U);
  EXPECT_EQ(r.ranges(), 1U);
  r.add(5000, 100);  // nested
  EXPECT_EQ(r.bytes(), 12288U);
  r.add(0, 20480);  // covers all and more on both sides
  EXPECT_EQ(r.bytes(), 20480U);
  EXPECT_EQ(r.ranges(), 1U);
  r.add(65536, 4096);
  r.add(61440, 8192);  // overlaps the start of the last one
  EXPECT_EQ(r.bytes(), 20480U + 8192U);
  EXPECT_EQ(r.ranges(), 2U);
  r.add(UINT64_MAX - 10, 100);  // clipped at the end of the offset space
  EXPECT_EQ(r.bytes(), 20480U + 8192U + 10U);
}

// Unnamed objects (the kernel's tmpfiles) are counted at what was written into them;
// an object the scan saw by name is not counted twice.
TEST(SpaceFscache, UnnamedObjectsAreCountedOnce) {
  const std::string id(64, 'b');
  const std::string other(64, 'c');
  std::map<std::string, SpaceEntry> scanned;
  SpaceEntry& named = scanned[id];
  named.id = id;
  named.kind = EntryKind::kBlob;
  named.bytes = named.kernel_bytes = 8192;
  named.kernel.push_back({"Ierofs,d", "@01", "D" + id, 8192, 1});
  std::vector<OpenKernelObject> open = {
      {"erofs,d", id, 4096},            // named in this volume: counted by the scan
      {"erofs,f2", id, 12288},          // the same blob in another volume, unnamed
      {"erofs,d", other, 4096},         // a blob with no entry yet
      {"erofs,fsid1", "fsid1", 20480},  // a bootstrap's object
      {"erofs,d", "x/y", 4096},         // no file name has a '/': ignored
      {"erofs,d", "", 4096},            // no cookie: ignored
      {"erofs,d", "fsid2", 0},          // nothing written: nothing to count
  };
  const std::uint64_t added = add_unnamed_objects(scanned, open);
  EXPECT_EQ(scanned.at(id).kernel_bytes, 8192U + 12288U);
  EXPECT_EQ(scanned.at(id).unnamed_bytes, 12288U);
  EXPECT_EQ(scanned.at(id).bytes, 8192U + 12288U);
  EXPECT_EQ(scanned.at(id).kernel.size(), 1U);  // nothing to cull by name
  EXPECT_EQ(scanned.at(other).kind, EntryKind::kBlob);
  EXPECT_EQ(scanned.at(other).unnamed_bytes, 4096U);
  EXPECT_EQ(scanned.at("fscache/erofs,fsid1/fsid1").kind, EntryKind::kFscache);
  EXPECT_EQ(scanned.at("fscache/erofs,fsid1/fsid1").bytes, 20480U);
  EXPECT_FALSE(scanned.contains("fscache/erofs,d/fsid2"));
  EXPECT_FALSE(scanned.contains("fscache/erofs,d/x/y"));
  EXPECT_EQ(scanned.size(), 3U);
  EXPECT_EQ(added, 12288U + 4096U + 20480U);
}

// prune_fscache_dirs: empty fans go, then empty volumes; a fan with an object, the
// graveyard, names not the kernel's and a symlinked volume stay.
TEST(SpaceFscache, PruneRemovesOnlyEmptyKernelDirectories) {
  TempDir t;
  const std::string fs = t.path() + "/fscache";
  const auto mk = [&](const std::string& rel) {
    std::filesystem::create_directories(std::filesystem::path(fs) / rel);
  };
  for (const char* fan : {"@00", "@01", "@ff"}) {
    mk(std::string("cache/Ierofs,empty/") + fan);
    mk(std::string("cache/Ierofs,held/") + fan);
  }
  const std::vector<std::byte> data(10, std::byte{1});
  ASSERT_TRUE(base::write_file_atomic(fs + "/cache/Ierofs,held/@01/Dfsid1", data, 0600));
  mk("cache/Ierofs,held/notafan");  // not the kernel's: stays, so does its volume
  mk("cache/Ierofs,odd/@02");
  mk("cache/Ierofs,odd/@02/sub");  // a fan with a directory in it: not empty
  mk("cache/notavolume/@00");
  mk("graveyard/Ierofs,x/@00");
  TempDir outside;
  std::filesystem::create_directories(outside.path() + "/@00");
  ASSERT_EQ(::symlink(outside.path().c_str(), (fs + "/cache/Ierofs,link").c_str()), 0);

  const PruneResult r = prune_fscache_dirs(fs);
  namespace sfs = std::filesystem;
  EXPECT_FALSE(sfs::exists(fs + "/cache/Ierofs,empty"));
  EXPECT_TRUE(sfs::exists(fs + "/cache/Ierofs,held/@01/Dfsid1"));
  EXPECT_FALSE(sfs::exists(fs + "/cache/Ierofs,held/@00"));
  EXPECT_FALSE(sfs::exists(fs + "/cache/Ierofs,held/@ff"));
  EXPECT_TRUE(sfs::exists(fs + "/cache/Ierofs,held/notafan"));
  EXPECT_TRUE(sfs::exists(fs + "/cache/Ierofs,odd/@02/sub"));
  EXPECT_TRUE(sfs::exists(fs + "/cache/notavolume/@00"));
  EXPECT_TRUE(sfs::exists(fs + "/graveyard/Ierofs,x/@00"));
  EXPECT_TRUE(sfs::exists(outside.path() + "/@00"));  // through the symlink: untouched
  EXPECT_TRUE(sfs::is_symlink(fs + "/cache/Ierofs,link"));
  EXPECT_EQ(r.removed, 3U + 1U + 2U);  // 3 fans and their volume, 2 fans of "held"
  EXPECT_EQ(r.busy, 0U);
  EXPECT_EQ(prune_fscache_dirs(t.path() + "/none").removed, 0U);
}

// evict_lru: LRU first; an entry that answers EBUSY (the kernel holds its object) is
// skipped and the next one tried until the target is met; a later pass takes it.
TEST(SpaceEvictLru, BusyIsSkippedAndRetriedLater) {
  std::vector<SpaceEntry> es = {entry("old", 100, 1), entry("mid", 100, 2), entry("new", 100, 3),
                                entry("held", 100, 0, /*in_use=*/true)};
  std::set<std::string> busy = {"old"};
  std::vector<std::string> tried;
  auto try_evict = [&](const SpaceEntry& e) {
    tried.push_back(e.id);
    return busy.contains(e.id) ? EBUSY : 0;
  };
  auto r = evict_lru(es, 400, 250, try_evict);
  EXPECT_EQ(tried, std::vector<std::string>({"old", "mid", "new"}));  // never "held"
  EXPECT_EQ(ids(es, r.evicted), std::vector<std::string>({"mid", "new"}));
  EXPECT_EQ(ids(es, r.busy), std::vector<std::string>({"old"}));
  EXPECT_TRUE(r.failed.empty());
  EXPECT_EQ(r.total, 200U);  // over the target: every unused entry left was busy

  // Later: no longer busy; the others went already.
  busy.clear();
  tried.clear();
  std::vector<SpaceEntry> later = {entry("old", 100, 1), entry("held", 100, 0, true)};
  r = evict_lru(later, 200, 150, try_evict);
  EXPECT_EQ(ids(later, r.evicted), std::vector<std::string>({"old"}));
  EXPECT_EQ(r.total, 100U);

  // Stops as soon as the target is met; other errors are kept apart from busy.
  tried.clear();
  auto fail_first = [&](const SpaceEntry& e) {
    tried.push_back(e.id);
    return e.id == "old" ? EACCES : 0;
  };
  r = evict_lru(es, 400, 300, fail_first);
  EXPECT_EQ(tried, std::vector<std::string>({"old", "mid"}));
  EXPECT_EQ(ids(es, r.failed), std::vector<std::string>({"old"}));
  EXPECT_EQ(ids(es, r.evicted), std::vector<std::string>({"mid"}));
  // Nothing to do at or under the target.
  tried.clear();
  r = evict_lru(es, 250, 250, try_evict);
  EXPECT_TRUE(tried.empty());
}

}  // namespace
}  // namespace cfnd::cache
