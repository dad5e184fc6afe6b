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

class BoundImage {
 public:
  // Read the bootstrap at bootstrap_path (it must be complete: EROFS metadata reads
  // raise no fanotify event on 6.18), parse it, and open every blob of its blob table
  // in `cache` with `backend`. With file_readahead > 0, the first read of a regular
  // file's data also queues the rest of that file, up to file_readahead uncompressed
  // bytes from the chunk read on (then what comes before it), as a prefetch in `cache`
  // (BlobCache::prefetch_chunks, readahead): a workload's later reads of the file find
  // it on its way instead of each missing on its own. Errors: the bootstrap's read or
  // parse error, EINVAL when it is not RAFS, or the blob cache's error naming the blob.
  [[nodiscard]] static base::Result<std::shared_ptr<BoundImage>> open(
      const std::string& bootstrap_path, std::shared_ptr<Backend> backend, BlobCache& cache,
      std::uint64_t file_readahead = 0);

  [[nodiscard]] const std::string& bootstrap_path() const { return bootstrap_path_; }
  [[nodiscard]] const erofs::Image& image() const { return *image_; }
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
  std::string bootstrap_path_;
  std::vector<std::byte> bytes_;  // the Image views these; never resized after parse
  std::unique_ptr<erofs::Image> image_;
  std::shared_ptr<Backend> backend_;  // shared with the blobs that fetch through it
  std::vector<std::shared_ptr<CachedBlob>> blobs_;
  std::vector<std::shared_ptr<DemandListener>> readahead_;  // one per blob, when on
};

}  // namespace cfnd
