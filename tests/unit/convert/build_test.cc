// SPDX-License-Identifier: Apache-2.0
// Build round trips: directory, tar (plain/gzip/zstd), OCI layout; dedup; options.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "base/digest.h"
#include "convert/blob_reader.h"
#include "convert/builder.h"
#include "convert/tools.h"
#include "erofs/format.h"
#include "erofs/reader.h"
#include "tests/unit/convert/test_util.h"
#include "tests/unit/fixture.h"

namespace convert::testing {
namespace {

using json = nlohmann::json;

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) {
    c = static_cast<char>(rng());
  }
  return s;
}

json read_json(const std::string& path) {
  return json::parse(read_string(path));
}

std::string blob_path(const std::string& oci, const std::string& digest) {
  return oci + "/blobs/sha256/" + digest.substr(7);
}

TEST(BuildDirectory, RoundTripEveryEntryType) {
  TempDir t;
  std::string src = t.sub("src");
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((src + "/d").c_str(), 0750), 0);
  ASSERT_EQ(::mkdir((src + "/d/e").c_str(), 0700), 0);
  std::string big = random_bytes(3 * 1024 * 1024 + 123, 1);
  write_string(src + "/big", big);
  write_string(src + "/small", "hello\n");
  write_string(src + "/empty", "");
  write_string(src + "/d/e/copy", big);  // dedup within the layer
  ASSERT_EQ(::link((src + "/small").c_str(), (src + "/d/hl").c_str()), 0);
  ASSERT_EQ(::symlink("../small", (src + "/d/sym").c_str()), 0);
  ASSERT_EQ(::symlink("/etc/passwd", (src + "/abs").c_str()), 0);
  ASSERT_EQ(::mkfifo((src + "/fifo").c_str(), 0600), 0);
  bool root = ::geteuid() == 0;
  if (root) {
    ASSERT_EQ(::mknod((src + "/chr").c_str(), S_IFCHR | 0644, makedev(1, 3)), 0);
    ASSERT_EQ(::mknod((src + "/blk").c_str(), S_IFBLK | 0600, makedev(7, 300)), 0);
    ASSERT_EQ(::lchown((src + "/small").c_str(), 1234, 5678), 0);
  }
  ASSERT_EQ(::setxattr((src + "/small").c_str(), "user.k", "v1", 2, 0), 0);
  ASSERT_EQ(::chmod((src + "/small").c_str(), 04755), 0);
  struct timespec ts[2] = {{1577934245, 123456789}, {1577934245, 123456789}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (src + "/small").c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);

  std::string out = t.sub("out");
  auto st = build(src, out);
  ASSERT_TRUE(st) << st.error().to_string();
  auto img = read_image(out);
  ASSERT_TRUE(img.contains("/big"));
  EXPECT_EQ(img["/big"].data, big);
  EXPECT_EQ(img["/d/e/copy"].data, big);
  EXPECT_EQ(img["/d/e/copy"].nid, img["/d/e/copy"].nid);
  EXPECT_EQ(img["/small"].data, "hello\n");
  EXPECT_EQ(img["/small"].mode, S_IFREG | 04755);
  EXPECT_EQ(img["/small"].mtime, 1577934245);
  EXPECT_EQ(img["/small"].mtime_nsec, 123456789U);
  EXPECT_EQ(img["/small"].xattrs["user.k"], "v1");
  EXPECT_EQ(img["/small"].nlink, 2U);
  EXPECT_EQ(img["/d/hl"].nid, img["/small"].nid);
  EXPECT_EQ(img["/empty"].data, "");
  EXPECT_EQ(img["/d/sym"].data, "../small");
  EXPECT_EQ(img["/abs"].data, "/etc/passwd");
  EXPECT_TRUE(S_ISFIFO(img["/fifo"].mode));
  EXPECT_EQ(img["/d"].mode, S_IFDIR | 0750);
  EXPECT_EQ(img["/d/e"].mode, S_IFDIR | 0700);
  if (root) {
    EXPECT_EQ(img["/small"].uid, 1234U);
    EXPECT_EQ(img["/small"].gid, 5678U);
    EXPECT_TRUE(S_ISCHR(img["/chr"].mode));
    EXPECT_EQ(img["/chr"].rdev, erofs::encode_rdev(1, 3));
    EXPECT_EQ(img["/blk"].rdev, erofs::encode_rdev(7, 300));
  }
  // One blob, named by its sha256; dedup: 4 chunks of big + 1 of small.
  auto loaded = load_bootstrap(out + "/image.boot");
  ASSERT_TRUE(loaded);
  const auto& blobs = (*loaded)->image->blobs();
  ASSERT_EQ(blobs.size(), 1U);
  EXPECT_EQ(blobs[0].chunk_count, 5U);
  auto blob_bytes = read_string(out + "/blobs/" + blobs[0].id);
  EXPECT_EQ(base::hex(base::sha256(base::as_bytes(blob_bytes))), blobs[0].id);
  EXPECT_EQ(blob_bytes.size(), blobs[0].compressed_size);
  auto sum = check_image(out + "/image.boot", out + "/blobs");
  ASSERT_TRUE(sum) << sum.error().to_string();
  EXPECT_EQ(sum->bytes, 2 * big.size() + 6);
  // Nothing but the three outputs is left in OUTDIR (no staging).
  for (const auto& name : list_tree(out)) {
    EXPECT_EQ(name.find(".partial"), std::string::npos) << name;
  }
  EXPECT_EQ(list_tree(out).size(), 12U);
}

