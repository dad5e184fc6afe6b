// SPDX-License-Identifier: Apache-2.0
#include "daemon/blob_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "base/compress.h"
#include "base/file.h"
#include "daemon/cache/blob.h"
#include "daemon/cache/cache_file_io.h"
#include "erofs/blob_meta.h"
#include "erofs/reader.h"
#include "tests/unit/daemon/cache/manual_clock.h"
#include "tests/unit/fixture.h"
#include "tests/unit/temp_dir.h"

namespace cfnd {
namespace {

using cfntest::ManualClock;
using cfntest::TempDir;

// A blob built in the test: zstd chunks, sha256 digests, blob meta trailer.
struct TestBlob {
  erofs::BlobInfo info;
  std::vector<erofs::ChunkRecord> records;
  std::vector<erofs::ChunkMeta> chunks;
  std::vector<std::vector<std::byte>> plain;
  std::vector<std::byte> file;  // the blob file
};

// sizes: uncompressed chunk sizes; each chunk starts 4 KiB aligned.
// Polls done() until it holds or 20 s pass (a hang guard, not a timing check: the caller
// asserts the state afterwards).
template <typename Pred>
void wait_until(Pred done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TestBlob make_blob(const std::vector<std::uint32_t>& sizes, std::uint32_t seed = 1) {
  TestBlob b;
  std::mt19937 rng(seed);
  std::uint64_t uoff = 0;
  std::vector<base::Digest> digests;
  for (std::uint32_t size : sizes) {
    std::vector<std::byte> p(size);
    // Compressible but not trivial: runs of random letters.
    for (std::size_t i = 0; i < p.size();) {
      const auto c = static_cast<std::byte>('a' + rng() % 26);
      const std::size_t run = 1 + rng() % 8;
      for (std::size_t k = 0; k < run && i < p.size(); ++k, ++i) {
        p[i] = c;
      }
    }
    std::vector<std::byte> z;
    EXPECT_TRUE(base::compress(base::Compressor::kZstd, p, z));
    erofs::ChunkMeta c;
    c.compressed_offset = b.file.size();
    c.compressed_size = static_cast<std::uint32_t>(z.size());
    c.uncompressed_offset = uoff;
    c.uncompressed_size = size;
    c.compressed = true;
    b.file.insert(b.file.end(), z.begin(), z.end());
    b.chunks.push_back(c);
    digests.push_back(base::digest(base::DigestAlgo::kSha256, p));
    b.plain.push_back(std::move(p));
    uoff = base::align_up(uoff + size, 4096);
  }
  const std::uint64_t data_size = b.file.size();
  auto t = erofs::build_blob_trailer(b.chunks, digests, data_size);
  EXPECT_TRUE(t) << t.error().to_string();
  b.file.insert(b.file.end(), t->bytes.begin(), t->bytes.end());
  erofs::BlobInfo& i = b.info;
  i.id = "blob" + std::to_string(seed);
  i.chunk_size = 1U << 20;
  i.chunk_count = static_cast<std::uint32_t>(sizes.size());
  i.compressor = base::Compressor::kZstd;
  i.digester = base::DigestAlgo::kSha256;
  i.features = t->features;
  i.compressed_size = b.file.size();
  i.uncompressed_size = uoff;
  i.toc_size = t->toc_size;
  i.toc_digest = t->toc_digest;
  i.ci_compressor = t->ci_compressor;
  i.ci_offset = t->ci_offset;
  i.ci_compressed_size = t->ci_compressed_size;
  i.ci_uncompressed_size = t->ci_uncompressed_size;
  for (std::uint32_t ci = 0; ci < sizes.size(); ++ci) {
    erofs::ChunkRecord r;
    r.digest = digests[ci];
    r.blob_index = 0;
    r.compressed_size = b.chunks[ci].compressed_size;
    r.uncompressed_size = b.chunks[ci].uncompressed_size;
    r.compressed_offset = b.chunks[ci].compressed_offset;
    r.uncompressed_offset = b.chunks[ci].uncompressed_offset;
    r.index = ci;
    b.records.push_back(r);
  }
  return b;
}

// Wraps a backend: counts calls, ranges and bytes; can corrupt, fail or hold reads.
class CountingBackend final : public Backend {
 public:
  explicit CountingBackend(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}

  void read(const std::string& id, std::span<BackendRead> reads, Deadline deadline) override {
    last_deadline = deadline;
    calls++;
    ranges += reads.size();
    for (auto& r : reads) {
      bytes += r.out.size();
    }
    if (hook) {
      hook(reads);
    }
    if (stall) {
      // A stalled registry behind a client that honours the deadline: the cache's
      // manual clock moves to the deadline, and the read times out.
      if (deadline != kNoDeadline && clock) {
        clock->advance_to(deadline);
      }
      for (auto& r : reads) {
        r.result = base::make_error(ETIMEDOUT, "injected stall");
      }
      return;
    }
    if (fail) {
      for (auto& r : reads) {
        r.result = base::make_error(EIO, "injected");
      }
      return;
    }
    inner_->read(id, reads, deadline);
    for (auto& r : reads) {
      if (r.result && corrupt_at >= r.offset && corrupt_at < r.offset + r.out.size() &&
          corrupt_left != 0) {
        r.out[corrupt_at - r.offset] ^= std::byte{0x5a};
        if (corrupt_left > 0) {
          --corrupt_left;
        }
      }
      r.source = source;
    }
  }
  [[nodiscard]] std::string describe() const override { return "counting:" + inner_->describe(); }

  void reset() {
    calls = 0;
    ranges = 0;
    bytes = 0;
  }

  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> ranges{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<bool> fail{false};
  std::atomic<bool> stall{false};  // reads run to their deadline (clock), then ETIMEDOUT
  std::atomic<std::uint64_t> corrupt_at{UINT64_MAX};
  std::atomic<int> corrupt_left{-1};  // responses to corrupt at corrupt_at; -1: every one
  std::string source;                 // what reads say served them; set before use
  std::function<void(std::span<BackendRead>)> hook;  // set before use, not while reading
  std::atomic<Deadline> last_deadline{kNoDeadline};  // of the latest read
  std::shared_ptr<ManualClock> clock;                // the cache's, if manual; set before use

 private:
  std::shared_ptr<Backend> inner_;
};

// An on-demand fill of chunk ci whose backend read is held until release(), and a
// count of the other reads that start meanwhile: what must yield to a fill. The
// hook's state is shared with the backend, so reads after this is gone are harmless.
class HeldFill {
 public:
  HeldFill(CountingBackend& be, CachedBlob& blob, const TestBlob& b, std::uint32_t ci)
      : st_(std::make_shared<State>()) {
    st_->held = b.chunks[ci].compressed_offset;
    be.hook = [st = st_](std::span<BackendRead> reads) {
      if (reads[0].offset == st->held) {
        ++st->in_hook;
        std::unique_lock lk(st->mu);
        st->cv.wait(lk, [&] { return st->release; });
        return;
      }
      std::lock_guard lk(st->mu);
      if (!st->release) {
        ++st->reads_while_held;
      }
    };
    thread_ = std::thread(
        [&blob, off = b.chunks[ci].uncompressed_offset] { EXPECT_TRUE(blob.fill(off, 1)); });
    while (st_->in_hook.load() == 0) {
      std::this_thread::yield();
    }
  }
  ~HeldFill() { release(); }
  HeldFill(const HeldFill&) = delete;
  HeldFill& operator=(const HeldFill&) = delete;

  // The reads started while the fill is held, over a window (an absence can only be
  // checked over one).
  std::uint64_t reads_after(std::chrono::milliseconds window) {
    std::this_thread::sleep_for(window);
    return st_->reads_while_held.load();
  }
  // Let the fill's read go on and wait for the fill.
  void release() {
    {
      std::lock_guard lk(st_->mu);
      st_->release = true;
    }
    st_->cv.notify_all();
    if (thread_.joinable()) {
      thread_.join();
    }
  }

 private:
  struct State {
    std::uint64_t held = 0;
    std::mutex mu;
    std::condition_variable cv;
    bool release = false;
    std::atomic<int> in_hook{0};
    std::atomic<std::uint64_t> reads_while_held{0};
  };
  std::shared_ptr<State> st_;
  std::thread thread_;
};

class BlobCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    blob_dir_ = src_.path();
    cache_dir_ = cache_.path() + "/cache";
  }

  void put(const TestBlob& b) {
    ASSERT_TRUE(base::write_file_atomic(blob_dir_ + "/" + b.info.id, b.file));
  }

  std::shared_ptr<CountingBackend> backend() {
    auto l = make_localfs_backend(blob_dir_);
    EXPECT_TRUE(l);
    return std::make_shared<CountingBackend>(std::shared_ptr<Backend>(std::move(*l)));
  }

  std::unique_ptr<BlobCache> cache(std::uint64_t batch = 1U << 20, std::uint64_t bw = 0,
                                   std::chrono::milliseconds read_timeout = {},
                                   std::shared_ptr<cache::Clock> clock = nullptr) {
    CacheOptions o;
    o.clock = std::move(clock);
    o.cache_dir = cache_dir_;
    o.batch_size = batch;
    o.prefetch_bandwidth = bw;
    o.read_timeout = read_timeout;
    auto c = BlobCache::create(o);
    EXPECT_TRUE(c) << c.error().to_string();
    return std::move(*c);
  }

  // A cache whose fills widen to amplify_io (read amplification) over a batch.
  std::unique_ptr<BlobCache> amplified(std::uint64_t amplify_io, std::uint64_t batch = 128 * 1024) {
    CacheOptions o;
    o.cache_dir = cache_dir_;
    o.batch_size = batch;
    o.amplify_io = amplify_io;
    auto c = BlobCache::create(o);
    EXPECT_TRUE(c) << c.error().to_string();
    return std::move(*c);
  }

  // The cache file's bytes of chunk ci equal the plain chunk.
  static void expect_chunk(const CachedBlob& blob, const TestBlob& b, std::uint32_t ci) {
    std::vector<std::byte> got(b.chunks[ci].uncompressed_size);
    ASSERT_TRUE(base::pread_full(blob.fd(), got, b.chunks[ci].uncompressed_offset));
    EXPECT_TRUE(got == b.plain[ci]) << "chunk " << ci;
  }

  // True when [off, off+len) of fd is one hole.
  static bool is_hole(int fd, std::uint64_t off, std::uint64_t len) {
    const off_t d = ::lseek(fd, static_cast<off_t>(off), SEEK_DATA);
    return d < 0 || static_cast<std::uint64_t>(d) >= off + len;
  }

  TempDir src_;
  TempDir cache_;
  std::string blob_dir_;
  std::string cache_dir_;
};

std::vector<std::uint32_t> sizes(std::size_t n, std::uint32_t size) {
  return std::vector<std::uint32_t>(n, size);
}

// The chunk indexes of demanded_chunks(), in its order (first demand), checking that
// the stamps rise.
std::vector<std::uint32_t> demanded_cis(const CachedBlob& blob) {
  std::vector<std::uint32_t> out;
  std::uint64_t last = 0;
  for (const CachedBlob::Demand& d : blob.demanded_chunks()) {
    EXPECT_GT(d.seq, last) << "chunk " << d.ci;
    last = d.seq;
    out.push_back(d.ci);
  }
  return out;
}

TEST_F(BlobCacheTest, FillIsByteExact) {
  // Odd sizes leave sub-block gaps between chunks.
  TestBlob b = make_blob({10000, 65536, 4096, 70001, 1, 300000, 8192});
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob) << blob.error().to_string();
  EXPECT_EQ((*blob)->size(), b.info.uncompressed_size);
  EXPECT_EQ((*blob)->chunk_count(), 7U);
  EXPECT_EQ((*blob)->ready_chunks(), 0U);
  // Fill in awkward pieces, as a kernel would ask.
  for (std::uint64_t off = 0; off < (*blob)->size(); off += 12345) {
    auto st = (*blob)->fill(off, 777);
    ASSERT_TRUE(st) << st.error().to_string();
  }
  EXPECT_EQ((*blob)->ready_chunks(), 7U);
  EXPECT_TRUE((*blob)->ready(0, (*blob)->size()));
  // The whole file against the uncompressed layout (gaps read as zeros).
  std::vector<std::byte> want(b.info.uncompressed_size);
  for (std::size_t ci = 0; ci < b.chunks.size(); ++ci) {
    std::memcpy(want.data() + b.chunks[ci].uncompressed_offset, b.plain[ci].data(),
                b.plain[ci].size());
  }
  std::vector<std::byte> got(want.size());
  ASSERT_TRUE(base::pread_full((*blob)->fd(), got, 0));
  EXPECT_TRUE(got == want);
  EXPECT_EQ(c->metrics().verify_failures.load(), 0U);
}

TEST_F(BlobCacheTest, RangeChecks) {
  TestBlob b = make_blob(sizes(3, 10000));
  put(b);
  auto c = cache();
  auto blob = c->open(b.info, b.records, backend());
  ASSERT_TRUE(blob);
  EXPECT_TRUE((*blob)->fill(5, 0));
  auto st = (*blob)->fill((*blob)->size(), 1);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ERANGE);
  // Past the end: clipped (a page-aligned fanotify range past EOF).
  EXPECT_TRUE((*blob)->fill((*blob)->size() - 10, 1U << 20));
  EXPECT_TRUE((*blob)->ready((*blob)->size() - 10, 10));
  // A range in a gap between chunks needs nothing.
  EXPECT_TRUE((*blob)->fill(10000, 100));
}

