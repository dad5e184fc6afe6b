// SPDX-License-Identifier: Apache-2.0
#include "convert/tools.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <deque>
#include <map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "convert/blob_reader.h"
#include "convert/fs_util.h"
#include "erofs/format.h"

namespace convert {
namespace {

std::string flags_compressor(std::uint64_t f) {
  if ((f & erofs::kRafsFlagCompressionZstd) != 0) {
    return "zstd";
  }
  if ((f & erofs::kRafsFlagCompressionLz4) != 0) {
    return "lz4_block";
  }
  if ((f & erofs::kRafsFlagCompressionGzip) != 0) {
    return "gzip";
  }
  if ((f & erofs::kRafsFlagCompressionNone) != 0) {
    return "none";
  }
  return "unknown";
}

std::string flags_digester(std::uint64_t f) {
  if ((f & erofs::kRafsFlagHashBlake3) != 0) {
    return "blake3";
  }
  if ((f & erofs::kRafsFlagHashSha256) != 0) {
    return "sha256";
  }
  return "unknown";
}

}  // namespace

base::Result<std::string> inspect_json(const std::string& bootstrap) {
  CFN_ASSIGN_OR_RETURN(auto loaded, load_bootstrap(bootstrap));
  const erofs::Image& img = *loaded->image;
  nlohmann::json j;
  j["rafs"] = img.is_rafs();
  j["chunk_size"] = img.chunk_size();
  j["compressor"] = flags_compressor(img.rafs_flags());
  j["digester"] = flags_digester(img.rafs_flags());
  j["inodes"] = img.super().inos;
  auto blobs = nlohmann::json::array();
  for (const auto& b : img.blobs()) {
    blobs.push_back({{"index", b.index},
                     {"id", b.id},
                     {"compressed_size", b.compressed_size},
                     {"uncompressed_size", b.uncompressed_size},
                     {"chunk_count", b.chunk_count}});
  }
  j["blobs"] = std::move(blobs);
  // The prefetch table with each entry's path (a corrupt table is an error, not an
  // empty list: a runtime would refuse it too).
  auto table = img.prefetch_table();
  if (!table) {
    return base::Unexpected(table.error().wrap(bootstrap + ": prefetch table"));
  }
  auto prefetch = nlohmann::json::array();
  if (!table->empty()) {
    std::map<erofs::Nid, std::string> paths;
    for (erofs::Nid n : *table) {
      paths.emplace(n, "");
    }
    std::size_t left = paths.size();
    CFN_TRY(img.walk(img.root(), "/",
                     [&](const std::string& p, erofs::Nid nid, const erofs::InodeInfo&) {
                       auto it = paths.find(nid);
                       if (it != paths.end() && it->second.empty()) {
                         it->second = p;
                         --left;
                       }
                       return left > 0;
                     }));
    for (erofs::Nid n : *table) {
      prefetch.push_back({{"nid", n}, {"path", paths[n]}});
    }
  }
  j["prefetch"] = std::move(prefetch);
  // Ids come from the image: replace rather than throw on invalid UTF-8.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

base::Status unpack_blobs(const std::string& bootstrap, const std::string& blob_dir,
                          const std::string& out_dir) {
  CFN_ASSIGN_OR_RETURN(auto loaded, load_bootstrap(bootstrap));
  const erofs::Image& img = *loaded->image;
  CFN_ASSIGN_OR_RETURN(auto reader, BlobReader::create(img, blob_dir));
  if (::mkdir(out_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return base::errno_error("create " + out_dir);
  }
  CFN_ASSIGN_OR_RETURN(base::UniqueFd out,
                       base::UniqueFd::open(out_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  for (const auto& b : img.blobs()) {
    if (b.id.empty() || b.id.find('/') != std::string::npos || b.id == "." || b.id == "..") {
      return base::errorf(EINVAL, "blob id '{}' cannot name a file", b.id);
    }
    CFN_ASSIGN_OR_RETURN(const erofs::BlobMeta* meta, reader->meta(b.index));
    std::string tmp = b.id + ".partial";
    CFN_ASSIGN_OR_RETURN(
        base::UniqueFd fd,
        base::UniqueFd::openat(out.get(), tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0644));
    for (std::uint32_t ci = 0; ci < meta->chunks().size(); ++ci) {
      CFN_ASSIGN_OR_RETURN(base::Bytes data, reader->chunk(b.index, ci));
      CFN_TRY(base::pwrite_full(fd.get(), data, meta->chunks()[ci].uncompressed_offset));
    }
    if (::ftruncate(fd.get(), static_cast<off_t>(b.uncompressed_size)) != 0) {
      return base::errno_error("truncate " + tmp);
    }
    fd.reset();
    if (::renameat(out.get(), tmp.c_str(), out.get(), b.id.c_str()) != 0) {
      return base::errno_error("rename " + tmp);
    }
  }
  return {};
}

base::Status cat_file(const std::string& bootstrap, const std::string& path,
                      const std::string& blob_dir, int out_fd) {
  CFN_ASSIGN_OR_RETURN(auto loaded, load_bootstrap(bootstrap));
  const erofs::Image& img = *loaded->image;
  std::string abs = path.starts_with('/') ? path : "/" + path;
  CFN_ASSIGN_OR_RETURN(erofs::Nid nid, img.lookup_path(abs));
  CFN_ASSIGN_OR_RETURN(erofs::InodeInfo st, img.stat(nid));
  if (!S_ISREG(st.mode)) {
    return base::errorf(EINVAL, "{}: not a regular file", path);
  }
  CFN_ASSIGN_OR_RETURN(auto reader, BlobReader::create(img, blob_dir));
  return reader->read(nid, 0, st.size,
                      [&](base::Bytes b) -> base::Status { return base::write_full(out_fd, b); });
}

base::Result<CheckSummary> check_image(const std::string& bootstrap, const std::string& blob_dir) {
  CFN_ASSIGN_OR_RETURN(auto loaded, load_bootstrap(bootstrap));
  const erofs::Image& img = *loaded->image;
  CFN_ASSIGN_OR_RETURN(auto reader, BlobReader::create(img, blob_dir));
  CheckSummary sum;
  sum.blobs = img.blobs().size();
  std::unordered_set<erofs::Nid> seen{img.root()};
  std::deque<std::pair<erofs::Nid, std::string>> queue{{img.root(), "/"}};
  while (!queue.empty()) {
    // Not a structured binding: clang 14 cannot capture one in the lambda below.
    const erofs::Nid nid = queue.front().first;
    const std::string path = std::move(queue.front().second);
    queue.pop_front();
    ++sum.inodes;
    auto fail = [&](base::Error e) { return base::Unexpected(std::move(e).wrap(path)); };
    auto st = img.stat(nid);
    if (!st) {
      return fail(std::move(st).error());
    }
    if (auto x = img.xattrs(nid); !x) {
      return fail(std::move(x).error());
    }
    if (S_ISDIR(st->mode)) {
      auto entries = img.readdir(nid);
      if (!entries) {
        return fail(std::move(entries).error());
      }
      for (const auto& e : *entries) {
        if (e.name == "." || e.name == "..") {
          continue;
        }
        if (seen.insert(e.nid).second) {
          queue.emplace_back(e.nid, (path == "/" ? "/" : path + "/") + e.name);
        }
      }
    } else if (S_ISLNK(st->mode)) {
      if (auto t = img.readlink(nid); !t) {
        return fail(std::move(t).error());
      }
    } else if (S_ISREG(st->mode)) {
      ++sum.files;
      std::uint64_t got = 0;
      auto r = reader->read(nid, 0, st->size, [&](base::Bytes b) -> base::Status {
        got += b.size();
        return {};
      });
      if (!r) {
        return fail(std::move(r).error());
      }
      if (got != st->size) {
        return fail(
            base::Error{erofs::kECorrupted, fmt::format("read {} of {} bytes", got, st->size)});
      }
      sum.bytes += got;
    }
  }
  sum.chunks_verified = reader->chunks_verified();
  return sum;
}

}  // namespace convert
