// SPDX-License-Identifier: Apache-2.0
// nydus-convert with an eStargz layer as the source: read by its TOC (convert/sources.h
// read_estargz), every chunk checked against its chunkDigest, out comes a normal nydus
// image whose files read back equal to the layer's.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <random>
#include <string>

#include "base/bytes.h"
#include "base/digest.h"
#include "convert/sources.h"
#include "tests/unit/convert/test_util.h"
#include "tests/unit/estargz/layer_maker.h"

namespace convert::testing {
namespace {

using estargz::testing::FileSpec;
using estargz::testing::LayerMaker;
using estargz::testing::MadeLayer;

std::string random_string(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) {
    c = static_cast<char>(rng());
  }
  return s;
}

void write_layer(const std::string& path, const MadeLayer& m) {
  write_string(path, std::string(base::as_chars(base::Bytes(m.blob))));
}

// The layer the bootstrap tests use, and two entries of one path (the later one counts).
LayerMaker every_entry_type(const std::string& big) {
  LayerMaker lm = estargz::testing::every_entry_type(big);
  lm.add({.name = "./gone", .content = "replaced"});
  lm.add({.name = "./gone", .content = "the later one"});
  return lm;
}

// An OCI layout of the given layer files (tar+gzip), as skopeo writes one.
void write_oci_layout(const std::string& dir, const std::vector<std::string>& layers) {
  using json = nlohmann::json;
  std::filesystem::create_directories(dir + "/blobs/sha256");
  write_string(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  auto put = [&](const std::string& s) {
    const std::string hex = base::hex(base::sha256(base::as_bytes(s)));
    write_string(dir + "/blobs/sha256/" + hex, s);
    return "sha256:" + hex;
  };
  json mlayers = json::array();
  json diff_ids = json::array();
  for (const auto& l : layers) {
    const std::string bytes = read_string(l);
    const std::string digest = put(bytes);
    mlayers.push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                       {"digest", digest},
                       {"size", bytes.size()}});
    diff_ids.push_back(digest);  // not the uncompressed digest; nothing here checks it
  }
  const std::string cfg = json{{"architecture", "amd64"},
                               {"os", "linux"},
                               {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}}
                              .dump();
  const std::string m = json{
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
      {"config",
       {{"mediaType", "application/vnd.oci.image.config.v1+json"},
        {"digest", put(cfg)},
        {"size", cfg.size()}}},
      {"layers", mlayers}}.dump();
  const json index = {{"schemaVersion", 2},
                      {"manifests",
                       {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                         {"digest", put(m)},
                         {"size", m.size()}}}}};
  write_string(dir + "/index.json", index.dump());
}

TEST(BuildEstargz, EveryEntryTypeRoundTrips) {
  TempDir t;
  const std::string big = random_string(10000, 5);  // three 4 KiB eStargz chunks
  auto m = every_entry_type(big).make();
  const std::string layer = t.sub("layer.tar.gz");
  write_layer(layer, m);
  auto esgz = is_estargz(layer);
  ASSERT_TRUE(esgz && *esgz);
  const std::string out = t.sub("out");
  BuildOptions opts;
  opts.chunk_size = 8192;  // not the layer's: the bytes are cut anew
  auto st = build(layer, out, opts);
  ASSERT_TRUE(st) << st.error().to_string();
  auto img = read_image(out);
  EXPECT_EQ(img["/"].mode, S_IFDIR | 0755);
  EXPECT_EQ(img["/etc"].mode, S_IFDIR | 0700);
  EXPECT_EQ(img["/etc"].uid, 5U);
  EXPECT_EQ(img["/etc/hello.txt"].data, "hello\n");
  EXPECT_EQ(img["/etc/hello.txt"].gid, 9U);
  EXPECT_EQ(img["/etc/hello.txt"].mtime, 1714979289);  // 2024-05-06T07:08:09Z
  EXPECT_EQ(img["/big"].data, big);
  EXPECT_EQ(img["/big"].xattrs["user.k"], "val");
  EXPECT_EQ(img["/empty"].data, "");
  EXPECT_EQ(img["/link"].data, "etc/hello.txt");
  EXPECT_EQ(img["/hard"].nid, img["/etc/hello.txt"].nid);
  EXPECT_EQ(img["/null"].rdev, erofs::encode_rdev(1, 3));
  EXPECT_TRUE(S_ISFIFO(img["/fifo"].mode));
  EXPECT_EQ(img["/implicit/deep/file"].data, "deep");
  EXPECT_EQ(img["/gone"].data, "the later one");
  EXPECT_FALSE(img.contains("/.prefetch.landmark"));
  EXPECT_FALSE(img.contains("/stargz.index.json"));
}

