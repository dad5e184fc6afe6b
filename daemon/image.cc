// SPDX-License-Identifier: Apache-2.0
#include "daemon/image.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <set>
#include <utility>

#include "base/file.h"
#include "base/log.h"

namespace cfnd {
namespace {

// fn(path, nid) -> base::Status for every regular file at or under top (tree order),
// stopping at fn's first error, which is returned.
template <typename Fn>
base::Status walk_files(const erofs::Image& img, erofs::Nid top, Fn&& fn) {
  base::Status inner;
  CFN_TRY(img.walk(top, "/",
                   [&](const std::string& path, erofs::Nid nid, const erofs::InodeInfo& info) {
                     if (S_ISREG(info.mode)) {
                       inner = fn(path, nid);
                     }
                     return inner.has_value();
                   }));
  return inner;
}

// fn(blob_index, ci) for each blob chunk of regular file nid, in file order.
template <typename Fn>
base::Status for_each_chunk(const erofs::Image& img, erofs::Nid nid, Fn&& fn) {
  CFN_ASSIGN_OR_RETURN(auto extents, img.map(nid, 0, UINT64_MAX));
  for (const erofs::Extent& e : extents) {
    if (e.kind == erofs::Extent::Kind::kBlob && e.ci_index) {
      fn(e.blob_index, *e.ci_index);
    }
  }
  return {};
}

// The files of one blob that have more than one chunk in it (a single chunk has nothing
// to read ahead), flat: file f's chunks, in file order, are cis[start[f] .. start[f+1]),
// with their uncompressed sizes in bytes[] alongside. A chunk shared by several files
// (deduplicated content) belongs to the first in tree order.
struct FileChunks {
  static constexpr std::uint32_t kNone = UINT32_MAX;
  std::vector<std::uint32_t> cis;
  std::vector<std::uint32_t> bytes;
  std::vector<std::size_t> start{0};
  std::vector<std::uint32_t> file_of;  // by ci: its file, or kNone
};

// File readahead of one blob: on the first demand of a file's chunk, the rest of that
// file is queued as a prefetch.
class FileReadahead final : public DemandListener {
 public:
  FileReadahead(BlobCache& cache, std::shared_ptr<CachedBlob> blob, std::uint64_t limit,
                FileChunks files)
      : cache_(cache),
        blob_(std::move(blob)),
        limit_(limit),
        files_(std::move(files)),
        started_(files_.start.size() - 1) {}

  void first_demand(std::uint32_t ci) override {
    if (ci >= files_.file_of.size() || files_.file_of[ci] == FileChunks::kNone) {
      return;
    }
    const std::uint32_t f = files_.file_of[ci];
    if (started_[f].exchange(true)) {
      return;
    }
    // From the chunk read on (that one is the reader's own fill), then what comes
    // before it, up to limit_ bytes.
    const std::size_t first = files_.start[f];
    const std::size_t n = files_.start[f + 1] - first;
    std::size_t at = 0;
    while (at < n && files_.cis[first + at] != ci) {
      ++at;
    }
    std::vector<std::uint32_t> cis;
    std::uint64_t bytes = files_.bytes[first + at % n];
    for (std::size_t k = 1; k < n; ++k) {
      const std::size_t i = first + (at + k) % n;
      if (bytes + files_.bytes[i] > limit_) {
        break;
      }
      bytes += files_.bytes[i];
      cis.push_back(files_.cis[i]);
    }
    if (!cis.empty()) {
      cache_.prefetch_chunks(blob_, std::move(cis), /*readahead=*/true);
    }
  }

