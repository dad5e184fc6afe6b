// SPDX-License-Identifier: Apache-2.0
// The blob cache (see blob_cache.h for the contract): the open blobs by id, and how a
// blob is opened. Its rooms, under cache/: a blob's chunk states and fills
// (cache/blob.*), the merge of a round's reads (cache/read_plan.*), the background
// prefetcher and list workers (cache/prefetcher.*, cache/token_bucket.h).
//
// Per blob, two files in cache_dir:
//   <id>.blob   sparse, uncompressed size; a hole = not fetched
//   <id>.meta   the blob's chunk-info region as read from the backend (raw bytes)
#include "daemon/blob_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "base/file.h"
#include "base/log.h"
#include "daemon/cache/blob.h"
#include "daemon/cache/prefetcher.h"
#include "daemon/cache/shared.h"
#include "erofs/blob_meta.h"
#include "erofs/format.h"

namespace cfnd {

std::array<std::uint64_t, CacheMetrics::kBuckets> CacheMetrics::fill_latency_us_buckets() const {
  std::array<std::uint64_t, kBuckets> out{};
  const auto s = fill_latency.snapshot();
  for (int b = 0; b < base::LatencyHistogram::kBuckets; ++b) {
    const std::uint64_t n = s.counts[static_cast<std::size_t>(b)];
    if (n == 0) {
      continue;
    }
    // The first k with 2^k us >= the bucket's highest value: a record is never
    // counted below its own value.
    const std::uint64_t high_us = (base::LatencyHistogram::bucket_high(b) + 999) / 1000;
    int k = high_us <= 1 ? 0 : static_cast<int>(std::bit_width(high_us - 1));
    k = std::min(k, kBuckets - 1);
    out[static_cast<std::size_t>(k)] += n;
  }
  return out;
}

namespace {

using cache::Blob;

constexpr std::uint64_t kMinBatch = 128 * 1024;
constexpr std::uint64_t kBlock = 4096;
constexpr std::uint64_t kMaxMetaBytes = 1ULL << 30;

class BlobCacheImpl final : public BlobCache {
 public:
  explicit BlobCacheImpl(CacheOptions options)
      : options_(std::move(options)), shared_(make_shared_state(options_)) {
    prefetcher_ = std::make_unique<cache::Prefetcher>(shared_, options_.prefetch_bandwidth,
                                                      std::max(options_.batch_size, kMinBatch));
  }
  // The prefetcher's threads stop before the blobs go.
  ~BlobCacheImpl() override { prefetcher_.reset(); }

  BlobCacheImpl(const BlobCacheImpl&) = delete;
  BlobCacheImpl& operator=(const BlobCacheImpl&) = delete;

  base::Result<std::shared_ptr<CachedBlob>> open(const erofs::BlobInfo& info,
                                                 const std::vector<erofs::ChunkRecord>& chunks,
                                                 std::shared_ptr<Backend> backend) override;

  void prefetch(const std::shared_ptr<CachedBlob>& blob) override {
    if (options_.prefetch_bandwidth == 0 || !blob) {
      return;
    }
    if (auto b = ours(*blob)) {
      prefetcher_->prefetch(std::move(b));
    }
  }

  void prefetch_chunks(const std::shared_ptr<CachedBlob>& blob, std::vector<std::uint32_t> cis,
                       bool readahead) override {
    if (!blob) {
      return;
    }
    if (auto b = ours(*blob)) {
      prefetcher_->prefetch_chunks(std::move(b), std::move(cis), readahead);
    }
  }

  CacheMetrics& metrics() override { return shared_->metrics; }

 private:
  static std::shared_ptr<cache::Shared> make_shared_state(const CacheOptions& o) {
    auto s = std::make_shared<cache::Shared>();
    s->read_timeout = o.read_timeout;
    s->clock = o.clock ? o.clock : cache::steady_clock();
    s->file_io = o.file_io ? o.file_io : cache::system_cache_file_io();
    return s;
  }
  // The blob this cache opened as b (null for a CachedBlob of another cache).
  [[nodiscard]] std::shared_ptr<Blob> ours(const CachedBlob& b) {
    std::lock_guard lk(open_mu_);
    auto it = blobs_.find(b.info().id);
    if (it == blobs_.end() || it->second.get() != &b) {
      return nullptr;
    }
    return it->second;
  }

