// SPDX-License-Identifier: Apache-2.0
#include "registry/manifest.h"

#include <gtest/gtest.h>

#include <string>

namespace registry {
namespace {

const std::string kA = "sha256:" + std::string(64, 'a');
const std::string kB = "sha256:" + std::string(64, 'b');
const std::string kC = "sha256:" + std::string(64, 'c');

std::string oci_manifest() {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
    "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
         kA + R"(","size":123},
    "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" +
         kB +
         R"(","size":4567,"annotations":{"containerd.io/snapshot/nydus-blob":"true"}}],
    "annotations":{"org.opencontainers.image.created":"2024"}})";
}

std::string docker_list() {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
    "manifests":[
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":")" +
         kA + R"(","size":10,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":")" +
         kB +
         R"(","size":11,"platform":{"architecture":"amd64","os":"linux"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
         kC + R"(","size":12,"platform":{"architecture":"unknown","os":"unknown"}}]})";
}

base::Result<std::variant<Manifest, Index>> parse(const std::string& s, std::string_view ct = "") {
  return parse_manifest(base::as_bytes(s), ct);
}

TEST(Manifest, AcceptHeaderHasAllFour) {
  const std::string a = manifest_accept_header();
  for (auto t :
       {kMediaOciManifest, kMediaOciIndex, kMediaDockerManifest, kMediaDockerManifestList}) {
    EXPECT_NE(a.find(t), std::string::npos) << t;
  }
}

TEST(Manifest, ParseOci) {
  auto r = parse(oci_manifest(), "application/vnd.oci.image.manifest.v1+json; charset=utf-8");
  ASSERT_TRUE(r) << r.error().message;
  const auto& m = std::get<Manifest>(*r);
  EXPECT_EQ(m.media_type, kMediaOciManifest);
  EXPECT_EQ(m.config.digest, kA);
  EXPECT_EQ(m.config.size, 123U);
  ASSERT_EQ(m.layers.size(), 1U);
  EXPECT_EQ(m.layers[0].size, 4567U);
  EXPECT_EQ(m.layers[0].annotations.at("containerd.io/snapshot/nydus-blob"), "true");
  EXPECT_EQ(m.annotations.at("org.opencontainers.image.created"), "2024");
}

TEST(Manifest, RoundTrip) {
  auto r = parse(oci_manifest());
  ASSERT_TRUE(r);
  const std::string s = serialize(std::get<Manifest>(*r));
  auto again = parse(s);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(serialize(std::get<Manifest>(*again)), s);
  EXPECT_EQ(s.rfind(R"({"schemaVersion":2,"mediaType":)", 0), 0U) << s;

  auto i = parse(docker_list());
  ASSERT_TRUE(i) << i.error().message;
  const std::string si = serialize(std::get<Index>(*i));
  auto i2 = parse(si);
  ASSERT_TRUE(i2);
  const auto& idx = std::get<Index>(*i2);
  ASSERT_EQ(idx.manifests.size(), 3U);
  EXPECT_EQ(idx.manifests[0].platform->variant, "v8");
  EXPECT_EQ(serialize(idx), si);
}

TEST(Manifest, KindFromShapeWhenNoMediaType) {
  std::string m = oci_manifest();
  m.erase(m.find(R"("mediaType":"application/vnd.oci.image.manifest.v1+json",)"),
          std::string(R"("mediaType":"application/vnd.oci.image.manifest.v1+json",)").size());
  auto r = parse(m, "application/octet-stream");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(std::holds_alternative<Manifest>(*r));
  auto idx = parse(R"({"schemaVersion":2,"manifests":[]})");
  ASSERT_TRUE(idx);
  EXPECT_TRUE(std::holds_alternative<Index>(*idx));
}

TEST(Manifest, ContentTypeDisagrees) {
  auto r = parse(oci_manifest(), kMediaOciIndex);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
}

