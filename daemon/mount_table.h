// SPDX-License-Identifier: Apache-2.0
// The mount table of this mount namespace, read through libmount (which also undoes the
// kernel's octal escapes of spaces and newlines in paths).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

namespace cfnd {

// True when a file system of type fstype is mounted on dir (an absolute path, compared
// as it is: no symlinks resolved). False also when the table cannot be read.
[[nodiscard]] bool mounted_on(const std::string& dir, std::string_view fstype);

// The device number of the file system of type fstype mounted on dir (the last such
// mount, the one on top); nullopt when there is none or the table cannot be read.
[[nodiscard]] std::optional<dev_t> mounted_dev(const std::string& dir, std::string_view fstype);

}  // namespace cfnd
