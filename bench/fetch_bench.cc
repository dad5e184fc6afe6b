// SPDX-License-Identifier: Apache-2.0
// fetch_bench: Range reads of one blob through registry::Client, for bench/fetch.
//
//   fetch_bench REF@DIGEST SIZE --block BYTES --threads N [--count N] [--mode threads|batch]
//
// Reads `count` blocks (default: all of SIZE) at consecutive offsets: --mode threads
// runs N threads each calling read_blob_range on the next free block; --mode batch
// hands batches of N*4 blocks to read_blob_ranges with max_parallel N. Prints one JSON
// line: {"bytes", "requests", "seconds", "bytes_per_second", "errors"}.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/log.h"
#include "registry/client.h"
#include "registry/reference.h"

int main(int argc, char** argv) {
  CLI::App app{"fetch_bench: ranged blob reads through the registry client"};
  std::string ref_text;
  std::uint64_t size = 0;
  std::uint64_t block = 1U << 20;
  int threads = 1;
  std::uint64_t count = 0;
  std::string mode = "threads";
  app.add_option("REF", ref_text, "host/repo@sha256:...")->required();
  app.add_option("SIZE", size, "blob size in bytes")->required();
  app.add_option("--block", block, "bytes per request");
  app.add_option("--threads", threads, "concurrent requests");
  app.add_option("--count", count, "requests (default: the whole blob)");
  app.add_option("--mode", mode)->check(CLI::IsMember({"threads", "batch"}));
  CLI11_PARSE(app, argc, argv);
  base::init_logging("fetch_bench", "warn");

  auto ref = registry::Reference::parse(ref_text);
  if (!ref || ref->digest.empty()) {
    std::fprintf(stderr, "fetch_bench: need REF@DIGEST\n");
    return 2;
  }
  const std::uint64_t blocks = size / block;
  if (count == 0 || count > blocks) {
    count = blocks;
  }
  registry::ClientConfig cfg;
  cfg.max_parallel = threads;
  auto client = registry::Client::create(cfg);
  if (!client) {
    std::fprintf(stderr, "fetch_bench: %s\n", client.error().to_string().c_str());
    return 1;
  }
  registry::Client& c = **client;

  std::atomic<std::uint64_t> next{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> bytes{0};
  const auto t0 = std::chrono::steady_clock::now();
  if (mode == "threads") {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; t++) {
      pool.emplace_back([&] {
        std::vector<std::byte> buf(block);
        for (std::uint64_t i = next++; i < count; i = next++) {
          auto s = c.read_blob_range(*ref, ref->digest, i * block, buf);
          if (s) {
            bytes += block;
          } else if (errors++ == 0) {
            std::fprintf(stderr, "fetch_bench: %s\n", s.error().to_string().c_str());
          }
        }
      });
    }
    for (auto& t : pool) {
      t.join();
    }
  } else {
    const std::uint64_t batch = static_cast<std::uint64_t>(threads) * 4;
    std::vector<std::vector<std::byte>> bufs(batch, std::vector<std::byte>(block));
    for (std::uint64_t first = 0; first < count; first += batch) {
      std::vector<registry::RangeRead> reads;
      for (std::uint64_t i = first; i < std::min(count, first + batch); i++) {
        reads.push_back({i * block, bufs[i - first], {}});
      }
      c.read_blob_ranges(*ref, ref->digest, reads);
      for (const auto& r : reads) {
        if (r.result) {
          bytes += block;
        } else if (errors++ == 0) {
          std::fprintf(stderr, "fetch_bench: %s\n", r.result.error().to_string().c_str());
        }
      }
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "{\"bytes\": %llu, \"requests\": %llu, \"seconds\": %.6f, \"bytes_per_second\": %.1f, "
      "\"errors\": %llu}\n",
      static_cast<unsigned long long>(bytes.load()), static_cast<unsigned long long>(count), secs,
      secs > 0 ? static_cast<double>(bytes.load()) / secs : 0.0,
      static_cast<unsigned long long>(errors.load()));
  return errors.load() == 0 ? 0 : 1;
}
