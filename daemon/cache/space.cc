// SPDX-License-Identifier: Apache-2.0
#include "daemon/cache/space.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <numeric>
#include <tuple>

#include "base/file.h"
#include "base/unique_fd.h"

namespace cfnd::cache {
namespace {

std::int64_t ns_of(const timespec& t) {
  return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Adds the regular file dir/name to e: its blocks and times.
void add_file(SpaceEntry& e, const std::string& path, const struct stat& st) {
  e.files.push_back(path);
  e.bytes += static_cast<std::uint64_t>(st.st_blocks) * 512;
  // Fills write the .blob (mtime); reads of cached data leave no trace on disk, so
  // after a restart the last write is the best "last use" there is.
  e.last_use_ns = std::max(e.last_use_ns, ns_of(st.st_mtim));
  e.changed_ns = std::max(e.changed_ns, ns_of(st.st_mtim));
}

template <typename Fn>
void for_each_regular(const std::string& dir, Fn fn) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return;
  }
  while (dirent* de = ::readdir(d)) {
    const std::string_view name = de->d_name;
    if (name.empty() || name[0] == '.' || base::is_atomic_temporary(name)) {
      continue;
    }
    struct stat st {};
    if (::fstatat(::dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
      continue;
    }
    fn(std::string(name), st);
  }
  ::closedir(d);
}

// p% of n (p clipped at 100), without overflow.
// Names of the subdirectories of path (relative to dfd) that keep() accepts, symlinks not
// followed; none when path cannot be opened.
template <typename Keep>
std::vector<std::string> subdirs(int dfd, const char* path, Keep keep) {
  std::vector<std::string> names;
  const int fd = ::openat(dfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return names;
  }
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return names;
  }
  while (dirent* de = ::readdir(d)) {
    struct stat st {};
    if (keep(std::string_view(de->d_name)) &&
        ::fstatat(::dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
      names.emplace_back(de->d_name);
    }
  }
  ::closedir(d);
  return names;
}

std::uint64_t percent_of(std::uint64_t n, unsigned p) {
  p = std::min(p, 100U);
  return n / 100 * p + n % 100 * p / 100;
}

}  // namespace

Watermarks watermarks(const SpaceOptions& o, std::uint64_t fs_bytes) {
  Watermarks w;
  if (o.limit != 0) {
    w.limit = o.limit;
  } else if (o.limit_percent != 0) {
    w.limit = percent_of(fs_bytes, o.limit_percent);
  }
  const auto pct = [&](unsigned p) { return percent_of(w.limit, p); };
  w.high = pct(o.high_watermark);
  w.low = std::min(pct(o.low_watermark), w.high);
  return w;
}

std::vector<std::size_t> lru_order(const std::vector<SpaceEntry>& entries) {
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (!entries[i].in_use) {
      order.push_back(i);
    }
  }
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const SpaceEntry& x = entries[a];
    const SpaceEntry& y = entries[b];
    return x.last_use_ns != y.last_use_ns ? x.last_use_ns < y.last_use_ns : x.id < y.id;
  });
  return order;
}

std::vector<std::size_t> pick_victims(const std::vector<SpaceEntry>& entries, std::uint64_t total,
                                      std::uint64_t target) {
  const std::vector<std::size_t> order = lru_order(entries);
  std::vector<std::size_t> out;
  for (std::size_t i : order) {
    if (total <= target) {
      break;
    }
    out.push_back(i);
    total -= std::min(total, entries[i].bytes);
  }
  return out;
}

std::uint64_t allocated_bytes(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return 0;
  }
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

std::map<std::string, SpaceEntry> scan_bootstraps(const std::string& dir) {
  std::map<std::string, SpaceEntry> out;
  const std::string boots = dir + "/bootstraps";
  for_each_regular(boots, [&](const std::string& name, const struct stat& st) {
    if (!ends_with(name, ".boot")) {
      return;
    }
    SpaceEntry& e = out["bootstraps/" + name];
    e.id = "bootstraps/" + name;
    e.kind = EntryKind::kBootstrap;
    add_file(e, boots + "/" + name, st);
  });
  return out;
}