TEST_F(BlobCacheTest, SmallFillWidensToBatch) {
  TestBlob b = make_blob(sizes(10, 65536));
  put(b);
  auto c = cache(256 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  ASSERT_TRUE((*blob)->fill(100, 1));
  // 256 KiB batch = chunks 0..3, all in one merged backend read.
  EXPECT_EQ((*blob)->ready_chunks(), 4U);
  EXPECT_TRUE((*blob)->ready(0, 4 * 65536));
  EXPECT_FALSE((*blob)->ready(4 * 65536, 1));
  EXPECT_EQ(be->calls.load(), 1U);
  EXPECT_EQ(be->ranges.load(), 1U);
  std::uint64_t want = 0;
  for (int ci = 0; ci < 4; ++ci) {
    want += b.chunks[ci].compressed_size;
    expect_chunk(**blob, b, ci);
  }
  EXPECT_EQ(be->bytes.load(), want);
  EXPECT_EQ(c->metrics().backend_bytes.load(),
            want + b.info.ci_compressed_size + 4096);  // + the blob meta read at open
  // Never beyond the blob: a fill near the end takes what is left.
  ASSERT_TRUE((*blob)->fill(9 * 65536, 1));
  EXPECT_EQ((*blob)->ready_chunks(), 5U);
}

TEST_F(BlobCacheTest, AdjacentChunksMergeIntoOneRead) {
  TestBlob b = make_blob(sizes(8, 32768));
  put(b);
  {
    // Chunk 2 present from an earlier run, so the next fill reads [0,2) and [3,4) apart.
    auto c = cache(128 * 1024);
    auto blob = c->open(b.info, b.records, backend());
    ASSERT_TRUE(blob);
    ASSERT_TRUE(base::pwrite_full((*blob)->fd(), b.plain[2], b.chunks[2].uncompressed_offset));
  }
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  ASSERT_EQ((*blob)->ready_chunks(), 1U);
  ASSERT_TRUE((*blob)->fill(0, 4 * 32768));
  EXPECT_EQ(be->calls.load(), 1U);   // one Backend::read call ...
  EXPECT_EQ(be->ranges.load(), 2U);  // ... with two merged ranges around chunk 2
  for (int ci = 0; ci < 8; ++ci) {
    if ((*blob)->ready(ci * 32768, 1)) {
      expect_chunk(**blob, b, ci);
    }
  }
}

TEST_F(BlobCacheTest, ConcurrentFillsFetchOnce) {
  TestBlob b = make_blob(sizes(4, 1U << 20));
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  // Hold the first read until all 16 fills have been issued, so they overlap.
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  be->hook = [&](std::span<BackendRead>) {
    std::unique_lock lk(mu);
    cv.wait_for(lk, std::chrono::seconds(2), [&] { return open; });
  };
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  std::atomic<int> started{0};
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      started++;
      if ((*blob)->fill(1U << 20 | static_cast<std::uint64_t>(i) * 1000, 100)) {
        ok++;
      }
    });
  }
  while (started.load() < 16) {
    std::this_thread::yield();
  }
  {
    std::lock_guard lk(mu);
    open = true;
  }
  cv.notify_all();
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(ok.load(), 16);
  EXPECT_EQ(be->calls.load(), 1U);
  EXPECT_EQ(be->bytes.load(), b.chunks[1].compressed_size);
  expect_chunk(**blob, b, 1);
  EXPECT_EQ(c->metrics().fill_requests.load(), 16U);
}

TEST_F(BlobCacheTest, CorruptChunkIsRejectedThenRetried) {
  TestBlob b = make_blob(sizes(4, 40000));
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->corrupt_at = b.chunks[1].compressed_offset + b.chunks[1].compressed_size / 2;
  auto st = (*blob)->fill(b.chunks[1].uncompressed_offset, 10);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EBADMSG);
  // Wrong twice: the read and its one refetch.
  EXPECT_EQ(c->metrics().verify_failures.load(), 2U);
  EXPECT_EQ(c->metrics().refetches.load(), 1U);
  EXPECT_EQ(c->metrics().refetch_successes.load(), 0U);
  EXPECT_NE(st.error().message.find("refetched once"), std::string::npos) << st.error().message;
  EXPECT_FALSE((*blob)->ready(b.chunks[1].uncompressed_offset, 1));
  // No byte of the bad chunk was written.
  EXPECT_TRUE(is_hole((*blob)->fd(), b.chunks[1].uncompressed_offset, 40000));
  // Its good neighbours of the same batch are fine.
  EXPECT_TRUE((*blob)->ready(b.chunks[2].uncompressed_offset, 1));
  // Backend fixed: the next fill fetches it again and succeeds.
  be->corrupt_at = UINT64_MAX;
  st = (*blob)->fill(b.chunks[1].uncompressed_offset, 10);
  ASSERT_TRUE(st) << st.error().to_string();
  expect_chunk(**blob, b, 1);
}

TEST_F(BlobCacheTest, CorruptChunkIsRefetchedOncePastTheCaches) {
  TestBlob b = make_blob(sizes(4, 40000));
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  // A flaky hop: one response with a flipped byte in chunk 1, then good ones.
  be->corrupt_at = b.chunks[1].compressed_offset + b.chunks[1].compressed_size / 2;
  be->corrupt_left = 1;
  be->source = "http://mirror-a";
  struct Seen {
    std::uint64_t offset, size;
    bool refetch;
    std::string avoid;
  };
  std::vector<Seen> seen;
  be->hook = [&](std::span<BackendRead> reads) {
    for (const auto& r : reads) {
      seen.push_back(Seen{r.offset, r.out.size(), r.refetch, r.avoid});
    }
  };
  auto st = (*blob)->fill(b.chunks[1].uncompressed_offset, 10);
  ASSERT_TRUE(st) << st.error().to_string();
  expect_chunk(**blob, b, 1);
  EXPECT_TRUE((*blob)->ready(b.chunks[2].uncompressed_offset, 1));  // of the same read
  EXPECT_EQ(c->metrics().verify_failures.load(), 1U);
  EXPECT_EQ(c->metrics().refetches.load(), 1U);
  EXPECT_EQ(c->metrics().refetch_successes.load(), 1U);
  // The widened read (chunks 1-3 in one range), then chunk 1 alone: past the caches,
  // not from where the bad bytes came.
  ASSERT_EQ(seen.size(), 2U);
  EXPECT_EQ(seen[0].offset, b.chunks[1].compressed_offset);
  EXPECT_FALSE(seen[0].refetch);
  EXPECT_EQ(seen[1].offset, b.chunks[1].compressed_offset);
  EXPECT_EQ(seen[1].size, b.chunks[1].compressed_size);
  EXPECT_TRUE(seen[1].refetch);
  EXPECT_EQ(seen[1].avoid, "http://mirror-a");
  // A fill of a chunk whose first read fails for another reason (EIO) is not refetched.
  be->hook = nullptr;
  be->fail = true;
  st = (*blob)->fill(b.chunks[0].uncompressed_offset, 10);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EIO);
  EXPECT_EQ(c->metrics().refetches.load(), 1U);
}

TEST_F(BlobCacheTest, BackendFailingForGoodIsEio) {
  TestBlob b = make_blob(sizes(4, 40000));
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->fail = true;
  auto st = (*blob)->fill(0, 10);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EIO);
  EXPECT_EQ((*blob)->ready_chunks(), 0U);
  EXPECT_TRUE(is_hole((*blob)->fd(), 0, (*blob)->size()));
  // A blob missing from the backend is EIO too (ENOENT in the message).
  std::filesystem::remove(blob_dir_ + "/" + b.info.id);
  be->fail = false;
  st = (*blob)->fill(0, 10);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EIO);
}

TEST_F(BlobCacheTest, WithoutReadTimeoutNoDeadline) {
  TestBlob b = make_blob(sizes(2, 40000));
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  ASSERT_TRUE((*blob)->fill(0, 10));
  EXPECT_EQ(be->last_deadline.load(), kNoDeadline);
}

// The fill's own fetch: the backend is handed the fill's deadline (start + read
// timeout) and cuts there; the fill fails with EIO, the chunk is held (a second fill
// fails at once, no backend read), and once the registry is back and the hold is over
// the same fill succeeds.
TEST_F(BlobCacheTest, ReadTimeoutCutsTheFillsOwnFetch) {
  TestBlob b = make_blob(sizes(4, 40000));
  put(b);
  const auto timeout = std::chrono::milliseconds(200);
  auto clock = std::make_shared<ManualClock>();
  auto c = cache(128 * 1024, 0, timeout, clock);
  auto be = backend();
  be->clock = clock;
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  be->stall = true;
  const auto before = clock->now();
  auto st = (*blob)->fill(b.chunks[1].uncompressed_offset, 10);
  const auto after = clock->now();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EIO) << st.error().to_string();
  EXPECT_NE(st.error().message.find("injected stall"), std::string::npos) << st.error().message;
  EXPECT_EQ(be->calls.load(), 1U);
  const Deadline d = be->last_deadline.load();
  EXPECT_GE(d, before + timeout);
  EXPECT_LE(d, after);  // the fill returned only once its deadline had passed
  EXPECT_FALSE((*blob)->ready(b.chunks[1].uncompressed_offset, 1));

  st = (*blob)->fill(b.chunks[1].uncompressed_offset, 10);  // the kernel's retry
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EIO);
  EXPECT_NE(st.error().message.find("failed less than"), std::string::npos) << st.error().message;
  EXPECT_EQ(be->calls.load(), 1U);

  be->stall = false;
  clock->advance(cache::kFailHold);  // the hold is over
  ASSERT_TRUE((*blob)->fill(b.chunks[1].uncompressed_offset, 10));
  EXPECT_TRUE((*blob)->ready(b.chunks[1].uncompressed_offset, 1));
  expect_chunk(**blob, b, 1);
}

// Someone else's fetch (a prefetch list's, which has a deadline of its own: the read
// timeout from when it started) that does not end in time: the waiting fill fails with
// EIO at its read timeout, without a fetch of its own; a fetch that does end (a backend
// late to honour its deadline) still fills, and a later fill finds the chunk present.
TEST_F(BlobCacheTest, ReadTimeoutEndsTheWaitForAnotherFetch) {
  TestBlob b = make_blob(sizes(4, 40000));
  put(b);
  auto clock = std::make_shared<ManualClock>();
  auto c = cache(128 * 1024, 0, std::chrono::milliseconds(200), clock);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  be->hook = [&](std::span<BackendRead>) {
    std::unique_lock lk(mu);
    cv.wait_for(lk, std::chrono::seconds(20), [&] { return release; });
  };
  c->prefetch_chunks(*blob, {1});
  wait_until([&] { return be->calls.load() == 1; });
  ASSERT_EQ(be->calls.load(), 1U);
  EXPECT_NE(be->last_deadline.load(), kNoDeadline);

  auto waiting = std::async(std::launch::async,
                            [&] { return (*blob)->fill(b.chunks[1].uncompressed_offset, 10); });
  clock->wait_for_sleeper();  // the fill waits for the prefetch's read, until its deadline
  clock->advance(std::chrono::milliseconds(200));
  auto st = waiting.get();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EIO);
  EXPECT_NE(st.error().message.find("read timeout of 200 ms"), std::string::npos)
      << st.error().message;
  // Held like a timed-out fetch: the kernel's retry fails at once.
  st = (*blob)->fill(b.chunks[1].uncompressed_offset, 10);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("failed less than"), std::string::npos) << st.error().message;
  EXPECT_EQ(be->calls.load(), 1U);  // neither fill fetched the chunk itself

  {
    std::lock_guard lk(mu);
    release = true;
  }
  cv.notify_all();
  wait_until([&] { return (*blob)->ready_chunks() >= 1; });
  ASSERT_TRUE((*blob)->fill(b.chunks[1].uncompressed_offset, 10));
  EXPECT_EQ(be->calls.load(), 1U);
  expect_chunk(**blob, b, 1);
}

// A local copy of the chunk-info table that is damaged (zeros, or short) is dropped and
// the table read through the backend again: the open succeeds, and the copy is right
// again.
TEST_F(BlobCacheTest, BadLocalChunkInfoCopyIsReadAgain) {
  TestBlob b = make_blob(sizes(6, 50000));
  put(b);
  const std::string meta = cache_dir_ + "/" + b.info.id + ".meta";
  std::vector<std::byte> good;
  {
    auto c = cache(128 * 1024);
    ASSERT_TRUE(c->open(b.info, b.records, backend()));
    auto r = base::read_file(meta);
    ASSERT_TRUE(r);
    good = std::move(*r);
  }
  for (const bool short_copy : {false, true}) {
    std::vector<std::byte> bad(short_copy ? good.size() / 2 : good.size(), std::byte{0});
    ASSERT_TRUE(base::write_file_atomic(meta, bad, 0600));
    auto c = cache(128 * 1024);
    auto be = backend();
    auto blob = c->open(b.info, b.records, be);
    ASSERT_TRUE(blob) << blob.error().to_string();
    EXPECT_EQ(be->calls.load(), 1U) << short_copy;  // the table, once
    auto again = base::read_file(meta);
    ASSERT_TRUE(again);
    EXPECT_TRUE(*again == good) << short_copy;
    ASSERT_TRUE((*blob)->fill(b.chunks[3].uncompressed_offset, 1));
    expect_chunk(**blob, b, 3);
  }
}

