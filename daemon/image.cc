// SPDX-License-Identifier: Apache-2.0
#include "daemon/image.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <utility>

#include "base/file.h"

namespace cfnd {

base::Result<std::shared_ptr<BoundImage>> BoundImage::open(const std::string& bootstrap_path,
                                                           std::shared_ptr<Backend> backend,
                                                           BlobCache& cache) {
  std::shared_ptr<BoundImage> b(new BoundImage());
  char* real = ::realpath(bootstrap_path.c_str(), nullptr);
  if (real == nullptr) {
    return base::errno_error("bootstrap " + bootstrap_path);
  }
  b->bootstrap_path_ = real;
  std::free(real);  // NOLINT(cppcoreguidelines-no-malloc): realpath(3) allocates with malloc
  CFN_ASSIGN_OR_RETURN(b->bytes_, base::read_file(b->bootstrap_path_));
  auto img = erofs::Image::parse(b->bytes_);
  if (!img) {
    return base::Unexpected(img.error().wrap("bootstrap " + b->bootstrap_path_));
  }
  if (!img->is_rafs()) {
    return base::errorf(EINVAL, "bootstrap {}: not a RAFS v6 bootstrap", b->bootstrap_path_);
  }
  b->image_ = std::make_unique<erofs::Image>(std::move(*img));
  auto table = b->image_->chunk_table();
  if (!table) {
    return base::Unexpected(table.error().wrap("bootstrap " + b->bootstrap_path_));
  }
  b->backend_ = std::move(backend);
  const auto& infos = b->image_->blobs();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    // Extents name blobs by index and device slot i + 1 is blob i: keep them aligned.
    if (infos[i].index != i) {
      return base::errorf(EINVAL, "bootstrap {}: blob table entry {} has index {}",
                          b->bootstrap_path_, i, infos[i].index);
    }
    std::vector<erofs::ChunkRecord> chunks;
    for (const auto& rec : *table) {
      if (rec.blob_index == infos[i].index) {
        chunks.push_back(rec);
      }
    }
    auto blob = cache.open(infos[i], chunks, b->backend_);
    if (!blob) {
      return base::Unexpected(blob.error().wrap(fmt::format("blob {}", infos[i].id)));
    }
    b->blobs_.push_back(std::move(*blob));
  }
  return b;
}

namespace {

// Add the blob chunks of regular file nid to per_blob (skipping what seen has).
base::Status add_file_chunks(const erofs::Image& img, erofs::Nid nid,
                             std::vector<std::vector<std::uint32_t>>& per_blob,
                             std::vector<std::set<std::uint32_t>>& seen) {
  CFN_ASSIGN_OR_RETURN(auto extents, img.map(nid, 0, UINT64_MAX));
  for (const erofs::Extent& e : extents) {
    if (e.kind != erofs::Extent::Kind::kBlob || !e.ci_index || e.blob_index >= per_blob.size()) {
      continue;
    }
    if (seen[e.blob_index].insert(*e.ci_index).second) {
      per_blob[e.blob_index].push_back(*e.ci_index);
    }
  }
  return {};
}

}  // namespace

base::Result<std::vector<std::vector<std::uint32_t>>> BoundImage::prefetch_list_chunks() const {
  const erofs::Image& img = *image_;
  std::vector<std::vector<std::uint32_t>> per_blob(blobs_.size());
  std::vector<std::set<std::uint32_t>> seen(blobs_.size());
  CFN_ASSIGN_OR_RETURN(auto table, img.prefetch_table());
  std::set<erofs::Nid> done;
  for (erofs::Nid nid : table) {
    if (!done.insert(nid).second) {
      continue;
    }
    // A directory stands for everything under it; walk() visits nid itself first.
    base::Status inner;
    CFN_TRY(img.walk(nid, "/", [&](const std::string&, erofs::Nid n, const erofs::InodeInfo& info) {
      if (S_ISREG(info.mode)) {
        inner = add_file_chunks(img, n, per_blob, seen);
      }
      return inner.has_value();
    }));
    CFN_TRY(std::move(inner));
  }
  return per_blob;
}

base::Result<std::vector<std::string>> BoundImage::accessed_files() const {
  const erofs::Image& img = *image_;
  // seq[blob][ci]: the stamp of the chunk's first demand, 0 = never demanded.
  std::vector<std::vector<std::uint64_t>> seq(blobs_.size());
  bool any = false;
  for (std::size_t i = 0; i < blobs_.size(); ++i) {
    seq[i].assign(blobs_[i]->chunk_count(), 0);
    for (const CachedBlob::Demand& d : blobs_[i]->demanded_chunks()) {
      if (d.ci < seq[i].size()) {
        seq[i][d.ci] = d.seq;
        any = true;
      }
    }
  }
  std::vector<std::pair<std::uint64_t, std::string>> files;  // (first demand, path)
  if (!any) {
    return std::vector<std::string>{};
  }
  base::Status inner;
  CFN_TRY(img.walk(img.root(), "/",
                   [&](const std::string& path, erofs::Nid nid, const erofs::InodeInfo& info) {
                     if (!S_ISREG(info.mode)) {
                       return true;
                     }
                     auto extents = img.map(nid, 0, UINT64_MAX);
                     if (!extents) {
                       inner = base::Unexpected(extents.error());
                       return false;
                     }
                     std::uint64_t first = 0;
                     for (const erofs::Extent& e : *extents) {
                       if (e.kind == erofs::Extent::Kind::kBlob && e.ci_index &&
                           e.blob_index < seq.size() && *e.ci_index < seq[e.blob_index].size()) {
                         const std::uint64_t s = seq[e.blob_index][*e.ci_index];
                         if (s != 0 && (first == 0 || s < first)) {
                           first = s;
                         }
                       }
                     }
                     if (first != 0) {
                       files.emplace_back(first, path);
                     }
                     return true;
                   }));
  CFN_TRY(std::move(inner));
  // By first demand; a chunk shared by two files (deduplicated content) gives both
  // the same stamp, and tree order breaks the tie (stable sort of the walk's order).
  std::stable_sort(files.begin(), files.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  out.reserve(files.size());
  for (auto& f : files) {
    out.push_back(std::move(f.second));
  }
  return out;
}

}  // namespace cfnd
