// SPDX-License-Identifier: Apache-2.0
// Bootstraps from eStargz TOCs: the tree (every entry type, hidden landmarks, whiteouts
// across layers), and every file's bytes read the way the daemon reads them: the
// chunk's gzip member out of the layer, inflated, checked against its chunkDigest
// (erofs::decode_chunk over BlobMeta::from_records). A lying layer fails that check.
#include "estargz/bootstrap.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <map>
#include <string>

#include "erofs/blob_meta.h"
#include "erofs/reader.h"
#include "tests/unit/estargz/layer_maker.h"

namespace estargz {
namespace {

using testing::FileSpec;
using testing::LayerMaker;
using testing::MadeLayer;

LayerToc layer_toc(const MadeLayer& m, std::string id) {
  LayerToc l;
  l.blob_id = std::move(id);
  l.blob_size = m.blob.size();
  l.toc_offset = m.toc_offset;
  auto toc = parse_toc(m.toc_member, nullptr);
  EXPECT_TRUE(toc) << toc.error().to_string();
  l.toc = *toc;
  return l;
}

std::string blob_id(char c) {
  return std::string(64, c);
}

// A file's bytes through the blob meta the daemon builds, from the layers' bytes.
base::Result<std::string> read_file(const erofs::Image& img, const std::string& path,
                                    const std::vector<const MadeLayer*>& layers) {
  CFN_ASSIGN_OR_RETURN(const auto nid, img.lookup_path(path));
  CFN_ASSIGN_OR_RETURN(const auto info, img.stat(nid));
  CFN_ASSIGN_OR_RETURN(const auto records, img.chunk_table());
  CFN_ASSIGN_OR_RETURN(const auto extents, img.map(nid, 0, info.size));
  std::string out;
  for (const auto& x : extents) {
    if (x.kind != erofs::Extent::Kind::kBlob || !x.ci_index) {
      return base::make_error(EINVAL, "not a blob extent");
    }
    const erofs::BlobInfo& b = img.blobs().at(x.blob_index);
    CFN_ASSIGN_OR_RETURN(const auto meta, erofs::BlobMeta::from_records(b, records));
    const erofs::ChunkMeta& c = meta.chunks().at(*x.ci_index);
    base::Digest want{};
    for (const auto& r : records) {
      if (r.blob_index == b.index && r.index == *x.ci_index) {
        want = r.digest;
      }
    }
    const auto& blob = layers.at(x.blob_index)->blob;
    std::vector<std::byte> plain(c.uncompressed_size);
    CFN_TRY(erofs::decode_chunk(
        b, c, base::Bytes(blob).subspan(c.compressed_offset, c.compressed_size), want, plain));
    const std::uint64_t skip = x.offset - c.uncompressed_offset;
    out += std::string(base::as_chars(base::Bytes(plain).subspan(skip, x.length)));
  }
  return out;
}

TEST(EstargzBootstrap, EveryEntryTypeAndItsBytes) {
  std::string big(10000, 'b');
  big[4095] = 'X';
  big[9999] = 'Z';
  LayerMaker lm = testing::every_entry_type(big);
  auto m = lm.make();
  auto built = build_bootstrap({layer_toc(m, blob_id('a'))});
  ASSERT_TRUE(built) << built.error().to_string();
  EXPECT_EQ(built->chunk_size, 4096U);
  ASSERT_EQ(built->blobs.size(), 1U);
  EXPECT_EQ(built->prefetch, (std::vector<std::string>{"/etc/hello.txt"}));

  auto img = erofs::Image::parse(built->bootstrap);
  ASSERT_TRUE(img) << img.error().to_string();
  ASSERT_TRUE(img->is_rafs());
  ASSERT_EQ(img->blobs().size(), 1U);
  const erofs::BlobInfo& b = img->blobs()[0];
  EXPECT_EQ(b.id, blob_id('a'));
  EXPECT_EQ(b.compressor, base::Compressor::kGzip);
  EXPECT_EQ(b.digester, base::DigestAlgo::kSha256);
  EXPECT_TRUE(erofs::is_bootstrap_indexed(b));
  EXPECT_EQ(b.compressed_size, m.blob.size());
  EXPECT_EQ(b.chunk_count, 5U);  // hello, big x3, deep: not the landmark's

  std::map<std::string, erofs::InodeInfo> seen;
  ASSERT_TRUE(img->walk(img->root(), "", [&](const std::string& p, erofs::Nid, const auto& i) {
    seen[p.empty() ? "/" : p] = i;
    return true;
  }));
  EXPECT_FALSE(seen.contains("/.prefetch.landmark"));
  EXPECT_EQ(seen.at("/etc").mode, S_IFDIR | 0700);
  EXPECT_EQ(seen.at("/etc").uid, 5U);
  // (The walk names a hard-linked file once: stat it by path.)
  auto hello = img->stat(*img->lookup_path("/etc/hello.txt"));
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->mode, S_IFREG | 0640);
  EXPECT_EQ(hello->gid, 9U);
  EXPECT_EQ(hello->nlink, 2U);
  EXPECT_EQ(hello->nid, img->stat(*img->lookup_path("/hard"))->nid);
  EXPECT_EQ(seen.at("/null").mode, S_IFCHR | 0666);
  EXPECT_EQ(seen.at("/fifo").mode & S_IFMT, static_cast<unsigned>(S_IFIFO));
  EXPECT_EQ(seen.at("/link").mode & S_IFMT, static_cast<unsigned>(S_IFLNK));
  EXPECT_EQ(seen.at("/implicit/deep").mode, S_IFDIR | 0755);
  EXPECT_EQ(seen.at("/empty").size, 0U);
  auto lnk = img->readlink(*img->lookup_path("/link"));
  ASSERT_TRUE(lnk);
  EXPECT_EQ(*lnk, "etc/hello.txt");
  auto xv = img->getxattr(*img->lookup_path("/big"), "user.k");
  ASSERT_TRUE(xv);
  EXPECT_EQ(*xv, "val");
  EXPECT_EQ(seen.at("/big").mtime, 1714979289);