TEST_F(BlobCacheTest, RestartFetchesNothingTwice) {
  TestBlob b = make_blob({50000, 65536, 12288, 100000, 4096, 70000});
  put(b);
  std::uint64_t ready = 0;
  {
    auto c = cache(128 * 1024);
    auto blob = c->open(b.info, b.records, backend());
    ASSERT_TRUE(blob);
    ASSERT_TRUE((*blob)->fill(0, 1));
    ASSERT_TRUE((*blob)->fill(b.chunks[4].uncompressed_offset, 1));
    ready = (*blob)->ready_chunks();
    ASSERT_GT(ready, 0U);
    ASSERT_LT(ready, 6U);
  }
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  EXPECT_EQ(be->calls.load(), 0U);  // the blob meta came from <id>.meta
  EXPECT_EQ((*blob)->ready_chunks(), ready);
  for (std::uint32_t ci = 0; ci < 6; ++ci) {
    if ((*blob)->ready(b.chunks[ci].uncompressed_offset, 1)) {
      ASSERT_TRUE((*blob)->fill(b.chunks[ci].uncompressed_offset, b.chunks[ci].uncompressed_size));
      expect_chunk(**blob, b, ci);
    }
  }
  EXPECT_EQ(be->bytes.load(), 0U);
  EXPECT_EQ(c->metrics().backend_bytes.load(), 0U);
  EXPECT_EQ(c->metrics().hits.load(), ready);
}

TEST_F(BlobCacheTest, HalfWrittenChunkIsNotPresentAfterCrash) {
  TestBlob b = make_blob(sizes(4, 100000));
  put(b);
  {
    // The crash: the daemon wrote all of chunk 2 but its head block (the write
    // order of a fill: rest first, head last), and died.
    auto c = cache(128 * 1024);
    auto blob = c->open(b.info, b.records, backend());
    ASSERT_TRUE(blob);
    const auto& c2 = b.chunks[2];
    ASSERT_TRUE(base::pwrite_full((*blob)->fd(), base::Bytes(b.plain[2]).subspan(4096),
                                  c2.uncompressed_offset + 4096));
    // And chunk 0 complete (a 128 KiB batch does not reach chunk 1's end).
    ASSERT_TRUE((*blob)->fill(0, 1));
    ASSERT_EQ((*blob)->ready_chunks(), 1U);
  }
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  EXPECT_TRUE((*blob)->ready(0, 1));
  EXPECT_FALSE((*blob)->ready(b.chunks[2].uncompressed_offset, 1));
  ASSERT_TRUE((*blob)->fill(b.chunks[2].uncompressed_offset, 1));
  expect_chunk(**blob, b, 2);
}

TEST_F(BlobCacheTest, UnfetchedRangesStayHoles) {
  TestBlob b = make_blob(sizes(16, 65536));
  put(b);
  auto c = cache(128 * 1024);
  auto blob = c->open(b.info, b.records, backend());
  ASSERT_TRUE(blob);
  const int fd = (*blob)->fd();
  EXPECT_TRUE(is_hole(fd, 0, (*blob)->size()));
  ASSERT_TRUE((*blob)->fill(8 * 65536, 1));  // chunks 8, 9 (128 KiB batch)
  EXPECT_TRUE(is_hole(fd, 0, 8 * 65536));
  EXPECT_EQ(::lseek(fd, 0, SEEK_DATA), 8 * 65536);
  EXPECT_EQ(::lseek(fd, 8 * 65536, SEEK_HOLE), 10 * 65536);
  EXPECT_TRUE(is_hole(fd, 10 * 65536, 6 * 65536));
}

TEST_F(BlobCacheTest, HostileBlobMetaIsRefused) {
  TestBlob b = make_blob(sizes(4, 40000));
  put(b);
  auto c = cache();
  {
    // The bootstrap says one thing, the blob meta another.
    auto recs = b.records;
    recs[2].compressed_offset += 1;
    auto blob = c->open(b.info, recs, backend());
    ASSERT_FALSE(blob);
    EXPECT_EQ(blob.error().code, EBADMSG);
  }
  {
    auto recs = b.records;
    recs[1].uncompressed_size -= 1;
    auto blob = c->open(b.info, recs, backend());
    ASSERT_FALSE(blob);
    EXPECT_EQ(blob.error().code, EBADMSG);
  }
  {
    auto recs = b.records;
    recs[3].index = 99;
    auto blob = c->open(b.info, recs, backend());
    ASSERT_FALSE(blob);
    EXPECT_EQ(blob.error().code, EBADMSG);
  }
  {
    // The chunk-info region lies outside the blob.
    auto info = b.info;
    info.ci_offset = info.compressed_size - 100;
    auto blob = c->open(info, b.records, backend());
    ASSERT_FALSE(blob);
  }
  // The backend serves garbage for the blob meta: every byte flipped in turn across
  // the chunk-info array and the header's first fields; an error or (for bytes the
  // parser ignores) a blob that still agrees with the bootstrap, never a crash.
  for (std::uint64_t i = 0; i < b.info.ci_compressed_size + 64; i += 3) {
    TempDir d;
    CacheOptions o;
    o.cache_dir = d.path();
    auto c2 = BlobCache::create(o);
    ASSERT_TRUE(c2);
    auto be = backend();
    be->corrupt_at = b.info.ci_offset + i;
    auto blob = (*c2)->open(b.info, b.records, be);
    if (blob) {
      be->corrupt_at = UINT64_MAX;
      ASSERT_TRUE((*blob)->fill(0, (*blob)->size()));
      for (std::uint32_t ci = 0; ci < 4; ++ci) {
        expect_chunk(**blob, b, ci);
      }
    }
  }
  // A good open still works after all that.
  auto blob = c->open(b.info, b.records, backend());
  ASSERT_TRUE(blob) << blob.error().to_string();
}

TEST_F(BlobCacheTest, SecondOpenSharesTheBlob) {
  TestBlob b = make_blob(sizes(2, 4096));
  put(b);
  auto c = cache();
  auto b1 = c->open(b.info, b.records, backend());
  auto b2 = c->open(b.info, b.records, backend());
  ASSERT_TRUE(b1 && b2);
  EXPECT_EQ(b1->get(), b2->get());
  auto bad = b.info;
  bad.id = "../x";
  EXPECT_FALSE(c->open(bad, b.records, backend()));
}

// A backend whose reads at one offset (a blob's chunk-info region) wait until
// release(); every other read goes through.
class HeldMeta final : public Backend {
 public:
  HeldMeta(std::shared_ptr<Backend> inner, std::uint64_t held)
      : inner_(std::move(inner)), held_(held) {}
  void read(const std::string& id, std::span<BackendRead> reads, Deadline deadline) override {
    if (reads[0].offset == held_) {
      std::unique_lock lk(mu_);
      ++waiting_;
      cv_.notify_all();
      cv_.wait(lk, [&] { return release_; });
    }
    inner_->read(id, reads, deadline);
  }
  [[nodiscard]] std::string describe() const override { return "held:" + inner_->describe(); }
  // Waits until n reads are held.
  void wait_held(int n) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return waiting_ >= n; });
  }
  [[nodiscard]] int held() {
    std::lock_guard lk(mu_);
    return waiting_;
  }
  void release() {
    std::lock_guard lk(mu_);
    release_ = true;
    cv_.notify_all();
  }

 private:
  std::shared_ptr<Backend> inner_;
  const std::uint64_t held_;
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  bool release_ = false;
};

// A stalled registry for one blob holds up only that blob's open: the chunk-info
// download runs outside the cache's lock, so opening another blob meanwhile completes.
TEST_F(BlobCacheTest, SlowMetaDownloadHoldsUpOnlyItsOwnBlob) {
  TestBlob slow = make_blob(sizes(2, 40000), 1);
  TestBlob fast = make_blob(sizes(2, 40000), 2);
  put(slow);
  put(fast);
  auto c = cache();
  auto held = std::make_shared<HeldMeta>(backend(), slow.info.ci_offset);
  auto slow_open =
      std::async(std::launch::async, [&] { return c->open(slow.info, slow.records, held); });
  held->wait_held(1);
  auto fast_open =
      std::async(std::launch::async, [&] { return c->open(fast.info, fast.records, backend()); });
  // A hang guard, not a timing check: before the fix this open waited for the other.
  const bool done = fast_open.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  held->release();
  EXPECT_TRUE(done) << "opening another blob waited for a stalled chunk-info download";
  auto f = fast_open.get();
  ASSERT_TRUE(f) << f.error().to_string();
  ASSERT_TRUE((*f)->fill(0, 1));
  expect_chunk(**f, fast, 0);
  auto s = slow_open.get();
  ASSERT_TRUE(s) << s.error().to_string();
}

// Opens of the same blob while its chunk-info region downloads wait for that one
// download and share its blob: one backend read, one object.
TEST_F(BlobCacheTest, ConcurrentOpensOfABlobDownloadItsMetaOnce) {
  TestBlob b = make_blob(sizes(2, 40000));
  put(b);
  auto c = cache();
  auto counting = backend();
  auto held = std::make_shared<HeldMeta>(counting, b.info.ci_offset);
  auto first = std::async(std::launch::async, [&] { return c->open(b.info, b.records, held); });
  held->wait_held(1);
  std::vector<std::future<base::Result<std::shared_ptr<CachedBlob>>>> more;
  for (int i = 0; i < 3; ++i) {
    more.push_back(
        std::async(std::launch::async, [&] { return c->open(b.info, b.records, held); }));
  }
  held->release();
  auto one = first.get();
  ASSERT_TRUE(one) << one.error().to_string();
  for (auto& f : more) {
    auto other = f.get();
    ASSERT_TRUE(other) << other.error().to_string();
    EXPECT_EQ(other->get(), one->get());
  }
  EXPECT_EQ(held->held(), 1);
  EXPECT_EQ(counting->calls.load(), 1U);
}

// The chunk-info download runs under the read timeout like any fill.
TEST_F(BlobCacheTest, MetaDownloadHasTheReadTimeout) {
  TestBlob b = make_blob(sizes(2, 40000));
  put(b);
  auto clock = std::make_shared<ManualClock>();
  auto c = cache(128 * 1024, 0, std::chrono::milliseconds(100), clock);
  auto be = backend();
  be->clock = clock;
  be->stall = true;
  auto blob = c->open(b.info, b.records, be);
  ASSERT_FALSE(blob);
  EXPECT_EQ(blob.error().code, EIO);
  EXPECT_NE(be->last_deadline.load(), kNoDeadline);
  be->stall = false;
  blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob) << blob.error().to_string();
}

TEST_F(BlobCacheTest, PrefetchFillsTheWholeBlob) {
  TestBlob b = make_blob(sizes(40, 50000));
  put(b);
  auto c = cache(128 * 1024, 1ULL << 40);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  ASSERT_TRUE((*blob)->fill(b.chunks[20].uncompressed_offset, 1));
  c->prefetch(*blob);
  wait_until([&] { return (*blob)->ready_chunks() >= 40; });
  ASSERT_EQ((*blob)->ready_chunks(), 40U);
  for (std::uint32_t ci = 0; ci < 40; ++ci) {
    expect_chunk(**blob, b, ci);
  }
  std::uint64_t on_demand = 0;
  for (std::uint32_t ci = 20; ci < 22; ++ci) {
    on_demand += b.chunks[ci].uncompressed_size;
  }
  // A step's bytes are counted after its chunks are ready: wait for the count.
  wait_until([&] { return c->metrics().prefetch_bytes.load() >= 40U * 50000 - on_demand; });
  EXPECT_EQ(c->metrics().prefetch_bytes.load(), 40U * 50000 - on_demand);
}

