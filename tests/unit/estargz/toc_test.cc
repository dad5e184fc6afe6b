// SPDX-License-Identifier: Apache-2.0
// The eStargz footer and TOC parser: layers made by layer_maker.h, then each field and
// each malformed input (truncated, corrupt, lying) on its own.
#include "estargz/toc.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tests/unit/estargz/layer_maker.h"

namespace estargz {
namespace {

using testing::FileSpec;
using testing::LayerMaker;

base::Bytes tail_of(const testing::ByteVec& b) {
  return base::Bytes(b).last(kFooterSize);
}

TEST(EstargzFooter, GivesTheTocOffset) {
  LayerMaker lm;
  lm.add({.name = "a.txt", .content = "hello"});
  auto m = lm.make();
  auto off = parse_footer(tail_of(m.blob), m.blob.size());
  ASSERT_TRUE(off) << off.error().to_string();
  EXPECT_EQ(*off, m.toc_offset);
  // A longer tail is fine: only the last 51 bytes are read.
  auto off2 = parse_footer(m.blob, m.blob.size());
  ASSERT_TRUE(off2);
  EXPECT_EQ(*off2, m.toc_offset);
}

TEST(EstargzFooter, RefusesWhatIsNotOne) {
  LayerMaker lm;
  lm.add({.name = "a.txt", .content = "hello"});
  auto m = lm.make();
  // Too short.
  auto s = parse_footer(base::Bytes(m.blob).first(50), 50);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, EINVAL);
  // A plain gzip stream's end.
  auto plain = testing::gzip(base::as_bytes(std::string(4096, 'x')));
  s = parse_footer(plain, plain.size());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, EINVAL);
  EXPECT_NE(s.error().message.find("not an eStargz layer"), std::string::npos);
  // Each structural byte flipped.
  for (std::size_t i : {0, 1, 2, 3, 10, 12, 13, 14, 32, 37}) {
    auto b = m.blob;
    b[b.size() - kFooterSize + i] ^= std::byte{0xff};
    EXPECT_FALSE(parse_footer(tail_of(b), b.size())) << "byte " << i;
  }
  // Not hex.
  auto b = m.blob;
  b[b.size() - kFooterSize + 16] = std::byte{'g'};
  s = parse_footer(tail_of(b), b.size());
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, EBADMSG);
  // Not an empty member (the stored block's length changed).
  b = m.blob;
  b[b.size() - 11] = std::byte{1};
  EXPECT_FALSE(parse_footer(tail_of(b), b.size()));
  // An offset past the layer, or leaving no room for a TOC member.
  auto f = testing::footer(1000);
  s = parse_footer(f, 1000 + kFooterSize);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, EBADMSG);
  s = parse_footer(f, 1000 + kFooterSize + 17);
  EXPECT_FALSE(s);
  s = parse_footer(f, 1000 + kFooterSize + 18);
  EXPECT_TRUE(s);
  f = testing::footer(UINT64_MAX);
  EXPECT_FALSE(parse_footer(f, 4096));
}

TEST(EstargzToc, ParsesEveryField) {
  LayerMaker lm;
  lm.add({.name = "dir/", .type = "dir", .mode = 0750, .uid = 7, .gid = 8});
  lm.add({.name = "dir/f", .content = "data", .mode = 04755, .xattrs_b64 = {{"user.k", "dmFs"}}});
  lm.add({.name = "dir/l", .type = "symlink", .link_name = "f"});
  lm.add({.name = "dir/h", .type = "hardlink", .link_name = "dir/f"});
  lm.add({.name = "dev", .type = "char", .dev_major = 1, .dev_minor = 3});
  lm.add({.name = "fifo", .type = "fifo"});
  auto m = lm.make();
  auto digest = base::sha256(base::as_bytes(m.toc_json));
  auto toc = parse_toc(m.toc_member, &digest);
  ASSERT_TRUE(toc) << toc.error().to_string();
  ASSERT_EQ(toc->entries.size(), 6U);
  const Entry& d = toc->entries[0];
  EXPECT_EQ(d.name, "dir/");
  EXPECT_EQ(d.type, EntryType::kDir);
  EXPECT_EQ(d.mode, 0750U);
  EXPECT_EQ(d.uid, 7U);
  EXPECT_EQ(d.gid, 8U);
  EXPECT_EQ(d.mtime, 1714979289);  // 2024-05-06T07:08:09Z
  const Entry& f = toc->entries[1];
  EXPECT_EQ(f.type, EntryType::kReg);
  EXPECT_EQ(f.size, 4U);
  EXPECT_EQ(f.mode, 04755U);
  ASSERT_TRUE(f.offset);
  EXPECT_GT(*f.offset, 0U);
  ASSERT_TRUE(f.chunk_digest);
  EXPECT_EQ(*f.chunk_digest, base::sha256(base::as_bytes(std::string("data"))));
  ASSERT_EQ(f.xattrs.size(), 1U);
  EXPECT_EQ(f.xattrs[0].first, "user.k");
  EXPECT_EQ(f.xattrs[0].second, "val");
  EXPECT_EQ(toc->entries[2].link_name, "f");
  EXPECT_EQ(toc->entries[3].type, EntryType::kHardlink);
  EXPECT_EQ(toc->entries[4].dev_major, 1U);
  EXPECT_EQ(toc->entries[4].dev_minor, 3U);
  EXPECT_EQ(toc->entries[5].type, EntryType::kFifo);
}

