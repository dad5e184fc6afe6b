// SPDX-License-Identifier: Apache-2.0
// bench/fill's driver: cold fill throughput of the blob cache against the per-core
// ceiling measured in the same process.
//
//   fill_bench IMAGE_DIR WORK_DIR [--runs N] [--batch BYTES] [--step BYTES]
//
// IMAGE_DIR holds image.boot and blobs/ (nydus-convert build output). The largest
// blob is used, read from the page cache (the script warms it).
//   ceiling: the blob's compressed bytes in memory; per chunk decode_chunk
//            (decompress + digest verify) + pwrite into a fresh sparse file; one thread.
//   cache:   a fresh BlobCache with a localfs backend; fill(off, step) front to back
//            from one thread, as a sequential reader's kernel requests would.
// Best of --runs for each; prints MB/s (uncompressed) of both and cache/ceiling.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "base/file.h"
#include "base/unique_fd.h"
#include "daemon/blob_cache.h"
#include "erofs/blob_meta.h"
#include "erofs/reader.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "fill_bench: %s\n", what.c_str());
  std::exit(1);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    die("usage: fill_bench IMAGE_DIR WORK_DIR [--runs N] [--batch BYTES] [--step BYTES]");
  }
  const std::string image_dir = argv[1];
  const std::string work = argv[2];
  int runs = 3;
  std::uint64_t batch = 1U << 20;
  std::uint64_t step = 128 * 1024;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const std::uint64_t v = std::strtoull(argv[i + 1], nullptr, 0);
    if (k == "--runs") {
      runs = static_cast<int>(v);
    } else if (k == "--batch") {
      batch = v;
    } else if (k == "--step") {
      step = v;
    } else {
      die("unknown option " + k);
    }
  }

  auto boot = base::read_file(image_dir + "/image.boot");
  if (!boot) {
    die(boot.error().to_string());
  }
  auto img = erofs::Image::parse(*boot);
  if (!img) {
    die(img.error().to_string());
  }
  auto table = img->chunk_table();
  if (!table) {
    die(table.error().to_string());
  }
  if (img->blobs().empty()) {
    die("image has no blobs");
  }
  const erofs::BlobInfo info = *std::max_element(
      img->blobs().begin(), img->blobs().end(),
      [](const auto& a, const auto& b) { return a.compressed_size < b.compressed_size; });
  const std::string blob_dir = image_dir + "/blobs";
  auto file = base::read_file(blob_dir + "/" + info.id);
  if (!file) {
    die(file.error().to_string());
  }
  auto meta = erofs::BlobMeta::parse(
      info, base::Bytes(*file).subspan(info.ci_offset,
                                       info.ci_compressed_size + erofs::kBlobMetaHeaderSize));
  if (!meta) {
    die(meta.error().to_string());
  }
  std::vector<base::Digest> digests(meta->chunks().size());
  for (const auto& r : *table) {
    if (r.blob_index == info.index && r.index < digests.size()) {
      digests[r.index] = r.digest;
    }
  }
  const double mb = static_cast<double>(info.uncompressed_size) / 1e6;
  std::printf("blob %s: %.1f MB uncompressed, %.1f MB compressed, %zu chunks, %s\n",
              info.id.substr(0, 12).c_str(), mb, static_cast<double>(info.compressed_size) / 1e6,
              meta->chunks().size(), std::string(base::compressor_name(info.compressor)).c_str());

  std::filesystem::create_directories(work);
  double best_ceiling = 1e30;
  double best_cache = 1e30;
  for (int run = 0; run < runs; ++run) {
    // Ceiling: decompress + digest + write, one thread, no cache machinery.
    {
      const std::string out = work + "/ceiling.blob";
      std::filesystem::remove(out);
      auto fd = base::UniqueFd::open(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
      if (!fd || ::ftruncate(fd->get(), static_cast<off_t>(info.uncompressed_size)) != 0) {
        die("create " + out);
      }
      std::vector<std::byte> plain;
      const auto t0 = Clock::now();
      for (std::size_t ci = 0; ci < meta->chunks().size(); ++ci) {
        const auto& c = meta->chunks()[ci];
        plain.resize(c.uncompressed_size);
        auto st = erofs::decode_chunk(
            info, c, base::Bytes(*file).subspan(c.compressed_offset, c.compressed_size),
            digests[ci], plain);
        if (!st) {
          die(st.error().to_string());
        }
        if (auto w = base::pwrite_full(fd->get(), plain, c.uncompressed_offset); !w) {
          die(w.error().to_string());
        }
      }
      best_ceiling = std::min(best_ceiling, seconds_since(t0));
      std::filesystem::remove(out);
    }
    // The cache, cold, from a localfs backend over the page cache.
    {
      const std::string dir = work + "/cache";
      std::filesystem::remove_all(dir);
      cfnd::CacheOptions o;
      o.cache_dir = dir;
      o.batch_size = batch;
      auto cache = cfnd::BlobCache::create(o);
      auto be = cfnd::make_localfs_backend(blob_dir);
      if (!cache || !be) {
        die("cache or backend");
      }
      const auto t0 = Clock::now();
      auto blob = (*cache)->open(info, *table, std::shared_ptr<cfnd::Backend>(std::move(*be)));
      if (!blob) {
        die(blob.error().to_string());
      }
      for (std::uint64_t off = 0; off < (*blob)->size(); off += step) {
        if (auto st = (*blob)->fill(off, step); !st) {
          die(st.error().to_string());
        }
      }
      const double t = seconds_since(t0);
      if ((*blob)->ready_chunks() != (*blob)->chunk_count()) {
        die("cache incomplete after a full pass");
      }
      best_cache = std::min(best_cache, t);
      blob->reset();
      cache->reset();
      std::filesystem::remove_all(dir);
    }
  }
  const double ceiling = mb / best_ceiling;
  const double cached = mb / best_cache;
  std::printf("ceiling (decode + verify + write, 1 thread): %8.1f MB/s  (%.3f s)\n", ceiling,
              best_ceiling);
  std::printf("blob cache cold fill (step %llu, batch %llu): %8.1f MB/s  (%.3f s)\n",
              static_cast<unsigned long long>(step), static_cast<unsigned long long>(batch), cached,
              best_cache);
  std::printf("ratio cache/ceiling: %.2f (goal >= 0.8)\n", cached / ceiling);
  return 0;
}
