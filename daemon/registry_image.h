// SPDX-License-Identifier: Apache-2.0
// Images by reference: resolve the manifest (through an index to this machine's
// platform), recognise a RAFS v6 (nydus) image by its layers, and make its bootstrap a
// complete local file before anything mounts it. The data blobs are then read lazily
// through make_registry_backend.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "daemon/config.h"
#include "daemon/early_ranges.h"
#include "daemon/nydus_layers.h"
#include "estargz/bootstrap.h"
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
  // eStargz: the prioritized files' ranges, fetching since their TOC was parsed (for the
  // image's registry backend: make_registry_backend); null when there are none. Its
  // fetches use the client given to pull_bootstrap.
  std::shared_ptr<EarlyRanges> early;
  // eStargz, built here: how long each step took, for the bind's log line.
  std::string timings;
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

// The first Range GET of an eStargz layer reads its last kEstargzTailBytes (or all of a
// smaller layer): the footer and, for most layers, the whole TOC member in one round trip.
inline constexpr std::uint64_t kEstargzTailBytes = 512ULL << 10;
// At most this many bytes of an image's prioritized files (before .prefetch.landmark) are
// fetched while its bootstrap is built (PulledImage::early); the rest of the list is
// prefetched after the bind as for any image.
inline constexpr std::uint64_t kEstargzEarlyBytes = 16ULL << 20;

// One eStargz layer's footer and TOC: its last min(tail_bytes, size) bytes by one Range
// GET; when the footer puts the TOC member before those, the missing head by a second.
// tail: the layer's last bytes when a probe read them already (no GET for them then).
// gets/bytes (optional) count the GETs and bytes. Errors name the layer: EINVAL for a
// layer that is not eStargz (a plain gzip layer is refused), EBADMSG for a footer offset
// that leaves no TOC or a TOC member that does not inflate, EMSGSIZE for a TOC member over
// estargz::kMaxTocMemberBytes (no GET of it), the client's errors.
[[nodiscard]] base::Result<estargz::LayerToc> read_estargz_layer_toc(
    registry::Client& client, const registry::Reference& ref, const registry::Descriptor& l,
    std::uint64_t tail_bytes, std::vector<std::byte> tail = {}, int* gets = nullptr,
    std::uint64_t* bytes = nullptr);

// The bootstrap of an eStargz image, made here from its layers' TOCs: per layer (four
// layers at a time, each on a thread of its own), the footer and the TOC member by
// read_estargz_layer_toc (the TOC JSON checked against the layer's toc.digest annotation
// when it has one); as soon as a layer's TOC is parsed, the Range GETs of its prioritized
// files start (PulledImage::early, up to kEstargzEarlyBytes in all); then
// estargz::build_bootstrap, written to
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