  base::Result<std::vector<std::byte>> load_meta(const erofs::BlobInfo& info, Backend& backend);
  // The slow part of a first open, with no lock held: the chunk-info table (local copy
  // or backend), its check against the bootstrap, the cache file and its scan.
  base::Result<std::shared_ptr<Blob>> load(const erofs::BlobInfo& info,
                                           const std::vector<erofs::ChunkRecord>& records,
                                           std::shared_ptr<Backend> backend);

  const CacheOptions options_;
  std::shared_ptr<cache::Shared> shared_;
  // Guards blobs_ and loading_, never held across I/O: a slow registry holds up only
  // the opens of its own blob, not those of other images.
  std::mutex open_mu_;
  std::condition_variable open_cv_;  // a load of loading_ ended
  std::map<std::string, std::shared_ptr<Blob>> blobs_;
  // Blob ids whose first open is loading them (one load per id at a time; other opens
  // of the id wait for it).
  std::set<std::string> loading_;
  std::unique_ptr<cache::Prefetcher> prefetcher_;
};

base::Result<std::vector<std::byte>> BlobCacheImpl::load_meta(const erofs::BlobInfo& info,
                                                              Backend& backend) {
  const std::uint64_t len = info.ci_compressed_size + erofs::kBlobMetaHeaderSize;
  if (info.ci_compressed_size > kMaxMetaBytes ||
      (info.compressed_size != 0 && !base::in_bounds(info.ci_offset, len, info.compressed_size))) {
    return base::errorf(EBADMSG, "blob {}: chunk-info region [{}, +{}) outside the blob", info.id,
                        info.ci_offset, len);
  }
  const std::string path = options_.cache_dir + "/" + info.id + ".meta";
  auto local = base::read_file(path);
  if (local && local->size() == len) {
    return std::move(*local);
  }
  std::vector<std::byte> bytes(len);
  BackendRead r;
  r.offset = info.ci_offset;
  r.out = bytes;
  // Under the read timeout like a fill: a stalled registry fails the bind in time.
  const Deadline deadline = shared_->deadline_from(shared_->now());
  backend.read(info.id, std::span<BackendRead>(&r, 1), deadline);
  shared_->metrics.backend_requests.fetch_add(1, std::memory_order_relaxed);
  if (!r.result) {
    return base::Unexpected(
        base::Error{EIO, fmt::format("blob {}: chunk-info region from {}: {}", info.id,
                                     backend.describe(), r.result.error().to_string())});
  }
  shared_->metrics.backend_bytes.fetch_add(len, std::memory_order_relaxed);
  return bytes;
}

base::Result<std::shared_ptr<CachedBlob>> BlobCacheImpl::open(
    const erofs::BlobInfo& info, const std::vector<erofs::ChunkRecord>& records,
    std::shared_ptr<Backend> backend) {
  CFN_TRY(check_blob_id(info.id));
  std::unique_lock lk(open_mu_);
  for (;;) {
    if (auto it = blobs_.find(info.id); it != blobs_.end()) {
      if (it->second->size() != info.uncompressed_size ||
          it->second->chunk_count() != info.chunk_count) {
        return base::errorf(EEXIST, "blob {} is open with another shape", info.id);
      }
      return std::shared_ptr<CachedBlob>(it->second);
    }
    if (!backend) {
      return base::errorf(EINVAL, "blob {}: no backend", info.id);
    }
    if (!loading_.contains(info.id)) {
      break;
    }
    // Another open loads this blob: wait for that one (it is bounded by the read
    // timeout). If it failed, this open tries again with its own backend.
    open_cv_.wait(lk, [&] { return !loading_.contains(info.id); });
  }
  loading_.insert(info.id);
  lk.unlock();
  auto loaded = load(info, records, std::move(backend));
  lk.lock();
  loading_.erase(info.id);
  open_cv_.notify_all();
  if (!loaded) {
    return base::Unexpected(std::move(loaded).error());
  }
  blobs_.emplace(info.id, *loaded);
  return std::shared_ptr<CachedBlob>(std::move(*loaded));
}

base::Result<std::shared_ptr<Blob>> BlobCacheImpl::load(
    const erofs::BlobInfo& info, const std::vector<erofs::ChunkRecord>& records,
    std::shared_ptr<Backend> backend) {
  CFN_ASSIGN_OR_RETURN(auto meta_bytes, load_meta(info, *backend));
  auto meta = erofs::BlobMeta::parse(info, meta_bytes);
  if (!meta) {
    // A corrupt local copy is dropped so the next open reads the backend again.
    (void)::unlink((options_.cache_dir + "/" + info.id + ".meta").c_str());
    return base::Unexpected(std::move(meta).error().wrap("blob " + info.id + " meta"));
  }

  // The bootstrap is the trust root: the blob meta must agree with every chunk
  // record of this blob, place and size, or the blob is refused.
  const auto& cm = meta->chunks();
  std::vector<base::Digest> digests(cm.size());
  std::vector<bool> has_digest(cm.size(), false);
  auto refuse = [&](std::string why) {
    (void)::unlink((options_.cache_dir + "/" + info.id + ".meta").c_str());
    return base::make_error(EBADMSG, fmt::format("blob {}: {}", info.id, why));
  };
  for (const erofs::ChunkRecord& r : records) {
    if (r.blob_index != info.index) {
      continue;
    }
    if (r.index >= cm.size()) {
      return refuse(fmt::format("chunk record ci {} beyond the {} chunks of the blob meta", r.index,
                                cm.size()));
    }
    const erofs::ChunkMeta& c = cm[r.index];
    if (r.compressed_offset != c.compressed_offset || r.compressed_size != c.compressed_size ||
        r.uncompressed_offset != c.uncompressed_offset ||
        r.uncompressed_size != c.uncompressed_size) {
      return refuse(
          fmt::format("chunk {}: blob meta and bootstrap disagree on its place", r.index));
    }
    if (has_digest[r.index] && digests[r.index] != r.digest) {
      return refuse(fmt::format("chunk {}: two bootstrap digests", r.index));
    }
    digests[r.index] = r.digest;
    has_digest[r.index] = true;
  }
  for (std::size_t ci = 0; ci < cm.size(); ++ci) {
    // Crash safety relies on no two chunks sharing a block (the head block is
    // written last); EROFS requires 4 KiB aligned chunks anyway.
    if (cm[ci].uncompressed_offset % kBlock != 0) {
      return refuse(fmt::format("chunk {} is not 4 KiB aligned", ci));
    }
  }

  std::error_code ec;
  std::filesystem::create_directories(options_.cache_dir, ec);
  if (ec) {
    return base::errorf(ec.value(), "create {}: {}", options_.cache_dir, ec.message());
  }
  const std::string meta_path = options_.cache_dir + "/" + info.id + ".meta";
  if (::access(meta_path.c_str(), F_OK) != 0) {
    CFN_TRY(base::write_file_atomic(meta_path, meta_bytes, 0600));
  }

  const std::string path = options_.cache_dir + "/" + info.id + ".blob";
  CFN_ASSIGN_OR_RETURN(auto fd, base::UniqueFd::open(path, O_RDWR | O_CREAT, 0600));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return base::errno_error("stat " + path);
  }
  if (static_cast<std::uint64_t>(st.st_size) != info.uncompressed_size) {
    // New, or of another size (not this blob's): start from nothing but holes.
    if (::ftruncate(fd.get(), 0) != 0 ||
        ::ftruncate(fd.get(), static_cast<off_t>(info.uncompressed_size)) != 0) {
      return base::errno_error("truncate " + path);
    }
  }
  std::uint64_t batch = std::max(options_.batch_size, kMinBatch);
  auto blob =
      std::make_shared<Blob>(shared_, info, std::move(*meta), std::move(digests),
                             std::move(has_digest), std::move(backend), path, std::move(fd), batch);
  CFN_TRY(blob->scan());
  return blob;
}

}  // namespace

base::Result<std::unique_ptr<BlobCache>> BlobCache::create(CacheOptions options) {
  if (options.cache_dir.empty()) {
    return base::make_error(EINVAL, "blob cache: empty cache_dir");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.cache_dir, ec);
  if (ec) {
    return base::errorf(ec.value(), "create {}: {}", options.cache_dir, ec.message());
  }
  options.batch_size = std::max(options.batch_size, kMinBatch);
  return std::unique_ptr<BlobCache>(new BlobCacheImpl(std::move(options)));
}

}  // namespace cfnd
