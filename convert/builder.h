// SPDX-License-Identifier: Apache-2.0
// `nydus-convert build`: SOURCE (directory, layer tar, OCI layout) -> OUTDIR with
// image.boot, blobs/<id> and oci/.
//
// Everything is built in OUTDIR/.partial-XXXXXX and moved into place at the end,
// image.boot last; on failure the staging directory is removed, and an image.boot of
// an earlier build is removed before anything else is replaced. Output files are
// created with O_NOFOLLOW/O_EXCL relative to directory fds, so a symlink planted in
// OUTDIR is never followed.
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"
#include "convert/chunk_pipeline.h"
#include "convert/options.h"
#include "erofs/writer.h"

namespace convert {

struct BuildReport {
  std::size_t layers = 0;
  std::size_t inodes = 0;
  std::size_t blobs = 0;
  std::size_t prefetch_entries = 0;  // in the prefetch table
  std::uint64_t bootstrap_size = 0;
  PipelineStats stats;
  std::string manifest_digest;
};

[[nodiscard]] base::Result<BuildReport> build_image(const std::string& source,
                                                    const std::string& outdir,
                                                    const BuildOptions& options);

// Turn the merged tree into the writer's tree: only nodes reachable from the root,
// numbered in breadth-first order, chunk slots resolved through the pipeline.
[[nodiscard]] erofs::Tree finalize_tree(const erofs::FsTree& tree, const ChunkPipeline& pipeline);

// The nodes of a finalized tree named by paths (as parse_prefetch_list gives them), in
// order; paths not in the tree are skipped with a warning. Symlinks are not followed.
[[nodiscard]] std::vector<erofs::NodeId> resolve_prefetch(const erofs::Tree& tree,
                                                          const std::vector<std::string>& paths);

// The chunk slots of the regular files of a layer tree that paths (as
// parse_prefetch_list gives them) name, in list order, each file's in file order (a
// directory: the files under it, in name order); for ChunkPipeline::end_layer, which
// puts these chunks first in the layer's blob. Absent paths and symlinks add nothing.
[[nodiscard]] std::vector<erofs::ChunkSlot> listed_slots(const erofs::FsTree& layer,
                                                         const std::vector<std::string>& paths);

}  // namespace convert
