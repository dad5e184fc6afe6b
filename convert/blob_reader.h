// SPDX-License-Identifier: Apache-2.0
// BlobReader: reads file data of a RAFS v6 image through its data blobs in a local
// directory (files named by blob id), verifying every chunk.
//
// Trust: the bootstrap is the root. A chunk's expected digest is the bootstrap chunk
// table's record for (blob, ci); the blob's own digest array, when present, must agree
// with it. Chunk locations come from the blob's chunk-info table and must agree with the
// chunk table record too.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/digest.h"
#include "base/result.h"
#include "base/unique_fd.h"
#include "erofs/blob_meta.h"
#include "erofs/reader.h"

namespace convert {

// A bootstrap loaded from a file, with its parsed Image (which views bytes).
struct LoadedImage {
  std::vector<std::byte> bytes;
  std::optional<erofs::Image> image;
};
[[nodiscard]] base::Result<std::unique_ptr<LoadedImage>> load_bootstrap(const std::string& path);

class BlobReader {
 public:
  using Sink = std::function<base::Status(base::Bytes)>;

  // image must outlive the reader. Fails when the chunk table cannot be read.
  [[nodiscard]] static base::Result<std::unique_ptr<BlobReader>> create(const erofs::Image& image,
                                                                        std::string blob_dir);

  // The verified, decompressed bytes of chunk ci of blob `blob`. The view stays valid
  // until the next call.
  [[nodiscard]] base::Result<base::Bytes> chunk(std::uint32_t blob, std::uint32_t ci);
  // Chunk-info table of a blob (opens and parses the blob on first use).
  [[nodiscard]] base::Result<const erofs::BlobMeta*> meta(std::uint32_t blob);
  // Stream bytes [off, off+len) of an inode (clipped at its size) to sink.
  [[nodiscard]] base::Status read(erofs::Nid nid, std::uint64_t off, std::uint64_t len,
                                  const Sink& sink);

  [[nodiscard]] std::uint64_t chunks_verified() const { return chunks_verified_; }

 private:
  struct OpenBlob {
    base::UniqueFd fd;
    std::uint64_t file_size = 0;
    erofs::BlobMeta meta;
    std::vector<base::Digest> digest_array;  // empty when the blob has none
  };

  BlobReader(const erofs::Image& image, std::string dir) : image_(&image), dir_(std::move(dir)) {}
  base::Result<OpenBlob*> open(std::uint32_t blob);

  const erofs::Image* image_;
  std::string dir_;
  std::map<std::pair<std::uint32_t, std::uint32_t>, erofs::ChunkRecord> records_;
  std::vector<std::unique_ptr<OpenBlob>> blobs_;
  // One decoded chunk kept: files are read front to back.
  std::optional<std::pair<std::uint32_t, std::uint32_t>> cached_;
  std::vector<std::byte> cache_;
  std::vector<std::byte> stored_;
  std::uint64_t chunks_verified_ = 0;
};

}  // namespace convert
