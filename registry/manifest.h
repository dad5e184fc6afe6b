// SPDX-License-Identifier: Apache-2.0
// OCI / Docker image manifests, indexes and configs: parse (pure, bounded) and
// serialize. Media types are kept verbatim.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace registry {

inline constexpr std::string_view kMediaOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kMediaOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kMediaOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kMediaDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kMediaDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kMediaDockerConfig =
    "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kMediaOciLayer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kMediaOciLayerGzip =
    "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kMediaOciLayerZstd =
    "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kMediaDockerLayerGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kMediaNydusBlob = "application/vnd.oci.image.layer.nydus.blob.v1";
// The Accept header for manifest GET/HEAD: all four manifest and index types.
[[nodiscard]] std::string manifest_accept_header();

struct Platform {
  std::string os = "linux";
  std::string architecture = "amd64";
  std::string variant;  // e.g. "v8" for arm64; empty matches any
};

struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:<hex>"
  std::uint64_t size = 0;
  std::map<std::string, std::string> annotations;
  std::vector<std::string> urls;
  std::optional<Platform> platform;
};

struct Manifest {
  int schema_version = 2;
  std::string media_type;  // may be empty (OCI 1.0 manifests omit it)
  Descriptor config;
  std::vector<Descriptor> layers;
  std::map<std::string, std::string> annotations;
};

struct Index {
  int schema_version = 2;
  std::string media_type;
  std::vector<Descriptor> manifests;
  std::map<std::string, std::string> annotations;
};

// Parse a manifest or an index. content_type is the response's Content-Type (may
// be empty: then the JSON's mediaType or shape decides). Errors: EINVAL for malformed
// JSON, missing required fields, bad digests, negative sizes; EMSGSIZE over 4 MiB;
// EOPNOTSUPP for schema 1.
[[nodiscard]] base::Result<std::variant<Manifest, Index>> parse_manifest(
    base::Bytes body, std::string_view content_type);

// The first manifest in the index for the platform; ENOENT naming the platform.
// The OCI (GOARCH) name of the CPU this program was built for: "amd64", "arm64",
// ...; empty when it has none we know.
[[nodiscard]] std::string host_architecture();

[[nodiscard]] base::Result<Descriptor> select_platform(const Index& index, const Platform& p);

[[nodiscard]] std::string serialize(const Manifest& m);
[[nodiscard]] std::string serialize(const Index& i);

// True for "sha256:<64 lower hex>" (the only algorithm we produce; others are
// rejected when verifying).
[[nodiscard]] bool is_valid_digest(std::string_view d);

}  // namespace registry
