// SPDX-License-Identifier: Apache-2.0
#include "convert/blob_reader.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "base/file.h"

namespace convert {
namespace {

constexpr std::uint64_t kMaxMetaBytes = 1ULL << 30;

base::Status check_blob_name(const std::string& id) {
  if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos ||
      id.find('\0') != std::string::npos) {
    return base::errorf(EINVAL, "blob id '{}' cannot name a file", id);
  }
  return {};
}

}  // namespace

base::Result<std::unique_ptr<LoadedImage>> load_bootstrap(const std::string& path) {
  auto img = std::make_unique<LoadedImage>();
  CFN_ASSIGN_OR_RETURN(img->bytes, base::read_file(path));
  auto parsed = erofs::Image::parse(img->bytes);
  if (!parsed) {
    return base::Unexpected(std::move(parsed).error().wrap("bootstrap " + path));
  }
  img->image.emplace(std::move(*parsed));
  return img;
}

base::Result<std::unique_ptr<BlobReader>> BlobReader::create(const erofs::Image& image,
                                                             std::string blob_dir) {
  std::unique_ptr<BlobReader> r(new BlobReader(image, std::move(blob_dir)));
  CFN_ASSIGN_OR_RETURN(auto table, image.chunk_table());
  for (const auto& rec : table) {
    r->records_.emplace(std::make_pair(rec.blob_index, rec.index), rec);
  }
  r->blobs_.resize(image.blobs().size());
  return r;
}

base::Result<BlobReader::OpenBlob*> BlobReader::open(std::uint32_t blob) {
  if (blob >= blobs_.size()) {
    return base::errorf(erofs::kECorrupted, "blob index {} out of range ({} blobs)", blob,
                        blobs_.size());
  }
  if (blobs_[blob]) {
    return blobs_[blob].get();
  }
  const erofs::BlobInfo& info = image_->blobs()[blob];
  CFN_TRY(check_blob_name(info.id));
  std::string path = dir_ + "/" + info.id;
  auto ob = std::make_unique<OpenBlob>();
  CFN_ASSIGN_OR_RETURN(ob->fd, base::UniqueFd::open(path, O_RDONLY));
  struct stat st {};
  if (::fstat(ob->fd.get(), &st) != 0) {
    return base::errno_error("stat " + path);
  }
  ob->file_size = static_cast<std::uint64_t>(st.st_size);
  if (info.ci_compressed_size > kMaxMetaBytes ||
      !base::in_bounds(info.ci_offset, info.ci_compressed_size + erofs::kBlobMetaHeaderSize,
                       ob->file_size)) {
    return base::errorf(erofs::kECorrupted, "blob {}: chunk-info table outside the file", path);
  }
  std::vector<std::byte> meta(info.ci_compressed_size + erofs::kBlobMetaHeaderSize);
  CFN_TRY(base::pread_full(ob->fd.get(), meta, info.ci_offset));
  auto parsed = erofs::BlobMeta::parse(info, meta);
  if (!parsed) {
    return base::Unexpected(std::move(parsed).error().wrap("blob " + path));
  }
  ob->meta = std::move(*parsed);

  if (info.toc_size != 0) {
    if (info.toc_size > ob->file_size) {
      return base::errorf(erofs::kECorrupted, "blob {}: ToC larger than the file", path);
    }
    std::vector<std::byte> tail(info.toc_size);
    CFN_TRY(base::pread_full(ob->fd.get(), tail, ob->file_size - info.toc_size));
    auto toc = erofs::parse_toc(tail, ob->file_size, &info.toc_digest);
    if (!toc) {
      return base::Unexpected(std::move(toc).error().wrap("blob " + path + ": ToC"));
    }
    for (const auto& item : *toc) {
      if (item.name != "blob.digest") {
        continue;
      }
      if (item.compressed_size != item.uncompressed_size || item.compressed_size > kMaxMetaBytes ||
          !base::in_bounds(item.compressed_offset, item.compressed_size, ob->file_size)) {
        return base::errorf(erofs::kECorrupted, "blob {}: bad blob.digest ToC entry", path);
      }
      std::vector<std::byte> arr(item.compressed_size);
      CFN_TRY(base::pread_full(ob->fd.get(), arr, item.compressed_offset));
      if (base::sha256(arr) != item.uncompressed_digest) {
        return base::errorf(EBADMSG, "blob {}: blob.digest does not match its ToC digest", path);
      }
      auto digests = erofs::parse_digest_array(arr, info.chunk_count);
      if (!digests) {
        return base::Unexpected(std::move(digests).error().wrap("blob " + path));
      }
      ob->digest_array = std::move(*digests);
    }
  }
  blobs_[blob] = std::move(ob);
  return blobs_[blob].get();
}

