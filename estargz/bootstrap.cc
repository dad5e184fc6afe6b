// SPDX-License-Identifier: Apache-2.0
#include "estargz/bootstrap.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <utility>

#include "erofs/blob_meta.h"
#include "erofs/fs_tree.h"
#include "erofs/writer.h"

namespace estargz {
namespace {

constexpr std::uint64_t kBlock = 4096;
constexpr std::uint64_t kMaxChunk = 16ULL << 20;

using erofs::BuildNode;
using erofs::ChunkSlot;
using erofs::FsTree;
using erofs::NodeId;

std::string what_of(std::size_t layer, std::size_t index, const std::string& name) {
  return fmt::format("layer {} entry {} ({})", layer, index, name);
}

// The tree's errors (ENOTDIR for a parent that is not a directory, ...) are EINVAL here,
// as for every other lie of a TOC.
base::Unexpected as_einval(base::Error e, std::string_view what) {
  e.code = EINVAL;
  return base::Unexpected(std::move(e).wrap(what));
}

class Builder {
 public:
  // lazy: for a bootstrap whose chunks are the layers' gzip members (build_bootstrap),
  // which RAFS must be able to express; otherwise the chunks are inflated (layer_tree).
  Builder(std::span<const LayerToc> layers, bool lazy) : layers_(layers), lazy_(lazy) {}

  // Read the layer's TOC into a layer tree and merge it (the one OCI merge:
  // erofs::FsTree::merge_layer).
  base::Status add_layer(std::uint32_t li) {
    CFN_TRY(member_ends(li));
    FsTree layer;
    CFN_TRY(read_layer(li, layer));
    if (auto st = image_.merge_layer(layer); !st) {
      return as_einval(std::move(st).error(), fmt::format("layer {}", li));
    }
    return {};
  }

  base::Result<Built> finish();

  // One layer alone, for layer_tree.
  base::Result<LayerTree> single_layer() {
    CFN_TRY(member_ends(0));
    LayerTree out;
    CFN_TRY(read_layer(0, out.tree));
    // The files' chunk sizes, checked to tile each file (every file of the layer, reachable
    // or not: the converter inflates them all).
    for (NodeId i = 0; i < out.tree.size(); ++i) {
      const BuildNode& n = out.tree.node(i);
      if ((n.meta.mode & S_IFMT) != S_IFREG || !n.lower_link.empty() || n.origin == 0) {
        continue;
      }
      if (n.meta.size > 0 && n.chunk_slots.empty()) {
        return base::errorf(EINVAL, "{}: a file of {} bytes without chunks", what(n), n.meta.size);
      }
      CFN_TRY(resolve_chunks(n));
    }
    out.chunks = std::move(chunks_);
    out.prefetch = std::move(prefetch_[0]);
    return out;
  }

 private:
  // A node's tag: its layer and TOC entry, for errors.
  static std::uint64_t origin_of(std::uint32_t li, std::size_t i) {
    return (std::uint64_t{li} << 32) | (i + 1);  // 0: no entry (an implicit directory)
  }
  std::string what(const BuildNode& n) const {
    const auto li = static_cast<std::uint32_t>(n.origin >> 32);
    const auto i = static_cast<std::size_t>(n.origin & 0xffffffffU) - 1;
    return what_of(li, i, layers_[li].toc.entries[i].name);
  }

  // Member starts of the layer, sorted, each ending at the next start or the TOC.
  base::Status member_ends(std::uint32_t li) {
    const LayerToc& layer = layers_[li];
    auto& starts = starts_[li];
    starts.reserve(layer.toc.entries.size());
    for (std::size_t i = 0; i < layer.toc.entries.size(); ++i) {
      const Entry& e = layer.toc.entries[i];
      if (!e.offset) {
        continue;
      }
      if (*e.offset >= layer.toc_offset) {
        return base::errorf(EINVAL, "{}: offset {} is not before the TOC at {}",
                            what_of(li, i, e.name), *e.offset, layer.toc_offset);
      }
      starts.push_back(*e.offset);
    }
    std::sort(starts.begin(), starts.end());
    starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
    return {};
  }

  // Where the member starting at offset (one of member_ends') ends.
  std::uint64_t member_end(std::uint32_t li, std::uint64_t offset) const {
    const auto& starts = starts_.at(li);
    auto next = std::upper_bound(starts.begin(), starts.end(), offset);
    return next == starts.end() ? layers_[li].toc_offset : *next;
  }