TEST(EstargzToc, ChunksOfALargeFile) {
  LayerMaker lm(4096);
  std::string big(10000, 'b');
  big[5000] = 'X';
  lm.add({.name = "big", .content = big});
  auto m = lm.make();
  auto toc = parse_toc(m.toc_member, nullptr);
  ASSERT_TRUE(toc);
  ASSERT_EQ(toc->entries.size(), 3U);
  EXPECT_EQ(toc->entries[0].type, EntryType::kReg);
  EXPECT_EQ(toc->entries[0].chunk_size, 4096U);
  EXPECT_EQ(toc->entries[1].type, EntryType::kChunk);
  EXPECT_EQ(toc->entries[1].chunk_offset, 4096U);
  EXPECT_EQ(toc->entries[2].chunk_offset, 8192U);
  EXPECT_EQ(toc->entries[2].chunk_size, 0U);
  EXPECT_LT(*toc->entries[0].offset, *toc->entries[1].offset);
}

TEST(EstargzToc, DigestMismatchIsRefused) {
  LayerMaker lm;
  lm.add({.name = "a", .content = "x"});
  auto m = lm.make();
  base::Digest wrong{};
  auto toc = parse_toc(m.toc_member, &wrong);
  ASSERT_FALSE(toc);
  EXPECT_EQ(toc.error().code, EBADMSG);
  EXPECT_NE(toc.error().message.find("TOC digest mismatch"), std::string::npos);
}

TEST(EstargzToc, BrokenMembersAreRefused) {
  LayerMaker lm;
  lm.add({.name = "a", .content = "x"});
  auto m = lm.make();
  // Truncated at every length.
  for (std::size_t n = 0; n < m.toc_member.size(); n += 7) {
    auto r = toc_json_from_member(base::Bytes(m.toc_member).first(n));
    EXPECT_FALSE(r) << n;
  }
  // A flipped byte in the deflate data.
  auto b = m.toc_member;
  b[20] ^= std::byte{0xff};
  EXPECT_FALSE(parse_toc(b, nullptr));
  // Not gzip.
  EXPECT_FALSE(toc_json_from_member(base::as_bytes(std::string_view("not gzip at all....."))));
  // A tar whose entry is another file.
  std::string tar(std::string(base::as_chars(erofs::encode_tar_header("other.json", 2))) + "{}");
  tar.append(510 + 1024, '\0');
  auto r = toc_json_from_member(testing::gzip(base::as_bytes(tar)));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
  // A tar that lies about its entry's size.
  tar = std::string(base::as_chars(erofs::encode_tar_header("stargz.index.json", 5000))) + "{}";
  r = toc_json_from_member(testing::gzip(base::as_bytes(tar)));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EBADMSG);
  // An empty tar.
  r = toc_json_from_member(testing::gzip(base::as_bytes(std::string(1024, '\0'))));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
}

TEST(EstargzToc, BadJsonIsRefusedNamingTheEntry) {
  auto bad = [](std::string_view json) {
    auto r = parse_toc_json(json);
    EXPECT_FALSE(r) << json;
    return r ? std::string() : r.error().message;
  };
  bad("");
  bad("[]");
  bad(R"({"version":2,"entries":[]})");
  bad(R"({"version":1,"entries":{}})");
  bad(R"({"version":1,"entries":[7]})");
  bad(R"({"version":1,"entries":[{"type":"reg"}]})");
  EXPECT_NE(bad(R"({"version":1,"entries":[{"name":"a","type":"sock"}]})").find("(a)"),
            std::string::npos);
  bad(R"({"version":1,"entries":[{"name":"a","type":"reg","mode":-1}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"reg","uid":4294967296}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"reg","size":"1"}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"reg","chunkDigest":"sha256:00"}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"reg","chunkDigest":"md5:)"
      R"(0000000000000000000000000000000000000000000000000000000000000000"}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"reg","modtime":"yesterday"}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"reg","modtime":"2024-13-01T00:00:00Z"}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"reg","xattrs":{"user.a":"!!!!"}}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"reg","xattrs":{"user.a":1}}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"symlink"}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"hardlink","linkName":""}]})");
  bad(R"({"version":1,"entries":[{"name":"a\u0000b","type":"reg"}]})");
  bad(R"({"version":1,"entries":[{"name":"a","type":"reg","offset":-5}]})");
}