TEST(BuildEstargz, AChunkThatLiesIsAClearError) {
  const std::string big = random_string(10000, 6);
  auto fails = [&](const MadeLayer& m, std::string_view text) {
    TempDir t;
    const std::string layer = t.sub("layer.tar.gz");
    write_layer(layer, m);
    auto st = build(layer, t.sub("out"));
    ASSERT_FALSE(st) << text;
    EXPECT_EQ(st.error().code, EBADMSG) << st.error().to_string();
    EXPECT_NE(st.error().message.find(text), std::string::npos) << st.error().to_string();
    EXPECT_FALSE(::access(t.sub("out/image.boot").c_str(), F_OK) == 0);
  };
  {  // the TOC names another digest for the second chunk of big
    LayerMaker lm = every_entry_type(big);
    for (auto& e : lm.toc()["entries"]) {
      if (e["name"] == "./big" && e["type"] == "chunk" && e["chunkOffset"] == 4096) {
        e["chunkDigest"] = "sha256:" + std::string(64, '0');
      }
    }
    fails(lm.make(), "entry './big': the chunk at file offset 4096");
  }
  {  // a byte of big's last member flipped: inflate or the digest fails
    MadeLayer m = every_entry_type(big).make();
    std::uint64_t at = 0;
    auto toc = nlohmann::json::parse(m.toc_json);
    for (const auto& e : toc["entries"]) {
      if (e["name"] == "./big" && e.value("chunkOffset", 0) == 8192) {
        at = e["offset"].get<std::uint64_t>() + 30;
      }
    }
    ASSERT_GT(at, 0U);
    m.blob[at] ^= std::byte{0x55};
    fails(m, "./big");
  }
}

TEST(BuildEstargz, AnOciLayoutOfEstargzLayersIsMerged) {
  // Two eStargz layers in one OCI layout (as `skopeo copy` of a ctr-remote image gives):
  // whiteouts, an opaque dir, a hard link to the lower layer.
  TempDir t;
  LayerMaker l0;
  l0.add({.name = "keep", .content = "k"});
  l0.add({.name = "gone", .content = "g"});
  l0.add({.name = "d/", .type = "dir"});
  l0.add({.name = "d/old", .content = "o"});
  LayerMaker l1;
  l1.add({.name = ".wh.gone", .content = ""});
  l1.add({.name = "d/", .type = "dir", .mode = 0711});
  l1.add({.name = "d/.wh..wh..opq", .content = ""});
  l1.add({.name = "d/new", .content = "n"});
  l1.add({.name = "k2", .type = "hardlink", .link_name = "keep"});
  const std::string a = t.sub("a.tar.gz");
  const std::string b = t.sub("b.tar.gz");
  write_layer(a, l0.make());
  write_layer(b, l1.make());
  const std::string layout = t.sub("oci");
  write_oci_layout(layout, {a, b});
  auto st = build(layout, t.sub("out"));
  ASSERT_TRUE(st) << st.error().to_string();
  auto img = read_image(t.sub("out"));
  EXPECT_EQ(img["/keep"].data, "k");
  EXPECT_EQ(img["/k2"].nid, img["/keep"].nid);
  EXPECT_FALSE(img.contains("/gone"));
  EXPECT_FALSE(img.contains("/d/old"));
  EXPECT_EQ(img["/d/new"].data, "n");
  EXPECT_EQ(img["/d"].mode, S_IFDIR | 0711);
}

}  // namespace
}  // namespace convert::testing
