// SPDX-License-Identifier: Apache-2.0
// The registry adapter's mapping onto registry::Client, with a fake client (the real
// client against a real registry is covered by tests/registry and bench/fetch).
#include "daemon/registry_backend.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "daemon/nydus_layers.h"
#include "tests/unit/daemon/stub_registry_client.h"

namespace cfnd {
namespace {

class FakeClient final : public cfntest::StubRegistryClient {
 public:
  base::Result<registry::FetchedManifest> get_manifest(const registry::Reference&) override {
    return base::make_error(ENOSYS, "fake");
  }
  base::Result<registry::ResolvedImage> resolve(const registry::Reference& ref) override {
    resolved.push_back(ref.to_string());
    if (!manifest) {
      return base::make_error(ENOSYS, "fake");
    }
    registry::ResolvedImage out;
    out.manifest.parsed = *manifest;
    return out;
  }
  base::Result<std::vector<std::byte>> get_blob(const registry::Reference&, const std::string&,
                                                std::uint64_t) override {
    return base::make_error(ENOSYS, "fake");
  }
  base::Result<std::uint64_t> get_blob_to_fd(const registry::Reference&, const std::string&,
                                             int) override {
    return base::make_error(ENOSYS, "fake");
  }
  // The early ranges' GETs: bytes (offset ^ 0xaa), not read_blob_ranges' (offset), so a
  // test sees which served what.
  base::Status read_blob_range(const registry::Reference&, const std::string& digest,
                               std::uint64_t offset, base::MutableBytes out) override {
    single_calls++;
    if (digest == missing) {
      return base::make_error(EIO, "reset");
    }
    for (std::size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<std::byte>(((offset + i) & 0xff) ^ 0xaa);
    }
    return {};
  }
  void read_blob_ranges(const registry::Reference& repo, const std::string& digest,
                        std::span<registry::RangeRead> reads) override {
    seen_repo = repo.to_string();
    seen_digest = digest;
    calls++;
    for (auto& r : reads) {
      offsets.push_back(r.offset);
      if (digest == missing) {
        r.result = base::make_error(ENOENT, "blob unknown");
        continue;
      }
      if (r.offset >= 1000) {
        r.result = base::make_error(ERANGE, "past the end");
        continue;
      }
      for (std::size_t i = 0; i < r.out.size(); ++i) {
        r.out[i] = static_cast<std::byte>((r.offset + i) & 0xff);
      }
      r.result = {};
    }
  }

