// SPDX-License-Identifier: Apache-2.0
#include "convert/chunk_pipeline.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/bytes.h"
#include "base/compress.h"
#include "base/file.h"
#include "erofs/format.h"

namespace convert {
namespace {

constexpr std::size_t kWriteBuffer = 4U << 20;
constexpr std::size_t kInflightBytes = 64U << 20;

}  // namespace

struct ChunkPipeline::Job {
  ChunkBuffer buf;
  erofs::ChunkSlot slot = 0;
  base::Digest digest{};
  std::vector<std::byte> out;  // compressed form, when compressed
  bool compressed = false;
  bool done = false;
  base::Status status;
};

std::size_t ChunkPipeline::DigestHash::operator()(const base::Digest& d) const noexcept {
  std::size_t h;
  std::memcpy(&h, d.data(), sizeof(h));
  return h;
}

ChunkPipeline::ChunkPipeline(const BuildOptions& options, int blobs_dir)
    : options_(options), blobs_dir_(blobs_dir) {
  unsigned n = options.workers;
  if (n == 0) {
    n = std::clamp(std::thread::hardware_concurrency(), 1U, 16U);
  }
  std::size_t by_bytes = kInflightBytes / options.chunk_size;
  max_inflight_ = std::clamp<std::size_t>(by_bytes, n + 2, std::size_t{n} * 8);
  wbuf_.reserve(kWriteBuffer);
  workers_.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    workers_.emplace_back([this] { worker_loop(); });
  }
}

ChunkPipeline::~ChunkPipeline() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) {
    t.join();
  }
}

void ChunkPipeline::worker_loop() {
  base::Hasher hasher(options_.digester);
  for (;;) {
    Job* job = nullptr;
    {
      std::unique_lock lk(mu_);
      work_cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) {
        return;
      }
      job = queue_.front();
      queue_.pop_front();
    }
    base::Bytes data(job->buf.data.get(), job->buf.size);
    hasher.update(data);
    job->digest = hasher.finish();
    bool known = false;
    {
      std::lock_guard lk(mu_);
      known = known_.contains(job->digest);
    }
    job->compressed = false;
    if (!known && options_.compressor != base::Compressor::kNone) {
      job->status = base::compress(options_.compressor, data, job->out);
      // Keep the raw bytes when compression does not help (a v1 chunk is
      // "compressed" exactly when its stored size differs from its size).
      job->compressed = job->status && job->out.size() < data.size();
    }
    {
      std::lock_guard lk(mu_);
      job->done = true;
    }
    done_cv_.notify_all();
  }
}

base::Result<ChunkBuffer> ChunkPipeline::acquire() {
  while (buffers_out_ >= max_inflight_) {
    if (inflight_.empty()) {
      return base::errorf(EINVAL, "chunk pipeline: {} buffers held outside the pipeline",
                          buffers_out_);
    }
    CFN_TRY(commit_front());
  }
  ChunkBuffer b;
  if (!free_buffers_.empty()) {
    b = std::move(free_buffers_.back());
    free_buffers_.pop_back();
  } else {
    b.data.reset(new std::byte[options_.chunk_size]);
  }
  b.size = 0;
  ++buffers_out_;
  return b;
}

void ChunkPipeline::release(ChunkBuffer buf) {
  --buffers_out_;
  free_buffers_.push_back(std::move(buf));
}

base::Result<erofs::ChunkSlot> ChunkPipeline::submit(ChunkBuffer buf) {
  if (buf.size == 0 || buf.size > options_.chunk_size) {
    release(std::move(buf));
    return base::errorf(EINVAL, "chunk pipeline: bad chunk size");
  }
  std::unique_ptr<Job> job;
  if (!free_jobs_.empty()) {
    job = std::move(free_jobs_.back());
    free_jobs_.pop_back();
  } else {
    job = std::make_unique<Job>();
  }
  stats_.chunks_total++;
  stats_.bytes_in += buf.size;
  job->buf = std::move(buf);
  job->slot = slots_.size();
  job->done = false;
  job->compressed = false;
  job->status = {};
  slots_.push_back({});
  Job* raw = job.get();
  inflight_.push_back(std::move(job));
  {
    std::lock_guard lk(mu_);
    queue_.push_back(raw);
  }
  work_cv_.notify_one();
  return raw->slot;
}

base::Status ChunkPipeline::open_blob() {
  blob_tmp_name_ = fmt::format(".blob-{}.tmp", blobs_.size());
  CFN_ASSIGN_OR_RETURN(blob_fd_,
                       base::UniqueFd::openat(blobs_dir_, blob_tmp_name_,
                                              O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0644));
  cur_chunks_.clear();
  cur_digests_.clear();
  cur_data_end_ = 0;
  cur_next_uoff_ = 0;
  cur_file_size_ = 0;
  file_hasher_ = std::make_unique<base::Hasher>(base::DigestAlgo::kSha256);
  wbuf_.clear();
  return {};
}