  base::Status read_layer(std::uint32_t li, FsTree& layer) {
    const LayerToc& lt = layers_[li];
    layer.reserve(lt.toc.entries.size() + 1);
    // The regular file chunk entries continue (kNoFile: none). Not a std::optional: g++ 12
    // sees it "maybe uninitialized" once read_layer is inlined.
    constexpr NodeId kNoFile = std::numeric_limits<NodeId>::max();
    NodeId file = kNoFile;
    std::string file_name;
    // This layer's regular files so far, by entry (made paths at a landmark only).
    std::vector<std::uint32_t> regs;
    std::string what;  // one buffer for every entry's error context
    for (std::size_t i = 0; i < lt.toc.entries.size(); ++i) {
      const Entry& e = lt.toc.entries[i];
      // what_of's text, by hand: fmt::format_to into a std::string does not link in a
      // clang build against Debian's libfmt (scripts/fuzz).
      what.assign("layer ");
      what += std::to_string(li);
      what += " entry ";
      what += std::to_string(i);
      what += " (";
      what += e.name;
      what += ')';
      if (e.type == EntryType::kChunk) {
        if (file == kNoFile || e.name != file_name) {
          return base::errorf(EINVAL, "{}: a chunk that does not follow its file", what);
        }
        CFN_TRY(add_chunk(li, e, what, layer.node(file)));
        continue;
      }
      file = kNoFile;
      auto comps = clean_name(e.name);
      if (!comps) {
        return base::Unexpected(std::move(comps).error().wrap(what));
      }
      if (comps->empty()) {
        if (e.type != EntryType::kDir) {
          return base::errorf(EINVAL, "{}: the root is not a directory", what);
        }
        BuildNode& root = layer.node(erofs::Tree::kRootNode);
        set_meta(root.meta, e);
        root.implicit = false;
        root.origin = origin_of(li, i);
        continue;
      }
      const std::string& base = comps->back();
      if (comps->size() == 1 && (base == kPrefetchLandmark || base == kNoPrefetchLandmark)) {
        if (base == kPrefetchLandmark) {
          auto& paths = prefetch_[li];
          paths.clear();
          for (const std::uint32_t r : regs) {
            // Named cleanly before (the entry is a regular file of this layer).
            paths.push_back(erofs::join_path(*clean_name(lt.toc.entries[r].name)));
          }
        }
        // Its bytes are a member like a file's: a node in no directory.
        BuildNode hidden;
        hidden.meta.mode = S_IFREG | 0644;
        hidden.meta.size = e.type == EntryType::kReg ? e.size : 0;
        hidden.origin = origin_of(li, i);
        file = layer.add_node(std::move(hidden));
        file_name = e.name;
        if (e.type == EntryType::kReg && e.size > 0) {
          CFN_TRY(add_chunk(li, e, what, layer.node(file)));
        }
        continue;
      }
      auto parent = layer.make_parents(*comps, what);
      if (!parent) {
        return as_einval(std::move(parent).error(), what);
      }
      NodeId child = erofs::Tree::kRootNode;  // whiteouts name no node
      if (e.type == EntryType::kHardlink) {
        CFN_ASSIGN_OR_RETURN(child, hardlink_target(layer, e, what));
      } else if (!base.starts_with(erofs::kWhiteoutPrefix)) {
        BuildNode n;
        set_meta(n.meta, e);
        n.origin = origin_of(li, i);
        child = layer.add_node(std::move(n));
        if (e.type == EntryType::kReg) {
          regs.push_back(static_cast<std::uint32_t>(i));
          if (e.size > 0) {
            CFN_TRY(add_chunk(li, e, what, layer.node(child)));
          }
          file = child;
          file_name = e.name;
        }
      }
      if (auto st = layer.add_child(*parent, base, child, what); !st) {
        return as_einval(std::move(st).error(), "");
      }
    }
    return {};
  }

  // An earlier entry of this layer, or (merge_layer resolves it) a file of a lower one.
  static base::Result<NodeId> hardlink_target(FsTree& layer, const Entry& e,
                                              const std::string& what) {
    auto comps = clean_name(e.link_name);
    if (!comps) {
      return base::Unexpected(std::move(comps).error().wrap(what + " linkName"));
    }
    auto target =
        comps->empty() ? base::Result<NodeId>(erofs::Tree::kRootNode) : layer.lookup(*comps);
    if (target && is_dir(layer.node(*target))) {
      return base::errorf(EINVAL, "{}: hardlink to {}, which is a directory", what, e.link_name);
    }
    if (target) {
      return *target;
    }
    if (target.error().code != ENOENT) {
      return base::errorf(EINVAL, "{}: hardlink to {}, which is not a file", what, e.link_name);
    }
    BuildNode n;
    n.meta.mode = S_IFREG;
    n.lower_link = std::move(*comps);
    return layer.add_node(std::move(n));
  }