  std::string seen_repo;
  std::string seen_digest;
  int calls = 0;
  std::atomic<int> single_calls{0};
  std::vector<std::uint64_t> offsets;          // of the reads read_blob_ranges was given
  std::string missing;                         // reads of this digest: ENOENT
  std::optional<registry::Manifest> manifest;  // what resolve answers (else ENOSYS)
  std::vector<std::string> resolved;           // the references resolved
};

registry::Manifest renamed_manifest(const std::string& id, const std::string& layer_digest) {
  registry::Manifest m;
  registry::Descriptor blob;
  blob.media_type = registry::kMediaNydusBlob;
  blob.digest = layer_digest;
  blob.annotations = {{kAnnotationNydusBlob, "true"}, {kAnnotationNydusBlobDigest, "sha256:" + id}};
  registry::Descriptor boot;
  boot.media_type = registry::kMediaOciLayerGzip;
  boot.digest = "sha256:" + std::string(64, 'c');
  boot.annotations = {{kAnnotationNydusBootstrap, "true"}};
  m.layers = {blob, boot};
  return m;
}

TEST(RegistryBackend, MapsReadsOntoOneRangesCall) {
  auto client = std::make_shared<FakeClient>();
  auto ref = registry::Reference::parse("127.0.0.1:5000/team/app:v1");
  ASSERT_TRUE(ref) << ref.error().to_string();
  auto be = make_registry_backend(client, *ref);
  EXPECT_EQ(be->describe(), "registry:127.0.0.1:5000/team/app");
  const std::string id(64, 'a');
  std::vector<std::byte> a(10);
  std::vector<std::byte> b(5);
  std::vector<BackendRead> reads(3);
  reads[0].offset = 100;
  reads[0].out = a;
  reads[1].offset = 7;
  reads[1].out = b;
  reads[2].offset = 5000;
  reads[2].out = b;
  be->read(id, reads);
  EXPECT_EQ(client->calls, 1);
  EXPECT_EQ(client->seen_digest, "sha256:" + id);
  EXPECT_EQ(client->seen_repo.find(":v1"), std::string::npos);  // the tag is not used
  ASSERT_TRUE(reads[0].result);
  EXPECT_EQ(a[0], std::byte{100});
  EXPECT_EQ(a[9], std::byte{109});
  ASSERT_TRUE(reads[1].result);
  EXPECT_EQ(b[0], std::byte{7});
  ASSERT_FALSE(reads[2].result);
  EXPECT_EQ(reads[2].result.error().code, ERANGE);
}

TEST(RegistryBackend, KnownRenamedBlobReadsItsLayer) {
  auto client = std::make_shared<FakeClient>();
  auto ref = registry::Reference::parse("127.0.0.1:5000/team/app:v1");
  ASSERT_TRUE(ref);
  const std::string id(64, 'e');
  const std::string layer = "sha256:" + std::string(64, '4');
  auto be = make_registry_backend(client, *ref, {{id, layer}});
  std::vector<std::byte> a(4);
  BackendRead r;
  r.offset = 3;
  r.out = a;
  be->read(id, std::span<BackendRead>(&r, 1));
  ASSERT_TRUE(r.result) << r.result.error().to_string();
  EXPECT_EQ(client->seen_digest, layer);
  EXPECT_EQ(a[0], std::byte{3});
  EXPECT_TRUE(client->resolved.empty());
}

TEST(RegistryBackend, MissingBlobIsLookedUpInTheManifestOnce) {
  // A bind that was handed the bootstrap never read the manifest: the first read of a
  // blob the registry does not have under sha256:<id> resolves it, once.
  auto client = std::make_shared<FakeClient>();
  auto ref = registry::Reference::parse("127.0.0.1:5000/team/app:v1");
  ASSERT_TRUE(ref);
  const std::string id(64, 'e');
  const std::string layer = "sha256:" + std::string(64, '4');
  client->missing = "sha256:" + id;
  client->manifest = renamed_manifest(id, layer);
  auto be = make_registry_backend(client, *ref);
  std::vector<std::byte> a(4);
  std::vector<BackendRead> reads(2);
  reads[0].offset = 10;
  reads[0].out = a;
  reads[1].offset = 5000;  // past the end: its own error, not ENOENT
  reads[1].out = a;
  be->read(id, reads);
  ASSERT_TRUE(reads[0].result) << reads[0].result.error().to_string();
  EXPECT_EQ(a[0], std::byte{10});
  ASSERT_FALSE(reads[1].result);
  EXPECT_EQ(reads[1].result.error().code, ERANGE);
  EXPECT_EQ(client->seen_digest, layer);
  ASSERT_EQ(client->resolved.size(), 1U);
  EXPECT_EQ(client->resolved[0], "127.0.0.1:5000/team/app:v1");  // the tag, not the repo
  const int calls = client->calls;
  BackendRead again;
  again.offset = 20;
  again.out = a;
  be->read(id, std::span<BackendRead>(&again, 1));
  ASSERT_TRUE(again.result);
  EXPECT_EQ(client->calls, calls + 1);  // straight to the layer
  EXPECT_EQ(client->resolved.size(), 1U);

  // A blob neither under its id nor renamed: ENOENT, and the manifest is not read again.
  const std::string other(64, 'd');
  client->missing = "sha256:" + other;
  BackendRead gone;
  gone.out = a;
  be->read(other, std::span<BackendRead>(&gone, 1));
  ASSERT_FALSE(gone.result);
  EXPECT_EQ(gone.result.error().code, ENOENT);
  EXPECT_EQ(client->resolved.size(), 1U);
}

TEST(RegistryBackend, FailedManifestLookupKeepsTheError) {
  auto client = std::make_shared<FakeClient>();
  auto ref = registry::Reference::parse("127.0.0.1:5000/team/app:v1");
  ASSERT_TRUE(ref);
  const std::string id(64, 'e');
  client->missing = "sha256:" + id;  // and resolve fails (no manifest)
  auto be = make_registry_backend(client, *ref);
  std::vector<std::byte> a(4);
  BackendRead r;
  r.out = a;
  be->read(id, std::span<BackendRead>(&r, 1));
  ASSERT_FALSE(r.result);
  EXPECT_EQ(r.result.error().code, ENOENT);
  be->read(id, std::span<BackendRead>(&r, 1));  // tried again: the failure may pass
  EXPECT_EQ(client->resolved.size(), 2U);
}

TEST(RegistryBackend, RefusesIdsThatAreNotDigests) {
  auto client = std::make_shared<FakeClient>();
  auto ref = registry::Reference::parse("127.0.0.1:5000/team/app");
  ASSERT_TRUE(ref);
  auto be = make_registry_backend(client, *ref);
  std::vector<std::byte> a(10);
  BackendRead r;
  r.out = a;
  be->read("../../etc", std::span<BackendRead>(&r, 1));
  ASSERT_FALSE(r.result);
  EXPECT_EQ(r.result.error().code, EINVAL);
  be->read(std::string(64, 'A'), std::span<BackendRead>(&r, 1));
  EXPECT_FALSE(r.result);
  EXPECT_EQ(client->calls, 0);
}

// An eStargz image's prioritized ranges, fetched before the backend existed: a read inside
// them is served from memory, a read that starts inside and runs past them gets the rest
// from the registry, a refetch (bytes that failed their digest) and a range whose early
// GET failed always go to the registry.
TEST(RegistryBackend, EarlyRangesServeWhatTheyHoldAndTheRegistryTheRest) {
  auto client = std::make_shared<FakeClient>();
  auto ref = registry::Reference::parse("127.0.0.1:5000/team/app:v1");
  ASSERT_TRUE(ref);
  const std::string id(64, 'a');
  const std::string failing(64, 'f');
  client->missing = "sha256:" + failing;
  auto early = std::make_shared<EarlyRanges>(*client);
  early->add(*ref, id, "sha256:" + id, {{100, 50}, {120, 10} /* overlaps: left out */});
  early->add(*ref, failing, "sha256:" + failing, {{0, 10}});
  auto be = make_registry_backend(client, *ref, {}, early);
  const auto early_byte = [](std::uint64_t off) { return std::byte((off & 0xff) ^ 0xaa); };
  const auto ranged_byte = [](std::uint64_t off) { return std::byte(off & 0xff); };

  std::vector<std::byte> inside(20);
  std::vector<std::byte> across(20);
  std::vector<std::byte> outside(10);
  std::vector<BackendRead> reads(3);
  reads[0].offset = 110;
  reads[0].out = inside;
  reads[1].offset = 140;  // 10 bytes held, 10 past the range
  reads[1].out = across;
  reads[2].offset = 500;
  reads[2].out = outside;
  be->read(id, reads);
  for (const auto& r : reads) {
    ASSERT_TRUE(r.result) << r.result.error().to_string();
  }
  for (std::size_t i = 0; i < inside.size(); ++i) {
    EXPECT_EQ(inside[i], early_byte(110 + i)) << i;
  }
  for (std::size_t i = 0; i < across.size(); ++i) {
    EXPECT_EQ(across[i], i < 10 ? early_byte(140 + i) : ranged_byte(140 + i)) << i;
  }
  EXPECT_EQ(outside[0], ranged_byte(500));
  EXPECT_EQ(client->calls, 1);
  EXPECT_EQ(client->offsets, (std::vector<std::uint64_t>{150, 500}));

  // A refetch never takes the early bytes.
  BackendRead again;
  again.offset = 100;
  again.out = inside;
  again.refetch = true;
  be->read(id, std::span<BackendRead>(&again, 1));
  ASSERT_TRUE(again.result);
  EXPECT_EQ(inside[0], ranged_byte(100));

  // The early GET of the other blob failed: its reads go to the registry (which fails
  // them here too, as it does for that blob).
  BackendRead lost;
  lost.offset = 2;
  lost.out = outside;
  be->read(failing, std::span<BackendRead>(&lost, 1));
  ASSERT_FALSE(lost.result);
  EXPECT_EQ(lost.result.error().code, ENOENT);

  auto st = early->stats();
  EXPECT_EQ(st.fetched_bytes, 50U);
  EXPECT_EQ(st.served_bytes, 30U);
  EXPECT_EQ(st.held_bytes, 50U);  // 20 of the piece's 50 bytes not served yet
  EXPECT_EQ(st.failed_pieces, 1U);
  EXPECT_EQ(client->single_calls.load(), 2);  // one GET per range, the overlap left out

  // The rest of the piece served: its memory goes.
  std::vector<std::byte> head(10);
  std::vector<std::byte> middle(10);
  std::vector<BackendRead> rest(2);
  rest[0].offset = 100;
  rest[0].out = head;
  rest[1].offset = 130;
  rest[1].out = middle;
  be->read(id, rest);
  for (const auto& r : rest) {
    ASSERT_TRUE(r.result) << r.result.error().to_string();
  }
  EXPECT_EQ(head[0], early_byte(100));
  EXPECT_EQ(middle[9], early_byte(139));
  st = early->stats();
  EXPECT_EQ(st.served_bytes, 50U);
  EXPECT_EQ(st.held_bytes, 0U);
  EXPECT_EQ(st.fetched_bytes, 50U);
}

}  // namespace
}  // namespace cfnd