base::Status ChunkPipeline::flush() {
  if (!wbuf_.empty()) {
    if (auto r = base::write_full(blob_fd_.get(), wbuf_); !r) {
      return base::Unexpected(std::move(r).error().wrap("writing blob"));
    }
    wbuf_.clear();
  }
  return {};
}

base::Status ChunkPipeline::write_out(base::Bytes data) {
  file_hasher_->update(data);
  cur_file_size_ += data.size();
  if (wbuf_.size() + data.size() > kWriteBuffer) {
    CFN_TRY(flush());
    if (data.size() >= kWriteBuffer / 2) {
      if (auto r = base::write_full(blob_fd_.get(), data); !r) {
        return base::Unexpected(std::move(r).error().wrap("writing blob"));
      }
      return {};
    }
  }
  wbuf_.insert(wbuf_.end(), data.begin(), data.end());
  return {};
}

base::Status ChunkPipeline::write_zeros(std::uint64_t n) {
  static const std::byte kZeros[erofs::kBlockSize] = {};
  while (n > 0) {
    std::size_t step = std::min<std::uint64_t>(n, sizeof(kZeros));
    CFN_TRY(write_out(base::Bytes(kZeros, step)));
    n -= step;
  }
  return {};
}

base::Status ChunkPipeline::commit_front() {
  Job* j = inflight_.front().get();
  {
    std::unique_lock lk(mu_);
    done_cv_.wait(lk, [&] { return j->done; });
  }
  if (!j->status) {
    return base::Unexpected(std::move(j->status).error().wrap("compressing a chunk"));
  }
  if (auto it = known_.find(j->digest); it != known_.end()) {
    slots_[j->slot] = it->second;
  } else {
    if (!blob_fd_) {
      CFN_TRY(open_blob());
    }
    erofs::ChunkMeta m;
    m.uncompressed_offset = cur_next_uoff_;
    m.uncompressed_size = static_cast<std::uint32_t>(j->buf.size);
    base::Bytes raw(j->buf.data.get(), j->buf.size);
    if (options_.compressor == base::Compressor::kNone) {
      // The blob doubles as the EROFS device: data sits at its uncompressed offset.
      CFN_TRY(write_zeros(m.uncompressed_offset - cur_data_end_));
      m.compressed_offset = m.uncompressed_offset;
      m.compressed_size = m.uncompressed_size;
      CFN_TRY(write_out(raw));
    } else {
      m.compressed_offset = cur_data_end_;
      m.compressed = j->compressed;
      base::Bytes stored = j->compressed ? base::Bytes(j->out) : raw;
      m.compressed_size = static_cast<std::uint32_t>(stored.size());
      CFN_TRY(write_out(stored));
    }
    cur_data_end_ = m.compressed_offset + m.compressed_size;
    cur_next_uoff_ = base::align_up(m.uncompressed_offset + m.uncompressed_size, erofs::kBlockSize);
    Location loc{static_cast<std::uint32_t>(blobs_.size()),
                 static_cast<std::uint32_t>(cur_chunks_.size())};
    if (cur_chunks_.size() >= (1U << 24)) {
      return base::errorf(EFBIG, "a layer has more than 2^24 unique chunks");
    }
    cur_chunks_.push_back(m);
    cur_digests_.push_back(j->digest);
    {
      std::lock_guard lk(mu_);
      known_.emplace(j->digest, loc);
    }
    slots_[j->slot] = loc;
    stats_.chunks_new++;
    stats_.bytes_written += m.compressed_size;
  }
  free_buffers_.push_back(std::move(j->buf));
  --buffers_out_;
  free_jobs_.push_back(std::move(inflight_.front()));
  inflight_.pop_front();
  return {};
}

