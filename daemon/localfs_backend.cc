// SPDX-License-Identifier: Apache-2.0
// localfs: blob files named by blob id in one directory (a nydus "localfs" backend,
// a test double for the registry, and the bench's page-cache source).
#include <fcntl.h>

#include <string>
#include <utility>

#include "base/file.h"
#include "base/unique_fd.h"
#include "daemon/backend.h"

namespace cfnd {
namespace {

class LocalFsBackend final : public Backend {
 public:
  explicit LocalFsBackend(std::string dir) : dir_(std::move(dir)) {}

  void read(const std::string& blob_id, std::span<BackendRead> reads,
            Deadline /*deadline*/) override {
    // A blob id comes from an image: it must name a file in dir_, never walk out.
    if (auto ok = check_blob_id(blob_id); !ok) {
      for (auto& r : reads) {
        r.result = base::Unexpected(ok.error());
      }
      return;
    }
    // Opened per call: a few microseconds against a batch of about 1 MiB.
    auto fd = base::UniqueFd::open(dir_ + "/" + blob_id, O_RDONLY);
    for (auto& r : reads) {
      if (!fd) {
        r.result = base::Unexpected(fd.error());  // ENOENT when the blob is missing
        continue;
      }
      // EIO on a short file (pread_full's contract).
      r.result = base::pread_full(fd->get(), r.out, r.offset);
    }
  }

  [[nodiscard]] std::string describe() const override { return "localfs:" + dir_; }

 private:
  std::string dir_;
};

}  // namespace

base::Status check_blob_id(const std::string& id) {
  if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos ||
      id.find('\0') != std::string::npos) {
    return base::errorf(EINVAL, "blob id '{}' cannot name a file", id);
  }
  return {};
}

base::Result<std::unique_ptr<Backend>> make_localfs_backend(const std::string& dir) {
  if (dir.empty()) {
    return base::make_error(EINVAL, "localfs backend: empty directory");
  }
  auto probe = base::UniqueFd::open(dir, O_RDONLY | O_DIRECTORY);
  if (!probe) {
    return base::Unexpected(std::move(probe).error().wrap("localfs backend"));
  }
  return std::unique_ptr<Backend>(new LocalFsBackend(dir));
}

}  // namespace cfnd