TEST_F(BlobCacheTest, PrefetchListFetchesOnlyTheListedChunks) {
  TestBlob b = make_blob(sizes(40, 50000));
  put(b);
  auto c = cache(128 * 1024);  // no background prefetch: the list works without it
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  // Unordered, repeated and out-of-range indexes are fine.
  const std::vector<std::uint32_t> listed = {30, 3, 4, 5, 30, 31, 12, 999};
  c->prefetch_chunks(*blob, listed);
  wait_until([&] { return (*blob)->ready_chunks() >= 6; });
  ASSERT_EQ((*blob)->ready_chunks(), 6U);
  // A read's bytes are counted after its chunks are ready: wait for the count.
  wait_until([&] { return c->metrics().prefetch_list_bytes.load() >= 6U * 50000; });
  EXPECT_EQ(c->metrics().prefetch_list_bytes.load(), 6U * 50000);
  EXPECT_EQ(c->metrics().prefetch_bytes.load(), 6U * 50000);
  EXPECT_EQ(c->metrics().misses.load(), 0U);
  // Nothing was read yet; a read of a listed chunk is a hit and is recorded.
  EXPECT_TRUE((*blob)->demanded_chunks().empty());
  const auto calls = be->calls.load();
  ASSERT_TRUE((*blob)->fill(b.chunks[4].uncompressed_offset + 10, 100));
  EXPECT_EQ(be->calls.load(), calls);
  EXPECT_EQ(c->metrics().hits.load(), 1U);
  ASSERT_TRUE((*blob)->fill(b.chunks[7].uncompressed_offset,
                            b.chunks[8].uncompressed_offset - b.chunks[7].uncompressed_offset + 1));
  EXPECT_EQ(demanded_cis(**blob), (std::vector<std::uint32_t>{4, 7, 8}));
  for (std::uint32_t ci : {3, 4, 5, 12, 30, 31}) {
    EXPECT_TRUE((*blob)->ready(b.chunks[ci].uncompressed_offset, 1)) << ci;
    expect_chunk(**blob, b, ci);
  }
  EXPECT_FALSE((*blob)->ready(b.chunks[6].uncompressed_offset, 1));  // never fetched
  // ready() is a front end's fast path of a read: it counts as demanded too.
  // In first-demand order: 4, then 7 and 8 (one fill, ascending), then the loop's.
  EXPECT_EQ(demanded_cis(**blob), (std::vector<std::uint32_t>{4, 7, 8, 3, 5, 12, 30, 31, 6}));
}

TEST_F(BlobCacheTest, PrefetchListReadsInListOrderOneRangeAtATime) {
  TestBlob b = make_blob(sizes(40, 50000));
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  // Each read waits in the hook until every worker holds one: the held reads are then
  // the list's first kPrefetchListWorkers entries (not the lowest offsets).
  constexpr std::size_t kWorkers = BlobCache::kPrefetchListWorkers;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::uint64_t> held;
  bool release = false;
  be->hook = [&](std::span<BackendRead> reads) {
    std::unique_lock lk(mu);
    for (const auto& r : reads) {
      held.push_back(r.offset);
    }
    cv.notify_all();
    cv.wait(lk, [&] { return release; });
  };
  // Descending offsets, no two adjacent in the blob: one range read each.
  const std::vector<std::uint32_t> listed = {36, 30, 24, 18, 12, 6, 0};
  c->prefetch_chunks(*blob, listed);
  {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return held.size() >= kWorkers; });
    std::vector<std::uint64_t> want;
    for (std::size_t i = 0; i < kWorkers; ++i) {
      want.push_back(b.chunks[listed[i]].compressed_offset);
    }
    std::vector<std::uint64_t> got = held;
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want);
    release = true;
  }
  cv.notify_all();
  wait_until([&] { return (*blob)->ready_chunks() >= listed.size(); });
  EXPECT_EQ((*blob)->ready_chunks(), listed.size());
  EXPECT_EQ(be->calls.load(), listed.size());
  EXPECT_EQ(be->ranges.load(), listed.size());
}

TEST_F(BlobCacheTest, PrefetchListMergesAdjacentListedChunksIntoOneRead) {
  TestBlob b = make_blob(sizes(40, 16384));  // compressed: a few KiB each
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  // 10, 11, 12 continue each other in the list and in the blob; 20 and 5 do not.
  c->prefetch_chunks(*blob, {10, 11, 12, 20, 5});
  wait_until([&] { return (*blob)->ready_chunks() >= 5; });
  EXPECT_EQ((*blob)->ready_chunks(), 5U);
  EXPECT_EQ(be->ranges.load(), 3U);
}

// With a merge size above the batch, a list's reads start at one batch and double with
// each take up to the merge size: chunks that follow each other in the blob (a list
// built into the image lies in list order) come in few large range reads, the first
// ones small.
TEST_F(BlobCacheTest, PrefetchListReadsGrowFromABatchToTheMergeSize) {
  TestBlob b = make_blob(sizes(80, 200000));
  put(b);
  constexpr std::uint64_t kBatch = 128 * 1024;
  constexpr std::uint64_t kMerge = 1U << 20;
  CacheOptions o;
  o.cache_dir = cache_dir_;
  o.batch_size = kBatch;
  o.prefetch_merge_size = kMerge;
  auto c = BlobCache::create(o);
  ASSERT_TRUE(c) << c.error().to_string();
  auto be = backend();
  auto blob = (*c)->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  std::mutex mu;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> got;  // offset, size
  be->hook = [&](std::span<BackendRead> reads) {
    std::lock_guard lk(mu);
    for (const auto& r : reads) {
      got.emplace_back(r.offset, r.out.size());
    }
  };
  std::vector<std::uint32_t> listed(b.chunks.size());
  for (std::uint32_t i = 0; i < listed.size(); ++i) {
    listed[i] = i;
  }
  (*c)->prefetch_chunks(*blob, listed);
  wait_until([&] { return (*blob)->ready_chunks() >= listed.size(); });
  ASSERT_EQ((*blob)->ready_chunks(), listed.size());
  // What the takes must have been: the k-th read holds the next chunks up to
  // min(batch << k, merge) bytes from its first chunk's start.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> want;
  std::size_t i = 0;
  for (unsigned k = 0; i < b.chunks.size(); ++k) {
    const std::uint64_t limit = std::min<std::uint64_t>(kBatch << std::min(k, 10U), kMerge);
    const std::uint64_t start = b.chunks[i].compressed_offset;
    std::uint64_t end = start + b.chunks[i].compressed_size;
    for (++i; i < b.chunks.size() &&
              b.chunks[i].compressed_offset + b.chunks[i].compressed_size - start <= limit;
         ++i) {
      end = b.chunks[i].compressed_offset + b.chunks[i].compressed_size;
    }
    want.emplace_back(start, end - start);
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want);
  ASSERT_GE(want.size(), 5U);  // the blob is large enough to reach the merge size
  EXPECT_LE(want[0].second, kBatch);
  EXPECT_GT(want[4].second, kMerge / 2);
  // The worker counts a read's bytes after the read's chunks are ready: wait for the count.
  wait_until([&] { return (*c)->metrics().prefetch_list_bytes.load() >= 80U * 200000; });
  EXPECT_EQ((*c)->metrics().prefetch_list_bytes.load(), 80U * 200000);
  for (std::uint32_t ci = 0; ci < b.chunks.size(); ++ci) {
    expect_chunk(**blob, b, ci);
  }
}

TEST_F(BlobCacheTest, PrefetchListWaitsForOnDemandFetches) {
  TestBlob b = make_blob(sizes(40, 50000));
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  // The fill's read is held; meanwhile a list is queued.
  HeldFill fill(*be, **blob, b, 30);
  c->prefetch_chunks(*blob, {0, 5, 10});
  EXPECT_EQ(fill.reads_after(std::chrono::milliseconds(200)), 0U);
  fill.release();
  for (std::uint32_t ci : {0, 5, 10}) {
    wait_until([&] { return (*blob)->ready(b.chunks[ci].uncompressed_offset, 1); });
    expect_chunk(**blob, b, ci);
  }
}

TEST_F(BlobCacheTest, FillDoesNotWidenWhileAListIsPending) {
  TestBlob b = make_blob(sizes(40, 50000));
  put(b);
  auto c = cache(1U << 20);  // a fill would widen over about 20 chunks
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  // The list's reads block until released, so the list stays pending (it has more
  // reads than there are workers).
  const std::vector<std::uint32_t> listed = {0, 2, 4, 6, 8, 10, 12, 14};
  std::set<std::uint64_t> list_offs;
  for (std::uint32_t ci : listed) {
    list_offs.insert(b.chunks[ci].compressed_offset);
  }
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<std::uint64_t> other_bytes{0};
  be->hook = [&](std::span<BackendRead> reads) {
    if (list_offs.count(reads[0].offset) != 0) {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return release; });
      return;
    }
    for (const auto& r : reads) {
      other_bytes += r.out.size();
    }
  };
  c->prefetch_chunks(*blob, listed);
  wait_until([&] { return be->calls.load() >= BlobCache::kPrefetchListWorkers; });
  ASSERT_TRUE((*blob)->fill(b.chunks[21].uncompressed_offset, 1));
  EXPECT_EQ(other_bytes.load(), b.chunks[21].compressed_size);  // chunk 21 alone
  {
    std::lock_guard lk(mu);
    release = true;
  }
  cv.notify_all();
  wait_until([&] { return (*blob)->ready_chunks() >= listed.size() + 1; });
  EXPECT_EQ((*blob)->ready_chunks(), listed.size() + 1);
  // The list is done: fills widen again.
  ASSERT_TRUE((*blob)->fill(b.chunks[30].uncompressed_offset, 1));
  EXPECT_GT((*blob)->ready_chunks(), listed.size() + 2);
}

// Read amplification: a miss fetches the chunks after it up to amplify_io uncompressed
// bytes, in one merged range read, and each of them lands in the cache verified.
TEST_F(BlobCacheTest, AmplifiedFillIsOneMergedRead) {
  TestBlob b = make_blob(sizes(60, 50000));  // 4 KiB aligned: one every 52 KiB
  put(b);
  auto c = amplified(1U << 20);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  ASSERT_TRUE((*blob)->fill(b.chunks[5].uncompressed_offset + 100, 1));
  EXPECT_EQ(be->calls.load(), 1U);
  EXPECT_EQ(be->ranges.load(), 1U);  // one Range request, not one per batch
  // Chunks 5.. whose end is within 1 MiB of chunk 5's start: k * 53248 + 50000 <= 1 MiB
  // for k = 0 .. 18, so 19 chunks.
  const std::uint64_t base_off = b.chunks[5].uncompressed_offset;
  std::uint32_t end = 5;
  while (end < b.chunks.size() &&
         b.chunks[end].uncompressed_offset + b.chunks[end].uncompressed_size - base_off <=
             (1U << 20)) {
    ++end;
  }
  EXPECT_EQ(end, 24U);
  EXPECT_EQ((*blob)->ready_chunks(), end - 5);
  std::uint64_t want_bytes = 0;
  for (std::uint32_t ci = 5; ci < end; ++ci) {
    want_bytes += b.chunks[ci].compressed_size;
    expect_chunk(**blob, b, ci);
  }
  EXPECT_EQ(be->bytes.load(), want_bytes);
  EXPECT_TRUE(
      is_hole((*blob)->fd(), b.chunks[end].uncompressed_offset, b.chunks[end].uncompressed_size));
  EXPECT_TRUE(is_hole((*blob)->fd(), 0, b.chunks[5].uncompressed_offset));
  // Reads of the neighbours are hits now: no round trip of their own.
  be->reset();
  for (std::uint32_t ci = 6; ci < end; ++ci) {
    ASSERT_TRUE((*blob)->fill(b.chunks[ci].uncompressed_offset, 4096));
  }
  EXPECT_EQ(be->calls.load(), 0U);
  EXPECT_EQ(c->metrics().backend_requests.load(), 2U);  // the meta, the one fill
}

TEST_F(BlobCacheTest, AmplifiedFillFetchesOnlyWhatIsAbsent) {
  TestBlob b = make_blob(sizes(30, 50000));
  put(b);
  auto c = amplified(1U << 20);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  // Chunk 8 first (its own window of 19 chunks: 8..26), then 2: its window 2..20 has
  // 8..20 present, so only 2..7 are fetched, one read.
  ASSERT_TRUE((*blob)->fill(b.chunks[8].uncompressed_offset, 1));
  EXPECT_EQ((*blob)->ready_chunks(), 19U);
  be->reset();
  ASSERT_TRUE((*blob)->fill(b.chunks[2].uncompressed_offset, 1));
  EXPECT_EQ(be->ranges.load(), 1U);
  std::uint64_t want = 0;
  for (std::uint32_t ci = 2; ci < 8; ++ci) {
    want += b.chunks[ci].compressed_size;
  }
  EXPECT_EQ(be->bytes.load(), want);
  for (std::uint32_t ci = 2; ci < 27; ++ci) {
    expect_chunk(**blob, b, ci);
  }
  // 0 and 1 were never asked for, nor 27..29 reached by a window.
  EXPECT_EQ((*blob)->ready_chunks(), 25U);
}