base::Status ChunkPipeline::relayout(const std::vector<std::uint32_t>& order) {
  CFN_TRY(flush());
  blob_fd_.reset();
  const std::string old_name = blob_tmp_name_ + ".old";
  if (::renameat(blobs_dir_, blob_tmp_name_.c_str(), blobs_dir_, old_name.c_str()) != 0) {
    return base::errno_error("rename " + blob_tmp_name_);
  }
  CFN_ASSIGN_OR_RETURN(base::UniqueFd in,
                       base::UniqueFd::openat(blobs_dir_, old_name, O_RDONLY | O_NOFOLLOW));
  const std::vector<erofs::ChunkMeta> old = cur_chunks_;
  std::vector<base::Digest> digests = std::move(cur_digests_);
  CFN_TRY(open_blob());  // a new temporary: resets the hasher, sizes and chunk lists
  cur_chunks_ = old;
  cur_digests_ = std::move(digests);
  std::vector<std::byte> buf;
  std::uint64_t end = 0;
  for (std::uint32_t ci : order) {
    erofs::ChunkMeta& m = cur_chunks_[ci];
    buf.resize(m.compressed_size);
    if (auto r = base::pread_full(in.get(), buf, old[ci].compressed_offset); !r) {
      return base::Unexpected(std::move(r).error().wrap("re-reading blob"));
    }
    m.compressed_offset = end;
    end += m.compressed_size;
    CFN_TRY(write_out(buf));
  }
  cur_data_end_ = end;
  cur_next_uoff_ =
      old.empty() ? 0
                  : base::align_up(old.back().uncompressed_offset + old.back().uncompressed_size,
                                   erofs::kBlockSize);
  if (::unlinkat(blobs_dir_, old_name.c_str(), 0) != 0) {
    return base::errno_error("remove " + old_name);
  }
  return {};
}

base::Result<std::optional<BlobResult>> ChunkPipeline::end_layer(
    const std::vector<erofs::ChunkSlot>& first) {
  while (!inflight_.empty()) {
    CFN_TRY(commit_front());
  }
  if (!blob_fd_) {
    return std::nullopt;
  }
  if (options_.compressor != base::Compressor::kNone && !first.empty()) {
    const auto this_blob = static_cast<std::uint32_t>(blobs_.size());
    std::vector<bool> placed(cur_chunks_.size(), false);
    std::vector<std::uint32_t> order;
    for (erofs::ChunkSlot s : first) {
      const Location& loc = slots_[s];
      if (loc.blob == this_blob && !placed[loc.ci]) {
        placed[loc.ci] = true;
        order.push_back(loc.ci);
      }
    }
    if (!order.empty()) {
      for (std::uint32_t ci = 0; ci < cur_chunks_.size(); ++ci) {
        if (!placed[ci]) {
          order.push_back(ci);
        }
      }
      CFN_TRY(relayout(order));
    }
  }
  if (options_.compressor == base::Compressor::kNone) {
    CFN_TRY(write_zeros(cur_next_uoff_ - cur_data_end_));
    cur_data_end_ = cur_next_uoff_;
  }
  CFN_ASSIGN_OR_RETURN(auto trailer,
                       erofs::build_blob_trailer(cur_chunks_, cur_digests_, cur_data_end_));
  CFN_TRY(write_out(trailer.bytes));
  CFN_TRY(flush());

  BlobResult res;
  erofs::BlobInfo& info = res.info;
  info.id = base::hex(file_hasher_->finish());
  info.index = static_cast<std::uint32_t>(blobs_.size());
  info.chunk_size = options_.chunk_size;
  info.chunk_count = static_cast<std::uint32_t>(cur_chunks_.size());
  info.compressor = options_.compressor;
  info.digester = options_.digester;
  info.features = trailer.features;
  info.compressed_size = cur_file_size_;
  info.uncompressed_size = cur_next_uoff_;
  info.toc_size = trailer.toc_size;
  info.toc_digest = trailer.toc_digest;
  info.ci_compressor = trailer.ci_compressor;
  info.ci_offset = trailer.ci_offset;
  info.ci_compressed_size = trailer.ci_compressed_size;
  info.ci_uncompressed_size = trailer.ci_uncompressed_size;
  info.device_blocks = static_cast<std::uint32_t>(cur_next_uoff_ / erofs::kBlockSize);
  res.chunks = std::move(cur_chunks_);
  res.digests = std::move(cur_digests_);
  res.file_name = info.id;
  blob_fd_.reset();
  if (::renameat(blobs_dir_, blob_tmp_name_.c_str(), blobs_dir_, res.file_name.c_str()) != 0) {
    return base::errno_error("rename blob " + blob_tmp_name_ + " to " + res.file_name);
  }
  cur_chunks_ = {};
  cur_digests_ = {};
  blobs_.push_back(res);
  return res;
}

erofs::ChunkRef ChunkPipeline::resolve(erofs::ChunkSlot slot) const {
  const Location& loc = slots_[slot];
  const BlobResult& b = blobs_[loc.blob];
  const erofs::ChunkMeta& m = b.chunks[loc.ci];
  erofs::ChunkRef r;
  r.blob_index = loc.blob;
  r.ci_index = loc.ci;
  r.compressed_offset = m.compressed_offset;
  r.compressed_size = m.compressed_size;
  r.uncompressed_offset = m.uncompressed_offset;
  r.uncompressed_size = m.uncompressed_size;
  r.compressed = m.compressed;
  r.digest = b.digests[loc.ci];
  return r;
}

}  // namespace convert
