// SPDX-License-Identifier: Apache-2.0
// Makes small eStargz layers in memory for the tests, laid out as the format says
// (estargz.md): every tar header goes into the current gzip member; each chunk of a
// regular file starts a member of its own (its padding and the next headers follow in
// it); then the TOC member (a tar of stargz.index.json) and the 51-byte footer. The
// real producer, ctr-remote, is checked against our reader by kernel test 96.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/digest.h"
#include "erofs/tar_header.h"
#include "tests/unit/gzip.h"

namespace estargz::testing {

using ByteVec = std::vector<std::byte>;

using cfntest::gzip;

inline ByteVec bytes_of(std::string_view s) {
  auto b = base::as_bytes(s);
  return {b.begin(), b.end()};
}

inline std::string sha256_str(base::Bytes b) {
  return base::oci_digest(base::sha256(b));
}

inline ByteVec footer(std::uint64_t toc_offset) {
  ByteVec f(51);
  const std::uint8_t head[] = {0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, 'S', 'G', 22, 0};
  std::memcpy(f.data(), head, sizeof(head));
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(toc_offset));
  std::memcpy(f.data() + 16, hex, 16);
  std::memcpy(f.data() + 32, "STARGZ", 6);
  const std::uint8_t tail[] = {1, 0, 0, 0xff, 0xff};
  std::memcpy(f.data() + 38, tail, sizeof(tail));
  return f;  // CRC32 and ISIZE of nothing: zero
}

struct FileSpec {
  std::string name;
  std::string type = "reg";  // TOC type
  std::string content;       // reg
  std::string link_name;
  std::uint32_t mode = 0644;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint32_t dev_major = 0;
  std::uint32_t dev_minor = 0;
  std::map<std::string, std::string> xattrs_b64;
};

struct MadeLayer {
  ByteVec blob;
  std::uint64_t toc_offset = 0;
  std::string toc_json;
  ByteVec toc_member;
};

class LayerMaker {
 public:
  explicit LayerMaker(std::uint64_t chunk_size = 4 << 20, int level = Z_DEFAULT_COMPRESSION)
      : chunk_size_(chunk_size), level_(level) {}

  // Entries of the TOC may be edited (toc()["entries"][i]) before make().
  void add(const FileSpec& f) {
    pending_ += tar_header(f.name, f.type == "reg" ? f.content.size() : 0);
    nlohmann::json e = {{"name", f.name}, {"type", f.type}, {"mode", f.mode},
                        {"uid", f.uid},   {"gid", f.gid},   {"modtime", "2024-05-06T07:08:09Z"}};
    if (!f.link_name.empty()) {
      e["linkName"] = f.link_name;
    }
    if (f.type == "char" || f.type == "block") {
      e["devMajor"] = f.dev_major;
      e["devMinor"] = f.dev_minor;
    }
    if (!f.xattrs_b64.empty()) {
      e["xattrs"] = f.xattrs_b64;
    }
    if (f.type != "reg" || f.content.empty()) {
      if (f.type == "reg") {
        e["size"] = 0;
      }
      toc_["entries"].push_back(e);
      return;
    }
    e["size"] = f.content.size();
    std::uint64_t written = 0;
    bool first = true;
    while (written < f.content.size()) {
      flush();
      std::uint64_t n = std::min<std::uint64_t>(chunk_size_, f.content.size() - written);
      nlohmann::json c = first ? e : nlohmann::json{{"name", f.name}, {"type", "chunk"}};
      c["offset"] = blob_.size();
      c["chunkOffset"] = written;
      c["chunkSize"] = n == chunk_size_ ? n : 0;
      const std::string part = f.content.substr(written, n);
      c["chunkDigest"] = sha256_str(base::as_bytes(part));
      pending_ += part;
      toc_["entries"].push_back(c);
      written += n;
      first = false;
    }
    pending_.append((512 - f.content.size() % 512) % 512, '\0');
  }

  nlohmann::json& toc() { return toc_; }

  MadeLayer make() {
    flush();
    MadeLayer m;
    m.toc_offset = blob_.size();
    m.toc_json = toc_.dump();
    std::string tar = tar_header("stargz.index.json", m.toc_json.size()) + m.toc_json;
    tar.append((512 - m.toc_json.size() % 512) % 512, '\0');
    tar.append(1024, '\0');
    m.toc_member = gzip(base::as_bytes(tar));
    m.blob = blob_;
    m.blob.insert(m.blob.end(), m.toc_member.begin(), m.toc_member.end());
    auto f = footer(m.toc_offset);
    m.blob.insert(m.blob.end(), f.begin(), f.end());
    return m;
  }

 private:
  static std::string tar_header(const std::string& name, std::uint64_t size) {
    auto h = erofs::encode_tar_header(name, size);
    return std::string(base::as_chars(h));
  }
  void flush() {
    if (pending_.empty()) {
      return;
    }
    auto g = gzip(base::as_bytes(pending_), level_);
    blob_.insert(blob_.end(), g.begin(), g.end());
    pending_.clear();
  }

  std::uint64_t chunk_size_;
  int level_;
  ByteVec blob_;
  std::string pending_;
  nlohmann::json toc_ = {{"version", 1}, {"entries", nlohmann::json::array()}};
};

// A layer of every entry type (the root, dirs with owners and modes, a landmark, a file
// of several chunks with an xattr, an empty file, a symlink, a hardlink, a char device, a
// fifo, a file below implicit dirs), in 4 KiB eStargz chunks; big is the large file.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"  // FileSpec's defaults
inline LayerMaker every_entry_type(const std::string& big) {
  LayerMaker lm(4096);
  lm.add({.name = "./", .type = "dir", .mode = 0755});
  lm.add({.name = "./etc/", .type = "dir", .mode = 0700, .uid = 5});
  lm.add({.name = "./etc/hello.txt", .content = "hello\n", .mode = 0640, .gid = 9});
  lm.add({.name = ".prefetch.landmark", .content = "\x0f"});
  lm.add({.name = "./big", .content = big, .xattrs_b64 = {{"user.k", "dmFs"}}});
  lm.add({.name = "./empty", .content = ""});
  lm.add({.name = "./link", .type = "symlink", .link_name = "etc/hello.txt"});
  lm.add({.name = "./hard", .type = "hardlink", .link_name = "./etc/hello.txt"});
  lm.add({.name = "./null", .type = "char", .mode = 0666, .dev_major = 1, .dev_minor = 3});
  lm.add({.name = "./fifo", .type = "fifo"});
  lm.add({.name = "./implicit/deep/file", .content = "deep"});
  return lm;
}
#pragma GCC diagnostic pop

}  // namespace estargz::testing