std::map<std::string, SpaceEntry> scan_cache_dir(const std::string& dir) {
  std::map<std::string, SpaceEntry> out;
  std::map<std::string, int> parts;  // id -> 1 .blob, 2 .meta
  for_each_regular(dir, [&](const std::string& name, const struct stat& st) {
    int part = 0;
    if (ends_with(name, ".blob")) {
      part = 1;
    } else if (ends_with(name, ".meta")) {
      part = 2;
    } else {
      return;
    }
    const std::string id = name.substr(0, name.size() - 5);
    SpaceEntry& e = out[id];
    e.id = id;
    add_file(e, dir + "/" + name, st);
    parts[id] |= part;
  });
  for (auto& [id, e] : out) {
    e.incomplete = parts[id] != 3;
    std::sort(e.files.begin(), e.files.end());
  }
  out.merge(scan_bootstraps(dir));
  return out;
}

std::string fscache_cookie(std::string_view file_name) {
  if (file_name.size() < 2 || file_name[0] != 'D') {
    return {};
  }
  return std::string(file_name.substr(1));
}

std::string fscache_volume(std::string_view dir_name) {
  if (dir_name.size() < 2 || dir_name[0] != 'I') {
    return {};
  }
  return std::string(dir_name.substr(1));
}

bool is_fscache_fan(std::string_view dir_name) {
  const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  return dir_name.size() == 3 && dir_name[0] == '@' && hex(dir_name[1]) && hex(dir_name[2]);
}

bool is_blob_id(std::string_view s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

std::string fscache_entry_id(const FscacheObject& o) {
  const std::string volume = fscache_volume(o.volume_dir);
  const std::string cookie = fscache_cookie(o.name);
  if (volume.empty() || cookie.empty() || !is_fscache_fan(o.fan)) {
    return {};
  }
  if (is_blob_id(cookie)) {
    return cookie;
  }
  return "fscache/" + volume + "/" + cookie;
}

std::map<std::string, SpaceEntry> scan_fscache(const std::string& fscache_dir) {
  std::map<std::string, SpaceEntry> out;
  const std::string root = fscache_dir + "/cache";
  for (const auto& vol : subdirs(AT_FDCWD, root.c_str(),
                                 [](std::string_view n) { return !fscache_volume(n).empty(); })) {
    for (const auto& fan : subdirs(AT_FDCWD, (root + "/" + vol).c_str(), is_fscache_fan)) {
      const std::string dir = root + "/" + vol + "/" + fan;
      for_each_regular(dir, [&](const std::string& name, const struct stat& st) {
        FscacheObject o{vol, fan, name, static_cast<std::uint64_t>(st.st_blocks) * 512,
                        ns_of(st.st_mtim)};
        const std::string id = fscache_entry_id(o);
        if (id.empty()) {
          return;
        }
        SpaceEntry& e = out[id];
        e.id = id;
        e.kind = is_blob_id(id) ? EntryKind::kBlob : EntryKind::kFscache;
        e.bytes += o.bytes;
        e.kernel_bytes += o.bytes;
        // cachefiles writes its file as it fills it: its mtime is the last fill.
        e.last_use_ns = std::max(e.last_use_ns, o.mtime_ns);
        e.changed_ns = std::max(e.changed_ns, o.mtime_ns);
        e.kernel.push_back(std::move(o));
      });
    }
  }
  for (auto& [id, e] : out) {
    std::sort(e.kernel.begin(), e.kernel.end(), [](const auto& a, const auto& b) {
      return std::tie(a.volume_dir, a.fan, a.name) < std::tie(b.volume_dir, b.fan, b.name);
    });
  }
  return out;
}

void RangeSet::add(std::uint64_t off, std::uint64_t len) {
  if (len == 0) {
    return;
  }
  std::uint64_t start = off;
  std::uint64_t end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
  // The first range that may touch [start, end): the last one starting at or before it.
  auto it = r_.upper_bound(start);
  if (it != r_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= start) {
      it = prev;
    }
  }
  while (it != r_.end() && it->first <= end) {
    start = std::min(start, it->first);
    end = std::max(end, it->second);
    bytes_ -= it->second - it->first;
    it = r_.erase(it);
  }
  r_.emplace(start, end);
  bytes_ += end - start;
}

