// SPDX-License-Identifier: Apache-2.0
// pull_bootstrap of eStargz images against an in-memory registry: footer and TOC by
// Range GETs only, the bootstrap cached by the layer digests, and the refusals (a plain
// gzip layer, a TOC that does not match its annotation).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>

#include "base/file.h"
#include "daemon/registry_image.h"
#include "erofs/reader.h"
#include "estargz/toc.h"
#include "tests/unit/daemon/stub_registry_client.h"
#include "tests/unit/estargz/layer_maker.h"
#include "tests/unit/temp_dir.h"

namespace cfnd {
namespace {

using estargz::testing::ByteVec;

// Serves one manifest and its blobs from memory; counts what was read.
class FakeClient final : public cfntest::StubRegistryClient {
 public:
  registry::Manifest manifest;
  std::map<std::string, ByteVec> blobs;
  // Layers are read on several threads.
  std::atomic<int> range_reads{0};
  std::atomic<std::uint64_t> range_bytes{0};
  // When > 0: reads wait until this many are in flight together (together_seen).
  int want_together = 0;
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;
  bool together_seen = false;
  bool gave_up = false;

  base::Result<registry::FetchedManifest> get_manifest(const registry::Reference&) override {
    return base::make_error(ENOSYS, "fake");
  }
  base::Result<registry::ResolvedImage> resolve(const registry::Reference&) override {
    registry::ResolvedImage r;
    r.manifest.digest = "sha256:" + std::string(64, 'e');
    r.manifest.parsed = manifest;
    return r;
  }
  base::Result<std::vector<std::byte>> get_blob(const registry::Reference&, const std::string&,
                                                std::uint64_t) override {
    ADD_FAILURE() << "a whole blob was downloaded";
    return base::make_error(ENOSYS, "fake");
  }
  base::Result<std::uint64_t> get_blob_to_fd(const registry::Reference&, const std::string&,
                                             int) override {
    ADD_FAILURE() << "a whole blob was downloaded";
    return base::make_error(ENOSYS, "fake");
  }
  base::Status read_blob_range(const registry::Reference&, const std::string& digest,
                               std::uint64_t offset, base::MutableBytes out) override {
    auto it = blobs.find(digest);
    if (it == blobs.end()) {
      return base::make_error(ENOENT, "no such blob");
    }
    if (!base::in_bounds(offset, out.size(), it->second.size())) {
      return base::make_error(ERANGE, "416");
    }
    if (want_together > 0) {
      // Held until want_together reads are in flight at once (or 10 s pass: then
      // together_seen stays false and the test fails).
      std::unique_lock lk(mu);
      ++in_flight;
      if (in_flight >= want_together) {
        together_seen = true;
      }
      cv.notify_all();
      if (!cv.wait_for(lk, std::chrono::seconds(10), [&] { return together_seen || gave_up; })) {
        gave_up = true;  // the later reads do not wait again
      }
      --in_flight;
    }
    ++range_reads;
    range_bytes += out.size();
    std::copy_n(it->second.begin() + static_cast<std::ptrdiff_t>(offset), out.size(), out.begin());
    return {};
  }
  void read_blob_ranges(const registry::Reference&, const std::string&,
                        std::span<registry::RangeRead>) override {
    ADD_FAILURE() << "unexpected";
  }

