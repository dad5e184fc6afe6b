// SPDX-License-Identifier: Apache-2.0
// Reader tests: images built byte by byte (valid, truncated, oversized, lying), and
// the small mkfs.erofs 1.5 images committed under tests/data/erofs.
#include "erofs/reader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <map>
#include <string>

#include "base/file.h"

#ifndef CFN_TEST_DATA_DIR
#define CFN_TEST_DATA_DIR "tests/data"
#endif

namespace erofs {
namespace {

using base::to_le16;
using base::to_le32;
using base::to_le64;

constexpr std::uint64_t kBs = 4096;

// A hand-made image: superblock in block 0, inodes from block 1 (meta_blkaddr 1).
class Builder {
 public:
  explicit Builder(std::size_t blocks) : img_(blocks * kBs) {
    sb_.magic = to_le32(kMagic);
    sb_.blkszbits = 12;
    sb_.root_nid = to_le16(kRoot);
    sb_.inos = to_le64(1);
    sb_.meta_blkaddr = to_le32(1);
    sb_.feature_incompat = to_le32(kFeatureIncompatChunkedFile);
  }
  static constexpr Nid kRoot = 2;

  SuperBlock& sb() { return sb_; }
  std::vector<std::byte>& bytes() {
    std::memcpy(img_.data() + kSuperOffset, &sb_, sizeof(sb_));
    return img_;
  }
  static std::uint64_t inode_off(Nid nid) { return kBs + nid * 32; }

  template <typename T>
  void put(std::uint64_t off, const T& v) {
    std::memcpy(img_.data() + off, &v, sizeof(T));
  }
  void put_str(std::uint64_t off, std::string_view s) {
    std::memcpy(img_.data() + off, s.data(), s.size());
  }

  // An extended inode; returns the offset right after it (inline data / xattrs).
  std::uint64_t ext_inode(Nid nid, std::uint8_t layout, std::uint16_t mode, std::uint64_t size,
                          std::uint32_t i_u, std::uint16_t icount = 0, std::uint32_t nlink = 1) {
    InodeExtended e{};
    e.i_format = to_le16(static_cast<std::uint16_t>(kInodeLayoutExtended | layout << 1));
    e.i_xattr_icount = to_le16(icount);
    e.i_mode = to_le16(mode);
    e.i_size = to_le64(size);
    e.i_u = to_le32(i_u);
    e.i_ino = to_le32(static_cast<std::uint32_t>(nid));
    e.i_uid = to_le32(100000);
    e.i_gid = to_le32(7);
    e.i_mtime = to_le64(1700000000);
    e.i_mtime_nsec = to_le32(5);
    e.i_nlink = to_le32(nlink);
    put(inode_off(nid), e);
    return inode_off(nid) + sizeof(e);
  }
  std::uint64_t compact_inode(Nid nid, std::uint8_t layout, std::uint16_t mode, std::uint32_t size,
                              std::uint32_t i_u) {
    InodeCompact c{};
    c.i_format = to_le16(static_cast<std::uint16_t>(layout << 1));
    c.i_mode = to_le16(mode);
    c.i_nlink = to_le16(1);
    c.i_size = to_le32(size);
    c.i_u = to_le32(i_u);
    c.i_uid = to_le16(3);
    c.i_gid = to_le16(4);
    put(inode_off(nid), c);
    return inode_off(nid) + sizeof(c);
  }

  // Directory block bytes for sorted (name, nid, type) entries.
  static std::string dir_block(const std::vector<std::tuple<std::string, Nid, std::uint8_t>>& es) {
    std::string out(es.size() * sizeof(Dirent), '\0');
    std::uint16_t nameoff = static_cast<std::uint16_t>(es.size() * sizeof(Dirent));
    for (std::size_t i = 0; i < es.size(); ++i) {
      Dirent d{};
      d.nid = to_le64(std::get<1>(es[i]));
      d.nameoff = to_le16(nameoff);
      d.file_type = std::get<2>(es[i]);
      std::memcpy(out.data() + i * sizeof(Dirent), &d, sizeof(d));
      out += std::get<0>(es[i]);
      nameoff = static_cast<std::uint16_t>(nameoff + std::get<0>(es[i]).size());
    }
    return out;
  }