TEST(BuildDirectory, OciLayoutAndAnnotations) {
  TempDir t;
  std::string src = t.sub("src");
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  write_string(src + "/f", random_bytes(100000, 2));
  std::string out = t.sub("out");
  ASSERT_TRUE(build(src, out));
  std::string oci = out + "/oci";
  EXPECT_EQ(read_json(oci + "/oci-layout")["imageLayoutVersion"], "1.0.0");
  json index = read_json(oci + "/index.json");
  ASSERT_EQ(index["manifests"].size(), 1U);
  json m = read_json(blob_path(oci, index["manifests"][0]["digest"]));
  ASSERT_EQ(m["layers"].size(), 2U);
  json blob = m["layers"][0];
  EXPECT_EQ(blob["mediaType"], "application/vnd.oci.image.layer.nydus.blob.v1");
  EXPECT_EQ(blob["annotations"]["containerd.io/snapshot/nydus-blob"], "true");
  std::string id = std::string(blob["digest"]).substr(7);
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat((out + "/blobs/" + id).c_str(), &a), 0);
  ASSERT_EQ(::stat(blob_path(oci, blob["digest"]).c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);  // hardlinked
  json boot = m["layers"][1];
  EXPECT_EQ(boot["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
  EXPECT_EQ(boot["annotations"]["containerd.io/snapshot/nydus-bootstrap"], "true");
  EXPECT_EQ(boot["annotations"]["containerd.io/snapshot/nydus-fs-version"], "6");
  json cfg = read_json(blob_path(oci, m["config"]["digest"]));
  ASSERT_EQ(cfg["rootfs"]["diff_ids"].size(), 2U);
  EXPECT_EQ(cfg["rootfs"]["diff_ids"][0], blob["digest"]);
  EXPECT_EQ(cfg["rootfs"]["diff_ids"][1], boot["annotations"]["containerd.io/uncompressed"]);
  // The bootstrap layer unpacks to image/image.boot == OUTDIR/image.boot.
  std::string x = t.sub("x");
  ASSERT_EQ(::mkdir(x.c_str(), 0755), 0);
  std::string cmd = "tar -xzf " + blob_path(oci, boot["digest"]) + " -C " + x;
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(read_string(x + "/image/image.boot"), read_string(out + "/image.boot"));
  // Digests of every blob in the layout are right.
  for (const auto& p : std::filesystem::directory_iterator(oci + "/blobs/sha256")) {
    std::string data = read_string(p.path().string());
    EXPECT_EQ(base::hex(base::sha256(base::as_bytes(data))), p.path().filename().string());
  }
}

class TarFilters : public ::testing::TestWithParam<TarFilter> {};

TEST_P(TarFilters, RoundTrip) {
  TempDir t;
  std::string data = random_bytes(2 * 1024 * 1024 + 5, 3);
  std::vector<TarEntry> entries = {
      {.path = "./", .type = S_IFDIR, .perm = 0711},
      {.path = "usr/", .type = S_IFDIR, .perm = 0755, .uid = 7, .gid = 8},
      {.path = "usr/bin/tool", .perm = 0755, .data = data, .mtime_nsec = 42},
      {.path = "usr/bin/link", .hardlink = "usr/bin/tool"},
      {.path = "usr/lib", .type = S_IFLNK, .symlink = "../lib"},
      {.path = "dev/null", .type = S_IFCHR, .perm = 0666, .rdev_major = 1, .rdev_minor = 3},
      {.path = "dev/sda", .type = S_IFBLK, .perm = 0660, .rdev_major = 8, .rdev_minor = 0},
      {.path = "run/fifo", .type = S_IFIFO, .perm = 0600},
      {.path = "etc/x", .data = "x", .xattrs = {{"security.capability", "cap"}, {"user.a", "b"}}},
  };
  std::string tar = t.sub("layer.tar");
  write_tar(tar, entries, GetParam());
  std::string out = t.sub("out");
  auto st = build(tar, out);
  ASSERT_TRUE(st) << st.error().to_string();
  auto img = read_image(out);
  EXPECT_EQ(img["/"].mode, S_IFDIR | 0711);
  EXPECT_EQ(img["/usr"].uid, 7U);
  EXPECT_EQ(img["/usr/bin"].mode, S_IFDIR | 0755);  // implicit parent
  EXPECT_EQ(img["/usr/bin/tool"].data, data);
  EXPECT_EQ(img["/usr/bin/tool"].mtime_nsec, 42U);
  EXPECT_EQ(img["/usr/bin/link"].nid, img["/usr/bin/tool"].nid);
  EXPECT_EQ(img["/usr/bin/tool"].nlink, 2U);
  EXPECT_EQ(img["/usr/lib"].data, "../lib");
  EXPECT_EQ(img["/dev/null"].rdev, erofs::encode_rdev(1, 3));
  EXPECT_TRUE(S_ISBLK(img["/dev/sda"].mode));
  EXPECT_TRUE(S_ISFIFO(img["/run/fifo"].mode));
  EXPECT_EQ(img["/etc/x"].xattrs["security.capability"], "cap");
  EXPECT_EQ(img["/etc/x"].xattrs["user.a"], "b");
}

INSTANTIATE_TEST_SUITE_P(Filters, TarFilters,
                         ::testing::Values(TarFilter::kNone, TarFilter::kGzip, TarFilter::kZstd));

TEST(BuildTar, DuplicateEntriesLaterWins) {
  TempDir t;
  std::string tar = t.sub("l.tar");
  write_tar(tar, {
                     {.path = "a", .data = "first"},
                     {.path = "a", .data = "second"},
                     {.path = "d/", .type = S_IFDIR, .perm = 0700},
                     {.path = "d/keep", .data = "k"},
                     {.path = "d/", .type = S_IFDIR, .perm = 0755},  // dir over dir: merged
                     {.path = "x/y", .data = "gone"},
                     {.path = "x", .data = "file over dir"},  // non-dir replaces the subtree
                     {.path = "f", .data = "file"},
                     {.path = "f/", .type = S_IFDIR},  // dir replaces file
                 });
  std::string out = t.sub("out");
  auto st = build(tar, out);
  ASSERT_TRUE(st) << st.error().to_string();
  auto img = read_image(out);
  EXPECT_EQ(img["/a"].data, "second");
  EXPECT_EQ(img["/d"].mode, S_IFDIR | 0755);
  EXPECT_EQ(img["/d/keep"].data, "k");
  EXPECT_EQ(img["/x"].data, "file over dir");
  EXPECT_FALSE(img.contains("/x/y"));
  EXPECT_TRUE(S_ISDIR(img["/f"].mode));
}

TEST(BuildTar, UpstreamAllEntryTypeFixture) {
  std::string fixture = std::string(CFN_FIXTURES_DIR) + "/nydus-v2.4.4/all-entry-type.tar";
  CFN_REQUIRE_FIXTURE(fixture);
  TempDir t;
  std::string out = t.sub("out");
  auto st = build(fixture, out);
  ASSERT_TRUE(st) << st.error().to_string();
  auto img = read_image(out);
  EXPECT_EQ(img["/tar/dir1/dir3/hardlink1.txt"].nid, img["/tar/dir2/hardlink3.txt"].nid);
  EXPECT_EQ(img["/tar/dir1/dir3/hardlink1.txt"].nlink, 4U);
  EXPECT_EQ(img["/tar/dir1/dir3/xfile.txt"].data.size(), 15U);
  EXPECT_EQ(img["/tar/dir2/symlink1.txt"].data, "../dir1/dir3/file1.txt");
}

// Three layers: whiteouts and opaque directories as nydus-image --whiteout-spec oci.
std::string make_oci_layout(TempDir& t, const std::vector<std::vector<TarEntry>>& layers,
                            const json& config_extra) {
  std::string dir = t.sub("oci-src");
  std::filesystem::create_directories(dir + "/blobs/sha256");
  write_string(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  json mlayers = json::array();
  json diff_ids = json::array();
  int i = 0;
  for (const auto& l : layers) {
    std::string tmp = t.sub("layer" + std::to_string(i++));
    write_tar(tmp, l, i % 2 == 0 ? TarFilter::kGzip : TarFilter::kZstd);
    std::string bytes = read_string(tmp);
    std::string hex = base::hex(base::sha256(base::as_bytes(bytes)));
    std::filesystem::rename(tmp, dir + "/blobs/sha256/" + hex);
    mlayers.push_back({{"mediaType", i % 2 == 0 ? "application/vnd.oci.image.layer.v1.tar+gzip"
                                                : "application/vnd.oci.image.layer.v1.tar+zstd"},
                       {"digest", "sha256:" + hex},
                       {"size", bytes.size()}});
    diff_ids.push_back("sha256:" + hex);
  }
  json cfg = {{"architecture", "amd64"},
              {"os", "linux"},
              {"config", config_extra},
              {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  auto put = [&](const std::string& s) {
    std::string hex = base::hex(base::sha256(base::as_bytes(s)));
    write_string(dir + "/blobs/sha256/" + hex, s);
    return "sha256:" + hex;
  };
  std::string cfg_text = cfg.dump();
  json m = {{"schemaVersion", 2},
            {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
            {"config",
             {{"mediaType", "application/vnd.oci.image.config.v1+json"},
              {"digest", put(cfg_text)},
              {"size", cfg_text.size()}}},
            {"layers", mlayers}};
  std::string m_text = m.dump();
  json index = {{"schemaVersion", 2},
                {"manifests",
                 {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"digest", put(m_text)},
                   {"size", m_text.size()},
                   {"annotations", {{"org.opencontainers.image.ref.name", "v1"}}}}}}};
  write_string(dir + "/index.json", index.dump());
  return dir;
}

// The layout's descriptors go through the registry's parser: a missing size is an
// error naming it, never a size of 0.
TEST(BuildOci, DescriptorWithoutSizeIsRefused) {
  TempDir t;
  std::string src = make_oci_layout(t, {{{.path = "f", .data = "x"}}}, json::object());
  json index = json::parse(read_string(src + "/index.json"));
  index["manifests"][0].erase("size");
  write_string(src + "/index.json", index.dump());
  auto st = build(src, t.sub("out"));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EINVAL) << st.error().to_string();
  EXPECT_NE(st.error().message.find("\"size\""), std::string::npos) << st.error().message;
}

TEST(BuildOci, WhiteoutsOpaqueDirsAndDedupAcrossLayers) {
  TempDir t;
  std::string shared = random_bytes(1024 * 1024 * 2, 9);  // two chunks, in layer 0 and 2
  std::vector<std::vector<TarEntry>> layers = {
      {
          {.path = "etc/", .type = S_IFDIR},
          {.path = "etc/passwd", .data = "root"},
          {.path = "etc/gone", .data = "bye"},
          {.path = "opq/", .type = S_IFDIR},
          {.path = "opq/old", .data = "old"},
          {.path = "opq/sub/deep", .data = "deep"},
          {.path = "keep/a", .data = "a"},
          {.path = "big", .data = shared},
          {.path = "link", .type = S_IFLNK, .symlink = "etc"},
      },
      {
          {.path = "etc/.wh.gone", .data = ""},
          {.path = "opq/new", .data = "new"},  // before the marker: same layer, stays
          {.path = "opq/.wh..wh..opq", .data = ""},
          {.path = "keep/b", .data = "b"},
          {.path = ".wh.link", .data = ""},
      },
      {
          {.path = "copy", .data = shared},  // dedup against layer 0
          {.path = "etc/passwd", .data = "root2"},
          {.path = "link/", .type = S_IFDIR},  // a dir where a lower symlink was
          {.path = "link/f", .data = "f"},
      },
  };
  json cfg = {{"Env", {"PATH=/bin"}}, {"Cmd", {"/bin/sh"}},   {"WorkingDir", "/w"},
              {"User", "1000"},       {"Entrypoint", {"/e"}}, {"Labels", {{"k", "v"}}}};
  std::string src = make_oci_layout(t, layers, cfg);
  std::string out = t.sub("out");
  auto st = build(src, out);
  ASSERT_TRUE(st) << st.error().to_string();
  auto img = read_image(out);
  EXPECT_EQ(img["/etc/passwd"].data, "root2");
  EXPECT_FALSE(img.contains("/etc/gone"));
  EXPECT_FALSE(img.contains("/etc/.wh.gone"));
  EXPECT_FALSE(img.contains("/opq/old"));
  EXPECT_FALSE(img.contains("/opq/sub"));
  EXPECT_FALSE(img.contains("/opq/.wh..wh..opq"));
  EXPECT_EQ(img["/opq/new"].data, "new");
  EXPECT_EQ(img["/keep/a"].data, "a");
  EXPECT_EQ(img["/keep/b"].data, "b");
  EXPECT_TRUE(S_ISDIR(img["/link"].mode));
  EXPECT_EQ(img["/link/f"].data, "f");
  EXPECT_EQ(img["/copy"].data, shared);
  EXPECT_EQ(img["/big"].data, shared);

  auto loaded = load_bootstrap(out + "/image.boot");
  ASSERT_TRUE(loaded);
  const auto& blobs = (*loaded)->image->blobs();
  ASSERT_EQ(blobs.size(), 3U);
  EXPECT_EQ(blobs[0].chunk_count, 2U + 5);  // shared (2) + 5 small files
  EXPECT_EQ(blobs[1].chunk_count, 2U);      // new, b
  EXPECT_EQ(blobs[2].chunk_count, 2U);      // root2, f: shared deduplicated
  // The copy's chunks live in blob 0.
  auto nid = (*loaded)->image->lookup_path("/copy");
  ASSERT_TRUE(nid);
  auto ext = (*loaded)->image->map(*nid, 0, shared.size());
  ASSERT_TRUE(ext);
  for (const auto& e : *ext) {
    EXPECT_EQ(e.blob_index, 0U);
  }
  // Config carried over.
  std::string oci = out + "/oci";
  json index = read_json(oci + "/index.json");
  EXPECT_EQ(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "v1");
  json m = read_json(blob_path(oci, index["manifests"][0]["digest"]));
  EXPECT_EQ(m["layers"].size(), 4U);
  json c = read_json(blob_path(oci, m["config"]["digest"]));
  EXPECT_EQ(c["config"], cfg);
  EXPECT_EQ(c["rootfs"]["diff_ids"].size(), 4U);
}

TEST(BuildOci, LayerWithoutNewChunksMakesNoBlob) {
  TempDir t;
  std::vector<std::vector<TarEntry>> layers = {
      {{.path = "a", .data = "same"}},
      {{.path = "b", .data = "same"}, {.path = "d/", .type = S_IFDIR}},
  };
  std::string src = make_oci_layout(t, layers, json::object());
  std::string out = t.sub("out");
  ASSERT_TRUE(build(src, out));
  auto loaded = load_bootstrap(out + "/image.boot");
  ASSERT_TRUE(loaded);
  EXPECT_EQ((*loaded)->image->blobs().size(), 1U);
  auto img = read_image(out);
  EXPECT_EQ(img["/b"].data, "same");
}

TEST(BuildOci, CorruptLayerDigestIsRejected) {
  TempDir t;
  std::string src = make_oci_layout(t, {{{.path = "a", .data = "x"}}}, json::object());
  for (const auto& p : std::filesystem::directory_iterator(src + "/blobs/sha256")) {
    std::string s = read_string(p.path().string());
    if (s.size() > 2 && static_cast<unsigned char>(s[0]) == 0x28) {  // the zstd layer
      // A valid tar, but not the one the manifest names.
      write_tar(p.path().string(), {{.path = "a", .data = "y"}}, TarFilter::kZstd);
    }
  }
  std::string out = t.sub("out");
  auto st = build(src, out);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("digest"), std::string::npos) << st.error().message;
  EXPECT_NE(::access((out + "/image.boot").c_str(), F_OK), 0);
}

struct OptionCase {
  base::Compressor compressor;
  base::DigestAlgo digester;
  std::uint32_t chunk_size;
  const char* name;
};

class BuildOptionsTest : public ::testing::TestWithParam<OptionCase> {};

TEST_P(BuildOptionsTest, RoundTripAndHeaders) {
  const OptionCase& c = GetParam();
  TempDir t;
  std::string src = t.sub("src");
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  std::string data = random_bytes(600000, 4);
  write_string(src + "/f", data);
  write_string(src + "/g", "tiny");
  BuildOptions o;
  o.compressor = c.compressor;
  o.digester = c.digester;
  o.chunk_size = c.chunk_size;
  std::string out = t.sub("out");
  auto st = build(src, out, o);
  ASSERT_TRUE(st) << st.error().to_string();
  auto img = read_image(out);
  EXPECT_EQ(img["/f"].data, data);
  auto js = inspect_json(out + "/image.boot");
  ASSERT_TRUE(js);
  json j = json::parse(*js);
  EXPECT_EQ(j["chunk_size"], c.chunk_size);
  EXPECT_EQ(j["compressor"], std::string(base::compressor_name(c.compressor)));
  EXPECT_EQ(j["digester"], std::string(base::digest_algo_name(c.digester)));
  EXPECT_EQ(j["blobs"][0]["chunk_count"], (data.size() + c.chunk_size - 1) / c.chunk_size + 1);
  auto loaded = load_bootstrap(out + "/image.boot");
  ASSERT_TRUE(loaded);
  const auto& b = (*loaded)->image->blobs()[0];
  EXPECT_EQ(b.uncompressed_size % 4096, 0U);
  auto reader = BlobReader::create(*(*loaded)->image, out + "/blobs");
  ASSERT_TRUE(reader);
  auto meta = (*reader)->meta(0);
  ASSERT_TRUE(meta);
  for (const auto& ch : (*meta)->chunks()) {
    EXPECT_EQ(ch.uncompressed_offset % 4096, 0U);
    if (c.compressor == base::Compressor::kNone) {
      EXPECT_EQ(ch.compressed_offset, ch.uncompressed_offset);
    }
  }
  if (c.compressor == base::Compressor::kNone) {
    // The blob file itself is the EROFS device: its first uncompressed_size bytes are
    // the uncompressed layout.
    struct stat s {};
    ASSERT_EQ(::stat((out + "/blobs/" + b.id).c_str(), &s), 0);
    EXPECT_GE(static_cast<std::uint64_t>(s.st_size), b.uncompressed_size);
    std::string blob = read_string(out + "/blobs/" + b.id);
    EXPECT_EQ(blob.substr(0, 300000), data.substr(0, 300000));
  }
  // unpack writes the uncompressed layout; chunk bytes at their offsets.
  std::string unp = t.sub("unp");
  ASSERT_TRUE(unpack_blobs(out + "/image.boot", out + "/blobs", unp));
  std::string u = read_string(unp + "/" + b.id);
  EXPECT_EQ(u.size(), b.uncompressed_size);
  EXPECT_EQ(u.substr(0, c.chunk_size < data.size() ? c.chunk_size : data.size()),
            data.substr(0, c.chunk_size));
}

INSTANTIATE_TEST_SUITE_P(
    Options, BuildOptionsTest,
    ::testing::Values(
        OptionCase{base::Compressor::kZstd, base::DigestAlgo::kSha256, 1U << 20, "zstd"},
        OptionCase{base::Compressor::kLz4Block, base::DigestAlgo::kBlake3, 64U << 10, "lz4"},
        OptionCase{base::Compressor::kNone, base::DigestAlgo::kSha256, 4096, "none4k"},
        OptionCase{base::Compressor::kNone, base::DigestAlgo::kBlake3, 16U << 20, "none16m"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ParseChunkSize, Suffixes) {
  EXPECT_EQ(*parse_chunk_size("1M"), 1U << 20);
  EXPECT_EQ(*parse_chunk_size("64K"), 64U << 10);
  EXPECT_EQ(*parse_chunk_size("4k"), 4096U);
  EXPECT_EQ(*parse_chunk_size("16MiB"), 16U << 20);
  EXPECT_EQ(*parse_chunk_size("0x100000"), 1U << 20);
  EXPECT_EQ(*parse_chunk_size("1048576"), 1U << 20);
  EXPECT_FALSE(parse_chunk_size("2K"));
  EXPECT_FALSE(parse_chunk_size("32M"));
  EXPECT_FALSE(parse_chunk_size("3M"));
  EXPECT_FALSE(parse_chunk_size("1G"));
  EXPECT_FALSE(parse_chunk_size("abc"));
  EXPECT_FALSE(parse_chunk_size(""));
}

TEST(ParsePrefetchList, Lines) {
  auto l = parse_prefetch_list("/usr/bin/python3\n  usr/lib//x/ \n\n# a comment\n/\r\n/a/b/");
  ASSERT_TRUE(l) << l.error().to_string();
  EXPECT_EQ(*l, (std::vector<std::string>{"/usr/bin/python3", "/usr/lib/x", "/", "/a/b"}));
  auto bad = parse_prefetch_list("/ok\n/usr/../etc\n");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EINVAL);
  EXPECT_NE(bad.error().message.find("line 2"), std::string::npos);
  EXPECT_FALSE(parse_prefetch_list("./x"));
  EXPECT_TRUE(parse_prefetch_list("")->empty());
}

TEST(BuildDirectory, PrefetchTableRoundTrip) {
  TempDir t;
  std::string src = t.sub("src");
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((src + "/lib").c_str(), 0755), 0);
  write_string(src + "/lib/a", random_bytes(70000, 3));
  write_string(src + "/lib/b", random_bytes(5000, 4));
  write_string(src + "/main", random_bytes(9000, 5));
  write_string(src + "/other", random_bytes(9000, 6));
  std::string out = t.sub("out");
  BuildOptions o;
  o.prefetch_files = {"/main", "/lib", "/not/there"};  // a missing path is skipped
  auto r = build_image(src, out, o);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->prefetch_entries, 2U);

  auto j = inspect_json(out + "/image.boot");
  ASSERT_TRUE(j) << j.error().to_string();
  json pf = json::parse(*j)["prefetch"];
  ASSERT_EQ(pf.size(), 2U);
  EXPECT_EQ(pf[0]["path"], "/main");
  EXPECT_EQ(pf[1]["path"], "/lib");

  // The same nids through the reader.
  std::string boot = read_string(out + "/image.boot");
  auto img = erofs::Image::parse(base::as_bytes(boot));
  ASSERT_TRUE(img);
  auto table = img->prefetch_table();
  ASSERT_TRUE(table);
  EXPECT_EQ(*table,
            (std::vector<erofs::Nid>{*img->lookup_path("/main"), *img->lookup_path("/lib")}));

  // The listed files' chunks lead the blob, in list order (/main, then /lib's files in
  // name order); the unlisted /other follows; every file still reads back.
  auto records = img->chunk_table();
  ASSERT_TRUE(records);
  auto first_offset = [&](const std::string& path) -> std::uint64_t {
    auto ext = img->map(*img->lookup_path(path), 0, UINT64_MAX);
    EXPECT_TRUE(ext && !ext->empty() && (*ext)[0].ci_index) << path;
    for (const auto& rec : *records) {
      if (rec.index == *(*ext)[0].ci_index) {
        return rec.compressed_offset;
      }
    }
    ADD_FAILURE() << path << ": no chunk record";
    return 0;
  };
  EXPECT_EQ(first_offset("/main"), 0U);
  EXPECT_LT(first_offset("/main"), first_offset("/lib/a"));
  EXPECT_LT(first_offset("/lib/a"), first_offset("/lib/b"));
  EXPECT_LT(first_offset("/lib/b"), first_offset("/other"));
  auto entries = read_image(out);
  EXPECT_EQ(entries["/main"].data, random_bytes(9000, 5));
  EXPECT_EQ(entries["/lib/a"].data, random_bytes(70000, 3));
  EXPECT_EQ(entries["/lib/b"].data, random_bytes(5000, 4));
  EXPECT_EQ(entries["/other"].data, random_bytes(9000, 6));

  // A corrupt entry: inspect fails naming the prefetch table.
  std::uint64_t off = 0;
  std::memcpy(&off,
              boot.data() + erofs::kRafsExtSuperOffset +
                  offsetof(erofs::RafsExtSuperBlock, s_prefetch_table_offset),
              8);
  off = base::le64(off);
  const std::uint32_t junk = base::to_le32(0x7FFFFFF0);
  std::memcpy(boot.data() + off, &junk, 4);
  write_string(out + "/bad.boot", boot);
  auto bad = inspect_json(out + "/bad.boot");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("prefetch table"), std::string::npos) << bad.error().message;
}

