// SPDX-License-Identifier: Apache-2.0
#include "erofs/fs_tree.h"

#include <deque>
#include <limits>
#include <optional>

namespace erofs {
namespace {

constexpr NodeId kUnmapped = std::numeric_limits<NodeId>::max();
constexpr std::size_t kMaxPathBytes = 4096;

// Metadata an entry carries for a node that already exists (directories only).
void take_metadata(erofs::Node& dst, const erofs::Node& src) {
  dst.mode = src.mode;
  dst.uid = src.uid;
  dst.gid = src.gid;
  dst.mtime = src.mtime;
  dst.mtime_nsec = src.mtime_nsec;
  dst.xattrs = src.xattrs;
}

}  // namespace

FsTree::FsTree() {
  BuildNode root;
  root.meta.mode = 0040755;
  root.implicit = true;
  nodes_.push_back(std::move(root));
}

NodeId FsTree::add_node(BuildNode n) {
  nodes_.push_back(std::move(n));
  return static_cast<NodeId>(nodes_.size() - 1);
}

base::Status FsTree::add_child(NodeId dir, std::string_view name, NodeId child,
                               std::string_view what) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos) {
    return base::errorf(EINVAL, "{}: invalid name '{}'", what, name);
  }
  if (name.starts_with(kWhiteoutPrefix)) {
    if (name == kOpaqueMarker) {
      nodes_[dir].opaque = true;
      return {};
    }
    if (name.starts_with(".wh..wh.")) {
      return {};  // aufs-internal markers (.wh..wh.plnk, ...): not part of the image
    }
    std::string_view target = name.substr(kWhiteoutPrefix.size());
    if (target.empty() || target == "." || target == "..") {
      return base::errorf(EINVAL, "{}: invalid whiteout", what);
    }
    nodes_[dir].whiteouts.emplace(target);
    return {};
  }
  auto& children = nodes_[dir].meta.children;
  auto it = children.find(std::string(name));
  if (it == children.end()) {
    children.emplace(std::string(name), child);
    return {};
  }
  NodeId existing = it->second;
  if (existing != child && is_dir(nodes_[existing]) && is_dir(nodes_[child]) &&
      nodes_[child].meta.children.empty()) {
    // A directory entry for a directory we already have: new metadata, same contents.
    take_metadata(nodes_[existing].meta, nodes_[child].meta);
    nodes_[existing].implicit = nodes_[existing].implicit && nodes_[child].implicit;
    if (!nodes_[child].implicit) {
      nodes_[existing].origin = nodes_[child].origin;
    }
    return {};
  }
  // Tar semantics: the later entry replaces the earlier one (a directory's subtree
  // goes with it).
  it->second = child;
  return {};
}

base::Result<NodeId> FsTree::make_parents(const std::vector<std::string>& comps,
                                          std::string_view what) {
  NodeId cur = Tree::kRootNode;
  std::string path;
  for (std::size_t i = 0; i + 1 < comps.size(); ++i) {
    path += '/';
    path += comps[i];
    auto& children = nodes_[cur].meta.children;
    auto it = children.find(comps[i]);
    if (it == children.end()) {
      BuildNode d;
      d.meta.mode = 0040755;
      d.implicit = true;
      NodeId id = add_node(std::move(d));
      nodes_[cur].meta.children.emplace(comps[i], id);
      cur = id;
      continue;
    }
    const BuildNode& n = nodes_[it->second];
    if (!is_dir(n)) {
      bool link = (n.meta.mode & 0170000) == 0120000;
      return base::errorf(ENOTDIR, "{}: parent {} is {}", what, path,
                          link ? "a symlink" : "not a directory");
    }
    cur = it->second;
  }
  return cur;
}

base::Result<NodeId> FsTree::lookup(const std::vector<std::string>& comps) const {
  NodeId cur = Tree::kRootNode;
  for (const auto& c : comps) {
    if (!is_dir(nodes_[cur])) {
      return base::errorf(ENOTDIR, "{}: not a directory on the way", join_path(comps));
    }
    const auto& children = nodes_[cur].meta.children;
    auto it = children.find(c);
    if (it == children.end()) {
      return base::errorf(ENOENT, "{}: no such entry", join_path(comps));
    }
    cur = it->second;
  }
  return cur;
}

base::Result<NodeId> FsTree::resolve_lower_link(const FsTree& layer, NodeId lid) const {
  const std::vector<std::string>& comps = layer.node(lid).lower_link;
  const std::string path = join_path(comps);
  // The layer hides the target when a directory of its on the way is opaque or whites
  // out the next name.
  std::optional<NodeId> ldir = Tree::kRootNode;
  for (const auto& c : comps) {
    if (!ldir) {
      break;
    }
    const BuildNode& d = layer.node(*ldir);
    if (d.opaque || d.whiteouts.contains(c)) {
      return base::errorf(EINVAL, "hardlink to {}, which this layer removes", path);
    }
    auto it = d.meta.children.find(c);
    ldir.reset();
    if (it != d.meta.children.end() && is_dir(layer.node(it->second))) {
      ldir = it->second;
    }
  }
  auto target = lookup(comps);
  if (!target || comps.empty() || is_dir(nodes_[*target])) {
    return base::errorf(EINVAL, "hardlink to {}, which is {}", path,
                        target ? "a directory" : "in no lower layer");
  }
  return *target;
}