TEST(EstargzToc, TolerantWhereTheFormatIs) {
  // Unknown members, null members (Go's empty values), time zones and fractions.
  auto r =
      parse_toc_json(R"({"version":1,"entries":[{"name":"a","type":"reg","size":0,"userName":"u",)"
                     R"("xattrs":null,"NumLink":1,"modtime":"2024-05-06T09:08:09.5+02:00"}]})");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->entries[0].mtime, 1714979289);
  EXPECT_EQ(r->entries[0].mtime_nsec, 500000000U);
  // No entries at all.
  r = parse_toc_json(R"({"version":1})");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->entries.empty());
}

TEST(EstargzToc, StreamedLikeADom) {
  // The TOC is parsed without a DOM of its entries (a SAX walk); what a DOM walk would
  // decide it decides too.
  // A key given twice counts with its last value, "entries" too.
  auto r = parse_toc_json(R"({"entries":[{"name":"x","type":"sock"}],"version":1,)"
                          R"("entries":[{"name":"a","type":"reg"},{"name":"b","type":"dir"}]})");
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->entries.size(), 2U);
  EXPECT_EQ(r->entries[1].name, "b");
  r = parse_toc_json(R"({"version":1,"entries":[{"name":"a","type":"reg"}],"entries":null})");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->entries.empty());
  r = parse_toc_json(R"({"version":1,"entries":[{"name":"a","type":"reg"}],"entries":3})");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("not an array"), std::string::npos);
  // The version is checked before the entries, wherever it stands.
  r = parse_toc_json(R"({"entries":[{"type":"reg"}],"version":2})");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("version 2"), std::string::npos) << r.error().message;
  // The first bad entry is the one named, with its index.
  r = parse_toc_json(R"({"version":1,"entries":[{"name":"a","type":"reg"},)"
                     R"({"name":"b","type":"sock"},{"name":"c","type":"sock"}]})");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("entry 1 (b)"), std::string::npos) << r.error().message;
  // Members nested deep inside an entry or beside the entries are walked over.
  r = parse_toc_json(R"({"version":1,"x":{"entries":[1,[2,{"y":[]}]]},"entries":[)"
                     R"({"name":"a","type":"reg","z":[{"entries":[{}]},[[]]]}]})");
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->entries.size(), 1U);
  EXPECT_EQ(r->entries[0].name, "a");
  // Malformed JSON anywhere, after good entries too.
  EXPECT_FALSE(parse_toc_json(R"({"version":1,"entries":[{"name":"a","type":"reg"}])"));
  EXPECT_FALSE(parse_toc_json(R"({"version":1,"entries":[{"name":"a","type":"reg"}]} x)"));
  EXPECT_FALSE(parse_toc_json(R"({"version":1,"entries":[{"name":"a","type":"reg"},]})"));
}

