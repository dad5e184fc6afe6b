// SPDX-License-Identifier: Apache-2.0
// The nydus-built fixture (shared/fixtures/nydus-v2.4.4): parse the bootstrap, check
// the values of erofs-format.md section 10.1, and read both files completely from the
// blob, verifying every chunk against the chunk table and the blob.digest array.
#include "tests/unit/fixture.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <string>

#include "base/digest.h"
#include "base/file.h"
#include "erofs/blob_meta.h"
#include "erofs/reader.h"

namespace erofs {
namespace {

const std::string kDir = std::string(CFN_FIXTURES_DIR) + "/nydus-v2.4.4";
const std::string kBlobId = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef";

std::string hex_of(const base::Digest& d) {
  return base::hex(d);
}

class Fixture : public ::testing::Test {
 protected:
  void SetUp() override {
    CFN_REQUIRE_FIXTURE(kDir + "/rafs-v6-2.2.boot");
    auto boot = base::read_file(kDir + "/rafs-v6-2.2.boot");
    ASSERT_TRUE(boot) << boot.error().to_string();
    boot_ = std::move(*boot);
    auto blob = base::read_file(kDir + "/blobs/" + kBlobId);
    ASSERT_TRUE(blob) << blob.error().to_string();
    blob_ = std::move(*blob);
  }
  std::vector<std::byte> boot_;
  std::vector<std::byte> blob_;
};

TEST_F(Fixture, SuperblockAndTables) {
  auto img = Image::parse(boot_);
  ASSERT_TRUE(img) << img.error().to_string();
  EXPECT_EQ(boot_.size(), 20480U);
  const SuperBlock& sb = img->super();
  EXPECT_EQ(sb.magic, kMagic);
  EXPECT_EQ(sb.checksum, 0U);
  EXPECT_EQ(sb.feature_compat, kFeatureCompatRafsV6);
  EXPECT_EQ(sb.feature_incompat, 0x0CU);
  EXPECT_EQ(sb.blkszbits, 12);
  EXPECT_EQ(sb.root_nid, 128);
  EXPECT_EQ(sb.inos, 3U);
  EXPECT_EQ(sb.blocks, 9U);
  EXPECT_EQ(sb.meta_blkaddr, 2U);
  EXPECT_EQ(sb.extra_devices, 1);
  EXPECT_EQ(sb.devt_slotoff, 11);
  EXPECT_TRUE(img->is_rafs());
  EXPECT_EQ(img->root(), 128U);
  EXPECT_EQ(img->rafs_flags(), 0x194U);
  EXPECT_EQ(img->chunk_size(), 0x100000U);

  ASSERT_EQ(img->blobs().size(), 1U);
  const BlobInfo& b = img->blobs()[0];
  EXPECT_EQ(b.id, kBlobId);
  EXPECT_EQ(b.index, 0U);
  EXPECT_EQ(b.chunk_size, 0x100000U);
  EXPECT_EQ(b.chunk_count, 2U);
  EXPECT_EQ(b.compressor, base::Compressor::kZstd);
  EXPECT_EQ(b.digester, base::DigestAlgo::kBlake3);
  EXPECT_EQ(b.features, 0x70000021U);
  EXPECT_EQ(b.compressed_size, 14554U);
  EXPECT_EQ(b.uncompressed_size, 36864U);
  EXPECT_EQ(b.toc_size, 1024U);
  EXPECT_EQ(b.ci_compressor, base::Compressor::kNone);
  EXPECT_EQ(b.ci_offset, 8314U);
  EXPECT_EQ(b.ci_compressed_size, 32U);
  EXPECT_EQ(b.ci_uncompressed_size, 32U);
  EXPECT_EQ(hex_of(b.toc_digest),
            "cfc89ed0739aef4eb1bf0904f0dfdb1c857134eca7319465baae95a99b84acde");
  EXPECT_EQ(b.device_blocks, 9U);
  EXPECT_EQ(b.mapped_blkaddr, 512U);
  EXPECT_FALSE(b.unsupported_compressor);

  auto ct = img->chunk_table();
  ASSERT_TRUE(ct) << ct.error().to_string();
  ASSERT_EQ(ct->size(), 2U);
  const ChunkRecord& c0 = (*ct)[0];
  EXPECT_EQ(hex_of(c0.digest).substr(0, 8), "812465bc");
  EXPECT_EQ(c0.blob_index, 0U);
  EXPECT_EQ(c0.flags, kChunkFlagCompressed);
  EXPECT_EQ(c0.compressed_size, 2974U);
  EXPECT_EQ(c0.uncompressed_size, 13400U);
  EXPECT_EQ(c0.compressed_offset, 4828U);
  EXPECT_EQ(c0.uncompressed_offset, 20480U);
  EXPECT_EQ(c0.index, 1U);
  const ChunkRecord& c1 = (*ct)[1];
  EXPECT_EQ(hex_of(c1.digest), "f7e2735f1c6ae9cde91e537416b09d8bb71b306a421d19cc1012a51f93a7fe69");
  EXPECT_EQ(c1.compressed_size, 4828U);
  EXPECT_EQ(c1.uncompressed_size, 16931U);
  EXPECT_EQ(c1.compressed_offset, 0U);
  EXPECT_EQ(c1.uncompressed_offset, 0U);
  EXPECT_EQ(c1.index, 0U);

  auto pf = img->prefetch_table();
  ASSERT_TRUE(pf);
  EXPECT_TRUE(pf->empty());
}

TEST_F(Fixture, Tree) {
  auto img = Image::parse(boot_);
  ASSERT_TRUE(img) << img.error().to_string();
  auto root = img->stat(128);
  ASSERT_TRUE(root) << root.error().to_string();
  EXPECT_EQ(root->mode, 040755);
  EXPECT_EQ(root->size, 67U);
  EXPECT_EQ(root->nlink, 2U);
  EXPECT_EQ(root->layout, kInodeFlatInline);
  EXPECT_TRUE(root->extended);

  auto ents = img->readdir(128);
  ASSERT_TRUE(ents) << ents.error().to_string();
  ASSERT_EQ(ents->size(), 4U);
  EXPECT_EQ((*ents)[0].name, ".");
  EXPECT_EQ((*ents)[0].nid, 128U);
  EXPECT_EQ((*ents)[1].name, "..");
  EXPECT_EQ((*ents)[1].nid, 128U);
  EXPECT_EQ((*ents)[2].name, "lib.rs");
  EXPECT_EQ((*ents)[2].nid, 133U);
  EXPECT_EQ((*ents)[2].file_type, kFtRegFile);
  EXPECT_EQ((*ents)[3].name, "sync_io.rs");
  EXPECT_EQ((*ents)[3].nid, 136U);

  auto lib = img->lookup_path("/lib.rs");
  ASSERT_TRUE(lib);
  EXPECT_EQ(*lib, 133U);
  auto st = img->stat(133);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->mode, 0100644);
  EXPECT_EQ(st->size, 16931U);
  EXPECT_EQ(st->ino, 2U);
  EXPECT_EQ(st->mtime, 1676819553);
  EXPECT_EQ(st->mtime_nsec, 628661334U);
  EXPECT_EQ(st->layout, kInodeChunkBased);
  EXPECT_EQ(img->lookup(128, "nope").error().code, ENOENT);
  EXPECT_EQ(img->lookup(133, "x").error().code, ENOTDIR);
  auto x = img->xattrs(133);
  ASSERT_TRUE(x);
  EXPECT_TRUE(x->empty());