  // Adds blob as a layer; annotated with the sha256 of toc_json when it is given.
  std::string add_layer(ByteVec blob, const std::string* toc_json) {
    registry::Descriptor d;
    d.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    d.digest = base::oci_digest(base::sha256(blob));
    d.size = blob.size();
    if (toc_json != nullptr) {
      d.annotations[std::string(estargz::kTocDigestAnnotation)] =
          base::oci_digest(base::sha256(base::as_bytes(*toc_json)));
    }
    manifest.layers.push_back(d);
    blobs[d.digest] = std::move(blob);
    return d.digest;
  }
};

estargz::testing::MadeLayer small_layer(const std::string& content) {
  estargz::testing::LayerMaker lm;
  estargz::testing::FileSpec f;
  f.name = "etc/hello.txt";
  f.content = content;
  lm.add(f);
  return lm.make();
}

registry::Reference ref() {
  auto r = registry::Reference::parse("127.0.0.1:5000/app:esgz");
  EXPECT_TRUE(r);
  return *r;
}

TEST(EstargzPull, ByRangeGetsThenFromTheCache) {
  cfntest::TempDir dir;
  FakeClient c;
  auto m = small_layer(std::string(100000, 'h'));
  const std::string digest = c.add_layer(m.blob, &m.toc_json);
  ASSERT_TRUE(is_estargz_image(c.manifest));
  auto pulled = pull_bootstrap(c, ref(), dir.path(), 64 << 20);
  ASSERT_TRUE(pulled) << pulled.error().to_string();
  EXPECT_FALSE(pulled->bootstrap_cached);
  // One GET of the layer's tail holds the footer and the TOC (a layer this small: all of it).
  EXPECT_EQ(c.range_reads.load(), 1);
  EXPECT_EQ(c.range_bytes.load(), std::min<std::uint64_t>(m.blob.size(), kEstargzTailBytes));
  EXPECT_EQ(pulled->early, nullptr);  // no .prefetch.landmark
  EXPECT_EQ(pulled->blob_ids, (std::vector<std::string>{digest.substr(7)}));
  EXPECT_NE(pulled->bootstrap_path.find("/bootstraps/estargz-"), std::string::npos);
  auto boot = base::read_file(pulled->bootstrap_path);
  ASSERT_TRUE(boot);
  auto img = erofs::Image::parse(*boot);
  ASSERT_TRUE(img);
  EXPECT_TRUE(img->lookup_path("/etc/hello.txt"));

  // Again: the bootstrap is found by the layer digests, nothing is read.
  auto again = pull_bootstrap(c, ref(), dir.path(), 64 << 20);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->bootstrap_cached);
  EXPECT_EQ(again->bootstrap_path, pulled->bootstrap_path);
  EXPECT_EQ(c.range_reads.load(), 1);
}

TEST(EstargzPull, PlainGzipLayerIsRefused) {
  cfntest::TempDir dir;
  FakeClient c;
  auto m = small_layer("x");
  c.add_layer(m.blob, &m.toc_json);
  // Stored (level 0): a plain gzip member of over 5000 bytes.
  c.add_layer(estargz::testing::gzip(base::as_bytes(std::string(5000, 'p')), 0), nullptr);
  auto pulled = pull_bootstrap(c, ref(), dir.path(), 64 << 20);
  ASSERT_FALSE(pulled);
  EXPECT_EQ(pulled.error().code, EINVAL);
  EXPECT_NE(pulled.error().message.find("plain gzip layer is refused"), std::string::npos)
      << pulled.error().to_string();
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/bootstraps") &&
               !std::filesystem::is_empty(dir.path() + "/bootstraps"));
}

TEST(EstargzPull, TocThatDoesNotMatchItsAnnotationIsRefused) {
  cfntest::TempDir dir;
  FakeClient c;
  auto m = small_layer("x");
  const std::string other = "{\"version\":1}";
  c.add_layer(m.blob, &other);
  auto pulled = pull_bootstrap(c, ref(), dir.path(), 64 << 20);
  ASSERT_FALSE(pulled);
  EXPECT_EQ(pulled.error().code, EBADMSG);
  EXPECT_NE(pulled.error().message.find("TOC digest mismatch"), std::string::npos)
      << pulled.error().to_string();
}