// A chunk inside the amplified range that fails its digest: the reader of another chunk
// gets its bytes; the bad chunk is refetched once, and if wrong again it stays absent
// (EBADMSG for its own reader), never written.
TEST_F(BlobCacheTest, CorruptChunkInsideAnAmplifiedRange) {
  TestBlob b = make_blob(sizes(30, 50000));
  put(b);
  auto c = amplified(1U << 20);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->corrupt_at = b.chunks[9].compressed_offset + b.chunks[9].compressed_size / 2;
  be->corrupt_left = -1;  // every response: the refetch is wrong too
  ASSERT_TRUE((*blob)->fill(b.chunks[4].uncompressed_offset, 1));
  expect_chunk(**blob, b, 4);
  EXPECT_FALSE((*blob)->ready(b.chunks[9].uncompressed_offset, 1));
  EXPECT_TRUE(
      is_hole((*blob)->fd(), b.chunks[9].uncompressed_offset, b.chunks[9].uncompressed_size));
  for (std::uint32_t ci = 5; ci < 23; ++ci) {  // the window: 4..22
    if (ci != 9) {
      expect_chunk(**blob, b, ci);
    }
  }
  EXPECT_EQ(c->metrics().refetches.load(), 1U);
  EXPECT_EQ(c->metrics().refetch_successes.load(), 0U);
  auto st = (*blob)->fill(b.chunks[9].uncompressed_offset, 1);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EBADMSG);
  EXPECT_TRUE(
      is_hole((*blob)->fd(), b.chunks[9].uncompressed_offset, b.chunks[9].uncompressed_size));
  // The damage goes (a flaky proxy): the next read of chunk 9 gets it right.
  be->corrupt_at = UINT64_MAX;
  ASSERT_TRUE((*blob)->fill(b.chunks[9].uncompressed_offset, 1));
  expect_chunk(**blob, b, 9);
}

TEST_F(BlobCacheTest, CorruptChunkInsideAnAmplifiedRangeRefetchedRight) {
  TestBlob b = make_blob(sizes(30, 50000));
  put(b);
  auto c = amplified(1U << 20);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->corrupt_at = b.chunks[12].compressed_offset + 3;
  be->corrupt_left = 1;  // the first response only
  be->reset();
  ASSERT_TRUE((*blob)->fill(b.chunks[4].uncompressed_offset, 1));
  EXPECT_EQ(be->ranges.load(), 2U);  // the window, then chunk 12 alone
  EXPECT_EQ(c->metrics().refetch_successes.load(), 1U);
  for (std::uint32_t ci = 4; ci < 23; ++ci) {
    expect_chunk(**blob, b, ci);
  }
}

// A file's readahead is a guess like the widening: pending, it does not stop fills from
// widening (a prefetch list does: FillDoesNotWidenWhileAListIsPending).
TEST_F(BlobCacheTest, FillWidensWhileAReadaheadIsPending) {
  TestBlob b = make_blob(sizes(40, 50000));
  put(b);
  auto c = amplified(1U << 20);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  const std::vector<std::uint32_t> ahead = {0, 1, 2, 3, 4, 5, 6, 7};
  std::set<std::uint64_t> ahead_offs;
  for (std::uint32_t ci : ahead) {
    ahead_offs.insert(b.chunks[ci].compressed_offset);
  }
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  be->hook = [&](std::span<BackendRead> reads) {
    if (ahead_offs.count(reads[0].offset) != 0) {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return release; });
    }
  };
  c->prefetch_chunks(*blob, ahead, /*readahead=*/true);
  wait_until([&] { return be->calls.load() >= 1; });
  ASSERT_TRUE((*blob)->fill(b.chunks[15].uncompressed_offset, 1));
  EXPECT_GT((*blob)->ready_chunks(), 10U);  // 15..33, the window
  {
    std::lock_guard lk(mu);
    release = true;
  }
  cv.notify_all();
  wait_until([&] { return (*blob)->ready(0, b.chunks[8].uncompressed_offset); });
  for (std::uint32_t ci = 0; ci < 34; ++ci) {
    if (ci < 8 || ci >= 15) {
      expect_chunk(**blob, b, ci);
    }
  }
}

// Records first demands; may queue a prefetch of the next chunk from inside the call.
class RecordingListener final : public DemandListener {
 public:
  void first_demand(std::uint32_t ci) override {
    std::lock_guard lk(mu);
    seen.push_back(ci);
    if (then) {
      then(ci);
    }
  }
  std::mutex mu;
  std::vector<std::uint32_t> seen;
  std::function<void(std::uint32_t)> then;
};

TEST_F(BlobCacheTest, DemandListenerHearsEachFirstDemandOnce) {
  TestBlob b = make_blob(sizes(8, 65536));
  put(b);
  auto c = cache(128 * 1024);
  auto blob = c->open(b.info, b.records, backend());
  ASSERT_TRUE(blob);
  auto l = std::make_shared<RecordingListener>();
  (*blob)->add_demand_listener(l);
  ASSERT_TRUE((*blob)->fill(b.chunks[2].uncompressed_offset, 1));            // widens over 3 too
  EXPECT_TRUE((*blob)->ready(b.chunks[3].uncompressed_offset, 1));           // a hit, first demand
  ASSERT_TRUE((*blob)->fill(b.chunks[2].uncompressed_offset, 10));           // not a first demand
  EXPECT_FALSE((*blob)->ready(b.chunks[5].uncompressed_offset, 2 * 65536));  // 5 and 6
  EXPECT_EQ(l->seen, (std::vector<std::uint32_t>{2, 3, 5, 6}));
  // Gone with its owner: no call, no crash.
  l.reset();
  ASSERT_TRUE((*blob)->fill(b.chunks[7].uncompressed_offset, 1));
}

TEST_F(BlobCacheTest, DemandListenerMayQueueAPrefetch) {
  TestBlob b = make_blob(sizes(8, 65536));
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  auto l = std::make_shared<RecordingListener>();
  // Like a file readahead: the first demand of chunk 0 queues chunks 4..7. The call
  // comes with no lock of the blob held, so queueing (and the fetch) cannot deadlock.
  l->then = [&](std::uint32_t ci) {
    if (ci == 0) {
      c->prefetch_chunks(*blob, {4, 5, 6, 7}, /*readahead=*/true);
    }
  };
  (*blob)->add_demand_listener(l);
  ASSERT_TRUE((*blob)->fill(0, 1));
  wait_until([&] { return (*blob)->ready_chunks() >= 5; });
  for (std::uint32_t ci : {0, 4, 5, 6, 7}) {
    expect_chunk(**blob, b, ci);
  }
  // The readahead's bytes count as such (the fill's widening covers 0 and 1 only).
  EXPECT_EQ(c->metrics().readahead_bytes.load(), 4U * 65536);
  EXPECT_EQ(c->metrics().prefetch_list_bytes.load(), 0U);
}

TEST_F(BlobCacheTest, PrefetchListStartsNoReadWhileTheBackendTimesOut) {
  TestBlob b = make_blob(sizes(8, 65536));
  put(b);
  auto clock = std::make_shared<ManualClock>();
  auto c = cache(128 * 1024, 0, std::chrono::milliseconds(100), clock);
  auto be = backend();
  be->clock = clock;
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  be->stall = true;
  ASSERT_FALSE((*blob)->fill(0, 1));  // timed out: the backend is stalling
  ASSERT_EQ(be->calls.load(), 1U);
  c->prefetch_chunks(*blob, {4, 5, 6}, /*readahead=*/true);
  // An absence can only be checked over a window: give the list workers 200 ms.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(be->calls.load(), 1U);  // left to on-demand fills
  be->stall = false;
  clock->advance(cache::kFailHold);  // the hold is over
  ASSERT_TRUE((*blob)->fill(b.chunks[5].uncompressed_offset, 1));
  expect_chunk(**blob, b, 5);
}

TEST_F(BlobCacheTest, PrefetchRespectsTheCap) {
  TestBlob b = make_blob(sizes(64, 65536));  // compressed total well over the cap below
  put(b);
  const std::uint64_t rate = 64 * 1024;  // bytes/s
  const std::uint64_t batch = 128 * 1024;
  auto be = backend();
  std::uint64_t fetched = 0;
  double secs = 0;
  {
    auto clock = std::make_shared<ManualClock>();
    auto c = cache(batch, rate, {}, clock);
    auto blob = c->open(b.info, b.records, be);
    ASSERT_TRUE(blob);
    be->reset();
    c->prefetch(*blob);
    // Each time the prefetcher waits for tokens, what it fetched so far is within
    // the cap; then half a second passes.
    for (int i = 0; i < 4; ++i) {
      clock->wait_for_sleeper();
      fetched = be->bytes.load();
      // At most the bucket's capacity (one batch) plus rate * elapsed plus one batch
      // in flight.
      EXPECT_LE(static_cast<double>(fetched), static_cast<double>(rate) * secs + 2.0 * batch);
      clock->advance(std::chrono::milliseconds(500));
      secs += 0.5;
    }
    clock->wait_for_sleeper();
    fetched = be->bytes.load();
    // Destroying the cache stops the prefetcher promptly, mid-wait.
  }
  EXPECT_GT(fetched, 0U);
  // At most the bucket's capacity (one batch) plus rate * elapsed plus one batch in
  // flight.
  EXPECT_LE(static_cast<double>(fetched), static_cast<double>(rate) * secs + 2.0 * batch);
  std::uint64_t total = 0;
  for (const auto& ch : b.chunks) {
    total += ch.compressed_size;
  }
  EXPECT_LT(fetched, total);
}

TEST_F(BlobCacheTest, PrefetchYieldsToOnDemandFills) {
  TestBlob b = make_blob(sizes(32, 65536));
  put(b);
  auto c = cache(128 * 1024, 1ULL << 40);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  be->reset();
  // The on-demand fill's read is held; meanwhile prefetch is queued.
  HeldFill fill(*be, **blob, b, 30);
  c->prefetch(*blob);
  EXPECT_EQ(fill.reads_after(std::chrono::milliseconds(200)), 0U);
  fill.release();
  wait_until([&] { return (*blob)->ready_chunks() >= 32; });
  EXPECT_EQ((*blob)->ready_chunks(), 32U);
}

TEST_F(BlobCacheTest, MetricsCountHitsAndMisses) {
  TestBlob b = make_blob(sizes(4, 65536));
  put(b);
  auto c = cache(128 * 1024);
  auto blob = c->open(b.info, b.records, backend());
  ASSERT_TRUE(blob);
  ASSERT_TRUE((*blob)->fill(0, 1));
  ASSERT_TRUE((*blob)->fill(65536, 1));
  ASSERT_TRUE((*blob)->fill(3 * 65536, 1));
  auto& m = c->metrics();
  EXPECT_EQ(m.fill_requests.load(), 3U);
  EXPECT_EQ(m.hits.load(), 1U);
  EXPECT_EQ(m.misses.load(), 2U);
  EXPECT_EQ(m.backend_requests.load(), 3U);  // meta + two fills
  std::uint64_t lat = 0;
  for (const auto bucket : m.fill_latency_us_buckets()) {
    lat += bucket;
  }
  EXPECT_EQ(lat, 3U);
  EXPECT_EQ(m.fill_latency.snapshot().count, 3U);
}