// Each entry is read from the walk's events straight into its fields (no JSON value per
// entry): what a DOM of the entry would give, whatever the order of its members, a key
// given twice or what is nested in a member; the same errors, word for word.
TEST(EstargzToc, EntriesReadFromTheWalkAsFromADom) {
  auto one = [](std::string_view entry) {
    auto r = parse_toc_json(R"({"version":1,"entries":[)" + std::string(entry) + "]}");
    EXPECT_TRUE(r) << entry << ": " << (r ? "" : r.error().to_string());
    return r && r->entries.size() == 1 ? r->entries[0] : Entry{};
  };
  auto error = [](std::string_view entries) {
    auto r = parse_toc_json(R"({"version":1,"entries":[)" + std::string(entries) + "]}");
    EXPECT_FALSE(r) << entries;
    if (r) {
      return std::string();
    }
    EXPECT_EQ(r.error().code, EINVAL);
    return r.error().message;
  };
  // Members in any order: the same entry.
  const Entry a =
      one(R"({"name":"d/f","type":"reg","size":5,"mode":33188,"uid":1,"gid":2,"offset":10,)"
          R"("innerOffset":3,"chunkOffset":0,"chunkSize":5,"modtime":"2024-05-06T09:08:09.25Z",)"
          R"("chunkDigest":"sha256:)" +
          std::string(64, 'a') +
          R"(","xattrs":{"user.b":"Yg==",)"
          R"("user.a":"YQ=="},"linkName":"","devMajor":4,"devMinor":6})");
  const Entry b =
      one(R"({"devMinor":6,"devMajor":4,"linkName":"","xattrs":{"user.a":"YQ==","user.b":"Yg=="},)"
          R"("chunkDigest":"sha256:)" +
          std::string(64, 'a') +
          R"(",)"
          R"("modtime":"2024-05-06T09:08:09.25Z","chunkSize":5,"chunkOffset":0,"innerOffset":3,)"
          R"("offset":10,"gid":2,"uid":1,"mode":33188,"size":5,"type":"reg","name":"d/f"})");
  for (const Entry* e : {&a, &b}) {
    EXPECT_EQ(e->name, "d/f");
    EXPECT_EQ(e->type, EntryType::kReg);
    EXPECT_EQ(e->size, 5U);
    EXPECT_EQ(e->mode, 0644U);
    EXPECT_EQ(e->uid, 1U);
    EXPECT_EQ(e->gid, 2U);
    EXPECT_EQ(e->offset, std::optional<std::uint64_t>(10));
    EXPECT_EQ(e->inner_offset, 3U);
    EXPECT_EQ(e->chunk_size, 5U);
    EXPECT_EQ(e->mtime, 1714986489);
    EXPECT_EQ(e->mtime_nsec, 250000000U);
    ASSERT_TRUE(e->chunk_digest);
    EXPECT_EQ(base::hex(*e->chunk_digest), std::string(64, 'a'));
    // Sorted by name, as a DOM object is.
    EXPECT_EQ(e->xattrs,
              (std::vector<std::pair<std::string, std::string>>{{"user.a", "a"}, {"user.b", "b"}}));
    EXPECT_EQ(e->dev_major, 4U);
    EXPECT_EQ(e->dev_minor, 6U);
  }
  // A key given twice: its last value counts, a wrong one included, null as absent.
  EXPECT_EQ(one(R"({"name":"x","type":"sock","name":"a","type":"dir"})").name, "a");
  EXPECT_EQ(one(R"({"name":"a","type":"reg","size":"1","size":7})").size, 7U);
  EXPECT_EQ(one(R"({"name":"a","type":"reg","size":7,"size":null})").size, 0U);
  EXPECT_FALSE(one(R"({"name":"a","type":"reg","offset":7,"offset":null})").offset);
  EXPECT_EQ(error(R"({"name":"a","type":"reg","size":7,"size":"7"})"),
            "TOC entry 0 (a): \"size\" must be an unsigned integer");
  EXPECT_EQ(one(R"({"name":"a","type":"reg","xattrs":{"user.a":"YQ=="},)"
                R"("xattrs":{"user.b":"Yg=="}})")
                .xattrs,
            (std::vector<std::pair<std::string, std::string>>{{"user.b", "b"}}));
  EXPECT_EQ(one(R"({"name":"a","type":"reg","xattrs":{"user.a":1,"user.a":"YQ=="}})").xattrs,
            (std::vector<std::pair<std::string, std::string>>{{"user.a", "a"}}));
  EXPECT_TRUE(
      one(R"({"name":"a","type":"reg","xattrs":{"user.a":"YQ=="},"xattrs":null})").xattrs.empty());
  EXPECT_EQ(one(R"({"name":"l","type":"symlink","linkName":"x","linkName":"y"})").link_name, "y");
  // Unknown members, however nested and whatever keys they hold, are walked over; so are
  // the members of an element that is not an object.
  const Entry n =
      one(R"({"name":"a","extra":{"name":"z","size":"x","xattrs":{"k":1},"e":[{"type":1}]},)"
          R"("type":"reg","list":[[{"name":"y"}],null,{"xattrs":[]}],"size":3})");
  EXPECT_EQ(n.name, "a");
  EXPECT_EQ(n.size, 3U);
  EXPECT_TRUE(n.xattrs.empty());
  EXPECT_EQ(error(R"({"name":"a","type":"reg"},[{"name":"b","type":"reg"}])"),
            "TOC entry 1: not an object");
  EXPECT_EQ(error(R"(null)"), "TOC entry 0: not an object");
  EXPECT_EQ(error(R"({"name":"a","type":"reg"},{"name":"b","type":"reg"},"c")"),
            "TOC entry 2: not an object");
  // A known member of the wrong type, nested or not; the messages word for word.
  EXPECT_EQ(error(R"({"type":"reg"})"), "TOC entry 0: missing \"name\"");
  EXPECT_EQ(error(R"({"name":{"name":"a"},"type":"reg"})"),
            "TOC entry 0: \"name\" must be a string");
  EXPECT_EQ(error(R"({"name":"a\u0000"})"), "TOC entry 0: \"name\" holds a NUL");
  EXPECT_EQ(error(R"({"name":"a"})"), "TOC entry 0 (a): missing \"type\"");
  EXPECT_EQ(error(R"({"name":"a","type":["reg"]})"), "TOC entry 0 (a): \"type\" must be a string");
  EXPECT_EQ(error(R"({"name":"a","type":"sock"})"), "TOC entry 0 (a): unknown type \"sock\"");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","size":[1]})"),
            "TOC entry 0 (a): \"size\" must be an unsigned integer");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","size":1.0})"),
            "TOC entry 0 (a): \"size\" must be an unsigned integer");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","size":-0})"),
            "TOC entry 0 (a): \"size\" must be an unsigned integer");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","mode":true})"),
            "TOC entry 0 (a): \"mode\" must be an unsigned integer");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","uid":4294967296})"),
            "TOC entry 0 (a): \"uid\" = 4294967296 outside [0, 4294967295]");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","offset":9223372036854775808})"),
            "TOC entry 0 (a): \"offset\" = 9223372036854775808 outside [0, 9223372036854775807]");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","linkName":{}})"),
            "TOC entry 0 (a): \"linkName\" must be a string");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","chunkDigest":"sha256:AA"})"),
            "TOC entry 0 (a): chunkDigest \"sha256:AA\" is not sha256:<64 hex>");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","modtime":"1999"})"),
            "TOC entry 0 (a): modtime \"1999\" is not RFC 3339");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","xattrs":"YQ=="})"),
            "TOC entry 0 (a): \"xattrs\" must be an object");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","xattrs":[]})"),
            "TOC entry 0 (a): \"xattrs\" must be an object");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","xattrs":{"user.b":"Yg==","user.a":{"v":"YQ=="}}})"),
            "TOC entry 0 (a): \"xattrs\": \"user.a\" must be a string");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","xattrs":{"":"YQ=="}})"),
            "TOC entry 0 (a): xattrs: an empty name or a name with NUL");
  EXPECT_EQ(error(R"({"name":"a","type":"reg","xattrs":{"user.a":"Y"}})"),
            "TOC entry 0 (a): xattrs: the value of user.a is not base64");
  EXPECT_EQ(error(R"({"name":"a","type":"hardlink"})"),
            "TOC entry 0 (a): a hardlink without linkName");
  // The checks in their order, wherever the members stand: the first failing member in
  // that order is the one named (size before chunkDigest before xattrs).
  EXPECT_EQ(error(R"({"xattrs":7,"chunkDigest":"x","size":"1","type":"reg","name":"a"})"),
            "TOC entry 0 (a): \"size\" must be an unsigned integer");
  EXPECT_EQ(error(R"({"xattrs":7,"chunkDigest":"x","type":"reg","name":"a"})"),
            "TOC entry 0 (a): chunkDigest \"x\" is not sha256:<64 hex>");
}

TEST(EstargzName, Clean) {
  auto c = clean_name("./a/b/");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, (std::vector<std::string>{"a", "b"}));
  c = clean_name("/a//./b");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, (std::vector<std::string>{"a", "b"}));
  c = clean_name("./");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->empty());
  EXPECT_FALSE(clean_name("a/../b"));
  EXPECT_FALSE(clean_name(std::string(256, 'n')));
  EXPECT_FALSE(clean_name(std::string("a\0b", 3)));
}

TEST(EstargzDigest, ParseSha256) {
  const std::string hex(64, 'a');
  auto d = parse_sha256("sha256:" + hex);
  ASSERT_TRUE(d);
  EXPECT_EQ((*d)[0], std::byte{0xaa});
  EXPECT_FALSE(parse_sha256("sha256:" + std::string(64, 'A')));
  EXPECT_FALSE(parse_sha256("sha256:" + hex + "0"));
  EXPECT_FALSE(parse_sha256("sha512:" + hex));
}

}  // namespace
}  // namespace estargz
