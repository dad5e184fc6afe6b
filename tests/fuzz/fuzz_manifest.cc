// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the manifest / index parser. The first byte picks the Content-Type
// the body is served with; whatever parses must serialize and parse back to the
// same text, and platform selection must not trip over it. An error must go into the
// daemon's control API answer (a bind's error) without throwing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "control/api.h"
#include "registry/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  static constexpr std::string_view kTypes[] = {
      "",
      registry::kMediaOciManifest,
      registry::kMediaOciIndex,
      registry::kMediaDockerManifest,
      registry::kMediaDockerManifestList,
      "application/octet-stream",
      "application/vnd.docker.distribution.manifest.v1+prettyjws",
      "application/vnd.oci.image.index.v1+json; charset=utf-8",
  };
  const std::string_view ct = kTypes[data[0] % std::size(kTypes)];
  const base::Bytes body(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  auto parsed = registry::parse_manifest(body, ct);
  if (!parsed) {
    (void)control::error_to_json(parsed.error());
    return 0;
  }
  std::string text;
  if (const auto* m = std::get_if<registry::Manifest>(&*parsed)) {
    text = registry::serialize(*m);
  } else {
    const auto& idx = std::get<registry::Index>(*parsed);
    (void)registry::select_platform(idx, registry::Platform{});
    (void)registry::select_platform(idx, registry::Platform{"linux", "arm64", "v8"});
    text = registry::serialize(idx);
  }
  auto again = registry::parse_manifest(base::as_bytes(text), "");
  if (!again || again->index() != parsed->index()) {
    std::abort();  // our own output must parse as the same kind
  }
  const std::string text2 = again->index() == 0 ? registry::serialize(std::get<0>(*again))
                                                : registry::serialize(std::get<1>(*again));
  if (text2 != text) {
    std::abort();
  }
  return 0;
}