TEST_F(BlobCacheTest, OnCompleteRunsOnceWhenTheLastChunkFills) {
  TestBlob b = make_blob(sizes(4, 65536));
  put(b);
  auto c = cache(128 * 1024);
  auto blob = c->open(b.info, b.records, backend());
  ASSERT_TRUE(blob);
  EXPECT_FALSE((*blob)->complete());
  std::atomic<int> calls{0};
  bool all_ready_in_callback = false;
  ASSERT_TRUE((*blob)->on_complete([&] {
    // Published before the callback: a front end may stop asking for fills here.
    all_ready_in_callback = (*blob)->ready(0, (*blob)->size());
    calls++;
  }));
  ASSERT_TRUE((*blob)->fill(0, 1));  // chunks 0, 1
  EXPECT_EQ(calls.load(), 0);
  EXPECT_FALSE((*blob)->complete());
  ASSERT_TRUE((*blob)->fill(2 * 65536, 1));  // chunks 2, 3: the last ones
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE(all_ready_in_callback);
  EXPECT_TRUE((*blob)->complete());
  ASSERT_TRUE((*blob)->fill(0, (*blob)->size()));  // a hit: no second call
  EXPECT_EQ(calls.load(), 1);
  // Complete already: refused, never called.
  EXPECT_FALSE((*blob)->on_complete([&] { calls += 100; }));
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(BlobCacheTest, OnCompleteWaitsForAFailedChunk) {
  TestBlob b = make_blob(sizes(2, 65536));
  put(b);
  auto c = cache(128 * 1024);
  auto be = backend();
  auto blob = c->open(b.info, b.records, be);
  ASSERT_TRUE(blob);
  std::atomic<int> calls{0};
  ASSERT_TRUE((*blob)->on_complete([&] { calls++; }));
  be->corrupt_at = b.chunks[1].compressed_offset;
  EXPECT_FALSE((*blob)->fill(0, (*blob)->size()));
  EXPECT_EQ(calls.load(), 0);  // chunk 1 is still absent
  EXPECT_FALSE((*blob)->complete());
  be->corrupt_at = UINT64_MAX;
  ASSERT_TRUE((*blob)->fill(65536, 1));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE((*blob)->complete());
}

TEST_F(BlobCacheTest, OnCompleteAfterRestartAndByPrefetch) {
  TestBlob b = make_blob(sizes(24, 50000));
  put(b);
  {
    auto c = cache(128 * 1024);
    auto blob = c->open(b.info, b.records, backend());
    ASSERT_TRUE(blob);
    ASSERT_TRUE((*blob)->fill(0, 1));
  }
  // Reopened incomplete: the prefetcher completes it and runs the callback.
  std::atomic<int> calls{0};
  {
    auto c = cache(128 * 1024, 1ULL << 40);
    auto blob = c->open(b.info, b.records, backend());
    ASSERT_TRUE(blob);
    ASSERT_FALSE((*blob)->complete());
    ASSERT_TRUE((*blob)->on_complete([&] { calls++; }));
    c->prefetch(*blob);
    wait_until([&] { return calls.load() != 0; });
    EXPECT_EQ(calls.load(), 1);
    EXPECT_EQ((*blob)->ready_chunks(), 24U);
  }
  // Reopened complete (rebuilt from the file's extents): nothing left to wait for.
  auto c = cache(128 * 1024);
  auto blob = c->open(b.info, b.records, backend());
  ASSERT_TRUE(blob);
  EXPECT_TRUE((*blob)->complete());
  EXPECT_FALSE((*blob)->on_complete([&] { calls++; }));
  EXPECT_EQ(calls.load(), 1);
}

TEST(LocalFsBackend, Errors) {
  TempDir d;
  EXPECT_FALSE(make_localfs_backend(d.path() + "/nope"));
  auto be = make_localfs_backend(d.path());
  ASSERT_TRUE(be);
  std::vector<std::byte> buf(10);
  BackendRead r;
  r.out = buf;
  (*be)->read("missing", std::span<BackendRead>(&r, 1));
  ASSERT_FALSE(r.result);
  EXPECT_EQ(r.result.error().code, ENOENT);
  std::vector<std::byte> five(5, std::byte{1});
  ASSERT_TRUE(base::write_file_atomic(d.path() + "/short", five));
  r.result = {};
  (*be)->read("short", std::span<BackendRead>(&r, 1));
  ASSERT_FALSE(r.result);
  EXPECT_EQ(r.result.error().code, EIO);
  r.result = {};
  (*be)->read("../short", std::span<BackendRead>(&r, 1));
  EXPECT_FALSE(r.result);
  BackendRead ok;
  ok.out = base::MutableBytes(buf.data(), 5);
  (*be)->read("short", std::span<BackendRead>(&ok, 1));
  EXPECT_TRUE(ok.result);
}

TEST(BlobCacheFixture, UpstreamBlob) {
  const std::string dir = std::string(CFN_FIXTURES_DIR) + "/nydus-v2.4.4";
  CFN_REQUIRE_FIXTURE(dir + "/rafs-v6-2.2.boot");
  auto boot = base::read_file(dir + "/rafs-v6-2.2.boot");
  ASSERT_TRUE(boot);
  auto img = erofs::Image::parse(*boot);
  ASSERT_TRUE(img) << img.error().to_string();
  auto table = img->chunk_table();
  ASSERT_TRUE(table);
  ASSERT_EQ(img->blobs().size(), 1U);
  TempDir cache_dir;
  CacheOptions o;
  o.cache_dir = cache_dir.path();
  auto c = BlobCache::create(o);
  ASSERT_TRUE(c);
  auto l = make_localfs_backend(dir + "/blobs");
  ASSERT_TRUE(l);
  auto blob = (*c)->open(img->blobs()[0], *table, std::shared_ptr<Backend>(std::move(*l)));
  ASSERT_TRUE(blob) << blob.error().to_string();
  EXPECT_EQ((*blob)->chunk_count(), 2U);
  // /lib.rs through its extents, read from the cache file after filling them.
  auto nid = img->lookup_path("/lib.rs");
  ASSERT_TRUE(nid);
  auto extents = img->map(*nid, 0, 16931);
  ASSERT_TRUE(extents);
  std::string data;
  for (const auto& e : *extents) {
    ASSERT_EQ(e.kind, erofs::Extent::Kind::kBlob);
    ASSERT_TRUE((*blob)->fill(e.offset, e.length));
    std::string part(e.length, '\0');
    ASSERT_TRUE(base::pread_full(
        (*blob)->fd(), base::MutableBytes(reinterpret_cast<std::byte*>(part.data()), part.size()),
        e.offset));
    data += part;
  }
  EXPECT_EQ(base::hex(base::sha256(base::as_bytes(data))),
            "1810eba864521293bb0d6b55a3c82318d4d89f294ed761c456d9088a17de0c69");
  EXPECT_EQ((*blob)->ready_chunks(), 2U);  // widened to the whole (tiny) blob
}

// The cache file's writes through a seam: each pwrite may fail with ENOSPC after
// writing half its bytes (a disk filling up mid-write), and the hole punch that takes
// a failed chunk back may fail too.
class FaultyIo final : public cache::CacheFileIo {
 public:
  base::Status pwrite(int fd, base::Bytes data, std::uint64_t off) override {
    const int n = writes++;
    if (n == fail_write) {
      (void)base::pwrite_full(fd, data.first(data.size() / 2), off);
      return base::make_error(ENOSPC, "injected: no space left");
    }
    return base::pwrite_full(fd, data, off);
  }
  base::Status punch_hole(int fd, std::uint64_t off, std::uint64_t len) override {
    ++punches;
    if (fail_punch) {
      return base::make_error(EOPNOTSUPP, "injected: no hole punch");
    }
    return cache::system_cache_file_io()->punch_hole(fd, off, len);
  }
  std::atomic<int> writes{0};
  std::atomic<int> fail_write{-1};  // the index of the pwrite that fails
  std::atomic<bool> fail_punch{false};
  std::atomic<int> punches{0};
};

// A full disk: the chunk whose write fails is not data (its range is punched back to
// a hole), the fill fails with EIO, the other chunks of the round are kept, and the
// next fill writes the chunk once the disk has room. Chunks are written rest first,
// head block last: both the rest's and the head's write fail here in turn.
TEST_F(BlobCacheTest, FailedWriteLeavesNoPartialChunk) {
  TestBlob b = make_blob(sizes(4, 65536));
  put(b);
  for (int failing : {0, 1}) {  // the rest's write, then the head's
    SCOPED_TRACE(failing == 0 ? "rest" : "head");
    TempDir dir;
    auto io = std::make_shared<FaultyIo>();
    CacheOptions o;
    o.cache_dir = dir.path();
    o.batch_size = 128 * 1024;
    o.file_io = io;
    auto c = BlobCache::create(o);
    ASSERT_TRUE(c);
    auto blob = (*c)->open(b.info, b.records, backend());
    ASSERT_TRUE(blob);
    io->fail_write = failing;  // chunk 0's first or second write
    const std::uint64_t off0 = b.chunks[0].uncompressed_offset;
    auto st = (*blob)->fill(off0, 1);  // chunks 0 and 1
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code, EIO) << st.error().to_string();
    EXPECT_NE(st.error().message.find("no space left"), std::string::npos) << st.error().message;
    EXPECT_EQ(io->punches.load(), 1);
    EXPECT_FALSE((*blob)->ready(off0, 1));
    EXPECT_TRUE(is_hole((*blob)->fd(), off0, b.chunks[0].uncompressed_size));
    EXPECT_TRUE((*blob)->ready(b.chunks[1].uncompressed_offset, 1));
    expect_chunk(**blob, b, 1);
    ASSERT_TRUE((*blob)->fill(off0, 1));  // room again
    expect_chunk(**blob, b, 0);
  }
}

// The hole punch fails too: the chunk stays absent (the head block, written last, was
// never written, so a restart does not take the rest for the chunk), the fill fails
// with EIO, and the next fill rewrites the whole chunk, before and after a restart.
TEST_F(BlobCacheTest, FailedWriteAndFailedPunchStayAbsent) {
  TestBlob b = make_blob(sizes(4, 65536));
  put(b);
  const std::uint64_t off0 = b.chunks[0].uncompressed_offset;
  {
    auto io = std::make_shared<FaultyIo>();
    io->fail_write = 0;  // the rest of chunk 0: half of it is written
    io->fail_punch = true;
    CacheOptions o;
    o.cache_dir = cache_dir_;
    o.batch_size = 128 * 1024;
    o.file_io = io;
    auto c = BlobCache::create(o);
    ASSERT_TRUE(c);
    auto blob = (*c)->open(b.info, b.records, backend());
    ASSERT_TRUE(blob);
    auto st = (*blob)->fill(off0, 1);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code, EIO) << st.error().to_string();
    EXPECT_EQ(io->punches.load(), 1);
    EXPECT_FALSE((*blob)->ready(off0, 1));
    EXPECT_FALSE(is_hole((*blob)->fd(), off0, b.chunks[0].uncompressed_size));  // the half
    EXPECT_TRUE(is_hole((*blob)->fd(), off0, 4096));  // but not the head block
    EXPECT_EQ((*blob)->ready_chunks(), 1U);           // chunk 1
  }
  {
    // A restart: chunk 0 is absent, 1 present; a fill rewrites 0 whole.
    auto c = cache(128 * 1024);
    auto be = backend();
    auto blob = c->open(b.info, b.records, be);
    ASSERT_TRUE(blob);
    EXPECT_EQ((*blob)->ready_chunks(), 1U);
    EXPECT_FALSE((*blob)->ready(off0, 1));
    ASSERT_TRUE((*blob)->fill(off0, 1));
    expect_chunk(**blob, b, 0);
    expect_chunk(**blob, b, 1);
  }
}

// ---- space: accounting, LRU, watermarks, in-use protection ----

class SpaceTest : public BlobCacheTest {
 protected:
  // A cache with a limit and a wall clock that ticks once per call (LRU order without
  // the clock's resolution); background: the space thread runs.
  std::unique_ptr<BlobCache> space_cache(
      std::uint64_t limit, bool background = false,
      std::shared_ptr<cache::CacheFileIo> io = nullptr,
      std::chrono::seconds orphan_grace = std::chrono::seconds(600), bool real_wall = false) {
    CacheOptions o;
    o.cache_dir = cache_dir_;
    o.batch_size = 128 * 1024;
    o.file_io = std::move(io);
    o.space.limit = limit;
    o.space.background = background;
    o.space.gc_interval = std::chrono::seconds(3600);  // only the write trigger wakes it
    o.space.orphan_grace = orphan_grace;
    if (!real_wall) {
      o.wall_clock = [t = wall_] { return t->fetch_add(1000) + 1000; };
    }
    auto c = BlobCache::create(o);
    EXPECT_TRUE(c) << c.error().to_string();
    return std::move(*c);
  }
  // Open b and fill all of it; returns the blob (the caller drops it to make it unused).
  std::shared_ptr<CachedBlob> filled(BlobCache& c, const TestBlob& b) {
    auto blob = c.open(b.info, b.records, backend());
    EXPECT_TRUE(blob) << blob.error().to_string();
    if (!blob) {
      return nullptr;
    }
    auto st = (*blob)->fill(0, (*blob)->size());
    EXPECT_TRUE(st) << st.error().to_string();
    return *blob;
  }
  static std::map<std::string, cache::SpaceEntry> by_id(BlobCache& c) {
    std::map<std::string, cache::SpaceEntry> out;
    for (auto& e : c.entries()) {
      out.emplace(e.id, e);
    }
    return out;
  }
  bool exists(const std::string& name) const {
    return std::filesystem::exists(cache_dir_ + "/" + name);
  }
  std::shared_ptr<std::atomic<std::int64_t>> wall_ = std::make_shared<std::atomic<std::int64_t>>(0);
};

// Entries count allocated blocks of .blob and .meta; the sparse blob counts what was
// filled, not its size.
TEST_F(SpaceTest, AccountingCountsAllocatedBlocks) {
  TestBlob b = make_blob(sizes(16, 65536), 1);
  put(b);
  auto c = space_cache(0);
  auto blob = c->open(b.info, b.records, backend());
  ASSERT_TRUE(blob);
  auto e = by_id(*c).at("blob1");
  const std::uint64_t empty = e.bytes;
  EXPECT_EQ(empty, cache::allocated_bytes(cache_dir_ + "/blob1.meta"));  // the blob: holes
  EXPECT_TRUE(e.in_use);                                                 // the test holds it
  ASSERT_TRUE((*blob)->fill(0, 65536));                                  // one batch: 2 chunks
  e = by_id(*c).at("blob1");
  EXPECT_EQ(e.bytes, cache::allocated_bytes(cache_dir_ + "/blob1.blob") +
                         cache::allocated_bytes(cache_dir_ + "/blob1.meta"));
  EXPECT_GE(e.bytes - empty, 2U * 65536);
  EXPECT_LT(e.bytes - empty, b.info.uncompressed_size);
  EXPECT_EQ(c->metrics().cache_bytes.load(), e.bytes);
  blob->reset();
  EXPECT_FALSE(by_id(*c).at("blob1").in_use);
}

