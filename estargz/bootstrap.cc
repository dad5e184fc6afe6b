// SPDX-License-Identifier: Apache-2.0
#include "estargz/bootstrap.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <map>
#include <set>
#include <utility>

#include "erofs/blob_meta.h"
#include "erofs/writer.h"

namespace estargz {
namespace {

constexpr std::uint64_t kBlock = 4096;
constexpr std::uint64_t kMaxChunk = 16ULL << 20;
constexpr std::string_view kWhiteout = ".wh.";
constexpr std::string_view kOpaque = ".wh..wh..opq";

using NodeIdx = std::uint32_t;

struct ChunkSrc {
  std::uint32_t layer = 0;
  std::uint64_t offset = 0;  // the member, in the layer
  std::uint64_t compressed_size = 0;
  std::uint64_t file_offset = 0;
  std::uint64_t size = 0;  // 0 until resolved: chunkSize, or the rest of the file
  std::uint64_t declared_size = 0;
  base::Digest digest{};
};

struct INode {
  erofs::Node meta;
  std::vector<ChunkSrc> chunks;  // regular files, in TOC order
  std::string what;              // "layer N entry I (name)" for errors
};

bool is_dir(const INode& n) {
  return (n.meta.mode & S_IFMT) == S_IFDIR;
}

std::string what_of(std::size_t layer, std::size_t index, const std::string& name) {
  return fmt::format("layer {} entry {} ({})", layer, index, name);
}

class Builder {
 public:
  Builder() {
    INode root;
    root.meta.mode = S_IFDIR | 0755;
    root.what = "the root";
    nodes_.push_back(std::move(root));
  }

  base::Status add_layer(std::uint32_t li, const LayerToc& layer) {
    CFN_TRY(member_ends(li, layer));
    CFN_TRY(apply_whiteouts(li, layer));
    return add_entries(li, layer);
  }

  base::Result<Built> finish(const std::vector<LayerToc>& layers);

 private:
  // Member starts of the layer, each with where it ends: the next start or the TOC.
  base::Status member_ends(std::uint32_t li, const LayerToc& layer) {
    std::set<std::uint64_t> starts;
    for (std::size_t i = 0; i < layer.toc.entries.size(); ++i) {
      const Entry& e = layer.toc.entries[i];
      if (!e.offset) {
        continue;
      }
      if (*e.offset >= layer.toc_offset) {
        return base::errorf(EINVAL, "{}: offset {} is not before the TOC at {}",
                            what_of(li, i, e.name), *e.offset, layer.toc_offset);
      }
      starts.insert(*e.offset);
    }
    auto& ends = ends_[li];
    for (auto it = starts.begin(); it != starts.end(); ++it) {
      auto next = std::next(it);
      ends[*it] = next == starts.end() ? layer.toc_offset : *next;
    }
    return {};
  }

  base::Result<NodeIdx> lookup(const std::vector<std::string>& comps) const {
    NodeIdx cur = 0;
    for (const auto& c : comps) {
      const INode& n = nodes_[cur];
      if (!is_dir(n)) {
        return base::make_error(ENOTDIR, "not a directory");
      }
      auto it = n.meta.children.find(c);
      if (it == n.meta.children.end()) {
        return base::make_error(ENOENT, "no such entry");
      }
      cur = it->second;
    }
    return cur;
  }

  // The directory of comps[0..n-1], made (0755, root) where missing.
  base::Result<NodeIdx> parent_of(const std::vector<std::string>& comps, const std::string& what) {
    NodeIdx cur = 0;
    for (std::size_t i = 0; i + 1 < comps.size(); ++i) {
      auto it = nodes_[cur].meta.children.find(comps[i]);
      if (it == nodes_[cur].meta.children.end()) {
        INode d;
        d.meta.mode = S_IFDIR | 0755;
        d.what = what;
        const auto id = static_cast<NodeIdx>(nodes_.size());
        nodes_.push_back(std::move(d));
        nodes_[cur].meta.children[comps[i]] = id;
        cur = id;
        continue;
      }
      if (!is_dir(nodes_[it->second])) {
        return base::errorf(EINVAL, "{}: parent {} is not a directory", what, comps[i]);
      }
      cur = it->second;
    }
    return cur;
  }

