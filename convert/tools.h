// SPDX-License-Identifier: Apache-2.0
// The read-side subcommands of nydus-convert: inspect, unpack, cat, check.
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"

namespace convert {

// {"rafs":true,"chunk_size":N,"compressor":"zstd","digester":"sha256","inodes":N,
//  "blobs":[{"index":0,"id":"...","compressed_size":N,"uncompressed_size":N,"chunk_count":N}]}
[[nodiscard]] base::Result<std::string> inspect_json(const std::string& bootstrap);

// Write out_dir/<blob id> for every blob: its uncompressed address space, every chunk
// verified, holes elsewhere, size = uncompressed_size.
[[nodiscard]] base::Status unpack_blobs(const std::string& bootstrap, const std::string& blob_dir,
                                        const std::string& out_dir);

// Write the contents of the regular file at path to out_fd.
[[nodiscard]] base::Status cat_file(const std::string& bootstrap, const std::string& path,
                                    const std::string& blob_dir, int out_fd);

struct CheckSummary {
  std::uint64_t inodes = 0;
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;
  std::uint64_t chunks_verified = 0;
  std::uint64_t blobs = 0;
};
// Walk every inode and read every regular file through the blobs.
[[nodiscard]] base::Result<CheckSummary> check_image(const std::string& bootstrap,
                                                     const std::string& blob_dir);

}  // namespace convert