TEST(Manifest, PlatformSelection) {
  auto r = parse(docker_list());
  ASSERT_TRUE(r);
  const auto& idx = std::get<Index>(*r);
  auto amd = select_platform(idx, Platform{});
  ASSERT_TRUE(amd);
  EXPECT_EQ(amd->digest, kB);
  auto arm = select_platform(idx, Platform{"linux", "arm64", "v8"});
  ASSERT_TRUE(arm);
  EXPECT_EQ(arm->digest, kA);
  auto arm_any = select_platform(idx, Platform{"linux", "arm64", ""});
  ASSERT_TRUE(arm_any);
  EXPECT_EQ(arm_any->digest, kA);
  auto none = select_platform(idx, Platform{"linux", "s390x", ""});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ENOENT);
  EXPECT_NE(none.error().message.find("linux/s390x"), std::string::npos);
  EXPECT_NE(none.error().message.find("linux/arm64/v8"), std::string::npos);
  EXPECT_FALSE(select_platform(idx, Platform{"linux", "arm64", "v7"}));
}

TEST(Manifest, Errors) {
  struct Case {
    std::string body;
    int code;
  };
  const std::string cfg = R"("config":{"mediaType":"x","digest":")" + kA + R"(","size":1})";
  const Case cases[] = {
      {"", EINVAL},
      {"{", EINVAL},
      {"[]", EINVAL},
      {"null", EINVAL},
      {R"({"schemaVersion":1,"name":"x","fsLayers":[]})", EOPNOTSUPP},
      {R"({"schemaVersion":3})", EINVAL},
      {R"({"schemaVersion":"2"})", EINVAL},
      {R"({"schemaVersion":2})", EINVAL},
      {R"({"schemaVersion":2,"mediaType":"text/html","layers":[]})", EINVAL},
      {R"({"schemaVersion":2,)" + cfg + "}", EINVAL},
      {R"({"schemaVersion":2,)" + cfg + R"(,"layers":{}})", EINVAL},
      {R"({"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:abc","size":1},"layers":[]})",
       EINVAL},
      {R"({"schemaVersion":2,"config":{"mediaType":"x","digest":")" + kA +
           R"(","size":-1},"layers":[]})",
       EINVAL},
      {R"({"schemaVersion":2,"config":{"mediaType":"x","digest":")" + kA +
           R"(","size":1.5},"layers":[]})",
       EINVAL},
      {R"({"schemaVersion":2,"config":{"digest":")" + kA + R"(","size":1},"layers":[]})", EINVAL},
      {R"({"schemaVersion":2,"config":{"mediaType":"x","digest":"sha512:)" + std::string(128, 'a') +
           R"(","size":1},"layers":[]})",
       EINVAL},
      {R"({"schemaVersion":2,)" + cfg + R"(,"layers":[],"annotations":{"a":1}})", EINVAL},
      {R"({"schemaVersion":2,"manifests":[{"mediaType":"x","digest":")" + kA +
           R"(","size":1,"platform":{"os":"linux"}}]})",
       EINVAL},
      {std::string(100, '[') + std::string(100, ']'), EINVAL},
  };
  for (const Case& c : cases) {
    auto r = parse(c.body);
    ASSERT_FALSE(r) << c.body;
    EXPECT_EQ(r.error().code, c.code) << c.body << ": " << r.error().message;
  }
  auto s1 = parse("{}", "application/vnd.docker.distribution.manifest.v1+prettyjws");
  ASSERT_FALSE(s1);
  auto sha512 = parse(R"({"schemaVersion":2,"config":{"mediaType":"x","digest":"sha512:)" +
                      std::string(128, 'a') + R"(","size":1},"layers":[]})");
  ASSERT_FALSE(sha512);
  EXPECT_NE(sha512.error().message.find("sha512"), std::string::npos);
  std::string big(5U << 20, ' ');
  auto r = parse(big);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EMSGSIZE);
}

TEST(Digest, Valid) {
  EXPECT_TRUE(is_valid_digest(kA));
  EXPECT_FALSE(is_valid_digest("sha256:" + std::string(64, 'A')));
  EXPECT_FALSE(is_valid_digest("sha256:" + std::string(63, 'a')));
  EXPECT_FALSE(is_valid_digest("sha512:" + std::string(64, 'a')));
  EXPECT_FALSE(is_valid_digest(""));
}

}  // namespace
}  // namespace registry