// gc evicts unused blobs least recently used first, down to the low watermark; the
// blob in use stays whatever its age; files go, and a later open fetches again.
TEST_F(SpaceTest, EvictsLeastRecentlyUsedFirstNeverInUse) {
  std::vector<TestBlob> bs;
  for (std::uint32_t i = 1; i <= 5; ++i) {
    bs.push_back(make_blob(sizes(4, 65536), i));
    put(bs.back());
  }
  auto c = space_cache(0);
  std::vector<std::shared_ptr<CachedBlob>> held;
  for (auto& b : bs) {
    held.push_back(filled(*c, b));
  }
  // Use order: 3, 1, 5, 4 (2 is oldest but stays held: in use).
  for (int i : {3, 1, 5, 4}) {
    EXPECT_TRUE(held[i - 1]->ready(0, 1));
  }
  for (int i : {1, 3, 4, 5}) {
    held[i - 1].reset();
  }
  const auto es = by_id(*c);
  const std::uint64_t one = es.at("blob3").bytes;
  std::uint64_t total = 0;
  for (auto& [id, e] : es) {
    total += e.bytes;
  }
  auto dry = c->gc(true);  // no limit: every unused one would go, in LRU order
  EXPECT_TRUE(dry.dry_run);
  EXPECT_EQ(dry.evicted, std::vector<std::string>({"blob3", "blob1", "blob5", "blob4"}));
  EXPECT_TRUE(exists("blob3.blob"));  // a dry run removes nothing
  c.reset();
  held.clear();

  // The same cache dir with a limit whose low watermark (70%) keeps all but a blob or
  // two: the accounting is rebuilt from disk; real time now (last use after a restart
  // is the files' mtime).
  auto c2 = space_cache((total - one) * 100 / 70 - 1, false, nullptr, std::chrono::seconds(600),
                        /*real_wall=*/true);
  auto kept = c2->open(bs[1].info, bs[1].records, backend());  // blob2 in use again
  ASSERT_TRUE(kept);
  // After the restart last use is the files' mtime, so LRU is fill order (1, 3, 4, 5);
  // touch 1 to make 3 the oldest.
  {
    auto b1 = c2->open(bs[0].info, bs[0].records, backend());
    ASSERT_TRUE(b1);
    EXPECT_TRUE((*b1)->ready(0, 1));
  }
  auto r = c2->gc(false);
  EXPECT_FALSE(r.dry_run);
  EXPECT_EQ(r.bytes_before, total);
  ASSERT_GE(r.evicted.size(), 1U);
  EXPECT_EQ(r.evicted[0], "blob3");
  for (const auto& id : r.evicted) {
    EXPECT_NE(id, "blob2");
    EXPECT_FALSE(exists(id + ".blob")) << id;
    EXPECT_FALSE(exists(id + ".meta")) << id;
  }
  EXPECT_LE(r.bytes_after, r.watermarks.low);
  EXPECT_TRUE(exists("blob2.blob"));
  EXPECT_EQ(c2->metrics().evictions.load(), r.evicted.size());
  EXPECT_EQ(c2->metrics().evicted_bytes.load(), r.evicted_bytes);
  // rm: refused while in use, unknown is ENOENT.
  auto st = c2->remove("blob2");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EBUSY);
  st = c2->remove("nope");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ENOENT);
  kept->reset();
  ASSERT_TRUE(c2->remove("blob2"));
  EXPECT_FALSE(exists("blob2.blob"));
  // An evicted blob opens again and reads right (fetched again).
  auto again = filled(*c2, bs[2]);
  ASSERT_TRUE(again);
  for (std::uint32_t ci = 0; ci < 4; ++ci) {
    expect_chunk(*again, bs[2], ci);
  }
}

// Below the high watermark nothing is evicted by the space thread; writes crossing it
// wake the thread, which evicts down to the low watermark.
TEST_F(SpaceTest, CrossingTheHighWatermarkEvictsToTheLowOne) {
  std::vector<TestBlob> bs;
  for (std::uint32_t i = 1; i <= 6; ++i) {
    bs.push_back(make_blob(sizes(4, 65536), i));
    put(bs.back());
  }
  // Measure one filled blob's bytes in a throwaway cache.
  std::uint64_t one = 0;
  {
    TempDir d;
    CacheOptions o;
    o.cache_dir = d.path();
    o.space.background = false;
    auto c = BlobCache::create(o);
    ASSERT_TRUE(c);
    auto b = filled(**c, bs[0]);
    b.reset();
    one = (*c)->entries().at(0).bytes;
  }
  ASSERT_GT(one, 0U);
  // high = 90% of the limit = 3.5 blobs; low = 70% = 2.7 blobs.
  const std::uint64_t limit = one * 35 / 9;
  auto c = space_cache(limit, /*background=*/true);
  for (int i = 0; i < 3; ++i) {
    filled(*c, bs[i]).reset();
  }
  EXPECT_EQ(c->metrics().evictions.load(), 0U);
  EXPECT_EQ(c->entries().size(), 3U);
  filled(*c, bs[3]).reset();  // 4 blobs > high: the thread wakes
  wait_until([&] { return c->metrics().evictions.load() >= 2; });
  EXPECT_EQ(c->metrics().evictions.load(), 2U);
  EXPECT_FALSE(exists("blob1.blob"));  // the two least recently used
  EXPECT_FALSE(exists("blob2.blob"));
  EXPECT_TRUE(exists("blob3.blob"));
  EXPECT_TRUE(exists("blob4.blob"));
  EXPECT_LE(c->metrics().cache_bytes.load(), limit * 70 / 100);
  EXPECT_EQ(c->metrics().cache_limit.load(), limit);
}

// Only blobs in use above the limit: nothing is evicted, the metric says by how much.
TEST_F(SpaceTest, OnlyUsedBlobsLeftIsReportedNotEvicted) {
  std::vector<TestBlob> bs;
  std::vector<std::shared_ptr<CachedBlob>> held;
  auto c = space_cache(4096);
  for (std::uint32_t i = 1; i <= 3; ++i) {
    bs.push_back(make_blob(sizes(2, 65536), i));
    put(bs.back());
    held.push_back(filled(*c, bs.back()));
  }
  auto r = c->gc(false);
  EXPECT_TRUE(r.evicted.empty());
  EXPECT_EQ(r.errors, 0U);
  EXPECT_GT(r.over, 0U);
  EXPECT_EQ(r.bytes_after, r.bytes_before);
  EXPECT_EQ(c->metrics().blobs_in_use.load(), 3U);
  for (auto& b : held) {
    EXPECT_TRUE(exists(b->info().id + ".blob"));
  }
}

// Pins (the service's bound images) protect entries the cache holds no reference of.
TEST_F(SpaceTest, PinnedEntriesStay) {
  TestBlob b = make_blob(sizes(2, 65536), 1);
  put(b);
  auto c = space_cache(0);
  filled(*c, b).reset();
  std::filesystem::create_directories(cache_dir_ + "/bootstraps");
  std::vector<std::byte> boot(5000, std::byte{7});
  ASSERT_TRUE(base::write_file_atomic(cache_dir_ + "/bootstraps/m.boot", boot, 0600));
  c->set_pins([] { return CachePins{{"blob1"}, /*all_bootstraps=*/true}; });
  auto r = c->gc(false);
  EXPECT_TRUE(r.evicted.empty());
  EXPECT_EQ(c->remove("blob1").error().code, EBUSY);
  EXPECT_EQ(c->remove("bootstraps/m.boot").error().code, EBUSY);
  c->set_pins([] { return CachePins{}; });
  r = c->gc(false);
  EXPECT_EQ(r.evicted.size(), 2U);
  EXPECT_FALSE(exists("bootstraps/m.boot"));
  EXPECT_FALSE(exists("blob1.blob"));
}

// The open fds of this process.
std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

// When its last holder lets go, a blob's file is closed (no fd per blob ever opened),
// it is unused with its last use kept, and a new open reads what was cached without
// fetching it again. A second holder, or the prefetcher, keeps it open.
TEST_F(SpaceTest, ReleasedBlobIsClosedAndReopened) {
  std::vector<TestBlob> bs;
  for (std::uint32_t i = 1; i <= 8; ++i) {
    bs.push_back(make_blob(sizes(4, 65536), i));
    put(bs.back());
  }
  auto c = space_cache(0);
  auto be = backend();
  // Warm up (the first open makes the cache dir; the backend opens its files lazily).
  filled(*c, bs[0]).reset();
  const std::size_t base_fds = open_fds();
  for (auto& b : bs) {
    auto blob = c->open(b.info, b.records, be);
    ASSERT_TRUE(blob);
    ASSERT_TRUE((*blob)->fill(0, 65536));
    EXPECT_TRUE((*blob)->ready(0, 1));
    EXPECT_EQ(open_fds(), base_fds + 1);
  }
  EXPECT_EQ(open_fds(), base_fds);  // every blob closed as its handle went
  auto es = by_id(*c);
  ASSERT_EQ(es.size(), bs.size());
  std::int64_t last = 0;
  for (std::uint32_t i = 1; i <= 8; ++i) {
    const auto& e = es.at("blob" + std::to_string(i));
    EXPECT_FALSE(e.in_use) << e.id;
    EXPECT_GT(e.last_use_ns, last) << e.id;  // the order they were used in, kept
    last = e.last_use_ns;
    EXPECT_GE(e.bytes, 65536U) << e.id;
  }
  // Reopened: what was filled is present, read without a fetch; the rest fetched.
  const std::uint64_t before = be->bytes.load();
  {
    auto blob = c->open(bs[3].info, bs[3].records, be);
    ASSERT_TRUE(blob);
    EXPECT_TRUE((*blob)->ready(0, 65536));
    EXPECT_EQ(be->bytes.load(), before);
    ASSERT_TRUE((*blob)->fill(0, (*blob)->size()));
    for (std::uint32_t ci = 0; ci < 4; ++ci) {
      expect_chunk(**blob, bs[3], ci);
    }
    // Two holders: one going keeps the file open for the other.
    auto second = c->open(bs[3].info, bs[3].records, be);
    ASSERT_TRUE(second);
    EXPECT_EQ(second->get(), blob->get());
    blob->reset();
    EXPECT_TRUE(by_id(*c).at("blob4").in_use);
    EXPECT_EQ(open_fds(), base_fds + 1);
    for (std::uint32_t ci = 0; ci < 4; ++ci) {
      expect_chunk(**second, bs[3], ci);
    }
  }
  EXPECT_EQ(open_fds(), base_fds);
  EXPECT_FALSE(by_id(*c).at("blob4").in_use);
  // Unused once closed: gc takes them all.
  auto r = c->gc(false);
  EXPECT_EQ(r.evicted.size(), bs.size());
  EXPECT_FALSE(exists("blob4.blob"));
  // A holder may outlive the cache.
  auto c2 = space_cache(0);
  auto kept = filled(*c2, bs[5]);
  ASSERT_TRUE(kept);
  c2.reset();
  expect_chunk(*kept, bs[5], 2);
  kept.reset();
  EXPECT_EQ(open_fds(), base_fds);
}

// A whole-blob prefetch goes on only while someone else holds the blob: the last
// holder letting go (its image unmounted) stops it, and the blob closes.
TEST_F(BlobCacheTest, PrefetchOfAReleasedBlobStops) {
  TestBlob b = make_blob(sizes(16, 65536), 1);
  put(b);
  // 64 KiB/s: the whole blob would take seconds, far more than the test needs.
  auto c = cache(128 * 1024, 64U << 10);
  std::weak_ptr<CachedBlob> weak;
  {
    auto blob = c->open(b.info, b.records, backend());
    ASSERT_TRUE(blob);
    c->prefetch(*blob);
    wait_until([&] { return c->metrics().prefetch_bytes.load() > 0; });
    ASSERT_GT(c->metrics().prefetch_bytes.load(), 0U);  // it started
    weak = *blob;
  }
  // The prefetcher may be inside a step: it lets go when the step ends.
  wait_until([&] { return weak.expired(); });
  EXPECT_TRUE(weak.expired());
  auto in_use = [&] {
    for (const auto& e : c->entries()) {
      if (e.in_use) {
        return true;
      }
    }
    return false;
  };
  wait_until([&] { return !in_use(); });
  EXPECT_FALSE(in_use());
  const std::uint64_t prefetched = c->metrics().prefetch_bytes.load();
  EXPECT_LT(prefetched, 16U * 65536);
  // Opened again: what the prefetch wrote is there and right; it did not go on.
  auto blob = c->open(b.info, b.records, backend());
  ASSERT_TRUE(blob);
  EXPECT_LT((*blob)->ready_chunks(), 16U);
  for (std::uint32_t ci = 0; ci < 16; ++ci) {
    if ((*blob)->ready(b.chunks[ci].uncompressed_offset, 1)) {
      expect_chunk(**blob, b, ci);
    }
  }
  EXPECT_EQ(c->metrics().prefetch_bytes.load(), prefetched);
}