TEST(EstargzPull, WithoutTheAnnotationTheFooterIsProbed) {
  cfntest::TempDir dir;
  FakeClient c;
  auto m = small_layer(std::string(100000, 'h'));
  const std::string digest = c.add_layer(m.blob, nullptr);
  ASSERT_FALSE(is_estargz_image(c.manifest));
  auto pulled = pull_bootstrap(c, ref(), dir.path(), 64 << 20);
  ASSERT_TRUE(pulled) << pulled.error().to_string();
  // The probe's GET of the tail holds the footer and the TOC: no second footer GET.
  EXPECT_EQ(c.range_reads.load(), 1);
  EXPECT_EQ(c.range_bytes.load(), std::min<std::uint64_t>(m.blob.size(), kEstargzTailBytes));
  EXPECT_EQ(pulled->blob_ids, (std::vector<std::string>{digest.substr(7)}));
  auto boot = base::read_file(pulled->bootstrap_path);
  ASSERT_TRUE(boot);
  auto img = erofs::Image::parse(*boot);
  ASSERT_TRUE(img);
  EXPECT_TRUE(img->lookup_path("/etc/hello.txt"));
  // Again, with the bootstrap of these layers cached: the probe reads the footer only.
  const std::uint64_t before = c.range_bytes.load();
  auto again = pull_bootstrap(c, ref(), dir.path(), 64 << 20);
  ASSERT_TRUE(again) << again.error().to_string();
  EXPECT_TRUE(again->bootstrap_cached);
  EXPECT_EQ(c.range_reads.load(), 2);
  EXPECT_EQ(c.range_bytes.load() - before, estargz::kFooterSize);
}

TEST(EstargzPull, WithoutTheAnnotationAPlainGzipImageIsRefusedClearly) {
  cfntest::TempDir dir;
  FakeClient c;
  c.add_layer(estargz::testing::gzip(base::as_bytes(std::string(5000, 'p')), 0), nullptr);
  auto pulled = pull_bootstrap(c, ref(), dir.path(), 64 << 20);
  ASSERT_FALSE(pulled);
  EXPECT_EQ(pulled.error().code, EINVAL);
  EXPECT_NE(pulled.error().message.find("not a RAFS v6 (nydus) image"), std::string::npos)
      << pulled.error().to_string();
  EXPECT_NE(pulled.error().message.find("not eStargz either"), std::string::npos)
      << pulled.error().to_string();
  EXPECT_NE(pulled.error().message.find("plain gzip layer is refused"), std::string::npos)
      << pulled.error().to_string();
  EXPECT_EQ(c.range_reads.load(), 1);  // the footer probe only
  // An eStargz first layer with a plain one after it: the plain one is refused by name.
  FakeClient mixed;
  auto m = small_layer("x");
  mixed.add_layer(m.blob, nullptr);
  const std::string plain =
      mixed.add_layer(estargz::testing::gzip(base::as_bytes(std::string(5000, 'p')), 0), nullptr);
  pulled = pull_bootstrap(mixed, ref(), dir.path(), 64 << 20);
  ASSERT_FALSE(pulled);
  EXPECT_NE(pulled.error().message.find(plain), std::string::npos) << pulled.error().to_string();
  EXPECT_NE(pulled.error().message.find("plain gzip layer is refused"), std::string::npos)
      << pulled.error().to_string();
}

TEST(EstargzPull, ManyLayersAreReadTogetherAndMergedInOrder) {
  cfntest::TempDir dir;
  FakeClient c;
  // Nine layers, each replacing /etc/hello.txt: the top one's content wins.
  std::vector<std::string> digests;
  for (int i = 0; i < 9; ++i) {
    estargz::testing::LayerMaker lm;
    estargz::testing::FileSpec f;
    f.name = "etc/hello.txt";
    f.content = std::string(1000 + i, static_cast<char>('a' + i));
    lm.add(f);
    f.name = "layer" + std::to_string(i);
    f.content = "x";
    lm.add(f);
    auto m = lm.make();
    digests.push_back(c.add_layer(m.blob, &m.toc_json).substr(7));
  }
  c.want_together = 3;  // layers are read together, not one after the other
  auto pulled = pull_bootstrap(c, ref(), dir.path(), 64 << 20);
  ASSERT_TRUE(pulled) << pulled.error().to_string();
  EXPECT_TRUE(c.together_seen);
  EXPECT_EQ(c.range_reads.load(), 9);  // one tail (footer and TOC) per layer
  EXPECT_EQ(pulled->blob_ids, digests);
  auto boot = base::read_file(pulled->bootstrap_path);
  ASSERT_TRUE(boot);
  auto img = erofs::Image::parse(*boot);
  ASSERT_TRUE(img);
  for (int i = 0; i < 9; ++i) {
    EXPECT_TRUE(img->lookup_path("/layer" + std::to_string(i))) << i;
  }
  auto hello = img->lookup_path("/etc/hello.txt");
  ASSERT_TRUE(hello);
  auto hs = img->stat(*hello);
  ASSERT_TRUE(hs);
  EXPECT_EQ(hs->size, 1008U);
  // A broken layer among them (its TOC member lies): the error names that layer.
  FakeClient bad;
  std::string broken;
  for (int i = 0; i < 6; ++i) {
    auto m = small_layer(std::string(100 + i, 'q'));
    const std::string other = "{}";
    auto d = bad.add_layer(m.blob, i == 4 ? &other : &m.toc_json);
    if (i == 4) {
      broken = d;
    }
  }
  cfntest::TempDir dir2;
  pulled = pull_bootstrap(bad, ref(), dir2.path(), 64 << 20);
  ASSERT_FALSE(pulled);
  EXPECT_NE(pulled.error().message.find(broken), std::string::npos) << pulled.error().to_string();
}

