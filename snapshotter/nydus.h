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
//   containerd.io/snapshot/stargz/toc.digest       an eStargz layer (with --enable-stargz:
//                                                  the handshake too, never unpacked)
//   containerd.io/snapshot/cri.image-layers | remote/stargz.layers   this layer's digest and
//                                                  those of the layers above it, comma-joined
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
inline constexpr const char* kStargzTocDigestLabel = "containerd.io/snapshot/stargz/toc.digest";
inline constexpr const char* kStargzLayersLabel = "containerd.io/snapshot/remote/stargz.layers";
inline constexpr const char* kCriImageLayersLabel = "containerd.io/snapshot/cri.image-layers";
// What the handshake records on the snapshot it commits, whichever client sent it.
inline constexpr const char* kImageRefLabel = "containerd-nydus/image-ref";
inline constexpr const char* kLayerDigestLabel = "containerd-nydus/layer-digest";
inline constexpr const char* kManifestDigestLabel = "containerd-nydus/manifest-digest";
inline constexpr const char* kImageLayersLabel = "containerd-nydus/image-layers";
// On the snapshot an eStargz layer's handshake commits ("true"): a layer served lazily, as
// opposed to an eStargz layer containerd unpacked (its snapshot carries toc.digest too).
inline constexpr const char* kEstargzLayerLabel = "containerd-nydus/estargz";

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
  kEstargz,    // an eStargz layer with --enable-stargz: the handshake, bound by reference
};

struct RemoteLayer {
  std::string target;  // the name to commit (containerd.io/snapshot.ref)
  std::string image_ref;
  std::string layer_digest;
  std::string manifest_digest;
  // This layer's digest and those above it in the image (CRI's cri.image-layers or rpull's
  // stargz.layers); empty when neither came.
  std::vector<std::string> image_layers;
};

// kNydusBlob when the labels hold a non-empty containerd.io/snapshot.ref and
// nydus-blob = "true"; kEstargz when they hold containerd.io/snapshot.ref and a non-empty
// stargz/toc.digest and enable_stargz; kPlain otherwise (the bootstrap layer included).
[[nodiscard]] LayerKind classify_prepare(const Labels& labels, bool enable_stargz = false);

// Whether a snapshot's labels are those of an eStargz handshake (kEstargzLayerLabel).
[[nodiscard]] bool is_estargz_handshake(const Labels& labels);

// Whether the layer of these (handshake) labels is the top layer of the image they name:
// its image_layers list is this one layer. True when no list came (nothing to say
// otherwise).
[[nodiscard]] bool is_top_layer(const Labels& labels);

// The handshake's facts from the labels (CRI's names first, then rpull's).
[[nodiscard]] RemoteLayer remote_layer(const Labels& labels);

// The labels of the snapshot the handshake commits: the given ones (minus nothing) plus
// kImageRefLabel / kLayerDigestLabel / kManifestDigestLabel / kImageLayersLabel where
// known, and kEstargzLayerLabel for kEstargz.
[[nodiscard]] Labels handshake_labels(const Labels& labels, const RemoteLayer& r,
                                      LayerKind kind = LayerKind::kNydusBlob);

// The nydus image a new snapshot stands on.
struct NydusImage {
  int64_t bootstrap_id = 0;    // the snapshot whose fs holds image/image.boot
  std::string bootstrap_name;  // that (committed) snapshot's name
  std::string image_ref;
  std::string manifest_digest;
  // Snapshots of the chain that are neither the bootstrap nor nydus data layers, between
  // the new snapshot and the bootstrap, nearest first: overlay lowers above the image.
  std::vector<int64_t> upper_lowers;
  // An eStargz image: bootstrap_id is its top layer's handshake snapshot (holding no file);
  // the daemon makes the bootstrap from the layers' TOCs (bound by reference only).
  bool estargz = false;
};

// A chain entry that find_image neither stops at (unless has_bootstrap says it holds a
// bootstrap) nor leaves out of the overlay lowers: no eStargz handshake, no nydus-blob or
// nydus-bootstrap label.
[[nodiscard]] bool is_ordinary_layer(const Labels& labels);

// Walk chain (the new snapshot's parent first, then its parents). The image is the
// nearest snapshot labelled nydus-bootstrap, or one whose fs holds the bootstrap
// (has_bootstrap(id)) and whose parents are all nydus data layers (labelled nydus-blob).
// An eStargz image is the nearest snapshot of an eStargz handshake (kEstargzLayerLabel; the
// handshakes below it are its lower layers).
// nullopt: no nydus image below (an ordinary overlay). Errors: EINVAL with
// kNoReferenceHint when the image is found but no snapshot of it names the image
// reference; EINVAL when the eStargz layer's recorded image has layers above it (the
// layer was pulled for a taller image that shares it, and no pull of an image ending
// there recorded that image's reference).
[[nodiscard]] base::Result<std::optional<NydusImage>> find_image(
    const std::vector<ChainEntry>& chain, const std::function<bool(int64_t)>& has_bootstrap);

}  // namespace snapshotter