  for (const auto& [path, want] :
       std::map<std::string, std::string>{{"/etc/hello.txt", "hello\n"},
                                          {"/hard", "hello\n"},
                                          {"/big", big},
                                          {"/implicit/deep/file", "deep"}}) {
    auto got = read_file(*img, path, {&m});
    ASSERT_TRUE(got) << path << ": " << got.error().to_string();
    EXPECT_EQ(*got, want) << path;
  }
  auto pf = img->prefetch_table();
  ASSERT_TRUE(pf);
  ASSERT_EQ(pf->size(), 1U);
  EXPECT_EQ((*pf)[0], *img->lookup_path("/etc/hello.txt"));
}

TEST(EstargzBootstrap, ALyingLayerNeverYieldsWrongBytes) {
  // Stored (level 0) members: their sizes depend on the lengths alone.
  LayerMaker lm(4 << 20, 0);
  lm.add({.name = "a", .content = std::string(3000, 'a')});
  lm.add({.name = "b", .content = std::string(3000, 'b')});
  auto m = lm.make();
  auto built = build_bootstrap({layer_toc(m, blob_id('a'))});
  ASSERT_TRUE(built);
  auto img = erofs::Image::parse(built->bootstrap);
  ASSERT_TRUE(img);
  // Another layer of the same shape whose first file says something else: its
  // members inflate fine, to the wrong bytes.
  LayerMaker lm2(4 << 20, 0);
  lm2.add({.name = "a", .content = std::string(3000, 'c')});
  lm2.add({.name = "b", .content = std::string(3000, 'b')});
  auto evil = lm2.make();
  const auto& entries = layer_toc(m, blob_id('a')).toc.entries;
  const auto& evil_entries = layer_toc(evil, blob_id('a')).toc.entries;
  ASSERT_EQ(*entries[1].offset, *evil_entries[1].offset);  // same member sizes
  auto got = read_file(*img, "/a", {&evil});
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, EBADMSG);
  EXPECT_NE(got.error().message.find("digest mismatch"), std::string::npos);
  const std::uint64_t a = *entries[0].offset;
  const std::uint64_t b = *entries[1].offset;
  // A flipped byte: corrupt deflate data or a digest mismatch, never bytes.
  for (std::uint64_t off = a; off < b; ++off) {
    auto flip = m;
    flip.blob[off] ^= std::byte{0x01};
    auto r = read_file(*img, "/a", {&flip});
    if (r) {
      EXPECT_EQ(*r, std::string(3000, 'a')) << off;  // a flip in the gzip header's MTIME/OS
    }
  }
}

