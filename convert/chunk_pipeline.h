// SPDX-License-Identifier: Apache-2.0
// ChunkPipeline: cuts file data into chunks, hashes and compresses them on a small
// worker pool, deduplicates by digest (within and across layers) and appends new
// chunks to the current layer's data blob in submission order.
//
//   reader thread: acquire() -> fill -> submit() --queue--> workers: hash, compress
//                  commit (in order): dedup, assign ci + offsets, buffered write
//
// Memory is bounded: at most max_inflight() chunks exist between acquire() and commit.
// The blob file of a layer is created on the first new chunk, so a layer that adds
// nothing new produces no blob. All methods but the workers' run on one thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/digest.h"
#include "base/result.h"
#include "base/unique_fd.h"
#include "convert/options.h"
#include "erofs/blob_meta.h"
#include "erofs/fs_tree.h"
#include "erofs/reader.h"
#include "erofs/writer.h"

namespace convert {

// A chunk's data buffer (capacity = chunk size), recycled through the pipeline.
struct ChunkBuffer {
  std::unique_ptr<std::byte[]> data;
  std::size_t size = 0;
};

// One finished data blob.
struct BlobResult {
  erofs::BlobInfo info;                  // everything write_bootstrap needs
  std::vector<erofs::ChunkMeta> chunks;  // by ci
  std::vector<base::Digest> digests;     // by ci
  std::string file_name;                 // under the blobs dir: == info.id
};

struct PipelineStats {
  std::uint64_t chunks_total = 0;   // chunks submitted
  std::uint64_t chunks_new = 0;     // chunks written to a blob
  std::uint64_t bytes_in = 0;       // uncompressed bytes submitted
  std::uint64_t bytes_written = 0;  // chunk data bytes written to blobs
};

class ChunkPipeline {
 public:
  // blobs_dir: an open directory where blob files are created (temporary names, then
  // renamed to their id).
  ChunkPipeline(const BuildOptions& options, int blobs_dir);
  ~ChunkPipeline();
  ChunkPipeline(const ChunkPipeline&) = delete;
  ChunkPipeline& operator=(const ChunkPipeline&) = delete;

  // A buffer with room for chunk_size bytes; may block committing finished chunks.
  [[nodiscard]] base::Result<ChunkBuffer> acquire();
  // Queue a filled buffer (1..chunk_size bytes); returns the slot its location will
  // be resolved to.
  [[nodiscard]] base::Result<erofs::ChunkSlot> submit(ChunkBuffer buf);
  // Give back a buffer that was not submitted.
  void release(ChunkBuffer buf);

  // Drain, then finish the current layer's blob: trailer, id = sha256(file), rename.
  // nullopt when the layer added no new chunk. The chunks of `first` that are new in
  // this blob (once each, in that order) are moved to the front of its data region,
  // the rest follow in chunk order; only compressed offsets change (the chunk-info
  // order and the uncompressed layout stay), and nothing moves without compression
  // (the blob is then the device itself).
  [[nodiscard]] base::Result<std::optional<BlobResult>> end_layer(
      const std::vector<erofs::ChunkSlot>& first = {});

  // After every layer: the ChunkRef of a slot (blob offsets filled in).
  [[nodiscard]] erofs::ChunkRef resolve(erofs::ChunkSlot slot) const;
  [[nodiscard]] const std::vector<BlobResult>& blobs() const { return blobs_; }
  [[nodiscard]] const PipelineStats& stats() const { return stats_; }
  [[nodiscard]] std::size_t max_inflight() const { return max_inflight_; }
  [[nodiscard]] std::uint32_t chunk_size() const { return options_.chunk_size; }

 private:
  struct Job;
  struct Location {
    std::uint32_t blob = 0;
    std::uint32_t ci = 0;
  };
  struct DigestHash {
    std::size_t operator()(const base::Digest& d) const noexcept;
  };

  void worker_loop();
  base::Status commit_front();
  base::Status open_blob();
  base::Status write_out(base::Bytes data);
  base::Status write_zeros(std::uint64_t n);
  base::Status flush();
  base::Status relayout(const std::vector<std::uint32_t>& order);

  BuildOptions options_;
  int blobs_dir_;
  std::size_t max_inflight_ = 0;

  // Shared with the workers.
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<Job*> queue_;
  bool stopping_ = false;
  std::unordered_map<base::Digest, Location, DigestHash> known_;  // committed chunks
  std::vector<std::thread> workers_;

  // Reader thread only.
  std::deque<std::unique_ptr<Job>> inflight_;  // in submission order
  std::vector<std::unique_ptr<Job>> free_jobs_;
  std::vector<ChunkBuffer> free_buffers_;
  std::size_t buffers_out_ = 0;  // acquired and not yet back
  std::vector<Location> slots_;
  std::vector<BlobResult> blobs_;
  PipelineStats stats_;

  // The blob being written.
  base::UniqueFd blob_fd_;
  std::string blob_tmp_name_;
  std::vector<erofs::ChunkMeta> cur_chunks_;
  std::vector<base::Digest> cur_digests_;
  std::uint64_t cur_data_end_ = 0;   // bytes of chunk data (file offset)
  std::uint64_t cur_next_uoff_ = 0;  // next free uncompressed offset
  std::uint64_t cur_file_size_ = 0;  // bytes handed to write_out
  std::unique_ptr<base::Hasher> file_hasher_;
  std::vector<std::byte> wbuf_;
};

}  // namespace convert
