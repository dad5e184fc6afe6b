// SPDX-License-Identifier: Apache-2.0
#include "tests/unit/convert/test_util.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "convert/builder.h"
#include "convert/fs_util.h"

namespace convert::testing {

void write_tar(const std::string& path, const std::vector<TarEntry>& entries, TarFilter filter) {
  struct archive* a = archive_write_new();
  ASSERT_NE(a, nullptr);
  archive_write_set_format_pax(a);
  if (filter == TarFilter::kGzip) {
    archive_write_add_filter_gzip(a);
  } else if (filter == TarFilter::kZstd) {
    ASSERT_EQ(archive_write_add_filter_zstd(a), ARCHIVE_OK);
  }
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  for (const auto& t : entries) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, t.path.c_str());
    archive_entry_set_uid(e, t.uid);
    archive_entry_set_gid(e, t.gid);
    archive_entry_set_mtime(e, t.mtime, t.mtime_nsec);
    archive_entry_set_perm(e, t.perm);
    if (!t.hardlink.empty()) {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_hardlink(e, t.hardlink.c_str());
      archive_entry_set_size(e, 0);
    } else {
      archive_entry_set_filetype(e, t.type);
      if (t.type == S_IFREG) {
        archive_entry_set_size(e, static_cast<la_int64_t>(t.data.size()));
      }
      if (t.type == S_IFLNK) {
        archive_entry_set_symlink(e, t.symlink.c_str());
      }
      if (t.type == S_IFCHR || t.type == S_IFBLK) {
        archive_entry_set_rdevmajor(e, t.rdev_major);
        archive_entry_set_rdevminor(e, t.rdev_minor);
      }
    }
    for (const auto& [k, v] : t.xattrs) {
      archive_entry_xattr_add_entry(e, k.c_str(), v.data(), v.size());
    }
    ASSERT_EQ(archive_write_header(a, e), ARCHIVE_OK) << archive_error_string(a);
    if (t.hardlink.empty() && t.type == S_IFREG && !t.data.empty()) {
      ASSERT_EQ(archive_write_data(a, t.data.data(), t.data.size()),
                static_cast<la_ssize_t>(t.data.size()));
    }
    archive_entry_free(e);
  }
  ASSERT_EQ(archive_write_close(a), ARCHIVE_OK);
  archive_write_free(a);
}

std::string raw_tar_header(const std::string& name, std::uint64_t size, char type,
                           const std::string& linkname) {
  std::string h(512, '\0');
  std::memcpy(h.data(), name.data(), std::min<std::size_t>(name.size(), 100));
  std::snprintf(h.data() + 100, 8, "%07o", 0644);
  std::snprintf(h.data() + 108, 8, "%07o", 0);
  std::snprintf(h.data() + 116, 8, "%07o", 0);
  std::snprintf(h.data() + 124, 12, "%011llo", static_cast<unsigned long long>(size));
  std::snprintf(h.data() + 136, 12, "%011o", 0);
  h[156] = type;
  std::memcpy(h.data() + 157, linkname.data(), std::min<std::size_t>(linkname.size(), 100));
  std::memcpy(h.data() + 257,
              "ustar\0"
              "00",
              8);
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) {
    sum += c;
  }
  std::snprintf(h.data() + 148, 8, "%06o", sum);
  h[155] = ' ';
  return h;
}

std::string raw_pax_record(const std::string& key, const std::string& value) {
  std::string body = " " + key + "=" + value + "\n";
  std::size_t len = body.size() + 1;
  for (;;) {
    std::size_t total = std::to_string(len).size() + body.size();
    if (total == len) {
      break;
    }
    len = total;
  }
  return std::to_string(len) + body;
}

void write_string(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

std::string read_string(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::map<std::string, ReadEntry> read_image(const std::string& outdir) {
  std::map<std::string, ReadEntry> out;
  auto loaded = load_bootstrap(outdir + "/image.boot");
  EXPECT_TRUE(loaded) << loaded.error().to_string();
  if (!loaded) {
    return out;
  }
  const erofs::Image& img = *(*loaded)->image;
  auto reader = BlobReader::create(img, outdir + "/blobs");
  EXPECT_TRUE(reader) << reader.error().to_string();
  if (!reader) {
    return out;
  }
  std::deque<std::pair<erofs::Nid, std::string>> q{{img.root(), "/"}};
  while (!q.empty()) {
    auto [nid, path] = q.front();
    q.pop_front();
    auto st = img.stat(nid);
    EXPECT_TRUE(st) << path;
    if (!st) {
      continue;
    }
    ReadEntry e;
    e.mode = st->mode;
    e.uid = st->uid;
    e.gid = st->gid;
    e.mtime = st->mtime;
    e.mtime_nsec = st->mtime_nsec;
    e.nlink = st->nlink;
    e.nid = nid;
    e.rdev = st->rdev;
    auto xs = img.xattrs(nid);
    EXPECT_TRUE(xs) << path;
    if (xs) {
      for (const auto& x : *xs) {
        e.xattrs[x.name] = x.value;
      }
    }
    if (S_ISREG(st->mode)) {
      auto r = (*reader)->read(nid, 0, st->size, [&](base::Bytes b) -> base::Status {
        e.data.append(reinterpret_cast<const char*>(b.data()), b.size());
        return {};
      });
      EXPECT_TRUE(r) << path << ": " << r.error().to_string();
    } else if (S_ISLNK(st->mode)) {
      auto t = img.readlink(nid);
      EXPECT_TRUE(t) << path;
      if (t) {
        e.data = *t;
      }
    } else if (S_ISDIR(st->mode)) {
      auto ents = img.readdir(nid);
      EXPECT_TRUE(ents) << path;
      if (ents) {
        for (const auto& d : *ents) {
          if (d.name != "." && d.name != "..") {
            q.emplace_back(d.nid, (path == "/" ? "/" : path + "/") + d.name);
          }
        }
      }
    }
    out[path] = std::move(e);
  }
  return out;
}

base::Status build(const std::string& source, const std::string& outdir,
                   const BuildOptions& options) {
  auto r = build_image(source, outdir, options);
  if (!r) {
    return base::Unexpected(r.error());
  }
  return {};
}

std::vector<std::string> list_tree(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    out.push_back(std::filesystem::relative(it->path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace convert::testing