 private:
  SuperBlock sb_{};
  std::vector<std::byte> img_;
};

// Root (nid 2) with ".", "..", "a" (nid 8, inline "hello"), "l" (nid 12, symlink -> "a").
Builder minimal() {
  Builder b(3);
  const std::string root = Builder::dir_block(
      {{".", 2, kFtDir}, {"..", 2, kFtDir}, {"a", 8, kFtRegFile}, {"l", 12, kFtSymlink}});
  auto at = b.ext_inode(2, kInodeFlatInline, S_IFDIR | 0755, root.size(), kNullAddr, 0, 2);
  b.put_str(at, root);
  at = b.ext_inode(8, kInodeFlatInline, S_IFREG | 0644, 5, kNullAddr);
  b.put_str(at, "hello");
  at = b.compact_inode(12, kInodeFlatInline, S_IFLNK | 0777, 1, kNullAddr);
  b.put_str(at, "a");
  return b;
}

int err_code(const auto& r) {
  return r ? 0 : r.error().code;
}

TEST(Reader, MinimalImage) {
  Builder b = minimal();
  auto img = Image::parse(b.bytes());
  ASSERT_TRUE(img) << img.error().to_string();
  EXPECT_FALSE(img->is_rafs());
  EXPECT_EQ(img->root(), 2U);
  auto ents = img->readdir(2);
  ASSERT_TRUE(ents) << ents.error().to_string();
  ASSERT_EQ(ents->size(), 4U);
  EXPECT_EQ((*ents)[2].name, "a");
  EXPECT_EQ((*ents)[3].file_type, kFtSymlink);
  EXPECT_EQ(*img->lookup_path("/a"), 8U);
  EXPECT_EQ(*img->lookup_path("//a/"), 8U);
  EXPECT_EQ(*img->lookup_path("/"), 2U);
  EXPECT_EQ(*img->lookup_path("/./.."), 2U);
  EXPECT_EQ(err_code(img->lookup_path("a")), EINVAL);
  EXPECT_EQ(err_code(img->lookup_path("/b")), ENOENT);
  EXPECT_EQ(err_code(img->lookup_path("/a/x")), ENOTDIR);
  EXPECT_EQ(err_code(img->lookup(2, "")), ENOENT);
  EXPECT_EQ(err_code(img->lookup(2, std::string(300, 'a'))), ENOENT);
  auto st = img->stat(8);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->uid, 100000U);
  EXPECT_EQ(st->gid, 7U);
  EXPECT_EQ(st->mtime, 1700000000);
  EXPECT_EQ(st->mtime_nsec, 5U);
  auto data = img->read_inline(8, 0, 100);
  ASSERT_TRUE(data);
  EXPECT_EQ(base::as_chars(*data), "hello");
  auto part = img->read_inline(8, 1, 3);
  ASSERT_TRUE(part);
  EXPECT_EQ(base::as_chars(*part), "ell");
  EXPECT_TRUE(img->read_inline(8, 9, 3)->empty());
  EXPECT_EQ(*img->readlink(12), "a");
  auto lst = img->stat(12);
  ASSERT_TRUE(lst);
  EXPECT_FALSE(lst->extended);
  EXPECT_EQ(lst->uid, 3U);
  EXPECT_EQ(err_code(img->readlink(8)), EINVAL);
  EXPECT_EQ(err_code(img->getxattr(8, "user.x")), ENODATA);
}

TEST(Reader, RejectsNonErofsAndTruncation) {
  Builder b = minimal();
  auto& bytes = b.bytes();
  EXPECT_EQ(err_code(Image::parse({})), EINVAL);
  EXPECT_EQ(err_code(Image::parse(base::Bytes(bytes).first(1100))), EINVAL);
  // Every truncation either parses (the parts needed are there) or fails cleanly,
  // and every call afterwards stays in bounds.
  for (std::size_t n = 0; n <= bytes.size(); n += 4) {
    auto img = Image::parse(base::Bytes(bytes).first(n));
    if (img) {
      (void)img->readdir(2);
      (void)img->read_inline(8, 0, 5);
      (void)img->readlink(12);
    }
  }
  auto bad = bytes;
  bad[kSuperOffset] = std::byte{0};
  EXPECT_EQ(err_code(Image::parse(bad)), EINVAL);
}

TEST(Reader, SuperblockValidation) {
  {
    Builder b = minimal();
    b.sb().feature_incompat = to_le32(0x200);
    EXPECT_EQ(err_code(Image::parse(b.bytes())), EOPNOTSUPP);
  }
  {
    Builder b = minimal();
    b.sb().feature_incompat = to_le32(kFeatureIncompat48Bit);
    EXPECT_EQ(err_code(Image::parse(b.bytes())), EOPNOTSUPP);
  }
  {
    Builder b = minimal();
    b.sb().blkszbits = 13;
    EXPECT_EQ(err_code(Image::parse(b.bytes())), kECorrupted);
  }
  {
    Builder b = minimal();
    b.sb().dirblkbits = 1;
    EXPECT_EQ(err_code(Image::parse(b.bytes())), EOPNOTSUPP);
  }
  {
    Builder b = minimal();
    b.sb().root_nid = to_le16(8);  // a regular file
    auto r = Image::parse(b.bytes());
    EXPECT_EQ(err_code(r), kECorrupted);
  }
  {
    Builder b = minimal();
    b.sb().root_nid = to_le16(60000);  // past the end
    EXPECT_EQ(err_code(Image::parse(b.bytes())), kECorrupted);
  }
  {
    Builder b = minimal();
    b.sb().meta_blkaddr = to_le32(0xFFFFFFFF);
    EXPECT_EQ(err_code(Image::parse(b.bytes())), kECorrupted);
  }
  {
    // Device table larger than the image.
    Builder b = minimal();
    b.sb().feature_incompat = to_le32(kFeatureIncompatChunkedFile | kFeatureIncompatDeviceTable);
    b.sb().extra_devices = to_le16(200);
    b.sb().devt_slotoff = to_le16(11);
    EXPECT_EQ(err_code(Image::parse(b.bytes())), kECorrupted);
  }
}

TEST(Reader, InodeValidation) {
  {
    Builder b = minimal();
    b.ext_inode(8, kInodeFlatInline, 0170644, 5, kNullAddr);  // bogus type
    auto img = Image::parse(b.bytes());
    ASSERT_TRUE(img);
    EXPECT_EQ(err_code(img->stat(8)), kECorrupted);
  }
  {
    Builder b = minimal();
    b.ext_inode(8, 5, S_IFREG | 0644, 5, kNullAddr);  // layout 5
    auto img = Image::parse(b.bytes());
    ASSERT_TRUE(img);
    EXPECT_EQ(err_code(img->stat(8)), kECorrupted);
    b.ext_inode(8, kInodeCompressedFull, S_IFREG | 0644, 5, kNullAddr);
    img = Image::parse(b.bytes());
    EXPECT_EQ(err_code(img->stat(8)), EOPNOTSUPP);
  }
  {
    // Inline tail crossing a block boundary: nid 126 ends 32 bytes before block 2.
    Builder b = minimal();
    b.compact_inode(126, kInodeFlatInline, S_IFREG | 0644, 100, kNullAddr);
    auto img = Image::parse(b.bytes());
    ASSERT_TRUE(img);
    auto r = img->stat(126);
    ASSERT_EQ(err_code(r), kECorrupted);
    EXPECT_NE(r.error().message.find("across blocks"), std::string::npos);
  }
  {
    // xattr body that runs past the end of the image.
    Builder b = minimal();
    b.ext_inode(8, kInodeFlatInline, S_IFREG | 0644, 0, kNullAddr, 0xFFFF);
    auto img = Image::parse(b.bytes());
    ASSERT_TRUE(img);
    EXPECT_EQ(err_code(img->stat(8)), kECorrupted);
  }
  {
    Builder b = minimal();
    auto img = Image::parse(b.bytes());
    ASSERT_TRUE(img);
    EXPECT_EQ(err_code(img->stat(UINT64_MAX)), kECorrupted);
    EXPECT_EQ(err_code(img->stat(UINT64_MAX / 32 + 1)), kECorrupted);
  }
}

TEST(Reader, FlatPlainAndLyingSizes) {
  Builder b = minimal();
  // nid 20: plain file in block 2; nid 24: plain file whose data is past the end;
  // nid 28: a sparse (NULL startblk) file of 2^60 bytes; nid 32: 8 GiB directory.
  b.ext_inode(20, kInodeFlatPlain, S_IFREG | 0644, 10, 2);
  b.put_str(2 * kBs, "0123456789");
  b.ext_inode(24, kInodeFlatPlain, S_IFREG | 0644, 5000, 2);
  b.ext_inode(28, kInodeFlatPlain, S_IFREG | 0644, 1ULL << 60, kNullAddr);
  b.ext_inode(32, kInodeFlatPlain, S_IFDIR | 0755, 8ULL << 30, 2);
  b.ext_inode(36, kInodeFlatPlain, S_IFREG | 0644, UINT64_MAX, 0xFFFFFFF0);
  auto img = Image::parse(b.bytes());
  ASSERT_TRUE(img);
  EXPECT_EQ(base::as_chars(*img->read_inline(20, 2, 3)), "234");
  EXPECT_EQ(err_code(img->read_inline(24, 0, 5000)), kECorrupted);
  auto m = img->map(28, 0, UINT64_MAX);
  ASSERT_TRUE(m);
  ASSERT_EQ(m->size(), 1U);
  EXPECT_EQ((*m)[0].kind, Extent::Kind::kHole);
  EXPECT_EQ((*m)[0].length, 1ULL << 60);
  EXPECT_EQ(err_code(img->read_inline(28, 0, UINT64_MAX)), EFBIG);
  EXPECT_EQ(*img->read_inline(28, 100, 4), std::vector<std::byte>(4));
  EXPECT_EQ(err_code(img->readdir(32)), kECorrupted);
  EXPECT_EQ(err_code(img->lookup(32, "x")), kECorrupted);
  EXPECT_EQ(err_code(img->map(36, UINT64_MAX - 10, 5)), kECorrupted);
}

TEST(Reader, DirectoryBlockValidation) {
  auto with_root = [](const std::string& blk) {
    Builder b(3);
    auto at = b.ext_inode(2, kInodeFlatInline, S_IFDIR | 0755, blk.size(), kNullAddr);
    b.put_str(at, blk);
    return b;
  };
  const std::string good = Builder::dir_block({{".", 2, kFtDir}, {"..", 2, kFtDir}});
  {
    Builder b = with_root(good);
    auto img = Image::parse(b.bytes());
    ASSERT_TRUE(img);
    EXPECT_EQ(img->readdir(2)->size(), 2U);
  }
  auto corrupt = [&](std::string blk, const char* what) {
    SCOPED_TRACE(what);
    Builder b = with_root(blk);
    auto img = Image::parse(b.bytes());
    ASSERT_TRUE(img);
    EXPECT_EQ(err_code(img->readdir(2)), kECorrupted);
    EXPECT_EQ(err_code(img->lookup(2, "..")), kECorrupted);
  };
  std::string s = good;
  s[8] = 13;  // nameoff0 not a multiple of 12
  corrupt(s, "nameoff0 % 12");
  s = good;
  s[8] = 0;
  corrupt(s, "nameoff0 = 0");
  s = good;
  s[8] = 120;  // nameoff0 past the data
  corrupt(s, "nameoff0 past size");
  s = good;
  s[20] = 30;  // second name before the first
  corrupt(s, "nameoff decreasing");
  s = good;
  s[20] = 24;  // first name empty
  corrupt(s, "empty name");
  corrupt(good.substr(0, 10), "shorter than a dirent");
  // Last name longer than 255 bytes in a full block.
  std::string big = Builder::dir_block({{std::string(300, 'x'), 2, kFtDir}});
  corrupt(big, "long name");
}

TEST(Reader, MultiBlockDirectoryLookup) {
  // 600 entries over several 4 KiB blocks, FLAT_PLAIN starting at block 2.
  std::vector<std::tuple<std::string, Nid, std::uint8_t>> all;
  all.emplace_back(".", 2, kFtDir);
  all.emplace_back("..", 2, kFtDir);
  for (int i = 0; i < 600; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "file-%04d", i);
    all.emplace_back(name, 8, kFtRegFile);
  }
  std::vector<std::string> blocks;
  std::vector<std::tuple<std::string, Nid, std::uint8_t>> cur;
  std::size_t used = 0;
  for (auto& e : all) {
    const std::size_t need = sizeof(Dirent) + std::get<0>(e).size();
    if (used + need > kBs) {
      blocks.push_back(Builder::dir_block(cur));
      cur.clear();
      used = 0;
    }
    cur.push_back(e);
    used += need;
  }
  blocks.push_back(Builder::dir_block(cur));
  ASSERT_GT(blocks.size(), 2U);
  Builder b(2 + blocks.size());
  const std::uint64_t size = (blocks.size() - 1) * kBs + blocks.back().size();
  b.ext_inode(2, kInodeFlatPlain, S_IFDIR | 0755, size, 2);
  b.ext_inode(8, kInodeFlatInline, S_IFREG | 0644, 0, kNullAddr);
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    b.put_str((2 + i) * kBs, blocks[i]);
  }
  auto img = Image::parse(b.bytes());
  ASSERT_TRUE(img) << img.error().to_string();
  auto ents = img->readdir(2);
  ASSERT_TRUE(ents) << ents.error().to_string();
  EXPECT_EQ(ents->size(), 602U);
  for (const auto& e : all) {
    auto r = img->lookup(2, std::get<0>(e));
    ASSERT_TRUE(r) << std::get<0>(e);
    EXPECT_EQ(*r, std::get<1>(e));
  }
  EXPECT_EQ(err_code(img->lookup(2, "file-0600")), ENOENT);
  EXPECT_EQ(err_code(img->lookup(2, "a")), ENOENT);
  EXPECT_EQ(err_code(img->lookup(2, "zzz")), ENOENT);
  EXPECT_EQ(err_code(img->lookup(2, "file-0100x")), ENOENT);
}

