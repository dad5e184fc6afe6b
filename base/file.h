// SPDX-License-Identifier: Apache-2.0
// Whole-file and positional I/O that handles short transfers and EINTR.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace base {

// Read a whole regular file. Errors name the path.
[[nodiscard]] Result<std::vector<std::byte>> read_file(const std::string& path);
// Read exactly buf.size() bytes at off; EIO on a short file.
[[nodiscard]] Status pread_full(int fd, MutableBytes buf, std::uint64_t off);
[[nodiscard]] Status pwrite_full(int fd, Bytes buf, std::uint64_t off);
[[nodiscard]] Status write_full(int fd, Bytes buf);
// Whether write_file_atomic fsyncs the temporary before the rename. kRenameOnly: a reader
// still never sees a half-written file and a process that dies after the rename leaves
// the new file (the page cache has it), but after an OS crash the file may be the old one,
// empty or partly written; it costs no fsync (on ext4 with a journal, no journal commit).
enum class Durability { kSynced, kRenameOnly };
// Write data to path through a temporary in the same directory, fsync and rename,
// so a reader never sees a half-written file. The temporary is "<path>.tmp.XXXXXX"
// (mkostemp's six letters or digits); a writer that dies before the rename leaves it.
[[nodiscard]] Status write_file_atomic(const std::string& path, Bytes data, mode_t mode = 0644,
                                       Durability durability = Durability::kSynced);
// True for a file name write_file_atomic's temporaries have: "<name>.tmp." and six
// ASCII letters or digits, <name> not empty.
[[nodiscard]] bool is_atomic_temporary(std::string_view file_name);
// Remove the temporaries that write_file_atomic left in dir (regular files whose
// name is_atomic_temporary; nothing else, no subdirectory, no symlink). Only for a
// directory no live writer uses (a daemon's own directories, at start). Returns the
// count removed; a missing dir is 0; errors (opening dir, an unlink) name the path.
[[nodiscard]] Result<std::size_t> remove_atomic_temporaries(const std::string& dir);

}  // namespace base
