// SPDX-License-Identifier: Apache-2.0
#include "base/compress.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>

#include <lz4.h>

namespace base {
namespace {

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

ZSTD_CCtx* zstd_cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> ctx(ZSTD_createCCtx());
  return ctx.get();
}
ZSTD_DCtx* zstd_dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> ctx(ZSTD_createDCtx());
  return ctx.get();
}

struct InflateEnd {
  void operator()(z_stream* z) const { inflateEnd(z); }
};

// The first dst.size() bytes that the gzip members in src inflate to.
Status gunzip_prefix(Bytes src, MutableBytes dst) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    return errorf(ENOMEM, "gzip: inflateInit2 failed");
  }
  std::unique_ptr<z_stream, InflateEnd> guard(&zs);
  std::size_t in_off = 0;
  std::size_t out_off = 0;
  while (out_off < dst.size()) {
    const std::size_t in_avail = std::min<std::size_t>(src.size() - in_off, 1U << 30);
    const std::size_t out_avail = std::min<std::size_t>(dst.size() - out_off, 1U << 30);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(src.data() + in_off));
    zs.avail_in = static_cast<uInt>(in_avail);
    zs.next_out = reinterpret_cast<Bytef*>(dst.data() + out_off);
    zs.avail_out = static_cast<uInt>(out_avail);
    const int r = inflate(&zs, Z_NO_FLUSH);
    in_off += in_avail - zs.avail_in;
    out_off += out_avail - zs.avail_out;
    if (r == Z_STREAM_END) {
      if (out_off == dst.size()) {
        break;
      }
      if (in_off == src.size()) {
        return errorf(EBADMSG, "gzip: stream ends after {} of {} bytes", out_off, dst.size());
      }
      // The next member of a multi-member stream.
      if (inflateReset(&zs) != Z_OK) {
        return errorf(EBADMSG, "gzip: reset failed");
      }
      continue;
    }
    if (r == Z_BUF_ERROR && in_off == src.size()) {
      return errorf(EBADMSG, "gzip: truncated after {} of {} bytes", out_off, dst.size());
    }
    if (r != Z_OK && r != Z_BUF_ERROR) {
      return errorf(EBADMSG, "gzip: corrupt stream ({})", zs.msg != nullptr ? zs.msg : "?");
    }
  }
  return {};
}

}  // namespace

std::string_view compressor_name(Compressor c) {
  switch (c) {
    case Compressor::kNone:
      return "none";
    case Compressor::kLz4Block:
      return "lz4_block";
    case Compressor::kZstd:
      return "zstd";
    case Compressor::kGzip:
      return "gzip";
  }
  return "unknown";
}

std::optional<Compressor> parse_compressor(std::string_view name) {
  if (name == "none") {
    return Compressor::kNone;
  }
  if (name == "lz4_block" || name == "lz4") {
    return Compressor::kLz4Block;
  }
  if (name == "zstd") {
    return Compressor::kZstd;
  }
  return std::nullopt;
}

Status compress(Compressor c, Bytes src, std::vector<std::byte>& dst, int level) {
  switch (c) {
    case Compressor::kNone:
      dst.assign(src.begin(), src.end());
      return {};
    case Compressor::kLz4Block: {
      if (src.size() > static_cast<std::size_t>(LZ4_MAX_INPUT_SIZE)) {
        return errorf(EINVAL, "lz4: input of {} bytes is too large", src.size());
      }
      auto n = static_cast<int>(src.size());
      dst.resize(static_cast<std::size_t>(LZ4_compressBound(n)));
      int out = LZ4_compress_default(reinterpret_cast<const char*>(src.data()),
                                     reinterpret_cast<char*>(dst.data()), n,
                                     static_cast<int>(dst.size()));
      if (out <= 0 && n != 0) {
        return errorf(EIO, "lz4: compression failed");
      }
      dst.resize(static_cast<std::size_t>(out));
      return {};
    }
    case Compressor::kZstd: {
      dst.resize(ZSTD_compressBound(src.size()));
      ZSTD_CCtx* ctx = zstd_cctx();
      if (ctx == nullptr) {
        return errorf(ENOMEM, "zstd: no compression context");
      }
      std::size_t out = ZSTD_compressCCtx(ctx, dst.data(), dst.size(), src.data(), src.size(),
                                          level == 0 ? ZSTD_CLEVEL_DEFAULT : level);
      if (ZSTD_isError(out) != 0) {
        return errorf(EIO, "zstd: {}", ZSTD_getErrorName(out));
      }
      dst.resize(out);
      return {};
    }
    case Compressor::kGzip:
      return errorf(EINVAL, "gzip chunks are read, never written");
  }
  return errorf(EINVAL, "unknown compressor");
}

Status decompress(Compressor c, Bytes src, MutableBytes dst) {
  switch (c) {
    case Compressor::kNone:
      if (src.size() != dst.size()) {
        return errorf(EBADMSG, "uncompressed chunk is {} bytes, expected {}", src.size(),
                      dst.size());
      }
      if (!src.empty()) {
        std::memcpy(dst.data(), src.data(), src.size());
      }
      return {};
    case Compressor::kLz4Block: {
      constexpr auto kMax = static_cast<std::size_t>(std::numeric_limits<int>::max());
      if (src.size() > kMax || dst.size() > kMax) {
        return errorf(EBADMSG, "lz4: chunk too large");
      }
      int out = LZ4_decompress_safe(reinterpret_cast<const char*>(src.data()),
                                    reinterpret_cast<char*>(dst.data()),
                                    static_cast<int>(src.size()), static_cast<int>(dst.size()));
      if (out < 0 || static_cast<std::size_t>(out) != dst.size()) {
        return errorf(EBADMSG, "lz4: corrupt block ({} bytes out, expected {})", out, dst.size());
      }
      return {};
    }
    case Compressor::kZstd: {
      ZSTD_DCtx* ctx = zstd_dctx();
      if (ctx == nullptr) {
        return errorf(ENOMEM, "zstd: no decompression context");
      }
      std::size_t out = ZSTD_decompressDCtx(ctx, dst.data(), dst.size(), src.data(), src.size());
      if (ZSTD_isError(out) != 0) {
        return errorf(EBADMSG, "zstd: {}", ZSTD_getErrorName(out));
      }
      if (out != dst.size()) {
        return errorf(EBADMSG, "zstd: {} bytes out, expected {}", out, dst.size());
      }
      return {};
    }
    case Compressor::kGzip:
      return gunzip_prefix(src, dst);
  }
  return errorf(EINVAL, "unknown compressor");
}

}  // namespace base