TEST(Reader, Xattrs) {
  auto make = [](std::uint8_t shared, const std::string& body_entries, std::uint16_t icount) {
    Builder b = minimal();
    auto at = b.ext_inode(8, kInodeFlatInline, S_IFREG | 0644, 0, kNullAddr, icount);
    XattrIbodyHeader h{};
    h.h_shared_count = shared;
    b.put(at, h);
    b.put_str(at + sizeof(h), body_entries);
    return b;
  };
  auto entry = [](std::uint8_t index, const std::string& name, const std::string& value) {
    std::string e(4, '\0');
    e[0] = static_cast<char>(name.size());
    e[1] = static_cast<char>(index);
    e[2] = static_cast<char>(value.size());
    e += name + value;
    e.resize((e.size() + 3) & ~std::size_t{3}, '\0');
    return e;
  };
  {
    const std::string body = entry(1, "foo", "bar") + entry(6, "selinux", "ctx") +
                             entry(2, "", std::string(8, 'A')) + entry(4, "t", "");
    Builder b = make(0, body, static_cast<std::uint16_t>(body.size() / 4 + 1));
    auto img = Image::parse(b.bytes());
    ASSERT_TRUE(img);
    auto xs = img->xattrs(8);
    ASSERT_TRUE(xs) << xs.error().to_string();
    ASSERT_EQ(xs->size(), 4U);
    EXPECT_EQ((*xs)[0].name, "user.foo");
    EXPECT_EQ((*xs)[0].value, "bar");
    EXPECT_EQ((*xs)[1].name, "security.selinux");
    EXPECT_EQ((*xs)[2].name, "system.posix_acl_access");
    EXPECT_EQ((*xs)[2].value, std::string(8, 'A'));
    EXPECT_EQ((*xs)[3].name, "trusted.t");
    EXPECT_EQ(*img->getxattr(8, "security.selinux"), "ctx");
    EXPECT_EQ(err_code(img->getxattr(8, "user.none")), ENODATA);
  }
  {
    // Entry larger than the body it sits in.
    const std::string body = entry(1, "foo", std::string(40, 'v'));
    Builder b = make(0, body, 3);
    auto img = Image::parse(b.bytes());
    EXPECT_EQ(err_code(img->xattrs(8)), kECorrupted);
  }
  {
    Builder b = make(0, entry(0x81, "x", "y"), 4);
    auto img = Image::parse(b.bytes());
    EXPECT_EQ(err_code(img->xattrs(8)), EOPNOTSUPP);
  }
  {
    Builder b = make(0, entry(9, "x", "y"), 4);
    auto img = Image::parse(b.bytes());
    EXPECT_EQ(err_code(img->xattrs(8)), kECorrupted);
  }
  {
    // Shared ids that overrun the body, and a shared id past the image.
    Builder b = make(5, "", 2);
    auto img = Image::parse(b.bytes());
    EXPECT_EQ(err_code(img->xattrs(8)), kECorrupted);
    Builder c = make(1, std::string("\xff\xff\xff\x0f", 4), 2);
    img = Image::parse(c.bytes());
    EXPECT_EQ(err_code(img->xattrs(8)), kECorrupted);
  }
  {
    // A shared xattr at xattr_blkaddr 2.
    Builder b(3);
    b.put_str(2 * kBs + 8, entry(1, "shared", "yes"));
    auto at = b.ext_inode(2, kInodeFlatInline, S_IFDIR | 0755, 0, kNullAddr, 2);
    XattrIbodyHeader h{};
    h.h_shared_count = 1;
    b.put(at, h);
    b.put(at + sizeof(h), to_le32(2));  // id 2 -> byte 8 of the area
    b.sb().xattr_blkaddr = to_le32(2);
    auto img = Image::parse(b.bytes());
    ASSERT_TRUE(img) << img.error().to_string();
    EXPECT_EQ(*img->getxattr(2, "user.shared"), "yes");
  }
}

