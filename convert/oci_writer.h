// SPDX-License-Identifier: Apache-2.0
// The result as an OCI image layout, with nydusify's media types and annotations:
// one `application/vnd.oci.image.layer.nydus.blob.v1` layer per data blob and a last
// `application/vnd.oci.image.layer.v1.tar+gzip` layer holding `image/image.boot`.
#pragma once

#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "erofs/reader.h"

namespace convert {

inline constexpr char kMediaTypeNydusBlob[] = "application/vnd.oci.image.layer.nydus.blob.v1";
inline constexpr char kMediaTypeLayerTarGzip[] = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr char kMediaTypeManifest[] = "application/vnd.oci.image.manifest.v1+json";
inline constexpr char kMediaTypeIndex[] = "application/vnd.oci.image.index.v1+json";
inline constexpr char kMediaTypeConfig[] = "application/vnd.oci.image.config.v1+json";
inline constexpr char kAnnotationNydusBlob[] = "containerd.io/snapshot/nydus-blob";
inline constexpr char kAnnotationNydusBootstrap[] = "containerd.io/snapshot/nydus-bootstrap";
inline constexpr char kAnnotationFsVersion[] = "containerd.io/snapshot/nydus-fs-version";
inline constexpr char kAnnotationUncompressed[] = "containerd.io/uncompressed";
inline constexpr char kBootstrapTarPath[] = "image/image.boot";

struct OciOutput {
  std::vector<erofs::BlobInfo> blobs;  // table order; each is blobs_dir/<id>, id = sha256
  base::Bytes bootstrap;
  std::string source_config_json;  // carried over (config, os, architecture); may be empty
  std::string ref_name;            // index annotation; "latest" when empty
};

// Write oci-layout, index.json and blobs/sha256/* under oci_dir (an empty directory).
// Data blobs are hardlinked from blobs_dir. Returns the manifest digest ("sha256:...").
[[nodiscard]] base::Result<std::string> write_oci_layout(int oci_dir, int blobs_dir,
                                                         const OciOutput& out);

// A tar holding one regular file `path`, deterministic (mtime 0, root-owned).
[[nodiscard]] base::Result<std::vector<std::byte>> make_single_file_tar(const std::string& path,
                                                                        base::Bytes data);
// gzip (RFC 1952) of data.
[[nodiscard]] base::Result<std::vector<std::byte>> gzip_bytes(base::Bytes data);

}  // namespace convert
