// SPDX-License-Identifier: Apache-2.0
// Hostile inputs: every case fails with an error naming the entry, leaves no
// image.boot and no staging directory, and writes nothing outside OUTDIR.
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "tests/unit/convert/test_util.h"

namespace convert::testing {
namespace {

// Build `tar` (already written under t) into t/out and expect failure mentioning `needle`.
void expect_rejected(TempDir& t, const std::string& tar, const std::string& needle) {
  auto before = list_tree(t.path());
  std::string out = t.sub("out");
  auto st = build(tar, out);
  ASSERT_FALSE(st) << "built a hostile tar";
  EXPECT_NE(st.error().message.find(needle), std::string::npos)
      << "error does not name '" << needle << "': " << st.error().message;
  EXPECT_NE(::access((out + "/image.boot").c_str(), F_OK), 0);
  // OUTDIR holds nothing (the staging directory was removed) ...
  EXPECT_TRUE(list_tree(out).empty()) << list_tree(out).front();
  // ... and nothing appeared next to it.
  auto after = list_tree(t.path());
  after.erase(std::remove(after.begin(), after.end(), "out"), after.end());
  EXPECT_EQ(before, after);
}

TEST(Hostile, DotDotPath) {
  TempDir t;
  write_tar(t.sub("l.tar"), {{.path = "a/../../escape", .data = "x"}});
  expect_rejected(t, t.sub("l.tar"), "a/../../escape");
}

TEST(Hostile, AbsolutePath) {
  TempDir t;
  write_tar(t.sub("l.tar"), {{.path = "/etc/evil", .data = "x"}});
  expect_rejected(t, t.sub("l.tar"), "/etc/evil");
}

TEST(Hostile, EntryUnderSymlinkedDirectory) {
  TempDir t;
  write_tar(t.sub("l.tar"), {
                                {.path = "escape", .type = S_IFLNK, .symlink = "/tmp"},
                                {.path = "escape/owned", .data = "x"},
                            });
  expect_rejected(t, t.sub("l.tar"), "escape/owned");
}

TEST(Hostile, EntryUnderRelativeSymlinkOutside) {
  TempDir t;
  write_tar(t.sub("l.tar"), {
                                {.path = "d/", .type = S_IFDIR},
                                {.path = "d/up", .type = S_IFLNK, .symlink = "../../.."},
                                {.path = "d/up/etc/x", .data = "x"},
                            });
  expect_rejected(t, t.sub("l.tar"), "d/up/etc/x");
}

TEST(Hostile, EntryUnderRegularFile) {
  TempDir t;
  write_tar(t.sub("l.tar"), {{.path = "f", .data = "x"}, {.path = "f/g", .data = "y"}});
  expect_rejected(t, t.sub("l.tar"), "f/g");
}

TEST(Hostile, SizeLargerThanData) {
  TempDir t;
  std::string tar =
      raw_tar_header("bigfile", 1ULL << 30) + std::string(512, 'x') + std::string(1024, '\0');
  write_string(t.sub("l.tar"), tar);
  expect_rejected(t, t.sub("l.tar"), "bigfile");
}

TEST(Hostile, TruncatedArchive) {
  TempDir t;
  std::string data(300000, 'q');
  write_tar(t.sub("full.tar"), {{.path = "ok", .data = "fine"}, {.path = "cut", .data = data}});
  std::string bytes = read_string(t.sub("full.tar"));
  write_string(t.sub("l.tar"), bytes.substr(0, bytes.size() / 2));
  ::unlink(t.sub("full.tar").c_str());
  expect_rejected(t, t.sub("l.tar"), "cut");
}

TEST(Hostile, TruncatedGzipArchive) {
  TempDir t;
  std::string data(3000000, 'q');
  for (std::size_t i = 0; i < data.size(); i += 7) {
    data[i] = static_cast<char>(i * 31);
  }
  write_tar(t.sub("full.tgz"), {{.path = "cutgz", .data = data}}, TarFilter::kGzip);
  std::string bytes = read_string(t.sub("full.tgz"));
  write_string(t.sub("l.tgz"), bytes.substr(0, bytes.size() / 2));
  ::unlink(t.sub("full.tgz").c_str());
  expect_rejected(t, t.sub("l.tgz"), "cutgz");
}

TEST(Hostile, NameLongerThan255) {
  TempDir t;
  std::string name = "d/" + std::string(300, 'n');
  write_tar(t.sub("l.tar"), {{.path = name, .data = "x"}});
  expect_rejected(t, t.sub("l.tar"), "longer than 255");
}

TEST(Hostile, PathWithNul) {
  TempDir t;
  std::string rec = raw_pax_record("path", std::string("a\0b", 3));
  std::string tar = raw_tar_header("PaxHeader", rec.size(), 'x');
  tar += rec + std::string(512 - rec.size() % 512, '\0');
  tar += raw_tar_header("placeholder", 1) + "x" + std::string(511, '\0');
  tar += std::string(1024, '\0');
  write_string(t.sub("l.tar"), tar);
  auto before = list_tree(t.path());
  std::string out = t.sub("out");
  auto st = build(t.sub("l.tar"), out);
  // libarchive may refuse the record or cut the name at the NUL; either way no entry
  // named with a NUL is created and nothing is written outside OUTDIR.
  if (!st) {
    EXPECT_NE(::access((out + "/image.boot").c_str(), F_OK), 0);
  } else {
    auto img = read_image(out);
    for (const auto& [path, e] : img) {
      EXPECT_EQ(path.find('\0'), std::string::npos);
    }
  }
  auto after = list_tree(t.path());
  after.erase(std::remove_if(after.begin(), after.end(),
                             [](const std::string& s) { return s.starts_with("out"); }),
              after.end());
  EXPECT_EQ(before, after);
}

TEST(Hostile, HardlinkToMissingEntry) {
  TempDir t;
  write_tar(t.sub("l.tar"), {{.path = "hl", .hardlink = "nowhere"}});
  expect_rejected(t, t.sub("l.tar"), "hl");
}

TEST(Hostile, HardlinkToLaterEntry) {
  TempDir t;
  write_tar(t.sub("l.tar"),
            {{.path = "first", .hardlink = "second"}, {.path = "second", .data = "x"}});
  expect_rejected(t, t.sub("l.tar"), "first");
}

TEST(Hostile, HardlinkEscaping) {
  TempDir t;
  write_tar(t.sub("l.tar"), {{.path = "hl", .hardlink = "../../etc/shadow"}});
  expect_rejected(t, t.sub("l.tar"), "hl");
}

TEST(Hostile, NotATar) {
  TempDir t;
  write_string(t.sub("l.tar"), std::string(4096, 'z'));
  expect_rejected(t, t.sub("l.tar"), "l.tar");
}

TEST(Hostile, SymlinkPlantedInOutdirIsNotFollowed) {
  TempDir t;
  std::string src = t.sub("src");
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  write_string(src + "/f", "data");
  std::string out = t.sub("out");
  std::string elsewhere = t.sub("elsewhere");
  ASSERT_EQ(::mkdir(out.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(elsewhere.c_str(), 0755), 0);
  ASSERT_EQ(::symlink(elsewhere.c_str(), (out + "/blobs").c_str()), 0);
  auto st = build(src, out);
  EXPECT_FALSE(st);
  EXPECT_TRUE(list_tree(elsewhere).empty());
  EXPECT_NE(::access((out + "/image.boot").c_str(), F_OK), 0);
}

TEST(Hostile, UnreadableSourceFile) {
  TempDir t;
  std::string src = t.sub("src");
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  write_string(src + "/secret", "x");
  ASSERT_EQ(::chmod((src + "/secret").c_str(), 0), 0);
  if (::geteuid() != 0) {
    auto st = build(src, t.sub("out"));
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message.find("secret"), std::string::npos) << st.error().message;
    return;
  }
  // Root reads every file, so the build runs in a child that has dropped to nobody:
  // the source file (owned by root, mode 0) is then truly unreadable. The child
  // reports through its exit status: 0 = failed naming the entry, 1 = built, 2 = the
  // error did not name it, 3 = could not drop privileges.
  ASSERT_EQ(::chmod(t.path().c_str(), 0777), 0);
  std::string out = t.sub("out");
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0) {
      ::_exit(3);
    }
    auto st = build(src, out);
    if (st) {
      ::_exit(1);
    }
    ::_exit(st.error().message.find("secret") != std::string::npos ? 0 : 2);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: built an unreadable file; 2: error did not name it";
  EXPECT_NE(::access((out + "/image.boot").c_str(), F_OK), 0);
}

TEST(Hostile, RebuildReplacesOutputAtomically) {
  TempDir t;
  std::string src = t.sub("src");
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  write_string(src + "/f", "one");
  std::string out = t.sub("out");
  ASSERT_TRUE(build(src, out));
  write_string(src + "/f", "two");
  ASSERT_TRUE(build(src, out));
  EXPECT_EQ(read_image(out)["/f"].data, "two");
  // A failing rebuild leaves no image.boot (the old one would not match new blobs).
  write_tar(t.sub("bad.tar"), {{.path = "../x", .data = "x"}});
  EXPECT_FALSE(build(t.sub("bad.tar"), out));
  for (const auto& name : list_tree(out)) {
    EXPECT_EQ(name.find(".partial"), std::string::npos);
  }
}

}  // namespace
}  // namespace convert::testing