TEST(EstargzPull, ABootstrapOverTheCapIsRefused) {
  cfntest::TempDir dir;
  FakeClient c;
  auto m = small_layer("x");
  c.add_layer(m.blob, &m.toc_json);
  auto pulled = pull_bootstrap(c, ref(), dir.path(), 100);
  ASSERT_FALSE(pulled);
  EXPECT_EQ(pulled.error().code, EMSGSIZE);
}

// A layer whose TOC member is bigger than the tail read first: the second GET reads only
// the part before the tail, and the TOC is the same as from one GET.
TEST(EstargzPull, ATocBiggerThanTheTailTakesOneMoreGetOfItsHead) {
  FakeClient c;
  estargz::testing::LayerMaker lm;
  for (int i = 0; i < 200; ++i) {
    estargz::testing::FileSpec f;
    f.name = "dir/file-with-a-long-name-" + std::to_string(i);
    f.content = std::to_string(i);
    lm.add(f);
  }
  auto m = lm.make();
  const std::string digest = c.add_layer(m.blob, &m.toc_json);
  const std::uint64_t toc_bytes = m.blob.size() - m.toc_offset;  // member + footer
  ASSERT_GT(toc_bytes, 1000U);
  const auto& l = c.manifest.layers[0];
  for (const std::uint64_t tail :
       {std::uint64_t{estargz::kFooterSize}, std::uint64_t{500}, toc_bytes - 1}) {
    int gets = 0;
    std::uint64_t bytes = 0;
    const int before = c.range_reads.load();
    auto toc = read_estargz_layer_toc(c, ref(), l, tail, {}, &gets, &bytes);
    ASSERT_TRUE(toc) << tail << ": " << toc.error().to_string();
    EXPECT_EQ(gets, 2) << tail;
    EXPECT_EQ(c.range_reads.load() - before, 2) << tail;
    EXPECT_EQ(bytes, toc_bytes) << tail;  // nothing read twice
    EXPECT_EQ(toc->toc_offset, m.toc_offset);
    EXPECT_EQ(toc->toc.entries.size(), 200U);
    EXPECT_EQ(toc->blob_id, digest.substr(7));
  }
  // Exactly the TOC and the footer, or more: one GET.
  for (const std::uint64_t tail : {toc_bytes, toc_bytes + 1, std::uint64_t{1} << 30}) {
    int gets = 0;
    std::uint64_t bytes = 0;
    auto toc = read_estargz_layer_toc(c, ref(), l, tail, {}, &gets, &bytes);
    ASSERT_TRUE(toc) << tail << ": " << toc.error().to_string();
    EXPECT_EQ(gets, 1) << tail;
    EXPECT_EQ(bytes, std::min<std::uint64_t>(tail, m.blob.size())) << tail;
    EXPECT_EQ(toc->toc.entries.size(), 200U);
  }
}

