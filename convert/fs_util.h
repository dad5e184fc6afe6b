// SPDX-License-Identifier: Apache-2.0
// Output-side file helpers: everything relative to an open directory fd, never
// following a symlink (O_NOFOLLOW on every open, AT_SYMLINK_NOFOLLOW on every stat).
#pragma once

#include <string>

#include "base/bytes.h"
#include "base/result.h"
#include "base/unique_fd.h"

namespace convert {

// Create name in dirfd (must not exist) and write data to it.
[[nodiscard]] base::Status write_new_file_at(int dirfd, const std::string& name, base::Bytes data,
                                             mode_t mode = 0644);
// mkdirat, then open the directory (O_NOFOLLOW). EEXIST is fine when it is a real
// directory; a symlink in its place is ENOTDIR.
[[nodiscard]] base::Result<base::UniqueFd> make_dir_at(int dirfd, const std::string& name,
                                                       mode_t mode = 0755);
// Remove name under dirfd and everything below it; never follows symlinks. A missing
// name is not an error.
[[nodiscard]] base::Status remove_tree_at(int dirfd, const std::string& name);

}  // namespace convert