  static void set_meta(erofs::Node& n, const Entry& e) {
    std::uint16_t type = S_IFREG;
    switch (e.type) {
      case EntryType::kDir:
        type = S_IFDIR;
        break;
      case EntryType::kSymlink:
        type = S_IFLNK;
        break;
      case EntryType::kChar:
        type = S_IFCHR;
        break;
      case EntryType::kBlock:
        type = S_IFBLK;
        break;
      case EntryType::kFifo:
        type = S_IFIFO;
        break;
      case EntryType::kReg:
      case EntryType::kHardlink:
      case EntryType::kChunk:
        type = S_IFREG;
        break;
    }
    n.mode = static_cast<std::uint16_t>(type | (e.mode & 07777));
    n.uid = e.uid;
    n.gid = e.gid;
    n.mtime = e.mtime;
    n.mtime_nsec = e.mtime_nsec;
    n.xattrs = e.xattrs;
    if (e.type == EntryType::kReg) {
      n.size = e.size;
    } else if (e.type == EntryType::kSymlink) {
      n.symlink = e.link_name;
      n.size = e.link_name.size();
    } else if (e.type == EntryType::kChar || e.type == EntryType::kBlock) {
      n.rdev = erofs::encode_rdev(e.dev_major, e.dev_minor);
    }
  }

  base::Status add_chunk(std::uint32_t li, const Entry& e, const std::string& what,
                         BuildNode& file) {
    if (!e.offset || !e.chunk_digest) {
      return base::errorf(EINVAL, "{}: a chunk without {}", what,
                          e.offset ? "chunkDigest" : "offset");
    }
    if (lazy_ && e.inner_offset != 0) {
      return base::errorf(EOPNOTSUPP,
                          "{}: innerOffset {} (several chunks in one gzip member, as "
                          "--estargz-min-chunk-size makes) is not supported",
                          what, e.inner_offset);
    }
    const std::uint64_t end = member_end(li, *e.offset);
    if (lazy_ && end - *e.offset > erofs::kMaxGzipMember) {
      return base::errorf(EOPNOTSUPP, "{}: a gzip member of {} bytes is over the limit of {}", what,
                          end - *e.offset, erofs::kMaxGzipMember);
    }
    TocChunk c;
    c.layer = li;
    c.offset = *e.offset;
    c.compressed_size = end - *e.offset;
    c.file_offset = e.type == EntryType::kReg ? 0 : e.chunk_offset;
    c.declared_size = e.chunk_size;
    c.inner_offset = e.inner_offset;
    c.entry = static_cast<std::uint32_t>(file.origin & 0xffffffffU) - 1;
    c.digest = *e.chunk_digest;
    file.chunk_slots.push_back(chunks_.size());
    chunks_.push_back(c);
    return {};
  }

  base::Status resolve_chunks(const BuildNode& n);