TEST(Reader, Symlinks) {
  Builder b = minimal();
  b.compact_inode(12, kInodeFlatInline, S_IFLNK | 0777, 0, kNullAddr);
  b.ext_inode(16, kInodeFlatPlain, S_IFLNK | 0777, 5000, 2);
  auto img = Image::parse(b.bytes());
  ASSERT_TRUE(img);
  EXPECT_EQ(err_code(img->readlink(12)), kECorrupted);
  EXPECT_EQ(err_code(img->readlink(16)), kECorrupted);
}

TEST(Reader, Devices) {
  Builder b = minimal();
  b.ext_inode(8, kInodeFlatPlain, S_IFCHR | 0600, 0, encode_rdev(300, 70000));
  auto img = Image::parse(b.bytes());
  ASSERT_TRUE(img);
  auto st = img->stat(8);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->rdev, 0x11112c70U);
  EXPECT_EQ(rdev_major(st->rdev), 300U);
  EXPECT_EQ(rdev_minor(st->rdev), 70000U);
  EXPECT_EQ(encode_rdev(1, 3), 0x103U);
  EXPECT_TRUE(img->map(8, 0, 10)->empty());
}

// Chunk-based files: a 4-byte block map and 8-byte indexes with one extra device.
TEST(Reader, ChunkBased) {
  Builder b(4);
  b.sb().feature_incompat = to_le32(kFeatureIncompatChunkedFile | kFeatureIncompatDeviceTable);
  b.sb().extra_devices = to_le16(1);
  b.sb().devt_slotoff = to_le16(16);  // byte 2048
  DeviceSlot slot{};
  std::memcpy(slot.tag, "blobdev", 7);
  slot.blocks = to_le32(100);
  b.put(2048, slot);
  const std::string root = Builder::dir_block({{".", 2, kFtDir}, {"..", 2, kFtDir}});
  b.put_str(b.ext_inode(2, kInodeFlatInline, S_IFDIR | 0755, root.size(), kNullAddr), root);
  // nid 8: 3 chunks of 4 KiB (chunkbits 0) via block map: block 2, hole, block 3.
  auto at = b.ext_inode(8, kInodeChunkBased, S_IFREG | 0644, 3 * kBs - 100, 0);
  b.put(at, to_le32(2));
  b.put(at + 4, to_le32(kNullAddr));
  b.put(at + 8, to_le32(3));
  // nid 16: 8 KiB chunks (chunkbits 1), indexes: dev 0x0501 (masked to 1) blk 10,
  // then a hole, then dev 0 blk 2 (unified -> primary).
  at = b.ext_inode(16, kInodeChunkBased, S_IFREG | 0644, 3 * 8192, kChunkFormatIndexes | 1);
  at = base::align_up(at, 8);
  ChunkIndex ci{};
  ci.device_id = to_le16(0x0501);
  ci.startblk_lo = to_le32(10);
  b.put(at, ci);
  ci.device_id = to_le16(1);
  ci.startblk_lo = to_le32(kNullAddr);
  b.put(at + 8, ci);
  ci.device_id = 0;
  ci.startblk_lo = to_le32(2);
  b.put(at + 16, ci);
  // nid 24: device 2 (masked); nid 28: index array past the end.
  at = base::align_up(b.ext_inode(24, kInodeChunkBased, S_IFREG | 0644, 10, 0x20), 8);
  ci.device_id = to_le16(2);
  ci.startblk_lo = 0;
  b.put(at, ci);
  b.ext_inode(28, kInodeChunkBased, S_IFREG | 0644, 1ULL << 40, 0x20);
  b.ext_inode(32, kInodeChunkBased, S_IFREG | 0644, 10, 0x40);
  auto img = Image::parse(b.bytes());
  ASSERT_TRUE(img) << img.error().to_string();
  ASSERT_EQ(img->blobs().size(), 1U);
  EXPECT_EQ(img->blobs()[0].id, "blobdev");
  EXPECT_EQ(img->blobs()[0].uncompressed_size, 100 * kBs);

  auto m = img->map(8, 0, UINT64_MAX);
  ASSERT_TRUE(m) << m.error().to_string();
  ASSERT_EQ(m->size(), 3U);
  EXPECT_EQ((*m)[0].kind, Extent::Kind::kBootstrap);
  EXPECT_EQ((*m)[0].offset, 2 * kBs);
  EXPECT_EQ((*m)[1].kind, Extent::Kind::kHole);
  EXPECT_EQ((*m)[2].offset, 3 * kBs);
  EXPECT_EQ((*m)[2].length, kBs - 100);
  auto part = img->map(8, 100, 10);
  ASSERT_EQ(part->size(), 1U);
  EXPECT_EQ((*part)[0].offset, 2 * kBs + 100);
  EXPECT_TRUE(img->read_inline(8, 0, 3 * kBs));

  m = img->map(16, 4096, 8192 * 3);
  ASSERT_TRUE(m) << m.error().to_string();
  ASSERT_EQ(m->size(), 3U);
  EXPECT_EQ((*m)[0].kind, Extent::Kind::kBlob);
  EXPECT_EQ((*m)[0].blob_index, 0U);
  EXPECT_EQ((*m)[0].offset, 10 * kBs + 4096);
  EXPECT_EQ((*m)[0].length, 4096U);
  EXPECT_FALSE((*m)[0].ci_index.has_value());
  EXPECT_EQ((*m)[1].kind, Extent::Kind::kHole);
  EXPECT_EQ((*m)[2].kind, Extent::Kind::kBootstrap);
  EXPECT_EQ(err_code(img->read_inline(16, 0, 10)), EINVAL);

  // device_id 2 & mask 1 = 0: a unified address (block 0 of the primary device).
  m = img->map(24, 0, 10);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)[0].kind, Extent::Kind::kBootstrap);
  EXPECT_EQ((*m)[0].offset, 0U);
  auto r = img->map(28, 0, 10);
  ASSERT_EQ(err_code(r), kECorrupted);
  EXPECT_NE(r.error().message.find("inode 28: chunk index array past end of image"),
            std::string::npos);
  EXPECT_EQ(err_code(img->map(32, 0, 10)), EOPNOTSUPP);
}

