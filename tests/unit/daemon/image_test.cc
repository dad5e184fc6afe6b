// SPDX-License-Identifier: Apache-2.0
// BoundImage on a local image built by the converter: load() reads, parses and checks a
// bootstrap (a missing, corrupt or plain-EROFS one refused, naming it) that open() then
// binds without reading it again; the file-to-chunk maps: the prefetch table's chunks per
// blob, in table order without repeats; the files read, in the order of their first
// demand; nothing read, nothing listed.
#include "daemon/image.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "base/file.h"
#include "daemon/backend.h"
#include "daemon/blob_cache.h"
#include "tests/unit/convert/test_util.h"
#include "tests/unit/temp_dir.h"

namespace cfnd {
namespace {

// n bytes that differ from chunk to chunk and file to file (no chunk is deduplicated).
std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  std::uint32_t x = 2463534242U + seed;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return s;
}

class BoundImageTest : public ::testing::Test {
 protected:
  // Files of 1, 3 and 2 chunks (64 KiB chunks) and an empty one, converted to
  // img/image.boot and img/blobs/; a blob cache in cache/.
  void convert(std::vector<std::string> prefetch = {}) {
    std::filesystem::create_directories(tmp_.sub("src/d"));
    convert::testing::write_string(tmp_.sub("src/a"), pattern(1000, 1));
    convert::testing::write_string(tmp_.sub("src/d/b"), pattern(3 * kChunk - 5, 2));
    convert::testing::write_string(tmp_.sub("src/d/c"), pattern(2 * kChunk, 3));
    convert::testing::write_string(tmp_.sub("src/empty"), "");
    convert::BuildOptions o;
    o.chunk_size = kChunk;
    o.prefetch_files = std::move(prefetch);
    auto st = convert::testing::build(tmp_.sub("src"), tmp_.sub("img"), o);
    ASSERT_TRUE(st) << st.error().to_string();
    CacheOptions co;
    co.cache_dir = tmp_.sub("cache");
    auto cache = BlobCache::create(co);
    ASSERT_TRUE(cache) << cache.error().to_string();
    cache_ = std::move(*cache);
  }

  // convert(), then the image opened.
  void build(std::vector<std::string> prefetch = {}) {
    ASSERT_NO_FATAL_FAILURE(convert(std::move(prefetch)));
    auto backend = make_localfs_backend(tmp_.sub("img/blobs"));
    ASSERT_TRUE(backend) << backend.error().to_string();
    auto image = BoundImage::open(tmp_.sub("img/image.boot"), std::move(*backend), *cache_);
    ASSERT_TRUE(image) << image.error().to_string();
    image_ = std::move(*image);
    ASSERT_EQ(image_->blobs().size(), 1U);
  }

  // The extents of [off, off+len) of path's data (len clipped at its size; UINT64_MAX:
  // to the end); none, with a test failure, when path cannot be mapped.
  std::vector<erofs::Extent> extents_of(const std::string& path, std::uint64_t off = 0,
                                        std::uint64_t len = UINT64_MAX) {
    const erofs::Image& img = image_->image();
    auto nid = img.lookup_path(path);
    if (!nid) {
      ADD_FAILURE() << path << ": " << nid.error().to_string();
      return {};
    }
    auto info = img.stat(*nid);
    if (!info) {
      ADD_FAILURE() << path << ": " << info.error().to_string();
      return {};
    }
    auto extents = img.map(*nid, off, std::min(len, info->size - std::min(off, info->size)));
    if (!extents) {
      ADD_FAILURE() << path << ": " << extents.error().to_string();
      return {};
    }
    return *extents;
  }

  // The chunk-info indexes of path's data, in file order.
  std::vector<std::uint32_t> chunks_of(const std::string& path) {
    std::vector<std::uint32_t> out;
    for (const auto& e : extents_of(path)) {
      EXPECT_EQ(e.kind, erofs::Extent::Kind::kBlob) << path;
      EXPECT_TRUE(e.ci_index.has_value()) << path;
      out.push_back(e.ci_index.value_or(0));
    }
    return out;
  }

