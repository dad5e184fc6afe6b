// SPDX-License-Identifier: Apache-2.0
// bench/estargz-toc's driver: the peak RSS of parsing an eStargz TOC.
//
//   estargz_toc_bench gen N FILE   write a synthetic TOC of N entries (stargz.index.json)
//   estargz_toc_bench dom FILE     baseline: the TOC as a full JSON DOM (nlohmann), held
//                                  while the entries are made, as parse_toc_json did
//                                  before it walked the JSON with SAX
//   estargz_toc_bench sax FILE     estargz::parse_toc_json as it is (SAX, no DOM)
//   estargz_toc_bench build FILE [N]  the cold eStargz mount's CPU work on this TOC, N
//                                  times (default 1): parse_toc_json, then build_bootstrap
//                                  of it as one layer; prints the best ms of each step and
//                                  the bootstrap's size and sha256 (the same TOC must give
//                                  the same bytes: run it twice and compare)
//
// Each parse mode prints one line: "<mode> entries=<n> maxrss_kib=<k> ms=<t>", where
// maxrss is this process's peak RSS (getrusage), the JSON text included in both modes.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "base/digest.h"
#include "estargz/bootstrap.h"
#include "estargz/toc.h"

namespace {

long maxrss_kib() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// Entries shaped like a distribution image's: directories of ~20 files, names of some
// length, every regular file with offset and chunkDigest, some symlinks and big files
// in chunks.
int gen(std::size_t n, const char* path) {
  std::ofstream out(path, std::ios::binary);
  out << R"({"version":1,"entries":[)";
  std::uint64_t offset = 0;
  std::size_t written = 0;
  for (std::size_t d = 0; written < n; ++d) {
    if (written > 0) {
      out << ',';
    }
    const std::string dir = "usr/lib/python3.11/site-packages/package" + std::to_string(d);
    out << R"({"name":")" << dir << R"(/","type":"dir","mode":16877,"modtime":)"
        << R"("2024-05-06T09:08:09Z","NumLink":0})";
    ++written;
    for (std::size_t f = 0; f < 20 && written < n; ++f, ++written) {
      const std::string name = dir + "/module_" + std::to_string(f) + ".cpython-311.pyc";
      char digest[65];
      std::snprintf(digest, sizeof(digest), "%016zx%016zx%016zx%016zx", d, f, d * 31 + f, written);
      if (f == 19) {
        out << R"(,{"name":")" << name << R"(","type":"symlink","linkName":"module_0.py",)"
            << R"("mode":41471,"modtime":"2024-05-06T09:08:09Z","NumLink":0})";
        continue;
      }
      out << R"(,{"name":")" << name << R"(","type":"reg","size":)" << 4000 + f * 100
          << R"(,"mode":33188,"uid":0,"gid":0,"modtime":"2024-05-06T09:08:09Z",)"
          << R"("offset":)" << offset << R"(,"NumLink":0,"chunkDigest":"sha256:)" << digest
          << R"("})";
      offset += 1500 + f * 40;
    }
  }
  out << "]}";
  return out.good() ? 0 : 1;
}

std::string slurp(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int build(const std::string& text, int n) {
  double parse_ms = 1e18;
  double build_ms = 1e18;
  std::vector<std::byte> boot;
  std::size_t entries = 0;
  for (int i = 0; i < n; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto toc = estargz::parse_toc_json(text);
    if (!toc) {
      std::fprintf(stderr, "%s\n", toc.error().to_string().c_str());
      return 1;
    }
    parse_ms = std::min(parse_ms, ms_since(t0));
    entries = toc->entries.size();
    estargz::LayerToc l;
    l.blob_id = std::string(64, 'a');
    std::uint64_t end = 0;
    for (const auto& e : toc->entries) {
      if (e.offset) {
        end = std::max(end, *e.offset + 1);
      }
    }
    l.toc_offset = end + 1500;
    l.blob_size = l.toc_offset + 100000;
    l.toc = std::move(*toc);
    std::vector<estargz::LayerToc> layers;
    layers.push_back(std::move(l));
    t0 = std::chrono::steady_clock::now();
    auto built = estargz::build_bootstrap(layers);
    if (!built) {
      std::fprintf(stderr, "%s\n", built.error().to_string().c_str());
      return 1;
    }
    build_ms = std::min(build_ms, ms_since(t0));
    boot = std::move(built->bootstrap);
  }
  std::printf("build entries=%zu parse_ms=%.2f build_ms=%.2f bootstrap=%zu sha256=%s\n", entries,
              parse_ms, build_ms, boot.size(), base::hex(base::sha256(boot)).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "gen") {
    return gen(std::strtoull(argv[2], nullptr, 10), argv[3]);
  }
  if ((argc == 3 || argc == 4) && std::string(argv[1]) == "build") {
    return build(slurp(argv[2]), argc == 4 ? std::atoi(argv[3]) : 1);
  }
  if (argc != 3) {
    std::fprintf(stderr, "usage: estargz_toc_bench gen N FILE | dom FILE | sax FILE\n");
    return 2;
  }
  const std::string mode = argv[1];
  const std::string text = slurp(argv[2]);
  const auto t0 = std::chrono::steady_clock::now();
  nlohmann::json dom;
  if (mode == "dom") {
    dom = nlohmann::json::parse(text, nullptr, false);
    if (dom.is_discarded()) {
      std::fprintf(stderr, "not JSON\n");
      return 1;
    }
  } else if (mode != "sax") {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  auto toc = estargz::parse_toc_json(text);
  if (!toc) {
    std::fprintf(stderr, "%s\n", toc.error().to_string().c_str());
    return 1;
  }
  const auto ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s entries=%zu maxrss_kib=%ld ms=%.0f\n", mode.c_str(), toc->entries.size(),
              maxrss_kib(), ms);
  return 0;
}