// A RAFS v6 bootstrap made by hand: ext-superblock, device table, blob table, chunk
// table, prefetch table and nydus chunk-address encoding.
struct Rafs {
  Builder b{5};
  Rafs() {
    SuperBlock& sb = b.sb();
    sb.feature_compat = to_le32(kFeatureCompatRafsV6);
    sb.feature_incompat = to_le32(kFeatureIncompatChunkedFile | kFeatureIncompatDeviceTable);
    sb.extra_devices = to_le16(1);
    sb.devt_slotoff = to_le16(kRafsDevtSlotOff);
    sb.meta_blkaddr = to_le32(1);
    RafsExtSuperBlock ext{};
    ext.s_flags = to_le64(kRafsFlagHashSha256 | kRafsFlagCompressionZstd);
    ext.s_blob_table_offset = to_le64(3 * kBs);
    ext.s_blob_table_size = to_le32(256);
    ext.s_chunk_size = to_le32(1U << 20);
    ext.s_chunk_table_offset = to_le64(4 * kBs);
    ext.s_chunk_table_size = to_le64(80);
    ext.s_prefetch_table_offset = to_le64(3 * kBs + 256);
    ext.s_prefetch_table_size = to_le32(8);
    b.put(kRafsExtSuperOffset, ext);
    DeviceSlot slot{};
    std::memset(slot.tag, 'b', 64);
    slot.blocks = to_le32(0x300);
    slot.mapped_blkaddr = to_le32(512);
    b.put(kRafsDevtSlotOff * 128, slot);
    RafsV6Blob blob{};
    std::memset(blob.blob_id, 'b', 64);
    blob.chunk_size = to_le32(1U << 20);
    blob.chunk_count = to_le32(0x20000);
    blob.compression_algo = to_le32(kRafsComprZstd);
    blob.digest_algo = to_le32(kRafsDigestSha256);
    blob.features = to_le32(kBlobFeatureAligned);
    blob.compressed_size = to_le64(12345);
    blob.uncompressed_size = to_le64(0x300000);
    blob.ci_compressor = to_le32(kRafsComprGzip);
    b.put(3 * kBs, blob);
    b.put(3 * kBs + 256, to_le32(2));
    b.put(3 * kBs + 260, to_le32(8));
    RafsV5ChunkInfo c{};
    c.block_id[0] = 0xab;
    c.flags = to_le32(kChunkFlagCompressed);
    c.compressed_size = to_le32(10);
    c.uncompressed_size = to_le32(20);
    c.index = to_le32(0x10005);
    b.put(4 * kBs, c);
    const std::string root =
        Builder::dir_block({{".", 2, kFtDir}, {"..", 2, kFtDir}, {"f", 8, kFtRegFile}});
    b.put_str(b.ext_inode(2, kInodeFlatInline, S_IFDIR | 0755, root.size(), kNullAddr), root);
    // nid 8: 2.5 MiB over 3 RAFS chunks; the format claims 4 MiB chunks (the
    // contiguous-chunk trick), the entries still cover 1 MiB each.
    auto at = base::align_up(
        b.ext_inode(8, kInodeChunkBased, S_IFREG | 0644, (5ULL << 20) / 2, 0x20 | 10), 8);
    for (std::uint32_t i = 0; i < 3; ++i) {
      ChunkIndex ci{};
      const std::uint32_t ci_index = 0x10005 + i;
      ci.startblk_hi = to_le16(static_cast<std::uint16_t>(ci_index & 0xFFFF));
      ci.device_id = to_le16(static_cast<std::uint16_t>(1 | ((ci_index >> 16) & 0xFF) << 8));
      ci.startblk_lo = to_le32(i * 256);
      b.put(at + i * 8, ci);
    }
  }
};