TEST(EstargzBootstrap, WhiteoutsAndOpaqueDirsAcrossLayers) {
  LayerMaker l0;
  l0.add({.name = "keep", .content = "k"});
  l0.add({.name = "gone", .content = "g"});
  l0.add({.name = "d/", .type = "dir"});
  l0.add({.name = "d/old", .content = "o"});
  l0.add({.name = "over", .content = "lower"});
  auto m0 = l0.make();
  LayerMaker l1;
  l1.add({.name = ".wh.gone", .content = ""});
  l1.add({.name = "d/", .type = "dir", .mode = 0711});
  l1.add({.name = "d/.wh..wh..opq", .content = ""});
  l1.add({.name = "d/new", .content = "n"});
  l1.add({.name = "over", .content = "upper"});
  auto m1 = l1.make();
  auto built = build_bootstrap({layer_toc(m0, blob_id('a')), layer_toc(m1, blob_id('b'))});
  ASSERT_TRUE(built) << built.error().to_string();
  auto img = erofs::Image::parse(built->bootstrap);
  ASSERT_TRUE(img);
  EXPECT_TRUE(img->lookup_path("/keep"));
  EXPECT_FALSE(img->lookup_path("/gone"));
  EXPECT_FALSE(img->lookup_path("/.wh.gone"));
  EXPECT_FALSE(img->lookup_path("/d/old"));
  EXPECT_FALSE(img->lookup_path("/d/.wh..wh..opq"));
  EXPECT_EQ(img->stat(*img->lookup_path("/d"))->mode, S_IFDIR | 0711);
  ASSERT_EQ(img->blobs().size(), 2U);
  auto got = read_file(*img, "/over", {&m0, &m1});
  ASSERT_TRUE(got) << got.error().to_string();
  EXPECT_EQ(*got, "upper");
  got = read_file(*img, "/keep", {&m0, &m1});
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, "k");
  got = read_file(*img, "/d/new", {&m0, &m1});
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, "n");
  // Only reachable chunks are in the blobs: keep in layer 0; new and over in layer 1.
  EXPECT_EQ(img->blobs()[0].chunk_count, 1U);
  EXPECT_EQ(img->blobs()[1].chunk_count, 2U);
}

