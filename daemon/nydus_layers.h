// SPDX-License-Identifier: Apache-2.0
// The nydus layers of an image manifest (pure): which layer is the bootstrap, which are
// data blobs, and which data layer holds the blob a bootstrap names by id. In the daemon's
// core: the registry backend maps blob ids to layers with it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/result.h"
#include "registry/manifest.h"

namespace cfnd {

inline constexpr char kAnnotationNydusBootstrap[] = "containerd.io/snapshot/nydus-bootstrap";
inline constexpr char kAnnotationNydusBlob[] = "containerd.io/snapshot/nydus-blob";
// On a data layer: "sha256:<blob id>", the id the bootstrap names the blob by, where the
// layer's own digest is another (a blob with a ToC is named by the sha256 of the file minus
// its chunk-digest array, as upstream's fixture is). The layer's bytes are the blob's.
inline constexpr char kAnnotationNydusBlobDigest[] = "containerd.io/snapshot/nydus-blob-digest";

// The nydus layers of a manifest.
struct NydusLayers {
  registry::Descriptor bootstrap;  // tar+gzip holding image/image.boot
  std::vector<registry::Descriptor> blobs;
};

// Pure. The bootstrap layer is the one annotated containerd.io/snapshot/nydus-bootstrap
// "true" (or, without annotations, the last layer when every other layer is a nydus
// blob by media type or annotation). EINVAL "not a RAFS v6 (nydus) image" otherwise.
[[nodiscard]] base::Result<NydusLayers> nydus_layers(const registry::Manifest& m);

// Pure. The data layers whose nydus-blob-digest annotation names another blob id than
// their digest: blob id (64 hex) -> the layer's digest ("sha256:..."). Annotations that
// are not a sha256 digest are ignored.
[[nodiscard]] std::map<std::string, std::string> renamed_blob_layers(const NydusLayers& layers);

// Pure: every blob of the bootstrap must be one of the data layers (blob id <id> is
// layer sha256:<id>, or the layer annotated nydus-blob-digest sha256:<id>). EINVAL
// naming the first blob that is not.
[[nodiscard]] base::Status check_blob_layers(const std::vector<std::string>& bootstrap_blob_ids,
                                             const NydusLayers& layers);

}  // namespace cfnd