base::Result<const erofs::BlobMeta*> BlobReader::meta(std::uint32_t blob) {
  CFN_ASSIGN_OR_RETURN(OpenBlob * ob, open(blob));
  return &ob->meta;
}

base::Result<base::Bytes> BlobReader::chunk(std::uint32_t blob, std::uint32_t ci) {
  if (cached_ && cached_->first == blob && cached_->second == ci) {
    return base::Bytes(cache_);
  }
  CFN_ASSIGN_OR_RETURN(OpenBlob * ob, open(blob));
  const erofs::BlobInfo& info = image_->blobs()[blob];
  const auto& chunks = ob->meta.chunks();
  if (ci >= chunks.size()) {
    return base::errorf(erofs::kECorrupted, "blob {}: ci {} of {} chunks", info.id, ci,
                        chunks.size());
  }
  const erofs::ChunkMeta& cm = chunks[ci];
  const base::Digest* expected = nullptr;
  auto rec = records_.find({blob, ci});
  if (rec != records_.end()) {
    const erofs::ChunkRecord& r = rec->second;
    if (r.uncompressed_offset != cm.uncompressed_offset ||
        r.uncompressed_size != cm.uncompressed_size ||
        r.compressed_offset != cm.compressed_offset || r.compressed_size != cm.compressed_size) {
      return base::errorf(EBADMSG,
                          "blob {}: ci {}: chunk table and chunk-info table disagree on its place",
                          info.id, ci);
    }
    expected = &r.digest;
  }
  if (!ob->digest_array.empty()) {
    if (expected != nullptr && *expected != ob->digest_array[ci]) {
      return base::errorf(EBADMSG, "blob {}: ci {}: digest array disagrees with the bootstrap",
                          info.id, ci);
    }
    if (expected == nullptr) {
      expected = &ob->digest_array[ci];
    }
  }
  if (expected == nullptr) {
    return base::errorf(ENOENT, "blob {}: ci {}: no digest to verify it against", info.id, ci);
  }
  if (!base::in_bounds(cm.compressed_offset, cm.compressed_size, ob->file_size)) {
    return base::errorf(erofs::kECorrupted, "blob {}: ci {} lies past the end of the file", info.id,
                        ci);
  }
  cached_.reset();
  stored_.resize(cm.compressed_size);
  CFN_TRY(base::pread_full(ob->fd.get(), stored_, cm.compressed_offset));
  cache_.resize(cm.uncompressed_size);
  CFN_TRY(erofs::decode_chunk(info, cm, stored_, *expected, cache_));
  ++chunks_verified_;
  cached_ = std::make_pair(blob, ci);
  return base::Bytes(cache_);
}

base::Status BlobReader::read(erofs::Nid nid, std::uint64_t off, std::uint64_t len,
                              const Sink& sink) {
  static const std::byte kZeros[64 * 1024] = {};
  CFN_ASSIGN_OR_RETURN(auto extents, image_->map(nid, off, len));
  for (const auto& e : extents) {
    switch (e.kind) {
      case erofs::Extent::Kind::kHole: {
        std::uint64_t left = e.length;
        while (left > 0) {
          std::size_t n = std::min<std::uint64_t>(left, sizeof(kZeros));
          CFN_TRY(sink(base::Bytes(kZeros, n)));
          left -= n;
        }
        break;
      }
      case erofs::Extent::Kind::kBootstrap:
        CFN_TRY(sink(image_->bytes().subspan(e.offset, e.length)));
        break;
      case erofs::Extent::Kind::kBlob: {
        if (!e.ci_index) {
          return base::errorf(EOPNOTSUPP, "inode {}: blob extent without a chunk index", nid);
        }
        CFN_ASSIGN_OR_RETURN(base::Bytes data, chunk(e.blob_index, *e.ci_index));
        const auto* ob = blobs_[e.blob_index].get();
        const erofs::ChunkMeta& cm = ob->meta.chunks()[*e.ci_index];
        if (e.offset < cm.uncompressed_offset ||
            !base::in_bounds(e.offset - cm.uncompressed_offset, e.length, data.size())) {
          return base::errorf(erofs::kECorrupted,
                              "inode {}: extent at blob offset {} (+{}) is outside chunk {}", nid,
                              e.offset, e.length, *e.ci_index);
        }
        CFN_TRY(sink(data.subspan(e.offset - cm.uncompressed_offset, e.length)));
        break;
      }
    }
  }
  return {};
}

}  // namespace convert