TEST(EstargzBootstrap, HardlinksWithinAndAcrossLayers) {
  LayerMaker l0;
  l0.add({.name = "lib/", .type = "dir"});
  l0.add({.name = "lib/a", .content = "aaa"});
  l0.add({.name = "lib/gone", .content = "g"});
  auto m0 = l0.make();
  LayerMaker l1;
  l1.add({.name = "b", .content = "bbb"});
  l1.add({.name = "b2", .type = "hardlink", .link_name = "b"});      // this layer
  l1.add({.name = "a2", .type = "hardlink", .link_name = "lib/a"});  // the lower layer
  auto m1 = l1.make();
  auto built = build_bootstrap({layer_toc(m0, blob_id('a')), layer_toc(m1, blob_id('b'))});
  ASSERT_TRUE(built) << built.error().to_string();
  auto img = erofs::Image::parse(built->bootstrap);
  ASSERT_TRUE(img);
  EXPECT_EQ(*img->lookup_path("/b"), *img->lookup_path("/b2"));
  EXPECT_EQ(*img->lookup_path("/a2"), *img->lookup_path("/lib/a"));
  auto got = read_file(*img, "/a2", {&m0, &m1});
  ASSERT_TRUE(got) << got.error().to_string();
  EXPECT_EQ(*got, "aaa");
  got = read_file(*img, "/b2", {&m0, &m1});
  ASSERT_TRUE(got) << got.error().to_string();
  EXPECT_EQ(*got, "bbb");

  // A link to what the same layer whites out, or to nothing lower, is refused.
  LayerMaker l2;
  l2.add({.name = "lib/.wh.gone", .content = ""});
  l2.add({.name = "g2", .type = "hardlink", .link_name = "lib/gone"});
  auto m2 = l2.make();
  built = build_bootstrap({layer_toc(m0, blob_id('a')), layer_toc(m2, blob_id('c'))});
  ASSERT_FALSE(built);
  EXPECT_EQ(built.error().code, EINVAL);
  EXPECT_NE(built.error().message.find("removes"), std::string::npos) << built.error().to_string();
  LayerMaker l3;
  l3.add({.name = "x", .type = "hardlink", .link_name = "lib/none"});
  auto m3 = l3.make();
  built = build_bootstrap({layer_toc(m0, blob_id('a')), layer_toc(m3, blob_id('d'))});
  ASSERT_FALSE(built);
  EXPECT_EQ(built.error().code, EINVAL);
  EXPECT_NE(built.error().message.find("in no lower layer"), std::string::npos);
}

TEST(EstargzBootstrap, RefusesWhatRafsCannotHoldOrWhatLies) {
  auto fails = [](LayerMaker& lm, int code, std::string_view text) {
    auto m = lm.make();
    auto built = build_bootstrap({layer_toc(m, blob_id('a'))});
    ASSERT_FALSE(built) << text;
    EXPECT_EQ(built.error().code, code) << built.error().to_string();
    EXPECT_NE(built.error().message.find(text), std::string::npos) << built.error().to_string();
  };
  {
    LayerMaker lm;
    lm.add({.name = "a", .content = "x"});
    lm.toc()["entries"][0]["innerOffset"] = 512;
    fails(lm, EOPNOTSUPP, "innerOffset");
  }
  {
    LayerMaker lm(5000);  // not a power of two
    lm.add({.name = "a", .content = std::string(12000, 'a')});
    fails(lm, EOPNOTSUPP, "power of two");
  }
  {
    LayerMaker lm;
    lm.add({.name = "a", .content = "x"});
    lm.toc()["entries"][0].erase("chunkDigest");
    fails(lm, EINVAL, "without chunkDigest");
  }
  {
    LayerMaker lm;
    lm.add({.name = "a", .content = "x"});
    lm.toc()["entries"][0]["offset"] = 1 << 30;
    fails(lm, EINVAL, "not before the TOC");
  }
  {
    LayerMaker lm(4096);
    lm.add({.name = "a", .content = std::string(9000, 'a')});
    lm.toc()["entries"][1]["name"] = "b";
    fails(lm, EINVAL, "does not follow its file");
  }
  {
    LayerMaker lm(4096);
    lm.add({.name = "a", .content = std::string(9000, 'a')});
    lm.toc()["entries"][1]["chunkOffset"] = 4000;
    fails(lm, EINVAL, "file offset");
  }
  {
    LayerMaker lm;
    lm.add({.name = "a", .content = "xyz"});
    lm.toc()["entries"][0]["chunkSize"] = 2;  // one chunk of 2 of the 3 bytes
    fails(lm, EINVAL, "cover");
  }
  {
    LayerMaker lm;
    lm.add({.name = "h", .type = "hardlink", .link_name = "nothing"});
    fails(lm, EINVAL, "hardlink");
  }
  {
    LayerMaker lm;
    lm.add({.name = "f", .content = "x"});
    lm.add({.name = "f/g", .content = "y"});
    fails(lm, EINVAL, "not a directory");
  }
  {
    LayerMaker lm;
    lm.add({.name = "../escape", .content = "x"});
    fails(lm, EINVAL, "..");
  }
}

}  // namespace
}  // namespace estargz

