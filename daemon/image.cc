// SPDX-License-Identifier: Apache-2.0
#include "daemon/image.h"

#include <cstdlib>

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

}  // namespace cfnd