TEST(BlobReaderFixture, ReadsUpstreamImage) {
  std::string dir = std::string(CFN_FIXTURES_DIR) + "/nydus-v2.4.4";
  CFN_REQUIRE_FIXTURE(dir + "/rafs-v6-2.2.boot");
  auto sum = check_image(dir + "/rafs-v6-2.2.boot", dir + "/blobs");
  ASSERT_TRUE(sum) << sum.error().to_string();
  EXPECT_EQ(sum->files, 2U);
  EXPECT_EQ(sum->bytes, 16931U + 13400U);
  EXPECT_EQ(sum->chunks_verified, 2U);
  auto loaded = load_bootstrap(dir + "/rafs-v6-2.2.boot");
  ASSERT_TRUE(loaded);
  const erofs::Image& img = *(*loaded)->image;
  auto reader = BlobReader::create(img, dir + "/blobs");
  ASSERT_TRUE(reader);
  auto nid = img.lookup_path("/lib.rs");
  ASSERT_TRUE(nid);
  std::string data;
  ASSERT_TRUE((*reader)->read(*nid, 0, 16931, [&](base::Bytes b) -> base::Status {
    data.append(reinterpret_cast<const char*>(b.data()), b.size());
    return {};
  }));
  EXPECT_EQ(base::hex(base::sha256(base::as_bytes(data))),
            "1810eba864521293bb0d6b55a3c82318d4d89f294ed761c456d9088a17de0c69");
  auto js = inspect_json(dir + "/rafs-v6-2.2.boot");
  ASSERT_TRUE(js);
  json j = json::parse(*js);
  EXPECT_EQ(j["compressor"], "zstd");
  EXPECT_EQ(j["digester"], "blake3");
  TempDir t;
  ASSERT_TRUE(unpack_blobs(dir + "/rafs-v6-2.2.boot", dir + "/blobs", t.path()));
}

TEST(BlobReaderFixture, DetectsCorruptedChunk) {
  TempDir t;
  std::string src = t.sub("src");
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  write_string(src + "/f", random_bytes(50000, 5));
  std::string out = t.sub("out");
  ASSERT_TRUE(build(src, out));
  auto loaded = load_bootstrap(out + "/image.boot");
  ASSERT_TRUE(loaded);
  std::string path = out + "/blobs/" + (*loaded)->image->blobs()[0].id;
  std::string blob = read_string(path);
  blob[100] = static_cast<char>(blob[100] ^ 0x55);
  ::unlink(path.c_str());  // hardlinked into oci/: do not modify that copy
  write_string(path, blob);
  auto sum = check_image(out + "/image.boot", out + "/blobs");
  EXPECT_FALSE(sum);
}

}  // namespace
}  // namespace convert::testing