// cachefiles' own files under <cache_dir>/fscache count with their blob (the cookie is
// the blob id) or as entries of their own (a bootstrap's fsid); without a culler they
// stay (in use); with one, gc culls them LRU first, an EBUSY answer keeps that entry
// whole and moves on, and a later rm takes it once the kernel lets go.
TEST_F(SpaceTest, KernelObjectsAreCountedAndCulledThroughTheCuller) {
  TestBlob a = make_blob(sizes(2, 65536), 1);
  a.info.id = std::string(64, 'a');
  put(a);
  const std::string bid(64, 'b');
  auto c = space_cache(0);
  filled(*c, a).reset();
  const std::string fs = cache_dir_ + "/fscache";
  const std::vector<std::byte> data(12288, std::byte{3});
  auto kfile = [&](const std::string& rel) {
    const auto p = std::filesystem::path(fs) / "cache" / rel;
    std::filesystem::create_directories(p.parent_path());
    EXPECT_TRUE(base::write_file_atomic(p.string(), data, 0600));
    return p.string();
  };
  const std::string ka1 = kfile("Ierofs,d1/@01/D" + a.info.id);
  const std::string ka2 = kfile("Ierofs,f2/@7f/D" + a.info.id);
  const std::string kboot = kfile("Ierofs,d1/@02/Dfsid1");
  const std::string kb = kfile("Ierofs,d1/@03/D" + bid);
  const std::uint64_t one = cache::allocated_bytes(kb);

  auto es = by_id(*c);
  ASSERT_EQ(es.size(), 3U);
  EXPECT_EQ(es.at(a.info.id).kernel_bytes, 2 * one);
  EXPECT_EQ(es.at(a.info.id).bytes,
            2 * one + cache::allocated_bytes(cache_dir_ + "/" + a.info.id + ".blob") +
                cache::allocated_bytes(cache_dir_ + "/" + a.info.id + ".meta"));
  EXPECT_EQ(es.at(bid).kernel_bytes, one);
  EXPECT_EQ(es.at("fscache/erofs,d1/fsid1").kind, cache::EntryKind::kFscache);
  EXPECT_EQ(c->metrics().fscache_bytes.load(), 4 * one);
  // No culler (no cachefiles session): the kernel's files are not ours to remove.
  for (const auto& [id, e] : es) {
    EXPECT_TRUE(e.in_use) << id;
  }
  auto r = c->gc(false);
  EXPECT_TRUE(r.evicted.empty());
  EXPECT_TRUE(std::filesystem::exists(ka1));

  std::set<std::string> busy = {"D" + bid};
  std::vector<std::string> culled;
  c->set_kernel_culler([&](const cache::FscacheObject& o) -> base::Status {
    if (busy.contains(o.name)) {
      return base::errorf(EBUSY, "{} in use", o.name);
    }
    culled.push_back(o.volume_dir + "/" + o.fan + "/" + o.name);
    EXPECT_EQ(::unlink((fs + "/cache/" + culled.back()).c_str()), 0);
    return {};
  });
  c->set_pins([] { return CachePins{{"fscache/erofs,d1/fsid1"}, false}; });
  EXPECT_EQ(c->remove("fscache/erofs,d1/fsid1").error().code, EBUSY);  // a bound image's
  c->set_pins([] { return CachePins{}; });
  r = c->gc(false);
  EXPECT_EQ(r.busy, 1U);
  EXPECT_EQ(r.errors, 1U);
  std::sort(r.evicted.begin(), r.evicted.end());
  EXPECT_EQ(r.evicted, std::vector<std::string>({a.info.id, "fscache/erofs,d1/fsid1"}));
  EXPECT_EQ(culled.size(), 3U);
  EXPECT_FALSE(std::filesystem::exists(ka1));
  EXPECT_FALSE(std::filesystem::exists(ka2));
  EXPECT_FALSE(std::filesystem::exists(kboot));
  EXPECT_FALSE(exists(a.info.id + ".blob"));
  EXPECT_FALSE(exists(a.info.id + ".meta"));
  EXPECT_TRUE(std::filesystem::exists(kb));  // the kernel still holds it
  EXPECT_EQ(c->metrics().fscache_culled.load(), 3U);
  EXPECT_EQ(c->metrics().fscache_busy.load(), 1U);
  es = by_id(*c);
  ASSERT_EQ(es.size(), 1U);
  EXPECT_EQ(es.at(bid).bytes, one);
  EXPECT_EQ(c->metrics().cache_bytes.load(), one);
  EXPECT_EQ(c->remove(bid).error().code, EBUSY);
  busy.clear();  // the kernel let go
  ASSERT_TRUE(c->remove(bid));
  EXPECT_FALSE(std::filesystem::exists(kb));
  EXPECT_TRUE(by_id(*c).empty());
  EXPECT_EQ(c->metrics().fscache_bytes.load(), 0U);
  // The object files go through the culler; the volume and fan directories left empty
  // go after (the kernel refuses, EBUSY, those of a volume it uses: VM test 37).
  EXPECT_FALSE(std::filesystem::exists(fs + "/cache/Ierofs,d1"));
  EXPECT_FALSE(std::filesystem::exists(fs + "/cache/Ierofs,f2"));
  EXPECT_GE(c->metrics().fscache_dirs_removed.load(), 4U);
  EXPECT_TRUE(std::filesystem::is_directory(fs + "/cache"));
}

// The kernel's unnamed objects (made in this mount: tmpfiles no scan sees) are counted at
// what the front end wrote into them, are in use while open, and are not counted twice
// once the kernel links them under their names.
TEST_F(SpaceTest, UnnamedKernelObjectsAreCountedWhileOpen) {
  auto c = space_cache(0);
  const std::string fs = cache_dir_ + "/fscache";
  const std::string bid(64, 'e');
  std::vector<cache::OpenKernelObject> open = {{"erofs,d1", bid, 65536},
                                               {"erofs,d1", "fsid1", 8192}};
  c->set_kernel_objects([&] { return open; });
  auto es = by_id(*c);
  ASSERT_EQ(es.size(), 2U);
  EXPECT_EQ(es.at(bid).bytes, 65536U);
  EXPECT_EQ(es.at(bid).unnamed_bytes, 65536U);
  EXPECT_TRUE(es.at(bid).in_use);
  EXPECT_TRUE(es.at("fscache/erofs,d1/fsid1").in_use);
  EXPECT_EQ(c->metrics().cache_bytes.load(), 65536U + 8192U);
  EXPECT_EQ(c->metrics().fscache_unnamed_bytes.load(), 65536U + 8192U);
  std::vector<std::string> culled;
  c->set_kernel_culler([&](const cache::FscacheObject& o) -> base::Status {
    culled.push_back(o.name);
    return {};
  });
  auto r = c->gc(false);
  EXPECT_TRUE(r.evicted.empty());  // open: in use
  EXPECT_TRUE(culled.empty());
  // The umount: the kernel links the bootstrap's object under its name and CLOSEs it.
  const std::vector<std::byte> data(8192, std::byte{1});
  const std::string kboot = fs + "/cache/Ierofs,d1/@02/Dfsid1";
  std::filesystem::create_directories(std::filesystem::path(kboot).parent_path());
  ASSERT_TRUE(base::write_file_atomic(kboot, data, 0600));
  open.pop_back();
  es = by_id(*c);
  EXPECT_EQ(es.at("fscache/erofs,d1/fsid1").unnamed_bytes, 0U);
  EXPECT_EQ(es.at("fscache/erofs,d1/fsid1").bytes, cache::allocated_bytes(kboot));
  EXPECT_FALSE(es.at("fscache/erofs,d1/fsid1").in_use);
  // Open again from its name (a second mount): counted once, by the file.
  open.push_back({"erofs,d1", "fsid1", 8192});
  es = by_id(*c);
  EXPECT_EQ(es.at("fscache/erofs,d1/fsid1").bytes, cache::allocated_bytes(kboot));
  EXPECT_EQ(c->metrics().fscache_unnamed_bytes.load(), 65536U);
  open.clear();
  es = by_id(*c);
  EXPECT_FALSE(es.contains(bid));  // closed without a name: nothing of it is left to count
}

// Orphans (a .meta whose .blob is gone, nothing opened) go after their grace period;
// files not ours, and what a symlink points at, stay.
TEST_F(SpaceTest, OrphansGoAfterTheGracePeriodNothingElse) {
  std::filesystem::create_directories(cache_dir_);
  std::vector<std::byte> bytes(3000, std::byte{1});
  ASSERT_TRUE(base::write_file_atomic(cache_dir_ + "/lost.meta", bytes, 0600));
  ASSERT_TRUE(base::write_file_atomic(cache_dir_ + "/notes.txt", bytes, 0600));
  TempDir outside;
  ASSERT_TRUE(base::write_file_atomic(outside.path() + "/x.meta", bytes, 0600));
  ASSERT_EQ(::symlink((outside.path() + "/x.meta").c_str(), (cache_dir_ + "/x.meta").c_str()), 0);
  {
    auto c = space_cache(0, /*background=*/true);  // grace 600 s: the orphan stays
    EXPECT_EQ(c->entries().size(), 1U);
  }
  EXPECT_TRUE(exists("lost.meta"));
  {
    auto c = space_cache(0, /*background=*/true, nullptr, std::chrono::seconds(0),
                         /*real_wall=*/true);  // the grace is measured against mtimes
    wait_until([&] { return c->metrics().evictions.load() >= 1; });
    EXPECT_EQ(c->metrics().evictions.load(), 1U);
  }
  EXPECT_FALSE(exists("lost.meta"));
  EXPECT_TRUE(exists("notes.txt"));
  EXPECT_TRUE(std::filesystem::is_symlink(cache_dir_ + "/x.meta"));
  EXPECT_TRUE(std::filesystem::exists(outside.path() + "/x.meta"));
}

// Fills of a held blob race gc passes, and opens/fills/drops of another blob race its
// eviction: held blobs are never evicted, every byte read is right, an open during an
// eviction waits for the files to go and starts afresh.
TEST_F(SpaceTest, ConcurrentFillAndEviction) {
  TestBlob a = make_blob(sizes(8, 65536), 1);
  TestBlob b = make_blob(sizes(8, 65536), 2);
  put(a);
  put(b);
  auto c = space_cache(0);
  auto held = c->open(a.info, a.records, backend());
  ASSERT_TRUE(held);
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::atomic<int> rounds{0};
  std::atomic<int> passes{0};
  std::thread gc([&] {
    while (!stop) {
      (void)c->gc(false);
      ++passes;
    }
  });
  std::thread churn([&] {
    for (int i = 0; i < 200; ++i) {
      auto blob = c->open(b.info, b.records, backend());
      if (!blob) {
        ++failures;
        continue;
      }
      const std::uint32_t ci = static_cast<std::uint32_t>(i % 8);
      if (!(*blob)->fill(b.chunks[ci].uncompressed_offset, 1)) {
        ++failures;
        continue;
      }
      std::vector<std::byte> got(b.chunks[ci].uncompressed_size);
      if (!base::pread_full((*blob)->fd(), got, b.chunks[ci].uncompressed_offset) ||
          got != b.plain[ci]) {
        ++failures;
      }
      ++rounds;
    }
  });
  for (int i = 0; i < 200; ++i) {
    const std::uint32_t ci = static_cast<std::uint32_t>(i % 8);
    ASSERT_TRUE((*held)->fill(a.chunks[ci].uncompressed_offset, 1));
  }
  churn.join();
  stop = true;
  gc.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(rounds.load(), 200);
  EXPECT_TRUE(exists("blob1.blob"));
  for (std::uint32_t ci = 0; ci < 8; ++ci) {
    expect_chunk(**held, a, ci);
  }
  EXPECT_GT(passes.load(), 0);
  // How often a pass caught blob2 unused during the churn is up to the scheduler; now
  // it is unused for sure: after one more pass it is gone (evicted by this pass or an
  // earlier one), the held blob stays.
  (void)c->gc(false);
  EXPECT_FALSE(exists("blob2.blob"));
  EXPECT_FALSE(exists("blob2.meta"));
  EXPECT_GT(c->metrics().evictions.load(), 0U);
  EXPECT_TRUE(exists("blob1.blob"));
}

// A full disk during a fill: the reader gets EIO (no partial chunk), the unused blobs
// are evicted at once, and the next read succeeds.
TEST_F(SpaceTest, NoSpaceEvictsUnusedAtOnce) {
  TestBlob old = make_blob(sizes(4, 65536), 1);
  TestBlob b = make_blob(sizes(4, 65536), 2);
  put(old);
  put(b);
  auto io = std::make_shared<FaultyIo>();
  auto c = space_cache(0, false, io);
  filled(*c, old).reset();
  auto blob = c->open(b.info, b.records, backend());
  ASSERT_TRUE(blob);
  io->fail_write = io->writes.load();  // the next write: ENOSPC
  const std::uint64_t off0 = b.chunks[0].uncompressed_offset;
  auto st = (*blob)->fill(off0, 1);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EIO);
  EXPECT_TRUE(is_hole((*blob)->fd(), off0, b.chunks[0].uncompressed_size));
  EXPECT_EQ(c->metrics().no_space_events.load(), 1U);
  EXPECT_EQ(c->metrics().evictions.load(), 1U);  // the unused blob, not the one filling
  EXPECT_FALSE(exists("blob1.blob"));
  EXPECT_TRUE(exists("blob2.blob"));
  ASSERT_TRUE((*blob)->fill(off0, 1));
  expect_chunk(**blob, b, 0);
}

}  // namespace
}  // namespace cfnd
