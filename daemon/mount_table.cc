// SPDX-License-Identifier: Apache-2.0
#include "daemon/mount_table.h"

#include <libmount.h>

#include <memory>

namespace cfnd {
namespace {

struct TableFree {
  void operator()(libmnt_table* t) const { mnt_unref_table(t); }
};
struct IterFree {
  void operator()(libmnt_iter* i) const { mnt_free_iter(i); }
};

}  // namespace

bool mounted_on(const std::string& dir, std::string_view fstype) {
  std::unique_ptr<libmnt_table, TableFree> table(mnt_new_table_from_file("/proc/self/mountinfo"));
  std::unique_ptr<libmnt_iter, IterFree> it(mnt_new_iter(MNT_ITER_FORWARD));
  if (!table || !it) {
    return false;
  }
  libmnt_fs* fs = nullptr;
  while (mnt_table_next_fs(table.get(), it.get(), &fs) == 0) {
    const char* target = mnt_fs_get_target(fs);
    const char* type = mnt_fs_get_fstype(fs);
    if (target != nullptr && type != nullptr && dir == target && fstype == type) {
      return true;
    }
  }
  return false;
}

std::optional<dev_t> mounted_dev(const std::string& dir, std::string_view fstype) {
  std::unique_ptr<libmnt_table, TableFree> table(mnt_new_table_from_file("/proc/self/mountinfo"));
  std::unique_ptr<libmnt_iter, IterFree> it(mnt_new_iter(MNT_ITER_FORWARD));
  if (!table || !it) {
    return std::nullopt;
  }
  std::optional<dev_t> found;
  libmnt_fs* fs = nullptr;
  while (mnt_table_next_fs(table.get(), it.get(), &fs) == 0) {
    const char* target = mnt_fs_get_target(fs);
    const char* type = mnt_fs_get_fstype(fs);
    if (target != nullptr && type != nullptr && dir == target && fstype == type) {
      found = mnt_fs_get_devno(fs);
    }
  }
  return found;
}

}  // namespace cfnd
