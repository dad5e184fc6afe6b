// SPDX-License-Identifier: Apache-2.0
// bench/estargz-toc's driver: the peak RSS of parsing an eStargz TOC.
//
//   estargz_toc_bench gen N FILE   write a synthetic TOC of N entries (stargz.index.json)
//   estargz_toc_bench dom FILE     baseline: the TOC as a full JSON DOM (nlohmann), held
//                                  while the entries are made, as parse_toc_json did
//                                  before it walked the JSON with SAX
//   estargz_toc_bench sax FILE     estargz::parse_toc_json as it is (SAX, no DOM)
//
// Each parse mode prints one line: "<mode> entries=<n> maxrss_kib=<k> ms=<t>", where
// maxrss is this process's peak RSS (getrusage), the JSON text included in both modes.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

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

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "gen") {
    return gen(std::strtoull(argv[2], nullptr, 10), argv[3]);
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
