// SPDX-License-Identifier: Apache-2.0
#include "daemon/failover_state.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "tests/unit/temp_dir.h"

namespace cfnd {
namespace {

std::vector<PersistedImage> sample() {
  PersistedImage local;
  local.mountpoint = "/mnt/a b";  // spaces survive
  local.fsid = "fsid-a";
  local.bootstrap = "/images/a/image.boot";
  local.blob_dir = "/images/a/blobs";
  PersistedImage remote;
  remote.mountpoint = "/mnt/b";
  remote.fsid = "0123456789abcdef0123456789abcdef";
  remote.domain_id = "shared";
  remote.bootstrap = "/var/cache/cachefilesd-nydus/bootstraps/x.boot";
  remote.reference = "127.0.0.1:5000/demo:latest";
  remote.manifest_digest = "sha256:" + std::string(64, 'e');
  remote.registry.plain_http = true;
  remote.registry.retries = 7;
  remote.registry.mirrors["docker.io"] = {"http://127.0.0.1:5001"};
  return {local, remote};
}

TEST(FailoverState, RoundTrip) {
  const auto images = sample();
  const std::string text = serialize_state(images).value();
  auto back = parse_state(text);
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(*back, images);
  EXPECT_EQ(serialize_state(*back).value(), text);  // canonical
  auto empty = parse_state(serialize_state({}).value());
  ASSERT_TRUE(empty) << empty.error().to_string();
  EXPECT_TRUE(empty->empty());
}

// The text is what nlohmann gives for the whole state object (the format other daemons
// and older files have), built from per-image entries.
TEST(FailoverState, TextIsTheWholeObjectsDump) {
  const std::string text = serialize_state(sample()).value();
  EXPECT_EQ(text, nlohmann::json::parse(text).dump() + "\n");
  EXPECT_EQ(serialize_state({}).value(), "{\"images\":[],\"version\":1}\n");
}

// A state file rewritten after each bind and unbind: the text always equals a fresh
// serialize_state, each image serialized once while it stays the same, a changed one
// again, one gone forgotten.
TEST(FailoverState, StateTextReusesUnchangedEntries) {
  StateText cache;
  std::vector<PersistedImage> images;
  for (int i = 0; i < 50; ++i) {
    auto im = sample()[i % 2];
    im.mountpoint = "/mnt/" + std::to_string(i);
    images.push_back(im);
  }
  EXPECT_EQ(cache.text(images).value(), serialize_state(images).value());
  EXPECT_EQ(cache.reused(), 0U);
  // An unbind: one image fewer, the others unchanged.
  images.erase(images.begin() + 10);
  EXPECT_EQ(cache.text(images).value(), serialize_state(images).value());
  EXPECT_EQ(cache.reused(), 49U);
  // A watch set once mounted, and a changed registry option: both serialized again.
  images[3].watch = PersistedWatch{.wd = 7, .dev = 8, .ino = 9, .lingering = false};
  images[4].registry.retries = 1;
  EXPECT_EQ(cache.text(images).value(), serialize_state(images).value());
  EXPECT_EQ(cache.reused(), 49U + 47U);
  // Two records of one mount point (a lingering fanotify image and a new mount there),
  // in either order.
  auto lingering = images[5];
  lingering.watch = PersistedWatch{.wd = 3, .dev = 1, .ino = 2, .lingering = true};
  images.push_back(lingering);
  EXPECT_EQ(cache.text(images).value(), serialize_state(images).value());
  std::swap(images[5], images.back());
  EXPECT_EQ(cache.text(images).value(), serialize_state(images).value());
  // Every image gone, then one back: nothing stale comes back.
  EXPECT_EQ(cache.text({}).value(), serialize_state({}).value());
  EXPECT_EQ(cache.text({images[0]}).value(), serialize_state({images[0]}).value());
}

TEST(FailoverState, StateTextNamesANonUtf8Entry) {
  StateText cache;
  auto images = sample();
  images[1].registry.docker_config = "/root/caf\xe9.json";
  auto text = cache.text(images);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().code, EINVAL);
  EXPECT_NE(text.error().message.find("images[1].registry.docker_config is not valid UTF-8"),
            std::string::npos)
      << text.error().to_string();
  images[1].registry.docker_config.clear();
  EXPECT_EQ(cache.text(images).value(), serialize_state(images).value());
}

TEST(FailoverState, RejectsCorruptInput) {
  const std::string good = serialize_state(sample()).value();
  const char* bad[] = {
      "",
      "{",
      "[]",
      "null",
      R"({"images":[]})",                // no version
      R"({"version":2,"images":[]})",    // a newer daemon's file
      R"({"version":"1","images":[]})",  // mistyped version
      R"({"version":1})",                // no images
      R"({"version":1,"images":{}})",    // images not an array
      R"({"version":1,"images":[5]})",   // an image that is no object
      R"({"version":1,"images":[{"fsid":"f","bootstrap":"/b","blob_dir":"/d"}]})",  // no mp
      R"({"version":1,"images":[{"mountpoint":"","fsid":"f","bootstrap":"/b","blob_dir":"/d"}]})",
      R"({"version":1,"images":[{"mountpoint":"/m","fsid":1,"bootstrap":"/b","blob_dir":"/d"}]})",
      R"({"version":1,"images":[{"mountpoint":"/m","fsid":"f","bootstrap":"/b"}]})",  // no source
      R"({"version":1,"images":[{"mountpoint":"/m","fsid":"f","bootstrap":"/b","blob_dir":"/d",)"
      R"("reference":"r","manifest_digest":"sha256:x","registry":{}}]})",  // both sources
      R"({"version":1,"images":[{"mountpoint":"/m","fsid":"f","bootstrap":"/b",)"
      R"("reference":"r","manifest_digest":"d"}]})",  // no registry options
      R"({"version":1,"images":[{"mountpoint":"/m","fsid":"f","bootstrap":"/b",)"
      R"("reference":"r","manifest_digest":"d","registry":{"retries":"x"}}]})",
      R"({"version":1,"images":[{"mountpoint":"/m","fsid":"f","bootstrap":"/b","blob_dir":"/d",)"
      R"("extra":1}]})",  // unknown key
      R"({"version":1,"images":[{"mountpoint":"/m","fsid":"f","bootstrap":"/b","blob_dir":"/d"},)"
      R"({"mountpoint":"/m","fsid":"g","bootstrap":"/b","blob_dir":"/d"}]})",  // twice
      R"({"version":1,"images":[{"mountpoint":"/m\u0000x","fsid":"f","bootstrap":"/b",)"
      R"("blob_dir":"/d"}]})",  // NUL
  };
  for (const char* b : bad) {
    auto r = parse_state(b);
    ASSERT_FALSE(r) << b;
    EXPECT_EQ(r.error().code, EINVAL) << b;
  }
  // Every truncation of a good file is refused, never half-read.
  for (std::size_t n = 0; n + 2 < good.size(); ++n) {
    EXPECT_FALSE(parse_state(good.substr(0, n))) << n;
  }
}

// FUSE's state: no fsid, and each image carries its session (fd name, device, INIT).
TEST(FailoverState, FuseSessions) {
  auto images = sample();
  for (auto& im : images) {
    im.fsid.clear();
    im.domain_id.clear();
  }
  images[0].fuse = PersistedFuse{"fuse-00112233aabbccdd", 0, std::nullopt};  // before INIT
  fusewire::InitParams init;
  init.kernel_minor = 45;
  init.minor = fusewire::kOurMinor;
  init.flags = (1ULL << 35) | 1;  // a flags2 bit survives JSON
  init.max_readahead = 1U << 20;
  init.max_write = 65536;
  init.max_pages = 256;
  init.time_gran = 1;
  images[1].fuse = PersistedFuse{"fuse-1", 47, init};
  const std::string text = serialize_state(images).value();
  auto back = parse_state(text, Frontend::kFuse);
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(*back, images);
  EXPECT_EQ(state_path("/c", Frontend::kFuse), "/c/state/fuse.json");
  EXPECT_EQ(state_path("/c"), "/c/state/cachefiles.json");
  // A FUSE record in cachefiles' state, or a FUSE state without one: refused.
  EXPECT_FALSE(parse_state(text, Frontend::kCachefiles));
  EXPECT_FALSE(parse_state(serialize_state(sample()).value(), Frontend::kFuse));
  const std::string head =
      R"({"version":1,"images":[{"mountpoint":"/m","bootstrap":"/b","blob_dir":"/d","fuse":)";
  const char* bad[] = {
      R"(5)",
      R"({})",                                   // no fd name
      R"({"fd_name":""})",                       // empty
      R"({"fd_name":"a/b"})",                    // not a holder name
      R"({"fd_name":"f","dev":-1})",             // negative
      R"({"fd_name":"f","x":1})",                // unknown key
      R"({"fd_name":"f","init":5})",             // init not an object
      R"({"fd_name":"f","init":{"minor":38}})",  // init incomplete
      R"({"fd_name":"f","init":{"kernel_minor":45,"minor":99,"flags":0,"max_readahead":0,)"
      R"("max_write":0,"max_pages":0,"time_gran":1}})",  // minor above ours
      R"({"fd_name":"f","init":{"kernel_minor":31,"minor":38,"flags":0,"max_readahead":0,)"
      R"("max_write":0,"max_pages":0,"time_gran":1}})",  // minor above the kernel's
  };
  for (const char* b : bad) {
    const std::string t = head + b + "}]}";
    auto r = parse_state(t, Frontend::kFuse);
    ASSERT_FALSE(r) << t;
    EXPECT_EQ(r.error().code, EINVAL) << t;
  }
  auto ok = parse_state(head + R"({"fd_name":"fuse-2","dev":3}}]})", Frontend::kFuse);
  ASSERT_TRUE(ok) << ok.error().to_string();
  EXPECT_EQ((*ok)[0].fuse->dev, 3U);
  EXPECT_FALSE((*ok)[0].fuse->init);
}

// A bind by reference that brought its own bootstrap (the snapshotter's) has no
// manifest digest: its state must still load, or a restarted daemon serves none of it.
TEST(FailoverState, ReferenceWithoutManifestDigest) {
  auto images = sample();
  images[1].manifest_digest.clear();
  for (const Frontend fe : {Frontend::kCachefiles, Frontend::kFanotify}) {
    auto back = parse_state(serialize_state(images).value(), fe);
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_EQ(*back, images);
  }
}

TEST(FailoverState, FanotifyStateNeedsNoFsid) {
  PersistedImage im;
  im.mountpoint = "/mnt/f";
  im.bootstrap = "/images/f/image.boot";
  im.blob_dir = "/images/f/blobs";
  const std::string text = serialize_state({im}).value();
  auto fan = parse_state(text, Frontend::kFanotify);
  ASSERT_TRUE(fan) << fan.error().to_string();
  ASSERT_EQ(fan->size(), 1U);
  EXPECT_EQ((*fan)[0], im);
  // The same text is no cachefiles state: an image there needs its fsid.
  auto cf = parse_state(text);
  ASSERT_FALSE(cf);
  EXPECT_EQ(cf.error().code, EINVAL);
  EXPECT_EQ(state_path("/c", Frontend::kFanotify), "/c/state/fanotify.json");
  EXPECT_EQ(state_path("/c"), "/c/state/cachefiles.json");
}

// fanotify images carry their superblock's watch; lingering ones (unmounted by the
// daemon, file system alive) may share a mount point with each other and with a mount.
TEST(FailoverState, FanotifyWatches) {
  PersistedImage mounted;
  mounted.mountpoint = "/mnt/f";
  mounted.bootstrap = "/images/f/image.boot";
  mounted.blob_dir = "/images/f/blobs";
  mounted.watch = PersistedWatch{3, 0x2c, 1, false};
  PersistedImage old1 = mounted;
  old1.watch = PersistedWatch{1, 0x2a, 1, true};
  PersistedImage old2 = mounted;
  old2.watch = PersistedWatch{2, (1ULL << 40) + 7, 36, true};
  const std::vector<PersistedImage> images{mounted, old1, old2};
  const std::string text = serialize_state(images).value();
  EXPECT_NE(text.find(R"("watch":{"dev":44,"ino":1,"lingering":false,"wd":3})"), std::string::npos)
      << text;
  auto back = parse_state(text, Frontend::kFanotify);
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(*back, images);
  EXPECT_EQ(serialize_state(*back).value(), text);
  // Two mounted images on one mount point are still an error.
  PersistedImage again = mounted;
  again.watch->wd = 4;
  auto twice = parse_state(serialize_state({mounted, again}).value(), Frontend::kFanotify);
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.error().to_string().find("listed twice"), std::string::npos);
  // A watch is fanotify's only.
  auto cf = parse_state(serialize_state({[&] {
                          PersistedImage c = mounted;
                          c.fsid = "f";
                          return c;
                        }()})
                            .value());
  ASSERT_FALSE(cf);
  EXPECT_NE(cf.error().to_string().find("watch"), std::string::npos) << cf.error().to_string();
  const std::string head =
      R"({"version":1,"images":[{"mountpoint":"/m","bootstrap":"/b","blob_dir":"/d","fsid":"",)"
      R"("domain_id":"","watch":)";
  for (const char* w : {R"(5)", R"({})", R"({"wd":0,"dev":1,"ino":1,"lingering":true})",
                        R"({"wd":-1,"dev":1,"ino":1,"lingering":true})",
                        R"({"wd":1,"dev":1,"ino":1})", R"({"wd":1,"dev":1,"ino":1,"lingering":1})",
                        R"({"wd":1,"dev":-1,"ino":1,"lingering":true})",
                        R"({"wd":1,"dev":1,"ino":1,"lingering":true,"x":0})",
                        R"({"wd":2147483648,"dev":1,"ino":1,"lingering":true})"}) {
    auto r = parse_state(head + w + "}]}", Frontend::kFanotify);
    EXPECT_FALSE(r) << w;
    if (!r) {
      EXPECT_EQ(r.error().code, EINVAL) << w;
    }
  }
  auto ok =
      parse_state(head + R"({"wd":1,"dev":1,"ino":1,"lingering":true}}]})", Frontend::kFanotify);
  ASSERT_TRUE(ok) << ok.error().to_string();
}