  auto m = img->map(136, 0, UINT64_MAX);
  ASSERT_TRUE(m) << m.error().to_string();
  ASSERT_EQ(m->size(), 1U);
  EXPECT_EQ((*m)[0].kind, Extent::Kind::kBlob);
  EXPECT_EQ((*m)[0].blob_index, 0U);
  EXPECT_EQ((*m)[0].offset, 0x5000U);
  EXPECT_EQ((*m)[0].length, 13400U);
  ASSERT_TRUE((*m)[0].ci_index.has_value());
  EXPECT_EQ(*(*m)[0].ci_index, 1U);
}

// Read a whole file through BlobMeta + ToC + digest array, verifying every chunk.
TEST_F(Fixture, ReadFilesFromBlob) {
  auto img = Image::parse(boot_);
  ASSERT_TRUE(img) << img.error().to_string();
  const BlobInfo& b = img->blobs()[0];
  ASSERT_EQ(blob_.size(), b.compressed_size);
  const base::Bytes blob(blob_);

  auto meta = BlobMeta::parse(b, blob.subspan(b.ci_offset, b.ci_compressed_size + 4096));
  ASSERT_TRUE(meta) << meta.error().to_string();
  ASSERT_EQ(meta->chunks().size(), 2U);
  EXPECT_EQ(meta->chunks()[1].compressed_offset, 4828U);
  EXPECT_EQ(meta->chunks()[1].uncompressed_offset, 0x5000U);
  EXPECT_TRUE(meta->chunks()[1].compressed);

  auto toc = parse_toc(blob.last(b.toc_size), blob.size(), &b.toc_digest);
  ASSERT_TRUE(toc) << toc.error().to_string();
  ASSERT_EQ(toc->size(), 4U);
  std::map<std::string, TocItem> by_name;
  for (const TocItem& t : *toc) {
    by_name[t.name] = t;
  }
  ASSERT_EQ(by_name.count("blob.digest"), 1U);
  const TocItem& dt = by_name["blob.digest"];
  EXPECT_EQ(dt.compressed_offset, 12954U);
  EXPECT_EQ(dt.compressed_size, 64U);
  const base::Bytes dbytes = blob.subspan(dt.compressed_offset, dt.compressed_size);
  EXPECT_EQ(base::sha256(dbytes), dt.uncompressed_digest);
  const TocItem& mt = by_name["blob.meta"];
  EXPECT_EQ(base::sha256(blob.subspan(mt.compressed_offset, mt.compressed_size)),
            mt.uncompressed_digest);
  const TocItem& mh = by_name["blob.meta.header"];
  EXPECT_EQ(mh.compressed_offset, 8346U);
  EXPECT_EQ(base::sha256(blob.subspan(mh.compressed_offset, mh.compressed_size)),
            mh.uncompressed_digest);
  EXPECT_EQ(by_name["image.blob"].compressed_offset, 0U);  // normalized quirk

  auto digests = parse_digest_array(dbytes, b.chunk_count);
  ASSERT_TRUE(digests) << digests.error().to_string();
  auto table = img->chunk_table();
  ASSERT_TRUE(table);

  struct Want {
    const char* path;
    std::uint64_t size;
    const char* sha;
  };
  const Want wants[] = {
      {"/lib.rs", 16931, "1810eba864521293bb0d6b55a3c82318d4d89f294ed761c456d9088a17de0c69"},
      {"/sync_io.rs", 13400, "e629ab260ff0dc02a24648a3e0dd8c13a5daf233d535c330e3201925f5eeff96"},
  };
  for (const Want& w : wants) {
    SCOPED_TRACE(w.path);
    auto nid = img->lookup_path(w.path);
    ASSERT_TRUE(nid);
    auto st = img->stat(*nid);
    ASSERT_TRUE(st);
    ASSERT_EQ(st->size, w.size);
    auto ext = img->map(*nid, 0, st->size);
    ASSERT_TRUE(ext) << ext.error().to_string();
    std::vector<std::byte> content(st->size);
    for (const Extent& e : *ext) {
      ASSERT_EQ(e.kind, Extent::Kind::kBlob);
      ASSERT_TRUE(e.ci_index.has_value());
      const std::uint32_t ci = *e.ci_index;
      ASSERT_LT(ci, meta->chunks().size());
      const ChunkMeta& c = meta->chunks()[ci];
      auto [first, last] = meta->chunks_in_range(e.offset, e.length);
      EXPECT_EQ(first, ci);
      EXPECT_EQ(last, ci + 1);
      // Both digest sources agree: blob.digest[ci] and the bootstrap chunk table.
      const ChunkRecord* rec = nullptr;
      for (const ChunkRecord& r : *table) {
        if (r.index == ci && r.blob_index == e.blob_index) {
          rec = &r;
        }
      }
      ASSERT_NE(rec, nullptr);
      EXPECT_EQ(rec->digest, (*digests)[ci]);
      EXPECT_EQ(rec->compressed_offset, c.compressed_offset);
      EXPECT_EQ(rec->uncompressed_offset, c.uncompressed_offset);
      std::vector<std::byte> out(c.uncompressed_size);
      auto stored = blob.subspan(c.compressed_offset, c.compressed_size);
      auto ok = decode_chunk(b, c, stored, (*digests)[ci], out);
      ASSERT_TRUE(ok) << ok.error().to_string();
      ASSERT_TRUE(decode_chunk(b, c, stored, rec->digest, out));
      const std::uint64_t in_chunk = e.offset - c.uncompressed_offset;
      ASSERT_LE(in_chunk + e.length, out.size());
      std::memcpy(content.data() + e.file_offset, out.data() + in_chunk, e.length);
      // A wrong digest is EBADMSG.
      base::Digest bad = (*digests)[ci];
      bad[0] ^= std::byte{1};
      auto err = decode_chunk(b, c, stored, bad, out);
      ASSERT_FALSE(err);
      EXPECT_EQ(err.error().code, EBADMSG);
    }
    EXPECT_EQ(base::hex(base::sha256(content)), w.sha);
  }
}

TEST_F(Fixture, TarFramesParse) {
  const base::Bytes blob(blob_);
  struct Frame {
    std::uint64_t at;
    const char* name;
    std::uint64_t size;
  };
  const Frame frames[] = {{7802, "image.blob", 7802},
                          {12442, "blob.meta", 4128},
                          {13018, "blob.digest", 64},
                          {14042, "rafs.blob.toc", 512}};
  for (const Frame& f : frames) {
    auto h = parse_tar_header(blob.subspan(f.at, 512));
    ASSERT_TRUE(h) << h.error().to_string();
    EXPECT_EQ(h->first, f.name);
    EXPECT_EQ(h->second, f.size);
    // Our writer produces the same bytes for these frames.
    auto mine = make_tar_header(f.name, f.size);
    EXPECT_TRUE(std::equal(mine.begin(), mine.end(), blob.begin() + f.at)) << f.name;
  }
}

}  // namespace
}  // namespace erofs