namespace estargz {
namespace {

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"  // FileSpec's defaults
// The members of the entries before .prefetch.landmark, from the TOC alone: what the
// daemon fetches while it builds the bootstrap.
TEST(EstargzPrefetchRanges, TheLandmarksMembersMergedAndCapped) {
  auto m = testing::every_entry_type(std::string(3 * 4096 + 5, 'b')).make();
  const LayerToc l = layer_toc(m, blob_id('a'));
  std::uint64_t hello = 0;
  std::uint64_t landmark = 0;
  for (const auto& e : l.toc.entries) {
    if (e.name == "./etc/hello.txt") {
      hello = *e.offset;
    }
    if (e.name == ".prefetch.landmark") {
      landmark = *e.offset;
    }
  }
  ASSERT_GT(hello, 0U);
  ASSERT_GT(landmark, hello);
  // hello.txt's member runs to the landmark's.
  EXPECT_EQ(prefetch_ranges(l, 1 << 20), (std::vector<Range>{{hello, landmark - hello}}));
  EXPECT_EQ(prefetch_ranges(l, 3), (std::vector<Range>{{hello, 3}}));
  EXPECT_TRUE(prefetch_ranges(l, 0).empty());

  // Two prioritized files: their adjacent members make one range; chunks of one file too.
  LayerMaker lm(4096);
  lm.add({.name = "a", .content = std::string(100, 'a')});
  lm.add({.name = "b", .content = std::string(2 * 4096 + 1, 'b')});
  lm.add({.name = ".prefetch.landmark", .content = "\x0f"});
  lm.add({.name = "c", .content = std::string(100, 'c')});
  auto two = lm.make();
  const LayerToc t = layer_toc(two, blob_id('b'));
  std::uint64_t a = 0;
  std::uint64_t lmk = 0;
  for (const auto& e : t.toc.entries) {
    if (e.name == "a") {
      a = *e.offset;
    }
    if (e.name == ".prefetch.landmark") {
      lmk = *e.offset;
    }
  }
  EXPECT_EQ(prefetch_ranges(t, 1 << 20), (std::vector<Range>{{a, lmk - a}}));

  // No landmark (or .no.prefetch.landmark): nothing.
  LayerMaker plain(4096);
  plain.add({.name = "a", .content = "a"});
  plain.add({.name = ".no.prefetch.landmark", .content = "\x0f"});
  EXPECT_TRUE(prefetch_ranges(layer_toc(plain.make(), blob_id('c')), 1 << 20).empty());

  // A lying offset at or past the TOC is left out, not fetched.
  LayerToc lying = l;
  for (auto& e : lying.toc.entries) {
    if (e.name == "./etc/hello.txt") {
      e.offset = lying.toc_offset + 10;
    }
  }
  EXPECT_TRUE(prefetch_ranges(lying, 1 << 20).empty());
}

#pragma GCC diagnostic pop

// The bootstrap's bytes are a function of the TOCs alone: built twice, or from TOCs that
// say the same, they are the same; and they are these bytes. The daemon caches bootstraps
// by the layer digests under a key with a version ("estargz-bootstrap-v1",
// daemon/registry_image.cc): a change of the hash below changes what a cached bootstrap
// would have been, so it must come with a new key version, never alone.
TEST(EstargzBootstrap, TheSameTocsGiveTheSameBytes) {
  const auto digest = [](int i) { return "sha256:" + fmt::format("{:064x}", 0x1000 + i); };
  const std::string lower =
      fmt::format(R"({{"version":1,"entries":[
    {{"name":"./","type":"dir","mode":16877,"modtime":"2024-05-06T07:08:09Z"}},
    {{"name":"usr/","type":"dir","mode":493,"uid":1,"gid":2,"modtime":"2024-05-06T07:08:09.5Z"}},
    {{"name":"usr/bin/python3","type":"reg","size":9000,"mode":493,"offset":100,
      "chunkOffset":0,"chunkSize":4096,"chunkDigest":"{}","modtime":"2023-01-02T03:04:05Z",
      "xattrs":{{"user.b":"Yg==","security.capability":"AQAAAg=="}}}},
    {{"name":"usr/bin/python3","type":"chunk","offset":900,"chunkOffset":4096,
      "chunkSize":4096,"chunkDigest":"{}"}},
    {{"name":"usr/bin/python3","type":"chunk","offset":1700,"chunkOffset":8192,
      "chunkDigest":"{}"}},
    {{"name":".prefetch.landmark","type":"reg","size":1,"offset":1800,"chunkDigest":"{}"}},
    {{"name":"usr/lib/a.py","type":"reg","size":10,"mode":420,"offset":1900,"chunkDigest":"{}"}},
    {{"name":"usr/lib/gone.py","type":"reg","size":3,"mode":420,"offset":2000,
      "chunkDigest":"{}"}},
    {{"name":"usr/lib/link","type":"symlink","linkName":"a.py","mode":511}},
    {{"name":"usr/lib/hard","type":"hardlink","linkName":"usr/lib/a.py"}},
    {{"name":"dev/null","type":"char","devMajor":1,"devMinor":3,"mode":438}},
    {{"name":"empty","type":"reg","size":0,"mode":384}}]}})",
                  digest(1), digest(2), digest(3), digest(4), digest(5), digest(6));
  const std::string upper = fmt::format(R"({{"version":1,"entries":[
    {{"name":"usr/lib/.wh.gone.py","type":"reg","size":0}},
    {{"name":"usr/lib/a.py","type":"reg","size":20,"mode":420,"offset":0,"chunkDigest":"{}"}},
    {{"name":"etc/","type":"dir","mode":448}},
    {{"name":"etc/.wh..wh..opq","type":"reg","size":0}},
    {{"name":"etc/hostname","type":"reg","size":5,"offset":300,"chunkDigest":"{}"}}]}})",
                                        digest(7), digest(8));
  const auto make = [&] {
    std::vector<LayerToc> layers(2);
    for (int i = 0; i < 2; ++i) {
      auto toc = parse_toc_json(i == 0 ? lower : upper);
      EXPECT_TRUE(toc) << toc.error().to_string();
      layers[i].blob_id = std::string(64, static_cast<char>('a' + i));
      layers[i].toc_offset = i == 0 ? 2100 : 400;
      layers[i].blob_size = layers[i].toc_offset + 700;
      layers[i].toc = std::move(*toc);
    }
    return build_bootstrap(layers);
  };
  auto one = make();
  ASSERT_TRUE(one) << one.error().to_string();
  auto two = make();
  ASSERT_TRUE(two);
  EXPECT_EQ(one->bootstrap, two->bootstrap);
  EXPECT_EQ(one->prefetch, (std::vector<std::string>{"/usr/bin/python3"}));
  auto img = erofs::Image::parse(one->bootstrap);
  ASSERT_TRUE(img) << img.error().to_string();
  EXPECT_TRUE(img->lookup_path("/usr/lib/hard"));
  EXPECT_FALSE(img->lookup_path("/usr/lib/gone.py"));
  EXPECT_EQ(base::hex(base::sha256(one->bootstrap)),
            "615ec0ae6df1c4045a01c21cae036c954ff5fa2be861cb86d98daf78a690c462");
}

}  // namespace
}  // namespace estargz