  std::span<const LayerToc> layers_;
  bool lazy_ = true;
  FsTree image_;
  std::vector<TocChunk> chunks_;                                // by ChunkSlot
  std::map<std::uint32_t, std::vector<std::uint64_t>> starts_;  // layer -> member starts, sorted
  std::map<std::uint32_t, std::vector<std::string>> prefetch_;  // layer -> paths
};

// Each chunk's size (chunkSize, or the rest of the file), checked to tile the file.
base::Status Builder::resolve_chunks(const BuildNode& n) {
  const std::uint64_t size = n.meta.size;
  std::uint64_t pos = 0;
  for (std::size_t k = 0; k < n.chunk_slots.size(); ++k) {
    TocChunk& c = chunks_[n.chunk_slots[k]];
    if (c.file_offset != pos) {
      return base::errorf(EINVAL, "{}: chunk {} at file offset {}, expected {}", what(n), k,
                          c.file_offset, pos);
    }
    c.size = c.declared_size != 0 ? c.declared_size : size - pos;
    if (c.size == 0 || c.size > size - pos) {
      return base::errorf(EINVAL, "{}: chunk {} of {} bytes at {} does not fit the {}-byte file",
                          what(n), k, c.size, pos, size);
    }
    pos += c.size;
  }
  if (pos != size) {
    return base::errorf(EINVAL, "{}: chunks cover {} of its {} bytes", what(n), pos, size);
  }
  return {};
}

base::Result<Built> Builder::finish() {
  // Reachable nodes in tree order, each once (hardlinks name one node).
  std::vector<NodeId> order;
  constexpr erofs::NodeId kNone = std::numeric_limits<erofs::NodeId>::max();
  std::vector<erofs::NodeId> new_id(image_.size(), kNone);  // by image_ node
  erofs::NodeId ids = 0;
  std::vector<NodeId> stack{0};
  new_id[0] = ids++;
  while (!stack.empty()) {
    const NodeId cur = stack.back();
    stack.pop_back();
    order.push_back(cur);
    const auto& children = image_.node(cur).meta.children;
    for (auto it = children.rbegin(); it != children.rend(); ++it) {
      if (new_id[it->second] == kNone) {
        new_id[it->second] = ids++;
        if (is_dir(image_.node(it->second))) {
          stack.push_back(it->second);
        } else {
          order.push_back(it->second);
        }
      }
    }
  }

  // Chunk sizes: one power of two for every file of several chunks; files of one chunk
  // must fit in it.
  std::uint64_t cs = 0;
  std::uint64_t max_single = 0;
  for (NodeId i : order) {
    BuildNode& n = image_.node(i);
    if ((n.meta.mode & S_IFMT) != S_IFREG) {
      continue;
    }
    if (n.meta.size > 0 && n.chunk_slots.empty()) {
      return base::errorf(EINVAL, "{}: a file of {} bytes without chunks", what(n), n.meta.size);
    }
    CFN_TRY(resolve_chunks(n));
    if (!n.chunk_slots.empty()) {
      max_single = std::max(max_single, chunks_[n.chunk_slots.back()].size);  // a last chunk
    }
    for (std::size_t k = 0; k + 1 < n.chunk_slots.size(); ++k) {
      const std::uint64_t size = chunks_[n.chunk_slots[k]].size;
      if (cs == 0) {
        cs = size;
      }
      if (size != cs) {
        return base::errorf(EOPNOTSUPP, "{}: chunks of {} and {} bytes in one image", what(n), size,
                            cs);
      }
    }
  }
  if (cs == 0) {
    cs = std::max<std::uint64_t>(kBlock, std::bit_ceil(std::max<std::uint64_t>(max_single, 1)));
  }
  if (!std::has_single_bit(cs) || cs < kBlock || cs > kMaxChunk || max_single > cs) {
    return base::errorf(EOPNOTSUPP,
                        "chunk size {} (files of one chunk up to {} bytes): RAFS needs one power "
                        "of two from 4 KiB to 16 MiB",
                        cs, max_single);
  }

  // Per layer, chunks in layer order get ci indexes and 4 KiB aligned places.
  struct Place {
    NodeId node;
    std::size_t k;  // the node's k-th chunk
    ChunkSlot slot;
  };
  std::map<std::uint32_t, std::vector<Place>> per_layer;
  for (NodeId i : order) {
    const auto& slots = image_.node(i).chunk_slots;
    for (std::size_t k = 0; k < slots.size(); ++k) {
      per_layer[chunks_[slots[k]].layer].push_back({i, k, slots[k]});
    }
  }
  Built out;
  out.chunk_size = static_cast<std::uint32_t>(cs);
  erofs::Tree tree;
  tree.nodes.resize(order.size());
  std::vector<std::vector<erofs::ChunkRef>> refs(image_.size());
  for (auto& [li, places] : per_layer) {
    std::stable_sort(places.begin(), places.end(), [&](const Place& a, const Place& b) {
      return chunks_[a.slot].offset < chunks_[b.slot].offset;
    });
    if (places.size() > (1U << 24)) {
      return base::errorf(EOPNOTSUPP, "layer {}: {} chunks is over 2^24", li, places.size());
    }
    erofs::BlobInfo b;
    b.id = layers_[li].blob_id;
    b.index = static_cast<std::uint32_t>(out.blobs.size());
    b.chunk_size = out.chunk_size;
    b.chunk_count = static_cast<std::uint32_t>(places.size());
    b.compressor = base::Compressor::kGzip;
    b.digester = base::DigestAlgo::kSha256;
    b.features = erofs::kBlobFeatureAligned;
    b.compressed_size = layers_[li].blob_size;
    std::uint64_t uoff = 0;
    for (std::size_t ci = 0; ci < places.size(); ++ci) {
      const TocChunk& c = chunks_[places[ci].slot];
      erofs::ChunkRef r;
      r.blob_index = b.index;
      r.ci_index = static_cast<std::uint32_t>(ci);
      r.compressed_offset = c.offset;
      r.compressed_size = static_cast<std::uint32_t>(c.compressed_size);
      r.uncompressed_offset = uoff;
      r.uncompressed_size = static_cast<std::uint32_t>(c.size);
      r.compressed = true;
      r.digest = c.digest;
      auto& v = refs[places[ci].node];
      if (v.size() <= places[ci].k) {
        v.resize(image_.node(places[ci].node).chunk_slots.size());
      }
      v[places[ci].k] = r;
      uoff += base::align_up(c.size, kBlock);
    }
    b.uncompressed_size = uoff;
    out.blobs.push_back(std::move(b));
  }
  // Prefetch: the prioritized files that the merge kept, as regular files (looked up
  // before the nodes move into the tree below).
  for (const auto& [li, paths] : prefetch_) {
    for (const auto& p : paths) {
      auto comps = clean_name(p);
      if (!comps) {
        continue;
      }
      auto id = image_.lookup(*comps);
      if (id && (image_.node(*id).meta.mode & S_IFMT) == S_IFREG && new_id[*id] != kNone) {
        tree.prefetch.push_back(new_id[*id]);
        out.prefetch.push_back(p);
      }
    }
  }
  for (NodeId i : order) {
    erofs::Node n = std::move(image_.node(i).meta);  // image_ is not read after this
    for (auto& [name, child] : n.children) {
      child = new_id[child];
    }
    n.chunks = std::move(refs[i]);
    tree.nodes[new_id[i]] = std::move(n);
  }
  erofs::WriteOptions wo;
  wo.chunk_size = out.chunk_size;
  wo.compressor = base::Compressor::kGzip;
  wo.digester = base::DigestAlgo::kSha256;
  CFN_ASSIGN_OR_RETURN(out.bootstrap, erofs::write_bootstrap(tree, out.blobs, wo));
  return out;
}

}  // namespace

base::Result<Built> build_bootstrap(const std::vector<LayerToc>& layers) {
  if (layers.empty() || layers.size() > 254) {
    return base::errorf(EINVAL, "{} layers: 1 to 254 can be merged", layers.size());
  }
  Builder b(layers, /*lazy=*/true);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    CFN_TRY(b.add_layer(static_cast<std::uint32_t>(i)));
  }
  return b.finish();
}

