// SPDX-License-Identifier: Apache-2.0
#include "convert/fs_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "base/file.h"

namespace convert {

base::Status write_new_file_at(int dirfd, const std::string& name, base::Bytes data, mode_t mode) {
  CFN_ASSIGN_OR_RETURN(
      base::UniqueFd fd,
      base::UniqueFd::openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode));
  if (auto r = base::write_full(fd.get(), data); !r) {
    return base::Unexpected(std::move(r).error().wrap("writing " + name));
  }
  return {};
}

base::Result<base::UniqueFd> make_dir_at(int dirfd, const std::string& name, mode_t mode) {
  if (::mkdirat(dirfd, name.c_str(), mode) != 0 && errno != EEXIST) {
    return base::errno_error("mkdir " + name);
  }
  auto fd = base::UniqueFd::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd) {
    return base::Unexpected(std::move(fd).error().wrap("not a real directory"));
  }
  return fd;
}

base::Status remove_tree_at(int dirfd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? base::Status{} : base::errno_error("stat " + name);
  }
  if (S_ISDIR(st.st_mode)) {
    CFN_ASSIGN_OR_RETURN(base::UniqueFd fd,
                         base::UniqueFd::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    int dupfd = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0) {
      return base::errno_error("dup " + name);
    }
    DIR* d = ::fdopendir(dupfd);
    if (d == nullptr) {
      ::close(dupfd);
      return base::errno_error("opendir " + name);
    }
    std::vector<std::string> names;
    while (struct dirent* de = ::readdir(d)) {
      std::string n(de->d_name);
      if (n != "." && n != "..") {
        names.push_back(std::move(n));
      }
    }
    ::closedir(d);
    for (const auto& n : names) {
      CFN_TRY(remove_tree_at(fd.get(), n));
    }
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0) {
      return base::errno_error("rmdir " + name);
    }
    return {};
  }
  if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) {
    return base::errno_error("unlink " + name);
  }
  return {};
}

}  // namespace convert