  // Fill [off, off+len) of path's data through the blob cache, as a front end would.
  void read(const std::string& path, std::uint64_t off = 0, std::uint64_t len = UINT64_MAX) {
    const auto extents = extents_of(path, off, len);
    ASSERT_FALSE(extents.empty()) << path;
    for (const auto& e : extents) {
      auto st = image_->blobs()[e.blob_index]->fill(e.offset, e.length);
      ASSERT_TRUE(st) << path << ": " << st.error().to_string();
    }
  }

  static constexpr std::uint32_t kChunk = 64 << 10;
  cfntest::TempDir tmp_;
  std::unique_ptr<BlobCache> cache_;
  std::shared_ptr<BoundImage> image_;
};

// The error of load(path), with a test failure when it loaded.
base::Error load_error(const std::string& path) {
  auto boot = BoundImage::load(path);
  if (boot) {
    ADD_FAILURE() << path << " loaded";
    return base::Error{};
  }
  return boot.error();
}

bool names(const base::Error& e, const std::string& what) {
  return e.to_string().find(what) != std::string::npos;
}

TEST_F(BoundImageTest, LoadRefusesAMissingBootstrap) {
  const auto e = load_error(tmp_.sub("nothing.boot"));
  EXPECT_EQ(e.code, ENOENT);
  EXPECT_TRUE(names(e, "bootstrap " + tmp_.sub("nothing.boot"))) << e.to_string();
  EXPECT_EQ(load_error(tmp_.path()).code, EINVAL);  // a directory: not a regular file
}

TEST_F(BoundImageTest, LoadRefusesACorruptBootstrap) {
  convert::testing::write_string(tmp_.sub("zeros.boot"), std::string(8192, '\0'));
  auto e = load_error(tmp_.sub("zeros.boot"));
  EXPECT_NE(e.code, 0);
  EXPECT_TRUE(names(e, "bootstrap " + tmp_.sub("zeros.boot"))) << e.to_string();

  convert::testing::write_string(tmp_.sub("empty.boot"), "");
  e = load_error(tmp_.sub("empty.boot"));
  EXPECT_NE(e.code, 0);
  EXPECT_TRUE(names(e, "bootstrap " + tmp_.sub("empty.boot"))) << e.to_string();

  // A real bootstrap cut short: its superblock, nothing of its tables.
  ASSERT_NO_FATAL_FAILURE(convert());
  auto whole = base::read_file(tmp_.sub("img/image.boot"));
  ASSERT_TRUE(whole) << whole.error().to_string();
  ASSERT_GT(whole->size(), 2048U);
  convert::testing::write_string(tmp_.sub("cut.boot"),
                                 std::string(reinterpret_cast<const char*>(whole->data()), 2048));
  e = load_error(tmp_.sub("cut.boot"));
  EXPECT_NE(e.code, 0);
  EXPECT_TRUE(names(e, "bootstrap " + tmp_.sub("cut.boot"))) << e.to_string();
}

TEST_F(BoundImageTest, LoadRefusesAPlainErofsImage) {
  // mkfs.erofs output (tests/data/erofs/README.md): EROFS, but no RAFS tables.
  const std::string plain = std::string(CFN_TEST_DATA_DIR) + "/erofs/plain.img";
  const auto e = load_error(plain);
  EXPECT_EQ(e.code, EINVAL);
  EXPECT_TRUE(names(e, "not a RAFS v6 bootstrap")) << e.to_string();
  EXPECT_TRUE(names(e, "plain.img")) << e.to_string();
}

TEST_F(BoundImageTest, LoadWithoutPrefetchTable) {
  ASSERT_NO_FATAL_FAILURE(convert());
  // Through a symlink: the loaded path is the real one.
  std::filesystem::create_symlink(tmp_.sub("img/image.boot"), tmp_.sub("link.boot"));
  auto boot = BoundImage::load(tmp_.sub("link.boot"));
  ASSERT_TRUE(boot) << boot.error().to_string();
  EXPECT_EQ(boot->path(), std::filesystem::canonical(tmp_.sub("img/image.boot")).string());
  EXPECT_TRUE(boot->image().is_rafs());
  auto table = boot->image().prefetch_table();
  ASSERT_TRUE(table) << table.error().to_string();
  EXPECT_TRUE(table->empty());
}

TEST_F(BoundImageTest, LoadThenOpenBindsWhatWasLoaded) {
  ASSERT_NO_FATAL_FAILURE(convert({"/d/c"}));
  auto boot = BoundImage::load(tmp_.sub("img/image.boot"));
  ASSERT_TRUE(boot) << boot.error().to_string();
  auto table = boot->image().prefetch_table();
  ASSERT_TRUE(table) << table.error().to_string();
  EXPECT_EQ(table->size(), 1U);
  const std::string path = boot->path();
  // The bootstrap is not read again: gone from disk, it still opens.
  ASSERT_EQ(::unlink(tmp_.sub("img/image.boot").c_str()), 0);
  auto backend = make_localfs_backend(tmp_.sub("img/blobs"));
  ASSERT_TRUE(backend) << backend.error().to_string();
  auto image = BoundImage::open(std::move(*boot), std::move(*backend), *cache_);
  ASSERT_TRUE(image) << image.error().to_string();
  image_ = std::move(*image);
  EXPECT_EQ(image_->bootstrap_path(), path);
  ASSERT_EQ(image_->blobs().size(), 1U);
  auto lists = image_->prefetch_list_chunks();
  ASSERT_TRUE(lists) << lists.error().to_string();
  ASSERT_EQ(lists->size(), 1U);
  EXPECT_EQ((*lists)[0], chunks_of("/d/c"));
  read("/d/c");
  auto files = image_->accessed_files();
  ASSERT_TRUE(files) << files.error().to_string();
  EXPECT_EQ(*files, (std::vector<std::string>{"/d/c"}));
}

TEST_F(BoundImageTest, NoPrefetchTableGivesEmptyLists) {
  build();
  auto lists = image_->prefetch_list_chunks();
  ASSERT_TRUE(lists) << lists.error().to_string();
  ASSERT_EQ(lists->size(), 1U);
  EXPECT_TRUE((*lists)[0].empty());
}

TEST_F(BoundImageTest, PrefetchTableChunksInTableOrderWithoutRepeats) {
  // /d/c first, then /a, then the directory /d (b and c: c already listed).
  build({"/d/c", "/a", "/d"});
  auto lists = image_->prefetch_list_chunks();
  ASSERT_TRUE(lists) << lists.error().to_string();
  ASSERT_EQ(lists->size(), 1U);
  std::vector<std::uint32_t> want = chunks_of("/d/c");
  for (auto ci : chunks_of("/a")) {
    want.push_back(ci);
  }
  for (auto ci : chunks_of("/d/b")) {
    want.push_back(ci);
  }
  EXPECT_EQ(want.size(), 6U);
  EXPECT_EQ((*lists)[0], want);
}

TEST_F(BoundImageTest, AccessedFilesInOrderOfFirstDemand) {
  build();
  auto none = image_->accessed_files();
  ASSERT_TRUE(none) << none.error().to_string();
  EXPECT_TRUE(none->empty());

  read("/d/c");
  read("/a");
  read("/d/c");  // again: no second entry, no change of order
  auto files = image_->accessed_files();
  ASSERT_TRUE(files) << files.error().to_string();
  EXPECT_EQ(*files, (std::vector<std::string>{"/d/c", "/a"}));

  // A read of one chunk in the middle of /d/b names the file too.
  const auto b = chunks_of("/d/b");
  ASSERT_EQ(b.size(), 3U);
  ASSERT_EQ(extents_of("/d/b", kChunk, 1).size(), 1U);
  read("/d/b", kChunk, 1);
  files = image_->accessed_files();
  ASSERT_TRUE(files);
  EXPECT_EQ(*files, (std::vector<std::string>{"/d/c", "/a", "/d/b"}));
}

}  // namespace
}  // namespace cfnd
