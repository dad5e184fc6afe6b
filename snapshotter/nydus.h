// SPDX-License-Identifier: Apache-2.0
// Nydus images in containerd: the remote-snapshot handshake decision and the walk of a
// snapshot's parents that finds the image it belongs to. Pure: no I/O (the caller says
// whether a snapshot's fs holds image/image.boot).
//
// Labels, as containerd 1.6 sends them (../shared/reference/containerd-snapshotter.md):
//   containerd.io/snapshot.ref                     the layer's chainID (Prepare of a layer)
//   containerd.io/snapshot/nydus-blob = "true"     a data layer: never unpacked
//   containerd.io/snapshot/nydus-bootstrap = "true" the bootstrap layer: unpacked as usual
//   containerd.io/snapshot/cri.image-ref | remote/stargz.reference   the image reference
//   containerd.io/snapshot/cri.layer-digest | remote/stargz.digest   the layer digest
//   containerd.io/snapshot/cri.manifest-digest                       the manifest digest
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "snapshotter/store.h"

namespace snapshotter {

inline constexpr const char* kTargetRefLabel = "containerd.io/snapshot.ref";
inline constexpr const char* kNydusBlobLabel = "containerd.io/snapshot/nydus-blob";
inline constexpr const char* kNydusBootstrapLabel = "containerd.io/snapshot/nydus-bootstrap";
inline constexpr const char* kCriImageRefLabel = "containerd.io/snapshot/cri.image-ref";
inline constexpr const char* kCriLayerDigestLabel = "containerd.io/snapshot/cri.layer-digest";
inline constexpr const char* kCriManifestDigestLabel = "containerd.io/snapshot/cri.manifest-digest";
inline constexpr const char* kStargzRefLabel = "containerd.io/snapshot/remote/stargz.reference";
inline constexpr const char* kStargzDigestLabel = "containerd.io/snapshot/remote/stargz.digest";
// What the handshake records on the snapshot it commits, whichever client sent it.
inline constexpr const char* kImageRefLabel = "containerd-nydus/image-ref";
inline constexpr const char* kLayerDigestLabel = "containerd-nydus/layer-digest";
inline constexpr const char* kManifestDigestLabel = "containerd-nydus/manifest-digest";

// The bootstrap's path inside its layer.
inline constexpr const char* kBootstrapInLayer = "image/image.boot";

// The text of the error for a nydus image whose labels carry no image reference.
inline constexpr const char* kNoReferenceHint =
    "nydus image without an image reference in its snapshot labels: containerd's CRI plugin "
    "passes it only with disable_snapshot_annotations = false (in [plugins.\"io.containerd."
    "grpc.v1.cri\".containerd]); with ctr, pull with `ctr-remote image rpull --snapshotter "
    "nydus` (ctr image pull passes no labels)";

// What a Prepare asks of the snapshotter.
enum class LayerKind {
  kPlain,      // an ordinary Prepare
  kNydusBlob,  // a nydus data layer: the remote-snapshot handshake
};

struct RemoteLayer {
  std::string target;  // the name to commit (containerd.io/snapshot.ref)
  std::string image_ref;
  std::string layer_digest;
  std::string manifest_digest;
};

// kNydusBlob when the labels hold a non-empty containerd.io/snapshot.ref and
// nydus-blob = "true"; kPlain otherwise (the bootstrap layer included).
[[nodiscard]] LayerKind classify_prepare(const Labels& labels);

// The handshake's facts from the labels (CRI's names first, then rpull's).
[[nodiscard]] RemoteLayer remote_layer(const Labels& labels);

// The labels of the snapshot the handshake commits: the given ones (minus nothing) plus
// kImageRefLabel / kLayerDigestLabel / kManifestDigestLabel where known.
[[nodiscard]] Labels handshake_labels(const Labels& labels, const RemoteLayer& r);

// The nydus image a new snapshot stands on.
struct NydusImage {
  int64_t bootstrap_id = 0;    // the snapshot whose fs holds image/image.boot
  std::string bootstrap_name;  // that (committed) snapshot's name
  std::string image_ref;
  std::string manifest_digest;
  // Snapshots of the chain that are neither the bootstrap nor nydus data layers, between
  // the new snapshot and the bootstrap, nearest first: overlay lowers above the image.
  std::vector<int64_t> upper_lowers;
};

// Walk chain (the new snapshot's parent first, then its parents). The image is the
// nearest snapshot labelled nydus-bootstrap, or one whose fs holds the bootstrap
// (has_bootstrap(id)) and whose parents are all nydus data layers (labelled nydus-blob).
// nullopt: no nydus image below (an ordinary overlay). Errors: EINVAL with
// kNoReferenceHint when the image is found but no snapshot of it names the image
// reference.
[[nodiscard]] base::Result<std::optional<NydusImage>> find_image(
    const std::vector<ChainEntry>& chain, const std::function<bool(int64_t)>& has_bootstrap);

}  // namespace snapshotter