TEST(Reader, RafsBootstrap) {
  Rafs r;
  auto img = Image::parse(r.b.bytes());
  ASSERT_TRUE(img) << img.error().to_string();
  EXPECT_TRUE(img->is_rafs());
  EXPECT_EQ(img->chunk_size(), 1U << 20);
  ASSERT_EQ(img->blobs().size(), 1U);
  const BlobInfo& bi = img->blobs()[0];
  EXPECT_EQ(bi.id, std::string(64, 'b'));
  EXPECT_EQ(bi.digester, base::DigestAlgo::kSha256);
  EXPECT_EQ(bi.compressor, base::Compressor::kZstd);
  EXPECT_TRUE(bi.unsupported_ci_compressor);  // gzip: parsed, refused on use
  EXPECT_FALSE(bi.unsupported_compressor);
  EXPECT_EQ(bi.mapped_blkaddr, 512U);
  EXPECT_EQ(bi.device_blocks, 0x300U);
  auto pf = img->prefetch_table();
  ASSERT_TRUE(pf);
  EXPECT_EQ(*pf, (std::vector<Nid>{2, 8}));
  auto ct = img->chunk_table();
  ASSERT_TRUE(ct);
  ASSERT_EQ(ct->size(), 1U);
  EXPECT_EQ((*ct)[0].index, 0x10005U);
  EXPECT_EQ((*ct)[0].uncompressed_size, 20U);

  auto m = img->map(8, 0, UINT64_MAX);
  ASSERT_TRUE(m) << m.error().to_string();
  ASSERT_EQ(m->size(), 3U);
  for (std::uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*m)[i].kind, Extent::Kind::kBlob);
    EXPECT_EQ((*m)[i].offset, i * (1ULL << 20));
    EXPECT_EQ(*(*m)[i].ci_index, 0x10005U + i);
  }
  EXPECT_EQ((*m)[2].length, 1ULL << 19);
}