  base::Status apply_whiteouts(std::uint32_t li, const LayerToc& layer) {
    for (std::size_t i = 0; i < layer.toc.entries.size(); ++i) {
      const Entry& e = layer.toc.entries[i];
      if (e.type == EntryType::kChunk) {
        continue;
      }
      auto comps = clean_name(e.name);
      if (!comps) {
        return base::Unexpected(std::move(comps).error().wrap(what_of(li, i, e.name)));
      }
      if (comps->empty() || !comps->back().starts_with(kWhiteout)) {
        continue;
      }
      const std::string base = comps->back();
      comps->pop_back();
      auto dir = lookup(*comps);
      if (!dir || !is_dir(nodes_[*dir])) {
        continue;  // nothing lower to hide
      }
      auto& children = nodes_[*dir].meta.children;
      if (base == kOpaque) {
        children.clear();
      } else if (!base.starts_with(".wh..wh.")) {
        children.erase(base.substr(kWhiteout.size()));
      }
    }
    return {};
  }

  base::Status add_entries(std::uint32_t li, const LayerToc& layer) {
    std::optional<NodeIdx> file;  // the regular file chunk entries continue
    std::string file_name;
    std::vector<std::string> regs;  // this layer's regular files so far, as paths
    for (std::size_t i = 0; i < layer.toc.entries.size(); ++i) {
      const Entry& e = layer.toc.entries[i];
      const std::string what = what_of(li, i, e.name);
      if (e.type == EntryType::kChunk) {
        if (!file || e.name != file_name) {
          return base::errorf(EINVAL, "{}: a chunk that does not follow its file", what);
        }
        CFN_TRY(add_chunk(li, e, what, nodes_[*file]));
        continue;
      }
      file.reset();
      auto comps = clean_name(e.name);
      if (!comps) {
        return base::Unexpected(std::move(comps).error().wrap(what));
      }
      if (comps->empty()) {
        if (e.type != EntryType::kDir) {
          return base::errorf(EINVAL, "{}: the root is not a directory", what);
        }
        set_meta(nodes_[0], e);
        continue;
      }
      const std::string& base = comps->back();
      if (comps->size() == 1 && (base == kPrefetchLandmark || base == kNoPrefetchLandmark)) {
        if (base == kPrefetchLandmark) {
          prefetch_[li] = regs;
        }
        // Its bytes are a member like a file's: a file that shares no path with it.
        file = hidden_node(what);
        file_name = e.name;
        if (e.type == EntryType::kReg && e.size > 0) {
          CFN_TRY(add_chunk(li, e, what, nodes_[*file]));
        }
        continue;
      }
      if (base.starts_with(kWhiteout)) {
        continue;  // applied before this layer's entries
      }
      CFN_ASSIGN_OR_RETURN(const NodeIdx parent, parent_of(*comps, what));
      if (e.type == EntryType::kHardlink) {
        auto target_comps = clean_name(e.link_name);
        if (!target_comps) {
          return base::Unexpected(std::move(target_comps).error().wrap(what + " linkName"));
        }
        auto target = lookup(*target_comps);
        if (!target || target_comps->empty() || is_dir(nodes_[*target])) {
          return base::errorf(EINVAL, "{}: hardlink to {}, which is {}", what, e.link_name,
                              target ? "a directory" : "not an earlier entry");
        }
        nodes_[parent].meta.children[base] = *target;
        continue;
      }
      auto& children = nodes_[parent].meta.children;
      if (auto it = children.find(base);
          it != children.end() && e.type == EntryType::kDir && is_dir(nodes_[it->second])) {
        set_meta(nodes_[it->second], e);  // a directory meeting a directory keeps its children
        continue;
      }
      INode n;
      n.what = what;
      set_meta(n, e);
      const auto id = static_cast<NodeIdx>(nodes_.size());
      nodes_.push_back(std::move(n));
      nodes_[parent].meta.children[base] = id;
      if (e.type == EntryType::kReg) {
        regs.push_back(join(*comps));
        if (e.size > 0) {
          CFN_TRY(add_chunk(li, e, what, nodes_[id]));
        }
        file = id;
        file_name = e.name;
      }
    }
    return {};
  }

