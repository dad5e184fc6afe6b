// SPDX-License-Identifier: Apache-2.0
#include "daemon/cache/cache_file_io.h"

#include <fcntl.h>

#include "base/file.h"

namespace cfnd::cache {
namespace {

class SystemCacheFileIo final : public CacheFileIo {
 public:
  base::Status pwrite(int fd, base::Bytes data, std::uint64_t off) override {
    return base::pwrite_full(fd, data, off);
  }
  base::Status punch_hole(int fd, std::uint64_t off, std::uint64_t len) override {
    if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                    static_cast<off_t>(len)) != 0) {
      return base::errno_error("punch a hole");
    }
    return {};
  }
};

}  // namespace

std::shared_ptr<CacheFileIo> system_cache_file_io() {
  static const std::shared_ptr<CacheFileIo> io = std::make_shared<SystemCacheFileIo>();
  return io;
}

}  // namespace cfnd::cache