TEST(Reader, RafsLyingTables) {
  auto expect_corrupt = [](auto mutate, const char* what) {
    SCOPED_TRACE(what);
    Rafs r;
    mutate(r.b);
    EXPECT_EQ(err_code(Image::parse(r.b.bytes())), kECorrupted);
  };
  const std::uint64_t ext = kRafsExtSuperOffset;
  expect_corrupt([&](Builder& b) { b.put(ext + 8, to_le64(1ULL << 62)); }, "blob table offset");
  expect_corrupt([&](Builder& b) { b.put(ext + 16, to_le32(255)); }, "blob table size % 256");
  expect_corrupt([&](Builder& b) { b.put(ext + 16, to_le32(512)); }, "blob count vs devices");
  expect_corrupt([&](Builder& b) { b.put(ext + 20, to_le32(3000)); }, "chunk size");
  expect_corrupt([&](Builder& b) { b.put(ext + 32, to_le64(UINT64_MAX - 5)); }, "chunk table size");
  expect_corrupt([&](Builder& b) { b.put(ext + 32, to_le64(81)); }, "chunk table size % 80");
  expect_corrupt([&](Builder& b) { b.put(ext + 40, to_le64(UINT64_MAX)); },
                 "prefetch table offset");
  expect_corrupt([&](Builder& b) { b.put(3 * kBs + 0x40, to_le32(1)); }, "blob index");
  expect_corrupt([&](Builder& b) { b.put(3 * kBs + 0x44, to_le32(4096)); }, "blob chunk size");
  expect_corrupt([&](Builder& b) { b.put(3 * kBs + 0x4C, to_le32(9)); }, "compressor");
  expect_corrupt([&](Builder& b) { b.put(3 * kBs + 0x50, to_le32(2)); }, "digester");
  expect_corrupt([&](Builder& b) { b.put(3 * kBs + 0x48, to_le32((1U << 24) + 1)); },
                 "chunk count");
  {
    Rafs r;
    r.b.put(3 * kBs + 0x54, to_le32(0x1000));
    EXPECT_EQ(err_code(Image::parse(r.b.bytes())), EOPNOTSUPP);
  }
  {
    // ci index beyond the blob's chunk count.
    Rafs r;
    r.b.put(3 * kBs + 0x48, to_le32(5));
    auto img = Image::parse(r.b.bytes());
    ASSERT_TRUE(img);
    EXPECT_EQ(err_code(img->map(8, 0, 10)), kECorrupted);
  }
  {
    // Chunk table entry naming a blob that does not exist.
    Rafs r;
    r.b.put(4 * kBs + 32, to_le32(3));
    auto img = Image::parse(r.b.bytes());
    ASSERT_TRUE(img);
    EXPECT_EQ(err_code(img->chunk_table()), kECorrupted);
  }
}

// ---- mkfs.erofs 1.5 images -------------------------------------------------------------

std::string data_path(const std::string& name) {
  return std::string(CFN_TEST_DATA_DIR) + "/erofs/" + name;
}

std::string big_content() {
  std::string s(20000, '\0');
  for (std::size_t i = 0; i < s.size(); ++i) {
    s[i] = static_cast<char>((i * 7 + 3) % 251);
  }
  return s;
}

// Read a whole file; blob extents come from `blob` (the --blobdev device).
std::string read_all(const Image& img, Nid nid, const std::vector<std::byte>* blob) {
  auto st = img.stat(nid);
  EXPECT_TRUE(st);
  auto ext = img.map(nid, 0, st->size);
  EXPECT_TRUE(ext) << ext.error().to_string();
  std::string out(st->size, '\0');
  for (const Extent& e : *ext) {
    if (e.kind == Extent::Kind::kBootstrap) {
      std::memcpy(out.data() + e.file_offset, img.bytes().data() + e.offset, e.length);
    } else if (e.kind == Extent::Kind::kBlob) {
      EXPECT_NE(blob, nullptr);
      EXPECT_TRUE(base::in_bounds(e.offset, e.length, blob->size()));
      std::memcpy(out.data() + e.file_offset, blob->data() + e.offset, e.length);
    }
  }
  return out;
}