 private:
  BlobCache& cache_;
  const std::shared_ptr<CachedBlob> blob_;
  const std::uint64_t limit_;
  const FileChunks files_;
  std::vector<std::atomic<bool>> started_;  // by file: readahead queued
};

// Per blob, each chunk's uncompressed size by chunk index (the bootstrap's chunk table).
std::vector<std::vector<std::uint32_t>> chunk_sizes(const std::vector<erofs::BlobInfo>& infos,
                                                    const std::vector<erofs::ChunkRecord>& table) {
  std::vector<std::vector<std::uint32_t>> out(infos.size());
  for (std::size_t i = 0; i < infos.size(); ++i) {
    out[i].assign(infos[i].chunk_count, 0);
  }
  for (const auto& rec : table) {
    if (rec.blob_index < out.size() && rec.index < out[rec.blob_index].size()) {
      out[rec.blob_index][rec.index] = rec.uncompressed_size;
    }
  }
  return out;
}

// Per blob, the files with more than one chunk in it (FileChunks); chunk_bytes[b][ci] is
// a chunk's uncompressed size.
base::Result<std::vector<FileChunks>> map_files(
    const erofs::Image& img, const std::vector<std::vector<std::uint32_t>>& chunk_bytes) {
  const std::size_t nblobs = chunk_bytes.size();
  std::vector<FileChunks> files(nblobs);
  for (std::size_t b = 0; b < nblobs; ++b) {
    files[b].file_of.assign(chunk_bytes[b].size(), FileChunks::kNone);
  }
  std::set<erofs::Nid> seen;
  std::vector<std::vector<std::uint32_t>> mine(nblobs);
  CFN_TRY(walk_files(img, img.root(), [&](const std::string&, erofs::Nid nid) -> base::Status {
    if (!seen.insert(nid).second) {
      return {};  // hard links: the file once
    }
    for (auto& m : mine) {
      m.clear();
    }
    CFN_TRY(for_each_chunk(img, nid, [&](std::uint32_t b, std::uint32_t ci) {
      if (b < nblobs && ci < files[b].file_of.size() && files[b].file_of[ci] == FileChunks::kNone) {
        mine[b].push_back(ci);
      }
    }));
    for (std::size_t b = 0; b < nblobs; ++b) {
      if (mine[b].size() < 2) {
        continue;
      }
      FileChunks& fc = files[b];
      const auto f = static_cast<std::uint32_t>(fc.start.size() - 1);
      for (std::uint32_t ci : mine[b]) {
        fc.file_of[ci] = f;
        fc.cis.push_back(ci);
        fc.bytes.push_back(chunk_bytes[b][ci]);
      }
      fc.start.push_back(fc.cis.size());
    }
    return {};
  }));
  return files;
}

}  // namespace

base::Result<LoadedBootstrap> BoundImage::load(const std::string& bootstrap_path) {
  LoadedBootstrap boot;
  char* real = ::realpath(bootstrap_path.c_str(), nullptr);
  if (real == nullptr) {
    return base::errno_error("bootstrap " + bootstrap_path);
  }
  boot.path_ = real;
  std::free(real);  // NOLINT(cppcoreguidelines-no-malloc): realpath(3) allocates with malloc
  CFN_ASSIGN_OR_RETURN(boot.bytes_, base::read_file(boot.path_));
  auto img = erofs::Image::parse(boot.bytes_);
  if (!img) {
    return base::Unexpected(img.error().wrap("bootstrap " + boot.path_));
  }
  if (!img->is_rafs()) {
    return base::errorf(EINVAL, "bootstrap {}: not a RAFS v6 bootstrap", boot.path_);
  }
  boot.image_ = std::make_unique<erofs::Image>(std::move(*img));
  return boot;
}

base::Result<std::shared_ptr<BoundImage>> BoundImage::open(const std::string& bootstrap_path,
                                                           std::shared_ptr<Backend> backend,
                                                           BlobCache& cache,
                                                           std::uint64_t file_readahead) {
  CFN_ASSIGN_OR_RETURN(auto boot, load(bootstrap_path));
  return open(std::move(boot), std::move(backend), cache, file_readahead);
}

base::Result<std::shared_ptr<BoundImage>> BoundImage::open(LoadedBootstrap bootstrap,
                                                           std::shared_ptr<Backend> backend,
                                                           BlobCache& cache,
                                                           std::uint64_t file_readahead) {
  std::shared_ptr<BoundImage> b(new BoundImage());
  b->boot_ = std::move(bootstrap);
  const std::string& path = b->boot_.path();
  const erofs::Image& image = b->boot_.image();
  auto table = image.chunk_table();
  if (!table) {
    return base::Unexpected(table.error().wrap("bootstrap " + path));
  }
  b->backend_ = std::move(backend);
  const auto& infos = image.blobs();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    // Extents name blobs by index and device slot i + 1 is blob i: keep them aligned.
    if (infos[i].index != i) {
      return base::errorf(EINVAL, "bootstrap {}: blob table entry {} has index {}", path, i,
                          infos[i].index);
    }
  }
  // The file readahead's map (a walk of every file of the image) needs only the
  // bootstrap: it runs on its own thread while the blobs open, which for a first bind
  // waits for each blob's chunk-info table from the registry. Joined before this
  // returns, on every path (the future's destructor).
  const auto t0 = std::chrono::steady_clock::now();
  auto ms_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
  };
  std::future<base::Result<std::vector<FileChunks>>> files;
  if (file_readahead > 0) {
    files = std::async(std::launch::async, [&image, &infos, &records = *table] {
      return map_files(image, chunk_sizes(infos, records));
    });
  }
  for (std::size_t i = 0; i < infos.size(); ++i) {
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
  const double blobs_ms = ms_since(t0);
  if (files.valid()) {
    const auto t1 = std::chrono::steady_clock::now();
    auto mapped = files.get();
    spdlog::debug("image {}: blobs open in {:.1f} ms; the readahead file map ready {:.1f} ms later",
                  path, blobs_ms, ms_since(t1));
    if (!mapped) {
      return base::Unexpected(mapped.error().wrap("bootstrap " + path));
    }
    for (std::size_t i = 0; i < b->blobs_.size() && i < mapped->size(); ++i) {
      auto l = std::make_shared<FileReadahead>(cache, b->blobs_[i], file_readahead,
                                               std::move((*mapped)[i]));
      b->blobs_[i]->add_demand_listener(l);
      b->readahead_.push_back(std::move(l));
    }
  }
  return b;
}

