// SPDX-License-Identifier: Apache-2.0
// The RAFS v6 prefetch table: written by write_bootstrap from Tree::prefetch, read
// back by Image::prefetch_table as nids, walked to paths; a corrupt table (an entry
// that names no inode, a table past the end) is a clear error.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "erofs/format.h"
#include "erofs/reader.h"
#include "erofs/writer.h"

namespace erofs {
namespace {

Node dir_node() {
  Node n;
  n.mode = S_IFDIR | 0755;
  return n;
}

Node file_node() {
  Node n;
  n.mode = S_IFREG | 0644;  // empty: no chunks needed
  return n;
}

// / { bin/ { sh }, etc/ { passwd }, lib/ { a, b } }
struct Sample {
  Tree tree;
  NodeId bin, sh, etc, passwd, lib, a, b;
  Sample() {
    tree.nodes.push_back(dir_node());
    bin = add(0, "bin", dir_node());
    sh = add(bin, "sh", file_node());
    etc = add(0, "etc", dir_node());
    passwd = add(etc, "passwd", file_node());
    lib = add(0, "lib", dir_node());
    a = add(lib, "a", file_node());
    b = add(lib, "b", file_node());
  }
  NodeId add(NodeId parent, const std::string& name, Node n) {
    const auto id = static_cast<NodeId>(tree.nodes.size());
    tree.nodes.push_back(std::move(n));
    tree.nodes[parent].children[name] = id;
    return id;
  }
};

RafsExtSuperBlock ext_of(const std::vector<std::byte>& img) {
  RafsExtSuperBlock ext{};
  std::memcpy(&ext, img.data() + kRafsExtSuperOffset, sizeof ext);
  return ext;
}

std::map<Nid, std::string> paths(const Image& img) {
  std::map<Nid, std::string> out;
  auto st = img.walk(img.root(), "/", [&](const std::string& p, Nid nid, const InodeInfo&) {
    out.emplace(nid, p);
    return true;
  });
  EXPECT_TRUE(st) << st.error().to_string();
  return out;
}

TEST(PrefetchTable, RoundTrip) {
  Sample s;
  s.tree.prefetch = {s.sh, s.lib, s.sh, s.passwd};  // the repeat is written once
  auto bytes = write_bootstrap(s.tree, {}, WriteOptions{});
  ASSERT_TRUE(bytes) << bytes.error().to_string();
  const RafsExtSuperBlock ext = ext_of(*bytes);
  EXPECT_EQ(base::le32(ext.s_prefetch_table_size), 12U);
  // Right after the (empty) blob table, as nydus-image places it.
  EXPECT_EQ(base::le64(ext.s_prefetch_table_offset), base::le64(ext.s_blob_table_offset));

  auto img = Image::parse(*bytes);
  ASSERT_TRUE(img) << img.error().to_string();
  auto table = img->prefetch_table();
  ASSERT_TRUE(table) << table.error().to_string();
  ASSERT_EQ(table->size(), 3U);
  auto p = paths(*img);
  EXPECT_EQ(p[(*table)[0]], "/bin/sh");
  EXPECT_EQ(p[(*table)[1]], "/lib");
  EXPECT_EQ(p[(*table)[2]], "/etc/passwd");
  // Each entry is the nid lookup_path finds.
  EXPECT_EQ(*img->lookup_path("/lib"), (*table)[1]);

  // Walking a listed directory visits it and everything under it.
  std::vector<std::string> under;
  ASSERT_TRUE(img->walk((*table)[1], "/lib", [&](const std::string& path, Nid, const InodeInfo&) {
    under.push_back(path);
    return true;
  }));
  EXPECT_EQ(under, (std::vector<std::string>{"/lib", "/lib/a", "/lib/b"}));
}

TEST(PrefetchTable, NoneWhenEmpty) {
  Sample s;
  auto bytes = write_bootstrap(s.tree, {}, WriteOptions{});
  ASSERT_TRUE(bytes);
  EXPECT_EQ(ext_of(*bytes).s_prefetch_table_offset, 0U);
  EXPECT_EQ(ext_of(*bytes).s_prefetch_table_size, 0U);
  auto img = Image::parse(*bytes);
  ASSERT_TRUE(img);
  auto table = img->prefetch_table();
  ASSERT_TRUE(table);
  EXPECT_TRUE(table->empty());
}

TEST(PrefetchTable, WriterRejectsUnknownNodes) {
  Sample s;
  s.tree.prefetch = {99};
  auto bytes = write_bootstrap(s.tree, {}, WriteOptions{});
  ASSERT_FALSE(bytes);
  EXPECT_EQ(bytes.error().code, EINVAL);
  EXPECT_NE(bytes.error().message.find("prefetch"), std::string::npos);
}

TEST(PrefetchTable, CorruptTableIsAClearError) {
  Sample s;
  s.tree.prefetch = {s.sh, s.etc};
  auto bytes = write_bootstrap(s.tree, {}, WriteOptions{});
  ASSERT_TRUE(bytes);
  const std::uint64_t off = base::le64(ext_of(*bytes).s_prefetch_table_offset);

  // An entry naming no inode: the image parses, the table is refused naming it.
  auto bad = *bytes;
  const std::uint32_t junk = base::to_le32(0x00FFFFF0U);
  std::memcpy(bad.data() + off + 4, &junk, 4);
  auto img = Image::parse(bad);
  ASSERT_TRUE(img) << img.error().to_string();
  auto table = img->prefetch_table();
  ASSERT_FALSE(table);
  EXPECT_EQ(table.error().code, kECorrupted);
  EXPECT_NE(table.error().message.find("prefetch table entry 1"), std::string::npos)
      << table.error().message;

  // A size that is not whole entries, and a table past the end: the parse fails.
  bad = *bytes;
  const std::uint32_t odd = base::to_le32(6);
  std::memcpy(bad.data() + kRafsExtSuperOffset + offsetof(RafsExtSuperBlock, s_prefetch_table_size),
              &odd, 4);
  auto p = Image::parse(bad);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, kECorrupted);
  EXPECT_NE(p.error().message.find("prefetch table"), std::string::npos);
  bad = *bytes;
  const std::uint64_t far = base::to_le64(bad.size() - 4);
  const std::uint32_t two = base::to_le32(8);
  std::memcpy(
      bad.data() + kRafsExtSuperOffset + offsetof(RafsExtSuperBlock, s_prefetch_table_offset), &far,
      8);
  std::memcpy(bad.data() + kRafsExtSuperOffset + offsetof(RafsExtSuperBlock, s_prefetch_table_size),
              &two, 4);
  p = Image::parse(bad);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, kECorrupted);
}