std::uint64_t add_unnamed_objects(std::map<std::string, SpaceEntry>& scanned,
                                  const std::vector<OpenKernelObject>& open) {
  std::uint64_t added = 0;
  for (const auto& o : open) {
    const FscacheObject probe{"I" + o.volume_key, "@00", "D" + o.cookie, 0, 0};
    const std::string id = fscache_entry_id(probe);
    if (id.empty() || o.written == 0 || o.cookie.find('/') != std::string::npos ||
        o.volume_key.find('/') != std::string::npos) {
      continue;
    }
    auto it = scanned.find(id);
    if (it != scanned.end()) {
      const bool named = std::any_of(
          it->second.kernel.begin(), it->second.kernel.end(), [&](const FscacheObject& k) {
            return k.volume_dir == probe.volume_dir && k.name == probe.name;
          });
      if (named) {
        continue;
      }
    }
    SpaceEntry& e = scanned[id];
    e.id = id;
    e.kind = is_blob_id(id) ? EntryKind::kBlob : EntryKind::kFscache;
    e.bytes += o.written;
    e.kernel_bytes += o.written;
    e.unnamed_bytes += o.written;
    added += o.written;
  }
  return added;
}

PruneResult prune_fscache_dirs(const std::string& fscache_dir) {
  PruneResult r;
  const std::string root = fscache_dir + "/cache";
  const int rfd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (rfd < 0) {
    return r;
  }
  base::UniqueFd root_fd(rfd);
  const auto rmdir_at = [&](int dfd, const std::string& name) {
    if (::unlinkat(dfd, name.c_str(), AT_REMOVEDIR) == 0) {
      ++r.removed;
      return true;
    }
    if (errno == EBUSY) {
      ++r.busy;
    }
    return false;  // ENOTEMPTY (an object in it), EBUSY (the kernel's), gone meanwhile
  };
  for (const auto& vol :
       subdirs(root_fd.get(), ".", [](std::string_view n) { return !fscache_volume(n).empty(); })) {
    const int vfd =
        ::openat(root_fd.get(), vol.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (vfd < 0) {
      continue;
    }
    base::UniqueFd vol_fd(vfd);
    bool busy = false;
    for (const auto& fan : subdirs(vol_fd.get(), ".", is_fscache_fan)) {
      if (!rmdir_at(vol_fd.get(), fan) && errno == EBUSY) {
        busy = true;
        break;  // the volume is live: every fan of it is the kernel's
      }
    }
    if (!busy) {
      (void)rmdir_at(root_fd.get(), vol);
    }
  }
  return r;
}

base::Result<LimitSpec> parse_limit(std::string_view text) {
  const std::string_view orig = text;
  auto bad = [&] {
    return base::errorf(EINVAL,
                        "cache limit '{}': want bytes (e.g. 1073741824, 512M, 10G) or a "
                        "percent of the file system (e.g. 20%)",
                        orig);
  };
  while (!text.empty() && text.back() == ' ') {
    text.remove_suffix(1);
  }
  std::size_t i = 0;
  std::uint64_t n = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) != 0) {
    const std::uint64_t d = static_cast<std::uint64_t>(text[i] - '0');
    if (n > (UINT64_MAX - d) / 10) {
      return bad();
    }
    n = n * 10 + d;
    ++i;
  }
  if (i == 0) {
    return bad();
  }
  std::string unit;
  for (char c : text.substr(i)) {
    unit.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  LimitSpec s;
  if (unit == "%") {
    if (n < 1 || n > 100) {
      return bad();
    }
    s.percent = static_cast<unsigned>(n);
    return s;
  }
  int shift = 0;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else {
    static constexpr std::string_view kUnits = "kmgtp";
    const auto k = kUnits.find(unit[0]);
    const std::string_view rest = std::string_view(unit).substr(1);
    if (k == std::string_view::npos || !(rest.empty() || rest == "b" || rest == "ib")) {
      return bad();
    }
    shift = 10 * static_cast<int>(k + 1);
  }
  if (shift > 0 && n > (UINT64_MAX >> shift)) {
    return bad();
  }
  s.bytes = n << shift;
  return s;
}

std::int64_t wall_now_ns() {
  timespec t{};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return ns_of(t);
}

}  // namespace cfnd::cache
