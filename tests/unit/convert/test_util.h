// SPDX-License-Identifier: Apache-2.0
// Helpers for the converter tests: tar writing, reading images back (and the shared
// temporary dir).
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "convert/blob_reader.h"
#include "convert/options.h"
#include "tests/unit/temp_dir.h"

namespace convert::testing {

using TempDir = cfntest::TempDir;

struct TarEntry {
  std::string path;
  mode_t type = S_IFREG;  // S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO
  mode_t perm = 0644;
  std::string data;      // regular files
  std::string symlink;   // S_IFLNK target
  std::string hardlink;  // when set: a hardlink entry to this path
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int64_t mtime = 1600000000;
  long mtime_nsec = 0;
  unsigned rdev_major = 0;
  unsigned rdev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;
};

enum class TarFilter { kNone, kGzip, kZstd };

// Write a pax tar with libarchive.
void write_tar(const std::string& path, const std::vector<TarEntry>& entries,
               TarFilter filter = TarFilter::kNone);

// A raw ustar header + data (for entries libarchive's writer will not produce).
std::string raw_tar_header(const std::string& name, std::uint64_t size, char type = '0',
                           const std::string& linkname = "");
std::string raw_pax_record(const std::string& key, const std::string& value);

void write_string(const std::string& path, const std::string& data);
std::string read_string(const std::string& path);

// One entry of an image read back.
struct ReadEntry {
  mode_t mode = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int64_t mtime = 0;
  std::uint32_t mtime_nsec = 0;
  std::uint32_t nlink = 0;
  std::uint64_t nid = 0;
  std::uint32_t rdev = 0;
  std::string data;  // file contents or symlink target
  std::map<std::string, std::string> xattrs;
};

// Read a whole built image (OUTDIR/image.boot + OUTDIR/blobs) into path -> entry,
// reading every file through BlobReader.
std::map<std::string, ReadEntry> read_image(const std::string& outdir);

// Build with the library, returning the error if any.
base::Status build(const std::string& source, const std::string& outdir,
                   const BuildOptions& options = {});

// Every file below dir (relative names), for "nothing written outside" checks.
std::vector<std::string> list_tree(const std::string& dir);

}  // namespace convert::testing
