// SPDX-License-Identifier: Apache-2.0
// The in-memory file tree a bootstrap is assembled in, and the one OCI layer merge of
// the project: nydus-convert (convert/) and the eStargz bootstrap (estargz/) both use it.
//
// Every layer (a directory, a layer tar, each layer of an OCI image, an eStargz TOC) is
// first read into its own *layer tree*, which also records OCI whiteouts (`.wh.NAME`)
// and opaque markers (`.wh..wh..opq`). Layer trees are then merged, lowest first, into
// the image tree with overlay semantics (merge_layer). Whiteout entries never appear in
// the result. Pure: no I/O.
//
// Paths are names in this tree only: nothing here touches the host filesystem, and a
// symlink node is never traversed. An entry whose parent is not a directory is an error.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "erofs/writer.h"

namespace erofs {

// Index into the caller's chunk table (nydus-convert: its pipeline's slots, resolved to
// a ChunkRef when a blob is done; eStargz: the TOC's chunks). Merges copy them as they are.
using ChunkSlot = std::uint64_t;

struct BuildNode {
  erofs::Node meta;                    // chunks unused here; children for directories
  std::vector<ChunkSlot> chunk_slots;  // regular files: one per chunk, in file order
  std::set<std::string> whiteouts;     // layer trees: names hidden in lower layers
  bool opaque = false;                 // layer trees: hide all lower children
  bool implicit = false;               // a directory made only as some entry's parent
  std::uint64_t origin = 0;  // the caller's tag (where the entry came from); merges copy it
  // Layer trees: a hard link to a file of a lower layer, by its path; merge_layer makes
  // it the lower file's node (see there). Empty: not such a link.
  std::vector<std::string> lower_link;
};

inline bool is_dir(const BuildNode& n) {
  return (n.meta.mode & 0170000) == 0040000;
}

inline constexpr std::string_view kWhiteoutPrefix = ".wh.";
inline constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

class FsTree {
 public:
  FsTree();  // an implicit root directory, 0755, owned by 0:0

  [[nodiscard]] BuildNode& node(NodeId id) { return nodes_[id]; }
  [[nodiscard]] const BuildNode& node(NodeId id) const { return nodes_[id]; }
  [[nodiscard]] std::size_t size() const { return nodes_.size(); }
  NodeId add_node(BuildNode n);
  // Room for n nodes in all (a caller that knows how many it adds saves the regrowths).
  void reserve(std::size_t n) { nodes_.reserve(n); }

  // Add `child` under directory `dir` as `name`, with tar semantics: a later entry
  // replaces an earlier one of the same name, except that a directory meeting a
  // directory keeps its children and takes the new metadata. `.wh.X` names become
  // whiteouts of dir, `.wh..wh..opq` marks dir opaque; other `.wh..wh.` names are
  // dropped. `what` names the entry in errors.
  [[nodiscard]] base::Status add_child(NodeId dir, std::string_view name, NodeId child,
                                       std::string_view what);

  // Resolve the parent directory of a split path, creating implicit directories.
  // ENOTDIR when a component exists and is not a directory (a symlink included).
  [[nodiscard]] base::Result<NodeId> make_parents(const std::vector<std::string>& comps,
                                                  std::string_view what);
  // Look up a full split path; ENOENT when absent, ENOTDIR through a non-directory.
  [[nodiscard]] base::Result<NodeId> lookup(const std::vector<std::string>& comps) const;

  // Apply a layer tree on top of this tree (OCI layer semantics). Nodes the layer
  // shares (hard links) stay one node. A lower_link node becomes the node its path names
  // in this tree as it was before the merge; EINVAL when that is nothing, a directory,
  // or hidden by the layer itself (a whiteout or an opaque directory on its path).
  [[nodiscard]] base::Status merge_layer(const FsTree& layer);

  // Number of nodes reachable from the root.
  [[nodiscard]] std::size_t reachable_count() const;

 private:
  base::Status merge_dir(NodeId base_dir, const FsTree& layer, NodeId layer_dir,
                         const std::string& path, std::vector<NodeId>& mapped);
  base::Result<NodeId> resolve_lower_link(const FsTree& layer, NodeId lid) const;
  std::vector<BuildNode> nodes_;
};

// Split a tar entry path into components. Leading "./" and "/"-runs are tolerated only
// as "./"; absolute paths, ".." components, empty names, names over 255 bytes and
// embedded NULs are rejected (EINVAL, naming the path). "." components are dropped, so
// "./" itself yields an empty vector (the root).
[[nodiscard]] base::Result<std::vector<std::string>> split_entry_path(std::string_view path);

std::string join_path(const std::vector<std::string>& comps);

}  // namespace erofs
