// SPDX-License-Identifier: Apache-2.0
#include "daemon/registry_image.h"

#include <gtest/gtest.h>

namespace cfnd {
namespace {

registry::Descriptor layer(std::string media, std::string digest,
                           std::map<std::string, std::string> ann = {}) {
  registry::Descriptor d;
  d.media_type = std::move(media);
  d.digest = std::move(digest);
  d.annotations = std::move(ann);
  return d;
}

const std::string kA = "sha256:" + std::string(64, 'a');
const std::string kB = "sha256:" + std::string(64, 'b');
const std::string kBoot = "sha256:" + std::string(64, 'c');

TEST(RegistryImage, NydusManifestByAnnotation) {
  registry::Manifest m;
  m.layers = {layer(std::string(registry::kMediaNydusBlob), kA, {{kAnnotationNydusBlob, "true"}}),
              layer(std::string(registry::kMediaNydusBlob), kB),
              layer(std::string(registry::kMediaOciLayerGzip), kBoot,
                    {{kAnnotationNydusBootstrap, "true"}})};
  auto l = nydus_layers(m);
  ASSERT_TRUE(l) << l.error().to_string();
  EXPECT_EQ(l->bootstrap.digest, kBoot);
  ASSERT_EQ(l->blobs.size(), 2U);
  EXPECT_TRUE(check_blob_layers({std::string(64, 'a'), std::string(64, 'b')}, *l));
  auto bad = check_blob_layers({std::string(64, 'd')}, *l);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EINVAL);
}

TEST(RegistryImage, BlobLayerRenamedByAnnotation) {
  // Upstream's fixture: the bootstrap names the blob by an id that is not the layer's
  // digest; the layer says which id it holds.
  const std::string id(64, 'e');
  registry::Manifest m;
  m.layers = {layer(std::string(registry::kMediaNydusBlob), kA,
                    {{kAnnotationNydusBlob, "true"}, {kAnnotationNydusBlobDigest, "sha256:" + id}}),
              layer(std::string(registry::kMediaNydusBlob), kB,
                    {{kAnnotationNydusBlob, "true"}, {kAnnotationNydusBlobDigest, kB}}),
              layer(std::string(registry::kMediaNydusBlob), "sha256:" + std::string(64, 'f'),
                    {{kAnnotationNydusBlob, "true"}, {kAnnotationNydusBlobDigest, "sha256:xyz"}}),
              layer(std::string(registry::kMediaOciLayerGzip), kBoot,
                    {{kAnnotationNydusBootstrap, "true"}})};
  auto l = nydus_layers(m);
  ASSERT_TRUE(l) << l.error().to_string();
  auto renamed = renamed_blob_layers(*l);
  ASSERT_EQ(renamed.size(), 1U);  // the same name and a malformed one are not renames
  EXPECT_EQ(renamed.at(id), kA);
  EXPECT_TRUE(check_blob_layers({id, std::string(64, 'b')}, *l));
  EXPECT_TRUE(check_blob_layers({std::string(64, 'a')}, *l));
  auto bad = check_blob_layers({std::string(64, 'd')}, *l);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().to_string().find(kAnnotationNydusBlobDigest), std::string::npos);
}

TEST(RegistryImage, NydusManifestByMediaTypes) {
  registry::Manifest m;
  m.layers = {layer(std::string(registry::kMediaNydusBlob), kA),
              layer(std::string(registry::kMediaOciLayerGzip), kBoot)};
  auto l = nydus_layers(m);
  ASSERT_TRUE(l) << l.error().to_string();
  EXPECT_EQ(l->bootstrap.digest, kBoot);
}

TEST(RegistryImage, OrdinaryImageIsRefused) {
  registry::Manifest m;
  m.layers = {layer(std::string(registry::kMediaOciLayerGzip), kA),
              layer(std::string(registry::kMediaOciLayerGzip), kB)};
  auto l = nydus_layers(m);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, EINVAL);
  EXPECT_NE(l.error().to_string().find("not a RAFS v6 (nydus) image"), std::string::npos);
  EXPECT_FALSE(nydus_layers(registry::Manifest{}));
}

TEST(RegistryImage, ClientConfigFromOptions) {
  RegistryOptions o;
  o.stall_timeout_ms = 2000;
  o.retries = 1;
  o.insecure = true;
  o.mirrors["h:5000"] = {"http://127.0.0.1:1"};
  auto ref = registry::Reference::parse("h:5000/a/b:t");
  ASSERT_TRUE(ref);
  auto c = client_config(o, *ref);
  EXPECT_EQ(c.stall_timeout, std::chrono::milliseconds(2000));
  EXPECT_EQ(c.retry.max_retries, 1);
  ASSERT_TRUE(c.hosts.contains("h:5000"));
  EXPECT_TRUE(c.hosts["h:5000"].insecure_skip_verify);
  EXPECT_EQ(c.hosts["h:5000"].mirrors.size(), 1U);
  EXPECT_FALSE(c.platform.architecture.empty());
}

}  // namespace
}  // namespace cfnd
