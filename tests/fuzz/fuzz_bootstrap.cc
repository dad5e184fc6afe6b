// SPDX-License-Identifier: Apache-2.0
// Fuzz target: an untrusted bootstrap through every reader entry point. The tree
// walk is bounded (visited set + entry budget) so a cyclic image cannot loop.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "erofs/reader.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const base::Bytes bytes(reinterpret_cast<const std::byte*>(data), size);
  auto img = erofs::Image::parse(bytes);
  if (!img) {
    return 0;
  }
  (void)img->chunk_table();
  (void)img->prefetch_table();
  (void)img->lookup_path("/a/b/../c");
  // walk() bounds itself (cycles are an error); the callback bounds the work.
  int visits = 4096;
  (void)img->walk(img->root(), "/", [&](const std::string&, erofs::Nid, const erofs::InodeInfo&) {
    return --visits > 0;
  });
  std::set<erofs::Nid> seen;
  std::vector<erofs::Nid> todo{img->root()};
  int budget = 4096;
  while (!todo.empty() && budget > 0) {
    const erofs::Nid nid = todo.back();
    todo.pop_back();
    if (!seen.insert(nid).second) {
      continue;
    }
    auto st = img->stat(nid);
    if (!st) {
      continue;
    }
    (void)img->xattrs(nid);
    (void)img->getxattr(nid, "user.x");
    (void)img->readlink(nid);
    (void)img->map(nid, 0, UINT64_MAX);
    (void)img->map(nid, st->size / 2, 4096);
    (void)img->read_inline(nid, 0, 65536);
    auto ents = img->readdir(nid);
    if (!ents) {
      continue;
    }
    for (const erofs::DirEntry& e : *ents) {
      if (--budget <= 0) {
        break;
      }
      (void)img->lookup(nid, e.name);
      todo.push_back(e.nid);
    }
  }
  return 0;
}