namespace {

// Add the blob chunks of regular file nid to per_blob (skipping what seen has).
base::Status add_file_chunks(const erofs::Image& img, erofs::Nid nid,
                             std::vector<std::vector<std::uint32_t>>& per_blob,
                             std::vector<std::set<std::uint32_t>>& seen) {
  return for_each_chunk(img, nid, [&](std::uint32_t b, std::uint32_t ci) {
    if (b < per_blob.size() && seen[b].insert(ci).second) {
      per_blob[b].push_back(ci);
    }
  });
}

}  // namespace

base::Result<std::vector<std::vector<std::uint32_t>>> BoundImage::prefetch_list_chunks() const {
  const erofs::Image& img = image();
  std::vector<std::vector<std::uint32_t>> per_blob(blobs_.size());
  std::vector<std::set<std::uint32_t>> seen(blobs_.size());
  CFN_ASSIGN_OR_RETURN(auto table, img.prefetch_table());
  std::set<erofs::Nid> done;
  for (erofs::Nid nid : table) {
    if (!done.insert(nid).second) {
      continue;
    }
    // A directory stands for everything under it; walk() visits nid itself first.
    CFN_TRY(walk_files(img, nid, [&](const std::string&, erofs::Nid n) {
      return add_file_chunks(img, n, per_blob, seen);
    }));
  }
  return per_blob;
}

base::Result<std::vector<std::string>> BoundImage::accessed_files() const {
  const erofs::Image& img = image();
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
  CFN_TRY(walk_files(img, img.root(), [&](const std::string& path, erofs::Nid nid) {
    std::uint64_t first = 0;
    auto st = for_each_chunk(img, nid, [&](std::uint32_t b, std::uint32_t ci) {
      if (b < seq.size() && ci < seq[b].size()) {
        const std::uint64_t s = seq[b][ci];
        if (s != 0 && (first == 0 || s < first)) {
          first = s;
        }
      }
    });
    if (st && first != 0) {
      files.emplace_back(first, path);
    }
    return st;
  }));
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
