// SPDX-License-Identifier: Apache-2.0
// gzip (RFC 1952, one member) of some bytes, for the tests that make gzip streams: the
// eStargz layers, the gzip chunks of base::decompress, the nydus bootstrap tar.gz.
// Test-only, header-only, std and zlib only (no project folder: any test may include it).
#pragma once

#include <zlib.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

namespace cfntest {

// A zlib failure (it takes no input that could cause one) ends the test binary loudly.
inline std::vector<std::byte> gzip(std::span<const std::byte> in,
                                   int level = Z_DEFAULT_COMPRESSION) {
  z_stream zs{};
  if (deflateInit2(&zs, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    std::fputs("cfntest::gzip: deflateInit2 failed\n", stderr);
    std::abort();
  }
  std::vector<std::byte> out(deflateBound(&zs, static_cast<uLong>(in.size())) + 64);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int r = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  if (r != Z_STREAM_END) {
    std::fputs("cfntest::gzip: deflate did not finish\n", stderr);
    std::abort();
  }
  return out;
}

inline std::vector<std::byte> gzip(std::string_view in, int level = Z_DEFAULT_COMPRESSION) {
  return gzip(std::as_bytes(std::span(in.data(), in.size())), level);
}

}  // namespace cfntest
