// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/nydus.h"

#include <gtest/gtest.h>

namespace snapshotter {
namespace {

const Labels kBlobRpull = {
    {kTargetRefLabel, "sha256:chain1"},
    {kNydusBlobLabel, "true"},
    {kStargzRefLabel, "127.0.0.1:5000/x:nydus"},
    {kStargzDigestLabel, "sha256:layer1"},
};

TEST(NydusClassify, BlobNeedsRefAndTrue) {
  EXPECT_EQ(classify_prepare(kBlobRpull), LayerKind::kNydusBlob);
  Labels no_ref = kBlobRpull;
  no_ref.erase(kTargetRefLabel);
  EXPECT_EQ(classify_prepare(no_ref), LayerKind::kPlain);
  Labels not_true = kBlobRpull;
  not_true[kNydusBlobLabel] = "false";
  EXPECT_EQ(classify_prepare(not_true), LayerKind::kPlain);
  EXPECT_EQ(classify_prepare({{kTargetRefLabel, "sha256:c"}, {kNydusBootstrapLabel, "true"}}),
            LayerKind::kPlain);
  EXPECT_EQ(classify_prepare({}), LayerKind::kPlain);
}

TEST(NydusClassify, EstargzNeedsTheFlagRefAndTocDigest) {
  Labels l = {{kTargetRefLabel, "sha256:c"}, {kStargzTocDigestLabel, "sha256:t"}};
  EXPECT_EQ(classify_prepare(l), LayerKind::kPlain);
  EXPECT_EQ(classify_prepare(l, true), LayerKind::kEstargz);
  Labels no_ref = l;
  no_ref.erase(kTargetRefLabel);
  EXPECT_EQ(classify_prepare(no_ref, true), LayerKind::kPlain);
  Labels empty_toc = l;
  empty_toc[kStargzTocDigestLabel] = "";
  EXPECT_EQ(classify_prepare(empty_toc, true), LayerKind::kPlain);
  // A nydus data layer stays one.
  l[kNydusBlobLabel] = "true";
  EXPECT_EQ(classify_prepare(l, true), LayerKind::kNydusBlob);
}

TEST(NydusRemoteLayer, EstargzHandshakeLabels) {
  Labels rpull = {{kTargetRefLabel, "sha256:c"},
                  {kStargzTocDigestLabel, "sha256:t"},
                  {kStargzRefLabel, "reg/x:esgz"},
                  {kStargzDigestLabel, "sha256:l1"},
                  {kStargzLayersLabel, "sha256:l1,sha256:l2"}};
  RemoteLayer r = remote_layer(rpull);
  EXPECT_EQ(r.image_layers, (std::vector<std::string>{"sha256:l1", "sha256:l2"}));
  Labels out = handshake_labels(rpull, r, LayerKind::kEstargz);
  EXPECT_TRUE(is_estargz_handshake(out));
  EXPECT_EQ(out.at(kImageLayersLabel), "sha256:l1,sha256:l2");
  EXPECT_FALSE(is_top_layer(out));
  EXPECT_FALSE(is_estargz_handshake(rpull));
  EXPECT_FALSE(is_estargz_handshake(handshake_labels(rpull, r)));
  Labels cri = {{kTargetRefLabel, "sha256:c"}, {kCriImageLayersLabel, "sha256:l2"}};
  EXPECT_TRUE(is_top_layer(cri));
  EXPECT_EQ(remote_layer(cri).image_layers, std::vector<std::string>{"sha256:l2"});
  EXPECT_TRUE(is_top_layer({}));
}

TEST(NydusFindImage, EstargzTopLayerIsTheImage) {
  auto esgz = [](int64_t id, const std::string& layers) {
    return ChainEntry{id,
                      "esgz" + std::to_string(id),
                      {{kEstargzLayerLabel, "true"},
                       {kImageRefLabel, "reg/x:esgz"},
                       {kImageLayersLabel, layers},
                       {kLayerDigestLabel, "sha256:l" + std::to_string(id)}}};
  };
  std::vector<ChainEntry> chain = {
      {5, "upper", {}}, esgz(3, "sha256:l3"), esgz(2, "sha256:l2,sha256:l3")};
  auto im = find_image(chain, [](int64_t) { return false; });
  ASSERT_TRUE(im) << im.error().to_string();
  ASSERT_TRUE(*im);
  EXPECT_TRUE((*im)->estargz);
  EXPECT_EQ((*im)->bootstrap_id, 3);
  EXPECT_EQ((*im)->bootstrap_name, "esgz3");
  EXPECT_EQ((*im)->image_ref, "reg/x:esgz");
  EXPECT_EQ((*im)->upper_lowers, std::vector<int64_t>{5});
  // On a layer recorded for a taller image: a clear error.
  auto tall = find_image({esgz(2, "sha256:l2,sha256:l3")}, [](int64_t) { return false; });
  ASSERT_FALSE(tall);
  EXPECT_EQ(tall.error().code, EINVAL);
  // Without a reference: the hint.
  ChainEntry bare{4, "bare", {{kEstargzLayerLabel, "true"}}};
  auto no_ref = find_image({bare}, [](int64_t) { return false; });
  ASSERT_FALSE(no_ref);
  EXPECT_NE(no_ref.error().message.find("rpull"), std::string::npos);
}

TEST(NydusRemoteLayer, RpullAndCriLabels) {
  RemoteLayer r = remote_layer(kBlobRpull);
  EXPECT_EQ(r.target, "sha256:chain1");
  EXPECT_EQ(r.image_ref, "127.0.0.1:5000/x:nydus");
  EXPECT_EQ(r.layer_digest, "sha256:layer1");
  EXPECT_EQ(r.manifest_digest, "");
  Labels cri = {{kTargetRefLabel, "sha256:c"},         {kNydusBlobLabel, "true"},
                {kCriImageRefLabel, "reg/x:cri"},      {kCriLayerDigestLabel, "sha256:l"},
                {kCriManifestDigestLabel, "sha256:m"}, {kStargzRefLabel, "reg/x:other"}};
  r = remote_layer(cri);
  EXPECT_EQ(r.image_ref, "reg/x:cri");
  EXPECT_EQ(r.layer_digest, "sha256:l");
  EXPECT_EQ(r.manifest_digest, "sha256:m");
  Labels out = handshake_labels(cri, r);
  EXPECT_EQ(out.at(kImageRefLabel), "reg/x:cri");
  EXPECT_EQ(out.at(kLayerDigestLabel), "sha256:l");
  EXPECT_EQ(out.at(kManifestDigestLabel), "sha256:m");
  EXPECT_EQ(out.at(kTargetRefLabel), "sha256:c");
  // Without CRI's or rpull's labels nothing is recorded.
  Labels bare = {{kTargetRefLabel, "sha256:c"}, {kNydusBlobLabel, "true"}};
  EXPECT_EQ(handshake_labels(bare, remote_layer(bare)), bare);
}

auto no_files = [](int64_t) { return false; };

ChainEntry blob(int64_t id, const std::string& ref = "") {
  ChainEntry e{id, "blob" + std::to_string(id), {{kNydusBlobLabel, "true"}}};
  if (!ref.empty()) {
    e.labels[kImageRefLabel] = ref;
  }
  return e;
}

TEST(NydusFindImage, LabelledBootstrapOverBlobs) {
  std::vector<ChainEntry> chain = {
      {3, "boot", {{kNydusBootstrapLabel, "true"}, {kStargzRefLabel, "reg/x:1"}}},
      blob(2),
      blob(1)};
  auto im = find_image(chain, no_files);
  ASSERT_TRUE(im) << im.error().to_string();
  ASSERT_TRUE(im->has_value());
  EXPECT_EQ((*im)->bootstrap_id, 3);
  EXPECT_EQ((*im)->bootstrap_name, "boot");
  EXPECT_EQ((*im)->image_ref, "reg/x:1");
  EXPECT_TRUE((*im)->upper_lowers.empty());
}

TEST(NydusFindImage, ReferenceFromADataLayerAndLayersAbove) {
  std::vector<ChainEntry> chain = {{9, "committed-container", {}},
                                   {3, "boot", {{kNydusBootstrapLabel, "true"}}},
                                   blob(2, "reg/x:2"),
                                   blob(1)};
  chain[2].labels[kCriManifestDigestLabel] = "sha256:m";
  auto im = find_image(chain, no_files);
  ASSERT_TRUE(im && im->has_value());
  EXPECT_EQ((*im)->image_ref, "reg/x:2");
  EXPECT_EQ((*im)->manifest_digest, "sha256:m");
  EXPECT_EQ((*im)->upper_lowers, std::vector<int64_t>{9});
}

TEST(NydusFindImage, UnlabelledBootstrapOnlyOverHandshakes) {
  auto boot_file = [](int64_t id) { return id == 3; };
  std::vector<ChainEntry> chain = {{3, "boot", {}}, blob(2, "reg/x:3"), blob(1)};
  auto im = find_image(chain, boot_file);
  ASSERT_TRUE(im && im->has_value());
  EXPECT_EQ((*im)->bootstrap_id, 3);
  // image/image.boot over an ordinary layer: an ordinary image (ctr image pull of it).
  std::vector<ChainEntry> plain = {{3, "boot", {}}, {2, "l2", {}}};
  im = find_image(plain, boot_file);
  ASSERT_TRUE(im);
  EXPECT_FALSE(im->has_value());
  // ... and with no parent at all.
  im = find_image({{3, "boot", {}}}, boot_file);
  ASSERT_TRUE(im);
  EXPECT_FALSE(im->has_value());
}

TEST(NydusFindImage, PlainChainsAndTheBootstrapLayersOwnUnpack) {
  auto im = find_image({{2, "a", {}}, {1, "b", {}}}, no_files);
  ASSERT_TRUE(im);
  EXPECT_FALSE(im->has_value());
  // The bootstrap layer's Prepare stands on data layers only: unpacked as usual.
  im = find_image({blob(2, "reg/x:1"), blob(1, "reg/x:1")}, no_files);
  ASSERT_TRUE(im);
  EXPECT_FALSE(im->has_value());
  im = find_image({}, no_files);
  ASSERT_TRUE(im);
  EXPECT_FALSE(im->has_value());
}

TEST(NydusFindImage, NoReferenceIsAClearError) {
  std::vector<ChainEntry> chain = {{3, "boot", {{kNydusBootstrapLabel, "true"}}}, blob(2)};
  auto im = find_image(chain, no_files);
  ASSERT_FALSE(im);
  EXPECT_EQ(im.error().code, EINVAL);
  EXPECT_NE(im.error().message.find("disable_snapshot_annotations = false"), std::string::npos);
  EXPECT_NE(im.error().message.find("rpull"), std::string::npos);
}

}  // namespace
}  // namespace snapshotter