class Mkfs : public ::testing::TestWithParam<const char*> {};

TEST_P(Mkfs, WholeTree) {
  const std::string name = GetParam();
  auto bytes = base::read_file(data_path(name + ".img"));
  ASSERT_TRUE(bytes) << bytes.error().to_string();
  std::vector<std::byte> blob;
  if (name == "chunkdev") {
    auto b = base::read_file(data_path("chunkdev.blob"));
    ASSERT_TRUE(b);
    blob = std::move(*b);
  }
  auto img = Image::parse(*bytes);
  ASSERT_TRUE(img) << img.error().to_string();
  EXPECT_FALSE(img->is_rafs());

  // Walk the tree and collect path -> nid.
  std::map<std::string, Nid> paths;
  std::vector<std::pair<std::string, Nid>> todo{{"", img->root()}};
  while (!todo.empty()) {
    auto [path, nid] = todo.back();
    todo.pop_back();
    auto ents = img->readdir(nid);
    ASSERT_TRUE(ents) << path << ": " << ents.error().to_string();
    for (const DirEntry& e : *ents) {
      if (e.name == "." || e.name == "..") {
        continue;
      }
      const std::string p = path + "/" + e.name;
      paths[p] = e.nid;
      auto l = img->lookup_path(p);
      ASSERT_TRUE(l) << p;
      EXPECT_EQ(*l, e.nid);
      if (e.file_type == kFtDir) {
        todo.emplace_back(p, e.nid);
      }
    }
  }
  const std::vector<std::string> want = {
      "/big.bin", "/blk",         "/chr",  "/dir",  "/dir/hardlink", "/dir/sub",   "/dir/sub/file",
      "/empty",   "/exact4k.bin", "/fifo", "/link", "/longlink",     "/small.txt", "/sock"};
  std::vector<std::string> got;
  for (auto& [p, n] : paths) {
    got.push_back(p);
  }
  EXPECT_EQ(got, want);

  const std::vector<std::byte>* bp = blob.empty() ? nullptr : &blob;
  EXPECT_EQ(read_all(*img, paths["/small.txt"], bp), "hello erofs\n");
  EXPECT_EQ(read_all(*img, paths["/dir/sub/file"], bp), "nested\n");
  EXPECT_EQ(read_all(*img, paths["/exact4k.bin"], bp), std::string(4096, 'a'));
  EXPECT_EQ(read_all(*img, paths["/big.bin"], bp), big_content());
  EXPECT_EQ(read_all(*img, paths["/empty"], bp), "");
  EXPECT_EQ(paths["/dir/hardlink"], paths["/small.txt"]);
  EXPECT_EQ(img->stat(paths["/small.txt"])->nlink, 2U);
  EXPECT_EQ(*img->readlink(paths["/link"]), "small.txt");
  EXPECT_EQ(*img->readlink(paths["/longlink"]), std::string(300, 'x'));
  auto chr = img->stat(paths["/chr"]);
  EXPECT_TRUE(S_ISCHR(chr->mode));
  EXPECT_EQ(chr->rdev, encode_rdev(1, 3));
  auto blk = img->stat(paths["/blk"]);
  EXPECT_TRUE(S_ISBLK(blk->mode));
  EXPECT_EQ(blk->rdev, encode_rdev(8, 0));
  EXPECT_TRUE(S_ISFIFO(img->stat(paths["/fifo"])->mode));
  EXPECT_TRUE(S_ISSOCK(img->stat(paths["/sock"])->mode));
  EXPECT_EQ(*img->getxattr(paths["/small.txt"], "user.foo"), "bar");
  EXPECT_EQ(*img->getxattr(paths["/dir"], "trusted.t"), "val");
  EXPECT_EQ(*img->getxattr(paths["/big.bin"], "user.shared"), "same");
  EXPECT_EQ(*img->getxattr(paths["/exact4k.bin"], "user.shared"), "same");
  if (name != "compact") {
    EXPECT_EQ(img->stat(paths["/small.txt"])->mtime, 1700000000);
  }
  if (name == "chunk" || name == "chunkdev") {
    EXPECT_EQ(img->stat(paths["/big.bin"])->layout, kInodeChunkBased);
  }
  if (name == "chunkdev") {
    auto m = img->map(paths["/big.bin"], 0, 20000);
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)[0].kind, Extent::Kind::kBlob);
  }
}

INSTANTIATE_TEST_SUITE_P(Erofs15, Mkfs, ::testing::Values("plain", "chunk", "chunkdev", "compact"));

TEST(Reader, MkfsChecksumIsVerified) {
  auto bytes = base::read_file(data_path("plain.img"));
  ASSERT_TRUE(bytes);
  auto img = Image::parse(*bytes);
  ASSERT_TRUE(img);
  ASSERT_NE(img->super().feature_compat & kFeatureCompatSbChksum, 0U);
  auto bad = *bytes;
  bad[kSuperOffset + 0x40] ^= std::byte{1};  // volume_name
  EXPECT_EQ(err_code(Image::parse(bad)), kECorrupted);
}

}  // namespace
}  // namespace erofs
