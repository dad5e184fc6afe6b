// SPDX-License-Identifier: Apache-2.0
// A bound image: a complete local bootstrap, parsed, plus the cache file of each of its
// blobs (opened through the shared BlobCache). Immutable after open(); shared between the
// control thread that bound it and the front end that serves it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "daemon/blob_cache.h"
#include "erofs/reader.h"

namespace cfnd {

// A bootstrap read whole, parsed and checked to be RAFS (BoundImage::load), with no blob
// opened yet: a caller looks at it (its prefetch table, say) and then hands it to
// BoundImage::open, so the bootstrap is read and parsed once. Move-only.
class LoadedBootstrap {
 public:
  // The bootstrap's real path (realpath(3) of the path given to load).
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] const erofs::Image& image() const { return *image_; }

 private:
  friend class BoundImage;
  LoadedBootstrap() = default;
  std::string path_;
  // The Image views these bytes: a move of the vector keeps its buffer, so both move
  // together; never resized after parse.
  std::vector<std::byte> bytes_;
  std::unique_ptr<erofs::Image> image_;
};

class BoundImage {
 public:
  // Read the bootstrap at bootstrap_path whole (it must be complete: EROFS metadata
  // reads raise no fanotify event on 6.18) and parse it. Errors: realpath(3)'s or the
  // read's errno naming the bootstrap, the parser's error, EINVAL when it is not RAFS.
  [[nodiscard]] static base::Result<LoadedBootstrap> load(const std::string& bootstrap_path);

  // Bind a loaded bootstrap: open every blob of its blob table in `cache` with
  // `backend`. With file_readahead > 0, the first read of a regular file's data also
  // queues the rest of that file, up to file_readahead uncompressed bytes from the chunk
  // read on (then what comes before it), as a prefetch in `cache`
  // (BlobCache::prefetch_chunks, readahead): a workload's later reads of the file find
  // it on its way instead of each missing on its own. Errors: the chunk table's parse
  // error, EINVAL for a blob table out of index order, or the blob cache's error naming
  // the blob.
  [[nodiscard]] static base::Result<std::shared_ptr<BoundImage>> open(
      LoadedBootstrap bootstrap, std::shared_ptr<Backend> backend, BlobCache& cache,
      std::uint64_t file_readahead = 0);
  // load(bootstrap_path), then open() of it; the errors of both.
  [[nodiscard]] static base::Result<std::shared_ptr<BoundImage>> open(
      const std::string& bootstrap_path, std::shared_ptr<Backend> backend, BlobCache& cache,
      std::uint64_t file_readahead = 0);

  [[nodiscard]] const std::string& bootstrap_path() const { return boot_.path(); }
  [[nodiscard]] const erofs::Image& image() const { return boot_.image(); }
  // Cache files in blob-index order: blobs()[i] backs device slot i + 1.
  [[nodiscard]] const std::vector<std::shared_ptr<CachedBlob>>& blobs() const { return blobs_; }
  [[nodiscard]] const Backend& backend() const { return *backend_; }

  // The chunks of what the bootstrap's prefetch table names (a directory: every file
  // under it), per blob index (blobs()[i]), each list in table order without
  // repeats. Empty lists when the image has no prefetch table. Errors: the reader's,
  // kECorrupted for a corrupt table.
  [[nodiscard]] base::Result<std::vector<std::vector<std::uint32_t>>> prefetch_list_chunks() const;
  // The regular files (absolute paths) with at least one chunk that a fill asked for
  // (CachedBlob::demanded_chunks), in the order of the first demand of any of their
  // chunks (ties in tree order): what the workloads read, in the order they needed
  // it, as a prefetch list for nydus-convert build --prefetch-files.
  [[nodiscard]] base::Result<std::vector<std::string>> accessed_files() const;

 private:
  BoundImage() = default;
  LoadedBootstrap boot_;
  std::shared_ptr<Backend> backend_;  // shared with the blobs that fetch through it
  std::vector<std::shared_ptr<CachedBlob>> blobs_;
  std::vector<std::shared_ptr<DemandListener>> readahead_;  // one per blob, when on
};

}  // namespace cfnd