  NodeIdx hidden_node(const std::string& what) {
    INode n;
    n.meta.mode = S_IFREG | 0644;
    n.what = what;
    nodes_.push_back(std::move(n));
    return static_cast<NodeIdx>(nodes_.size() - 1);
  }

  static std::string join(const std::vector<std::string>& comps) {
    std::string p;
    for (const auto& c : comps) {
      p += "/" + c;
    }
    return p;
  }

  static void set_meta(INode& n, const Entry& e) {
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
    n.meta.mode = static_cast<std::uint16_t>(type | (e.mode & 07777));
    n.meta.uid = e.uid;
    n.meta.gid = e.gid;
    n.meta.mtime = e.mtime;
    n.meta.mtime_nsec = e.mtime_nsec;
    n.meta.xattrs = e.xattrs;
    if (e.type == EntryType::kReg) {
      n.meta.size = e.size;
    } else if (e.type == EntryType::kSymlink) {
      n.meta.symlink = e.link_name;
      n.meta.size = e.link_name.size();
    } else if (e.type == EntryType::kChar || e.type == EntryType::kBlock) {
      n.meta.rdev = erofs::encode_rdev(e.dev_major, e.dev_minor);
    }
  }

  base::Status add_chunk(std::uint32_t li, const Entry& e, const std::string& what, INode& file) {
    if (!e.offset || !e.chunk_digest) {
      return base::errorf(EINVAL, "{}: a chunk without {}", what,
                          e.offset ? "chunkDigest" : "offset");
    }
    if (e.inner_offset != 0) {
      return base::errorf(EOPNOTSUPP,
                          "{}: innerOffset {} (several chunks in one gzip member, as "
                          "--estargz-min-chunk-size makes) is not supported",
                          what, e.inner_offset);
    }
    const std::uint64_t end = ends_[li].at(*e.offset);
    if (end - *e.offset > erofs::kMaxGzipMember) {
      return base::errorf(EOPNOTSUPP, "{}: a gzip member of {} bytes is over the limit of {}", what,
                          end - *e.offset, erofs::kMaxGzipMember);
    }
    ChunkSrc c;
    c.layer = li;
    c.offset = *e.offset;
    c.compressed_size = end - *e.offset;
    c.file_offset = e.type == EntryType::kReg ? 0 : e.chunk_offset;
    c.declared_size = e.chunk_size;
    c.digest = *e.chunk_digest;
    file.chunks.push_back(c);
    return {};
  }