TEST(FailoverState, NonUtf8PathIsAnErrorNotAnException) {
  PersistedImage im;
  im.mountpoint = "/mnt/caf\xe9";  // Latin-1, not UTF-8
  im.bootstrap = "/images/f/image.boot";
  im.blob_dir = "/images/f/blobs";
  auto text = serialize_state({im});
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().code, EINVAL);
  EXPECT_NE(text.error().message.find("images[0].mountpoint is not valid UTF-8"), std::string::npos)
      << text.error().to_string();
  cfntest::TempDir tmp("failover-state-utf8");
  auto st = save_state(state_path(tmp.path()), {im});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EINVAL);
}

TEST(FailoverState, SaveAndLoad) {
  cfntest::TempDir tmp("failover-state");
  const std::string dir = tmp.path();
  const std::string path = state_path(dir);
  auto none = load_state(path);
  ASSERT_TRUE(none) << none.error().to_string();
  EXPECT_TRUE(none->empty());
  ASSERT_TRUE(save_state(path, sample()));
  auto back = load_state(path);
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(*back, sample());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(std::filesystem::status(dir + "/state").permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_all);
  ASSERT_TRUE(save_state(path, {}));
  back = load_state(path);
  ASSERT_TRUE(back);
  EXPECT_TRUE(back->empty());
}

}  // namespace
}  // namespace cfnd