std::vector<Range> prefetch_ranges(const LayerToc& layer, std::uint64_t max_bytes) {
  const auto& entries = layer.toc.entries;
  std::size_t landmark = entries.size();
  for (std::size_t i = 0; i < entries.size(); ++i) {
    auto comps = clean_name(entries[i].name);
    if (comps && comps->size() == 1 && comps->front() == kPrefetchLandmark) {
      landmark = i;
      break;
    }
  }
  if (landmark == entries.size()) {
    return {};
  }
  std::vector<std::uint64_t> starts;
  starts.reserve(entries.size());
  for (const Entry& e : entries) {
    if (e.offset && *e.offset < layer.toc_offset) {
      starts.push_back(*e.offset);
    }
  }
  std::sort(starts.begin(), starts.end());
  starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
  std::vector<Range> out;
  std::uint64_t total = 0;
  std::uint64_t last = UINT64_MAX;  // the last member taken: chunk entries repeat none
  for (std::size_t i = 0; i < landmark && total < max_bytes; ++i) {
    const Entry& e = entries[i];
    if (!e.offset || *e.offset >= layer.toc_offset || *e.offset == last) {
      continue;
    }
    last = *e.offset;
    auto next = std::upper_bound(starts.begin(), starts.end(), *e.offset);
    const std::uint64_t end = next == starts.end() ? layer.toc_offset : *next;
    const std::uint64_t len = std::min(end - *e.offset, max_bytes - total);
    total += len;
    if (!out.empty() && out.back().offset + out.back().length == *e.offset) {
      out.back().length += len;
    } else {
      out.push_back({*e.offset, len});
    }
  }
  return out;
}

base::Result<LayerTree> layer_tree(const LayerToc& layer) {
  Builder b(std::span<const LayerToc>(&layer, 1), /*lazy=*/false);
  return b.single_layer();
}

}  // namespace estargz
