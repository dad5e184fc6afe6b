// SPDX-License-Identifier: Apache-2.0
// Images by reference: resolve the manifest (through an index to this machine's
// platform), recognise a RAFS v6 (nydus) image by its layers, and make its bootstrap a
// complete local file before anything mounts it. The data blobs are then read lazily
// through make_registry_backend.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/result.h"
#include "daemon/config.h"
#include "daemon/nydus_layers.h"
#include "registry/client.h"
#include "registry/manifest.h"
#include "registry/reference.h"

namespace cfnd {

inline constexpr char kBootstrapMember[] = "image/image.boot";
inline constexpr std::uint64_t kMaxBootstrapLayerBytes = 256ULL << 20;  // compressed

// Where pull_bootstrap keeps bootstraps: <cache_dir>/bootstraps.
[[nodiscard]] std::string bootstraps_dir(const std::string& cache_dir);

struct PulledImage {
  std::string bootstrap_path;   // <cache_dir>/bootstraps/<manifest hex>.boot, complete
  std::string manifest_digest;  // "sha256:..."
  std::vector<std::string> blob_ids;
  std::map<std::string, std::string> blob_digests;  // renamed_blob_layers of the manifest
  bool bootstrap_cached = false;                    // found in the cache, nothing downloaded
};

// Resolve ref, pick the nydus layers (an eStargz image: pull_estargz_bootstrap), and
// make the bootstrap file: downloaded (size
// capped, digest verified by the client), image/image.boot taken out of the tar.gz,
// checked to parse as RAFS v6 with blob ids matching the data layers, written to a
// temporary and renamed into place. A bootstrap already in place is reused.
// Errors: the client's (ENOENT, EACCES, ETIMEDOUT ...), EINVAL for a non-nydus image
// or mismatched blobs, EMSGSIZE over the caps, EBADMSG for a broken layer, each
// naming the step.
[[nodiscard]] base::Result<PulledImage> pull_bootstrap(registry::Client& client,
                                                       const registry::Reference& ref,
                                                       const std::string& cache_dir,
                                                       std::uint64_t max_bootstrap_bytes);

// An eStargz image (docs/estargz.md): some layer carries the
// containerd.io/snapshot/stargz/toc.digest annotation. Pure.
[[nodiscard]] bool is_estargz_image(const registry::Manifest& m);

// The bootstrap of an eStargz image, made here from its layers' TOCs: per layer (four
// layers at a time, each on a thread of its own), the footer and the TOC member by Range
// GETs (the TOC JSON checked against the layer's
// toc.digest annotation when it has one), then estargz::build_bootstrap, written to
// <cache_dir>/bootstraps/estargz-<key>.boot, key = sha256 of the layer digests, and
// reused from there (bootstrap_cached). Errors name the layer: EINVAL for a layer that
// is not eStargz (plain gzip: refused, never downloaded whole), EBADMSG for a lying
// footer or TOC, EMSGSIZE over the caps, the builder's EOPNOTSUPP, the client's.
[[nodiscard]] base::Result<PulledImage> pull_estargz_bootstrap(registry::Client& client,
                                                               const registry::Reference& ref,
                                                               const registry::Manifest& m,
                                                               const std::string& manifest_digest,
                                                               const std::string& cache_dir,
                                                               std::uint64_t max_bootstrap_bytes);

// The client settings for images of ref's host under options o (platform: this
// machine's, linux/<GOARCH>).
[[nodiscard]] registry::ClientConfig client_config(const RegistryOptions& o,
                                                   const registry::Reference& ref);

}  // namespace cfnd