base::Status FsTree::merge_layer(const FsTree& layer) {
  std::vector<NodeId> mapped(layer.size(), kUnmapped);
  for (NodeId lid = 0; lid < layer.size(); ++lid) {
    if (!layer.node(lid).lower_link.empty()) {
      CFN_ASSIGN_OR_RETURN(mapped[lid], resolve_lower_link(layer, lid));
    }
  }
  return merge_dir(Tree::kRootNode, layer, Tree::kRootNode, "/", mapped);
}

base::Status FsTree::merge_dir(NodeId base_dir, const FsTree& layer, NodeId layer_dir,
                               const std::string& path, std::vector<NodeId>& mapped) {
  const BuildNode& ldir = layer.node(layer_dir);
  if (!ldir.implicit) {
    take_metadata(nodes_[base_dir].meta, ldir.meta);
    nodes_[base_dir].implicit = false;
    nodes_[base_dir].origin = ldir.origin;
  }
  if (ldir.opaque) {
    nodes_[base_dir].meta.children.clear();
  }
  for (const auto& w : ldir.whiteouts) {
    nodes_[base_dir].meta.children.erase(w);
  }
  for (const auto& [name, lid] : ldir.meta.children) {
    const BuildNode& lnode = layer.node(lid);
    std::string child_path = path + name;
    auto& bchildren = nodes_[base_dir].meta.children;
    auto it = bchildren.find(name);
    if (is_dir(lnode)) {
      NodeId target = kUnmapped;
      if (it != bchildren.end() && is_dir(nodes_[it->second])) {
        target = it->second;
      } else {
        if (it != bchildren.end() && lnode.implicit) {
          return base::errorf(ENOTDIR,
                              "{}: is not a directory in a lower layer, but this layer has "
                              "entries below it",
                              child_path);
        }
        BuildNode d;
        d.meta = lnode.meta;
        d.meta.children.clear();
        d.implicit = lnode.implicit;
        d.origin = lnode.origin;
        target = add_node(std::move(d));
        nodes_[base_dir].meta.children[name] = target;
      }
      CFN_TRY(merge_dir(target, layer, lid, child_path + "/", mapped));
      continue;
    }
    if (mapped[lid] == kUnmapped) {
      BuildNode c;
      c.meta = lnode.meta;
      c.chunk_slots = lnode.chunk_slots;
      c.origin = lnode.origin;
      mapped[lid] = add_node(std::move(c));
    }
    nodes_[base_dir].meta.children[name] = mapped[lid];
  }
  return {};
}

std::size_t FsTree::reachable_count() const {
  std::vector<bool> seen(nodes_.size(), false);
  std::deque<NodeId> q{Tree::kRootNode};
  seen[Tree::kRootNode] = true;
  std::size_t n = 0;
  while (!q.empty()) {
    NodeId id = q.front();
    q.pop_front();
    ++n;
    for (const auto& [name, c] : nodes_[id].meta.children) {
      if (!seen[c]) {
        seen[c] = true;
        q.push_back(c);
      }
    }
  }
  return n;
}

base::Result<std::vector<std::string>> split_entry_path(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) {
    return base::errorf(EINVAL, "entry '{}': path contains a NUL byte", path);
  }
  if (path.size() > kMaxPathBytes) {
    return base::errorf(ENAMETOOLONG, "entry '{}...': path longer than {} bytes",
                        path.substr(0, 64), kMaxPathBytes);
  }
  if (path.starts_with('/')) {
    return base::errorf(EINVAL, "entry '{}': absolute paths are not allowed", path);
  }
  std::vector<std::string> comps;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    std::size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) {
      slash = path.size();
    }
    std::string_view c = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (c.empty() || c == ".") {
      continue;
    }
    if (c == "..") {
      return base::errorf(EINVAL, "entry '{}': '..' components are not allowed", path);
    }
    if (c.size() > kNameLen) {
      return base::errorf(ENAMETOOLONG, "entry '{}': a name is longer than 255 bytes", path);
    }
    comps.emplace_back(c);
  }
  return comps;
}

std::string join_path(const std::vector<std::string>& comps) {
  if (comps.empty()) {
    return "/";
  }
  std::string s;
  for (const auto& c : comps) {
    s += '/';
    s += c;
  }
  return s;
}

}  // namespace erofs
