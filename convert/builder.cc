// SPDX-License-Identifier: Apache-2.0
#include "convert/builder.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <limits>
#include <optional>
#include <string_view>

#include "base/defer.h"
#include "base/log.h"
#include "convert/fs_util.h"
#include "convert/oci_writer.h"
#include "convert/sources.h"

namespace convert {
namespace {

constexpr std::size_t kMaxBlobs = 254;  // device_id is one byte, 0 = the bootstrap

base::Status move_into_place(int staging, int out, const std::vector<erofs::BlobInfo>& blobs) {
  // An old image.boot goes first: from here until the end nothing looks complete.
  if (::unlinkat(out, "image.boot", 0) != 0 && errno != ENOENT) {
    return base::errno_error("remove old image.boot");
  }
  CFN_ASSIGN_OR_RETURN(base::UniqueFd out_blobs, make_dir_at(out, "blobs"));
  CFN_ASSIGN_OR_RETURN(base::UniqueFd st_blobs,
                       base::UniqueFd::openat(staging, "blobs", O_RDONLY | O_DIRECTORY));
  for (const auto& b : blobs) {
    if (::renameat(st_blobs.get(), b.id.c_str(), out_blobs.get(), b.id.c_str()) != 0) {
      return base::errno_error("move blob " + b.id + " into place");
    }
  }
  struct stat st {};
  if (::fstatat(out, "oci", &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (::renameat(out, "oci", staging, "oci.old") != 0) {
      return base::errno_error("move old oci/ aside");
    }
  }
  if (::renameat(staging, "oci", out, "oci") != 0) {
    return base::errno_error("move oci/ into place");
  }
  if (::renameat(staging, "image.boot", out, "image.boot") != 0) {
    return base::errno_error("move image.boot into place");
  }
  return {};
}

// The writer's node of an absolute path in tree; nullopt when absent.
std::optional<erofs::NodeId> find_node(const erofs::Tree& tree, const std::string& path) {
  erofs::NodeId cur = erofs::Tree::kRootNode;
  std::size_t pos = 1;
  while (pos < path.size()) {
    std::size_t slash = path.find('/', pos);
    if (slash == std::string::npos) {
      slash = path.size();
    }
    const auto& children = tree.nodes[cur].children;
    auto it = children.find(path.substr(pos, slash - pos));
    if (it == children.end()) {
      return std::nullopt;
    }
    cur = it->second;
    pos = slash + 1;
  }
  return cur;
}

// A layer file: an eStargz layer by its TOC, any other tar by libarchive.
base::Status read_layer(const std::string& path, const std::string& label, erofs::FsTree& layer,
                        ChunkPipeline& pipeline, const base::Digest* expected_sha256) {
  CFN_ASSIGN_OR_RETURN(const bool esgz, is_estargz(path));
  if (esgz) {
    spdlog::info("{}: an eStargz layer, read by its TOC", label);
    return read_estargz(path, label, layer, pipeline, expected_sha256);
  }
  return read_tar(path, label, layer, pipeline, expected_sha256);
}

}  // namespace

std::vector<erofs::NodeId> resolve_prefetch(const erofs::Tree& tree,
                                            const std::vector<std::string>& paths) {
  std::vector<erofs::NodeId> out;
  std::size_t missing = 0;
  for (const std::string& p : paths) {
    auto n = find_node(tree, p);
    if (!n) {
      if (++missing <= 10) {
        spdlog::warn("prefetch list: {} is not in the image; skipped", p);
      }
      continue;
    }
    out.push_back(*n);
  }
  if (missing > 10) {
    spdlog::warn("prefetch list: {} paths not in the image in all", missing);
  }
  return out;
}

std::vector<erofs::ChunkSlot> listed_slots(const erofs::FsTree& layer,
                                           const std::vector<std::string>& paths) {
  std::vector<erofs::ChunkSlot> out;
  std::vector<bool> seen(layer.size(), false);
  // Depth-first from a listed node; an explicit stack, as the tree's depth is the
  // input's.
  auto add = [&](erofs::NodeId top) {
    std::vector<erofs::NodeId> stack{top};
    while (!stack.empty()) {
      const erofs::NodeId id = stack.back();
      stack.pop_back();
      if (seen[id]) {
        continue;
      }
      seen[id] = true;
      const erofs::BuildNode& n = layer.node(id);
      if (is_dir(n)) {
        for (auto it = n.meta.children.rbegin(); it != n.meta.children.rend(); ++it) {
          stack.push_back(it->second);
        }
      } else {
        out.insert(out.end(), n.chunk_slots.begin(), n.chunk_slots.end());
      }
    }
  };
  for (const std::string& p : paths) {
    // parse_prefetch_list gives "/a/b" ("/" for the root): relative components.
    auto comps =
        erofs::split_entry_path(std::string_view(p).substr(std::min<std::size_t>(1, p.size())));
    if (!comps) {
      continue;  // no such entry can be in the layer
    }
    if (auto id = layer.lookup(*comps)) {
      add(*id);
    }
  }
  return out;
}

erofs::Tree finalize_tree(const erofs::FsTree& tree, const ChunkPipeline& pipeline) {
  constexpr erofs::NodeId kNone = std::numeric_limits<erofs::NodeId>::max();
  erofs::Tree out;
  std::vector<erofs::NodeId> map(tree.size(), kNone);
  std::deque<erofs::NodeId> queue;
  map[erofs::Tree::kRootNode] = 0;
  out.nodes.emplace_back();
  queue.push_back(erofs::Tree::kRootNode);
  while (!queue.empty()) {
    erofs::NodeId old = queue.front();
    queue.pop_front();
    const erofs::BuildNode& src = tree.node(old);
    erofs::Node n = src.meta;
    n.children.clear();
    n.chunks.reserve(src.chunk_slots.size());
    for (erofs::ChunkSlot s : src.chunk_slots) {
      n.chunks.push_back(pipeline.resolve(s));
    }
    for (const auto& [name, child] : src.meta.children) {
      if (map[child] == kNone) {
        map[child] = static_cast<erofs::NodeId>(out.nodes.size());
        out.nodes.emplace_back();
        queue.push_back(child);
      }
      n.children.emplace(name, map[child]);
    }
    out.nodes[map[old]] = std::move(n);
  }
  return out;
}

base::Result<BuildReport> build_image(const std::string& source, const std::string& outdir,
                                      const BuildOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  CFN_ASSIGN_OR_RETURN(SourceKind kind, detect_source(source));
  OciSourceImage oci_src;
  if (kind == SourceKind::kOciLayout) {
    auto img = open_oci_layout(source);
    if (!img) {
      return base::Unexpected(std::move(img).error().wrap("OCI layout " + source));
    }
    oci_src = std::move(*img);
  }

  if (::mkdir(outdir.c_str(), 0755) != 0 && errno != EEXIST) {
    return base::errno_error("create " + outdir);
  }
  auto out_fd = base::UniqueFd::open(outdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!out_fd) {
    return base::Unexpected(std::move(out_fd).error().wrap("OUTDIR must be a real directory"));
  }
  std::string staging_path = outdir + "/.partial-XXXXXX";
  if (::mkdtemp(staging_path.data()) == nullptr) {
    return base::errno_error("create staging directory in " + outdir);
  }
  std::string staging_name = staging_path.substr(staging_path.rfind('/') + 1);
  auto cleanup = base::defer([&] {
    if (auto r = remove_tree_at(out_fd->get(), staging_name); !r) {
      spdlog::warn("cleaning up {}: {}", staging_path, r.error().to_string());
    }
  });
  CFN_ASSIGN_OR_RETURN(
      base::UniqueFd staging,
      base::UniqueFd::openat(out_fd->get(), staging_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  CFN_ASSIGN_OR_RETURN(base::UniqueFd blobs_dir, make_dir_at(staging.get(), "blobs"));
  CFN_ASSIGN_OR_RETURN(base::UniqueFd oci_dir, make_dir_at(staging.get(), "oci"));

  BuildReport report;
  ChunkPipeline pipeline(options, blobs_dir.get());
  erofs::FsTree image;
  auto apply = [&](erofs::FsTree& layer, const std::string& what) -> base::Status {
    if (auto r = image.merge_layer(layer); !r) {
      return base::Unexpected(std::move(r).error().wrap(what));
    }
    // The listed files' chunks go first in the blob, in list order: a list recorded
    // in read order is then one run of the blob file, fetched in few range reads.
    CFN_ASSIGN_OR_RETURN(auto blob,
                         pipeline.end_layer(listed_slots(layer, options.prefetch_files)));
    if (blob && pipeline.blobs().size() > kMaxBlobs) {
      return base::errorf(EFBIG, "more than {} data blobs", kMaxBlobs);
    }
    ++report.layers;
    spdlog::debug("{}: {} new chunks so far", what, pipeline.stats().chunks_new);
    return {};
  };
  switch (kind) {
    case SourceKind::kDirectory: {
      erofs::FsTree layer;
      CFN_TRY(read_directory(source, layer, pipeline));
      CFN_TRY(apply(layer, source));
      break;
    }
    case SourceKind::kTar: {
      erofs::FsTree layer;
      CFN_TRY(read_layer(source, source, layer, pipeline, nullptr));
      CFN_TRY(apply(layer, source));
      break;
    }
    case SourceKind::kOciLayout:
      for (std::size_t i = 0; i < oci_src.layers.size(); ++i) {
        const auto& l = oci_src.layers[i];
        std::string label = fmt::format("layer {} (sha256:{})", i, base::hex(l.digest));
        erofs::FsTree layer;
        CFN_TRY(read_layer(l.path, label, layer, pipeline, &l.digest));
        CFN_TRY(apply(layer, label));
      }
      break;
  }

  erofs::Tree tree = finalize_tree(image, pipeline);
  report.inodes = tree.nodes.size();
  tree.prefetch = resolve_prefetch(tree, options.prefetch_files);
  report.prefetch_entries = tree.prefetch.size();
  std::vector<erofs::BlobInfo> infos;
  for (const auto& b : pipeline.blobs()) {
    infos.push_back(b.info);
  }
  report.blobs = infos.size();
  erofs::WriteOptions wopts;
  wopts.chunk_size = options.chunk_size;
  wopts.compressor = options.compressor;
  wopts.digester = options.digester;
  CFN_ASSIGN_OR_RETURN(auto bootstrap, erofs::write_bootstrap(tree, infos, wopts));
  report.bootstrap_size = bootstrap.size();

  OciOutput oci;
  oci.blobs = infos;
  oci.bootstrap = bootstrap;
  oci.source_config_json = oci_src.config_json;
  oci.ref_name = oci_src.ref_name;
  CFN_ASSIGN_OR_RETURN(report.manifest_digest,
                       write_oci_layout(oci_dir.get(), blobs_dir.get(), oci));
  CFN_TRY(write_new_file_at(staging.get(), "image.boot", bootstrap));
  oci_dir.reset();
  blobs_dir.reset();
  CFN_TRY(move_into_place(staging.get(), out_fd->get(), infos));
  report.stats = pipeline.stats();
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info(
      "built {}: {} layers, {} inodes, {} blobs, {} prefetch entries, {}/{} chunks new, "
      "{:.1f} MB in, {:.1f} MB stored, {:.2f} s",
      outdir, report.layers, report.inodes, report.blobs, report.prefetch_entries,
      report.stats.chunks_new, report.stats.chunks_total, report.stats.bytes_in / 1e6,
      report.stats.bytes_written / 1e6, secs);
  return report;
}

}  // namespace convert