// A footer whose TOC offset lies (into file data, past the layer, into the TOC member):
// a clear error naming the layer, whether the tail held the claimed TOC or not.
TEST(EstargzPull, ALyingFooterOffsetIsAClearError) {
  auto m = small_layer(std::string(3000, 'z'));
  struct Case {
    std::uint64_t offset;
    int code;
  };
  const std::uint64_t body = m.blob.size() - estargz::kFooterSize;
  for (const Case k :
       {Case{0, 0}, Case{1, EBADMSG}, Case{m.toc_offset + 3, EBADMSG}, Case{body - 10, EBADMSG},
        Case{body, EBADMSG}, Case{m.blob.size() * 2, EBADMSG}}) {
    for (const std::uint64_t tail : {std::uint64_t{estargz::kFooterSize}, std::uint64_t{1} << 20}) {
      FakeClient c;
      ByteVec blob(m.blob.begin(), m.blob.end() - estargz::kFooterSize);
      const auto f = estargz::testing::footer(k.offset);
      blob.insert(blob.end(), f.begin(), f.end());
      const std::string digest = c.add_layer(blob, nullptr);
      auto toc = read_estargz_layer_toc(c, ref(), c.manifest.layers[0], tail);
      ASSERT_FALSE(toc) << k.offset << " " << tail;
      if (k.code != 0) {
        EXPECT_EQ(toc.error().code, k.code) << k.offset << ": " << toc.error().to_string();
      } else {
        // The whole layer as a TOC member: its tar's first entry is a file, not the TOC.
        EXPECT_TRUE(toc.error().code == ENOENT || toc.error().code == EBADMSG)
            << toc.error().to_string();
      }
      EXPECT_NE(toc.error().to_string().find(digest), std::string::npos) << toc.error().to_string();
      EXPECT_LE(c.range_reads.load(), 2);
    }
  }
}

// A layer with a .prefetch.landmark: its prioritized files' members are fetched as soon as
// its TOC is parsed, and the bytes held are the layer's.
TEST(EstargzPull, ThePrioritizedFilesAreFetchedWhileTheBootstrapIsBuilt) {
  cfntest::TempDir dir;
  FakeClient c;
  estargz::testing::LayerMaker lm;
  estargz::testing::FileSpec f;
  f.name = "usr/bin/first";
  f.content = std::string(20000, 'f');
  lm.add(f);
  f.name = ".prefetch.landmark";
  f.content = "\x0f";
  lm.add(f);
  f.name = "usr/lib/later";
  f.content = std::string(20000, 'l');
  lm.add(f);
  auto m = lm.make();
  const std::string digest = c.add_layer(m.blob, &m.toc_json);
  auto pulled = pull_bootstrap(c, ref(), dir.path(), 64 << 20);
  ASSERT_TRUE(pulled) << pulled.error().to_string();
  ASSERT_NE(pulled->early, nullptr);
  EXPECT_NE(pulled->timings.find("early prefetch: first GET at"), std::string::npos)
      << pulled->timings;
  auto toc = estargz::parse_toc(m.toc_member, nullptr);
  ASSERT_TRUE(toc);
  std::uint64_t first = 0;
  std::uint64_t landmark = 0;
  for (const auto& e : toc->entries) {
    if (e.name == "usr/bin/first") {
      first = *e.offset;
    }
    if (e.name == ".prefetch.landmark") {
      landmark = *e.offset;
    }
  }
  ASSERT_LT(first, landmark);
  ByteVec held(landmark - first);
  EXPECT_EQ(pulled->early->take(digest.substr(7), first, held), held.size());
  EXPECT_TRUE(std::equal(held.begin(), held.end(), m.blob.begin() + static_cast<long>(first)));
  // Nothing past the landmark is held.
  ByteVec later(10);
  EXPECT_EQ(pulled->early->take(digest.substr(7), landmark, later), 0U);
  const auto st = pulled->early->stats();
  EXPECT_EQ(st.fetched_bytes, landmark - first);
  EXPECT_EQ(st.served_bytes, landmark - first);
  EXPECT_EQ(st.held_bytes, 0U);        // served in full: freed
  EXPECT_EQ(c.range_reads.load(), 2);  // the tail, the landmark's members
}

}  // namespace
}  // namespace cfnd
