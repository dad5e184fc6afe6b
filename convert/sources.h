// SPDX-License-Identifier: Apache-2.0
// Build sources: read a directory, a layer tar or the layers of an OCI image layout
// into layer trees, feeding file data to the chunk pipeline as it is read.
//
// Nothing here writes to the host, and nothing follows a symlink of the source:
// directories are walked with openat(O_NOFOLLOW) relative to their parent's fd.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/digest.h"
#include "base/result.h"
#include "convert/chunk_pipeline.h"
#include "erofs/fs_tree.h"

namespace convert {

enum class SourceKind : std::uint8_t { kDirectory, kTar, kOciLayout };

// A directory with an `oci-layout` file and index.json is an OCI layout; any other
// directory is a root filesystem; a file is a (possibly compressed) tar.
[[nodiscard]] base::Result<SourceKind> detect_source(const std::string& path);

// Read a directory tree into layer (whose root takes the directory's metadata).
// Errors name the path that failed (unreadable file, file changed while read...).
[[nodiscard]] base::Status read_directory(const std::string& path, erofs::FsTree& layer,
                                          ChunkPipeline& pipeline);

// Read a tar (plain, gzip, zstd, ... as libarchive detects) into layer. label names
// the archive in errors. When expected_sha256 is set, the file's sha256 must match it.
// Hostile entries (see erofs::split_entry_path, erofs::FsTree::make_parents, hardlinks to missing
// or later entries, truncated data) fail with an error naming the entry.
[[nodiscard]] base::Status read_tar(const std::string& path, const std::string& label,
                                    erofs::FsTree& layer, ChunkPipeline& pipeline,
                                    const base::Digest* expected_sha256 = nullptr);

// Whether the file ends in an eStargz footer (a layer read_estargz takes).
[[nodiscard]] base::Result<bool> is_estargz(const std::string& path);

// Read an eStargz layer (docs/estargz.md) into layer, driven by its TOC: the footer gives
// the TOC, the TOC the entries (as for a lazy eStargz mount: estargz::layer_tree) and each
// chunk's gzip member, which is inflated once (not the tar stream) and checked against the
// chunk's chunkDigest before the pipeline gets its bytes. The TOC and landmark entries are
// not in the tree. Errors name label and the entry: EBADMSG for a chunk that does not
// match its chunkDigest, a corrupt member or TOC, or a file that does not match
// expected_sha256; the TOC's errors (EINVAL) otherwise.
[[nodiscard]] base::Status read_estargz(const std::string& path, const std::string& label,
                                        erofs::FsTree& layer, ChunkPipeline& pipeline,
                                        const base::Digest* expected_sha256 = nullptr);

struct OciSourceLayer {
  std::string path;       // blob file
  base::Digest digest{};  // sha256 from the manifest
  std::string media_type;
  std::uint64_t size = 0;
};

struct OciSourceImage {
  std::vector<OciSourceLayer> layers;  // lowest first
  std::string config_json;             // the image config, verified against its digest
  std::string ref_name;                // org.opencontainers.image.ref.name, if any
};

// Resolve index.json -> (nested index ->) manifest -> config + layers. With several
// manifests, the one for linux/<host arch> is taken. Digests of index-referenced
// manifests and configs are verified; blob paths are built only from validated
// sha256 hex.
[[nodiscard]] base::Result<OciSourceImage> open_oci_layout(const std::string& dir);

}  // namespace convert
