// SPDX-License-Identifier: Apache-2.0
// `nydus-convert image SRC_REF DST_REF`: registry -> RAFS v6 -> registry, as nydusify does.
//
// The source image (an index is resolved to the wanted platform's manifest) is pulled
// into a temporary OCI layout, every blob verified against its digest while it is
// written; the layout is built with build_image (so gzip, zstd and plain tar layers
// are all handled where the builder handles them); then the nydus data blobs, the
// bootstrap layer, the config and the manifest are pushed, and, when the source was
// an index, an index naming the nydus manifest for that platform. Blobs the target
// already has are not uploaded again (HEAD first), so a re-run pushes no blob.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "convert/options.h"
#include "registry/manifest.h"

namespace convert {

// The platform feature nydusify puts on nydus manifests in an index.
inline constexpr char kNydusOsFeature[] = "nydus.remoteimage.v1";

struct ImageOptions {
  BuildOptions build;
  bool plain_http = false;                     // http:// for both hosts
  bool insecure = false;                       // TLS without verification for both hosts
  std::vector<std::string> ca_files;           // extra trusted CAs for both hosts
  std::optional<registry::Platform> platform;  // default: linux/<this machine's arch>
  std::string docker_config;                   // empty: $DOCKER_CONFIG or ~/.docker/config.json
  std::string work_dir;        // parent of the temporary directory; empty: $TMPDIR or /tmp
  bool keep_work_dir = false;  // leave the pulled layout and the build for a look
};

struct ImageReport {
  std::size_t layers = 0;  // source layers pulled
  std::uint64_t bytes_pulled = 0;
  std::size_t blobs_pushed = 0;   // layers and config uploaded
  std::size_t blobs_skipped = 0;  // already in the target
  std::uint64_t bytes_pushed = 0;
  std::string manifest_digest;  // the nydus manifest
  std::string index_digest;     // set when an index was pushed
};

// Errors are the registry client's (ENOENT, EACCES, EBADMSG, ...), the builder's, or
// EINVAL for a bad reference or a destination given by digest; each names the step.
[[nodiscard]] base::Result<ImageReport> convert_image(const std::string& src_ref,
                                                      const std::string& dst_ref,
                                                      const ImageOptions& options);

// "linux/amd64", "linux/arm64/v8": EINVAL otherwise.
[[nodiscard]] base::Result<registry::Platform> parse_platform(std::string_view text);

}  // namespace convert