TEST(PrefetchTable, WalkRefusesADirectoryCycle) {
  // A hostile image where a directory names its own parent under another name: the
  // writer refuses to make one, so patch the dirent of /bin/sh to point at /bin.
  Sample s;
  auto bytes = write_bootstrap(s.tree, {}, WriteOptions{});
  ASSERT_TRUE(bytes);
  auto img = Image::parse(*bytes);
  ASSERT_TRUE(img);
  const Nid bin = *img->lookup_path("/bin");
  const Nid sh = *img->lookup_path("/bin/sh");
  // Find the dirent of sh (le64 nid, le16 nameoff, u8 file_type) by its nid and
  // rewrite it to name /bin as a directory.
  auto bad = *bytes;
  std::size_t hits = 0;
  for (std::size_t i = 0; i + 12 <= bad.size(); i += 4) {
    std::uint64_t v = 0;
    std::memcpy(&v, bad.data() + i, 8);
    if (base::le64(v) == sh && static_cast<std::uint8_t>(bad[i + 10]) == kFtRegFile) {
      const std::uint64_t to = base::to_le64(bin);
      std::memcpy(bad.data() + i, &to, 8);
      bad[i + 10] = static_cast<std::byte>(kFtDir);
      ++hits;
    }
  }
  ASSERT_EQ(hits, 1U);
  auto hostile = Image::parse(bad);
  ASSERT_TRUE(hostile);
  auto st = hostile->walk(hostile->root(), "/",
                          [](const std::string&, Nid, const InodeInfo&) { return true; });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, kECorrupted);
}

}  // namespace
}  // namespace erofs