  std::vector<INode> nodes_;
  std::map<std::uint32_t, std::map<std::uint64_t, std::uint64_t>> ends_;  // layer -> start -> end
  std::map<std::uint32_t, std::vector<std::string>> prefetch_;            // layer -> paths
};

// Each chunk's size (chunkSize, or the rest of the file), checked to tile the file.
base::Status resolve_chunks(INode& n) {
  const std::uint64_t size = n.meta.size;
  std::uint64_t pos = 0;
  for (std::size_t k = 0; k < n.chunks.size(); ++k) {
    ChunkSrc& c = n.chunks[k];
    if (c.file_offset != pos) {
      return base::errorf(EINVAL, "{}: chunk {} at file offset {}, expected {}", n.what, k,
                          c.file_offset, pos);
    }
    c.size = c.declared_size != 0 ? c.declared_size : size - pos;
    if (c.size == 0 || c.size > size - pos) {
      return base::errorf(EINVAL, "{}: chunk {} of {} bytes at {} does not fit the {}-byte file",
                          n.what, k, c.size, pos, size);
    }
    pos += c.size;
  }
  if (pos != size) {
    return base::errorf(EINVAL, "{}: chunks cover {} of its {} bytes", n.what, pos, size);
  }
  return {};
}

base::Result<Built> Builder::finish(const std::vector<LayerToc>& layers) {
  // Reachable nodes in tree order, each once (hardlinks name one node).
  std::vector<NodeIdx> order;
  std::map<NodeIdx, erofs::NodeId> new_id;
  std::vector<NodeIdx> stack{0};
  new_id[0] = 0;
  while (!stack.empty()) {
    const NodeIdx cur = stack.back();
    stack.pop_back();
    order.push_back(cur);
    const auto& children = nodes_[cur].meta.children;
    for (auto it = children.rbegin(); it != children.rend(); ++it) {
      if (new_id.emplace(it->second, static_cast<erofs::NodeId>(new_id.size())).second) {
        if (is_dir(nodes_[it->second])) {
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
  for (NodeIdx i : order) {
    INode& n = nodes_[i];
    if ((n.meta.mode & S_IFMT) != S_IFREG) {
      continue;
    }
    if (n.meta.size > 0 && n.chunks.empty()) {
      return base::errorf(EINVAL, "{}: a file of {} bytes without chunks", n.what, n.meta.size);
    }
    CFN_TRY(resolve_chunks(n));
    if (!n.chunks.empty()) {
      max_single = std::max(max_single, n.chunks.back().size);  // a last chunk
    }
    for (std::size_t k = 0; k + 1 < n.chunks.size(); ++k) {
      if (cs == 0) {
        cs = n.chunks[k].size;
      }
      if (n.chunks[k].size != cs) {
        return base::errorf(EOPNOTSUPP, "{}: chunks of {} and {} bytes in one image", n.what,
                            n.chunks[k].size, cs);
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
    NodeIdx node;
    std::size_t k;
  };
  std::map<std::uint32_t, std::vector<Place>> per_layer;
  for (NodeIdx i : order) {
    for (std::size_t k = 0; k < nodes_[i].chunks.size(); ++k) {
      per_layer[nodes_[i].chunks[k].layer].push_back({i, k});
    }
  }
  Built out;
  out.chunk_size = static_cast<std::uint32_t>(cs);
  erofs::Tree tree;
  tree.nodes.resize(order.size());
  std::vector<std::vector<erofs::ChunkRef>> refs(nodes_.size());
  for (auto& [li, places] : per_layer) {
    std::stable_sort(places.begin(), places.end(), [&](const Place& a, const Place& b) {
      return nodes_[a.node].chunks[a.k].offset < nodes_[b.node].chunks[b.k].offset;
    });
    if (places.size() > (1U << 24)) {
      return base::errorf(EOPNOTSUPP, "layer {}: {} chunks is over 2^24", li, places.size());
    }
    erofs::BlobInfo b;
    b.id = layers[li].blob_id;
    b.index = static_cast<std::uint32_t>(out.blobs.size());
    b.chunk_size = out.chunk_size;
    b.chunk_count = static_cast<std::uint32_t>(places.size());
    b.compressor = base::Compressor::kGzip;
    b.digester = base::DigestAlgo::kSha256;
    b.features = erofs::kBlobFeatureAligned;
    b.compressed_size = layers[li].blob_size;
    std::uint64_t uoff = 0;
    for (std::size_t ci = 0; ci < places.size(); ++ci) {
      const ChunkSrc& c = nodes_[places[ci].node].chunks[places[ci].k];
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
        v.resize(nodes_[places[ci].node].chunks.size());
      }
      v[places[ci].k] = r;
      uoff += base::align_up(c.size, kBlock);
    }
    b.uncompressed_size = uoff;
    out.blobs.push_back(std::move(b));
  }
  for (NodeIdx i : order) {
    erofs::Node n = nodes_[i].meta;
    for (auto& [name, child] : n.children) {
      child = new_id.at(child);
    }
    n.chunks = std::move(refs[i]);
    tree.nodes[new_id.at(i)] = std::move(n);
  }
  // Prefetch: the prioritized files that the merge kept, as regular files.
  for (const auto& [li, paths] : prefetch_) {
    for (const auto& p : paths) {
      auto comps = clean_name(p);
      if (!comps) {
        continue;
      }
      auto id = lookup(*comps);
      if (id && (nodes_[*id].meta.mode & S_IFMT) == S_IFREG && new_id.contains(*id)) {
        tree.prefetch.push_back(new_id.at(*id));
        out.prefetch.push_back(p);
      }
    }
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
  Builder b;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    CFN_TRY(b.add_layer(static_cast<std::uint32_t>(i), layers[i]));
  }
  return b.finish(layers);
}

}  // namespace estargz
