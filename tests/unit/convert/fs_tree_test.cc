// SPDX-License-Identifier: Apache-2.0
#include "convert/fs_tree.h"

#include <gtest/gtest.h>

namespace convert {
namespace {

BuildNode file_node() {
  BuildNode n;
  n.meta.mode = 0100644;
  return n;
}
BuildNode dir_node(std::uint16_t perm = 0755) {
  BuildNode n;
  n.meta.mode = static_cast<std::uint16_t>(0040000 | perm);
  return n;
}

TEST(SplitEntryPath, AcceptsAndNormalizes) {
  EXPECT_EQ(*split_entry_path("./a/b/"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(*split_entry_path("a//./b"), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(split_entry_path("./")->empty());
  EXPECT_TRUE(split_entry_path(".")->empty());
}

TEST(SplitEntryPath, RejectsHostilePaths) {
  EXPECT_FALSE(split_entry_path("/etc/passwd"));
  EXPECT_FALSE(split_entry_path("../x"));
  EXPECT_FALSE(split_entry_path("a/../../x"));
  EXPECT_FALSE(split_entry_path("a/.."));
  EXPECT_FALSE(split_entry_path(std::string("a\0b", 3)));
  EXPECT_FALSE(split_entry_path(std::string(256, 'n')));
  EXPECT_TRUE(split_entry_path(std::string(255, 'n')));
  EXPECT_FALSE(split_entry_path(std::string(5000, 'a')));
  auto e = split_entry_path("x/../y");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("x/../y"), std::string::npos);
}

TEST(FsTree, ParentSymlinkIsRejected) {
  FsTree t;
  BuildNode link;
  link.meta.mode = 0120777;
  link.meta.symlink = "/etc";
  NodeId l = t.add_node(link);
  ASSERT_TRUE(t.add_child(erofs::Tree::kRootNode, "evil", l, "evil"));
  auto p = t.make_parents({"evil", "passwd"}, "evil/passwd");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ENOTDIR);
  EXPECT_NE(p.error().message.find("symlink"), std::string::npos);
}

TEST(FsTree, MergeAppliesWhiteoutsAndOpaque) {
  FsTree base;
  NodeId d = base.add_node(dir_node());
  ASSERT_TRUE(base.add_child(0, "d", d, "d"));
  ASSERT_TRUE(base.add_child(d, "x", base.add_node(file_node()), "x"));
  ASSERT_TRUE(base.add_child(d, "y", base.add_node(file_node()), "y"));
  NodeId o = base.add_node(dir_node());
  ASSERT_TRUE(base.add_child(0, "o", o, "o"));
  ASSERT_TRUE(base.add_child(o, "old", base.add_node(file_node()), "old"));

  FsTree layer;
  auto ld = layer.make_parents({"d", "w"}, "d");
  ASSERT_TRUE(ld);
  ASSERT_TRUE(layer.add_child(*ld, ".wh.x", layer.add_node(file_node()), "d/.wh.x"));
  auto lo = layer.make_parents({"o", "n"}, "o");
  ASSERT_TRUE(lo);
  ASSERT_TRUE(layer.add_child(*lo, "n", layer.add_node(file_node()), "o/n"));
  ASSERT_TRUE(layer.add_child(*lo, ".wh..wh..opq", layer.add_node(file_node()), "o/opq"));
  ASSERT_TRUE(base.merge_layer(layer));

  EXPECT_FALSE(base.lookup({"d", "x"}));
  EXPECT_TRUE(base.lookup({"d", "y"}));
  EXPECT_FALSE(base.lookup({"d", ".wh.x"}));
  EXPECT_FALSE(base.lookup({"o", "old"}));
  EXPECT_TRUE(base.lookup({"o", "n"}));
}

TEST(FsTree, MergeImplicitDirOverLowerFileFails) {
  FsTree base;
  ASSERT_TRUE(base.add_child(0, "f", base.add_node(file_node()), "f"));
  FsTree layer;
  auto p = layer.make_parents({"f", "g"}, "f/g");
  ASSERT_TRUE(p);
  ASSERT_TRUE(layer.add_child(*p, "g", layer.add_node(file_node()), "f/g"));
  auto r = base.merge_layer(layer);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("/f"), std::string::npos);
}

TEST(FsTree, HardlinksStayShared) {
  FsTree base;
  FsTree layer;
  NodeId f = layer.add_node(file_node());
  ASSERT_TRUE(layer.add_child(0, "a", f, "a"));
  ASSERT_TRUE(layer.add_child(0, "b", f, "b"));
  ASSERT_TRUE(base.merge_layer(layer));
  EXPECT_EQ(*base.lookup({"a"}), *base.lookup({"b"}));
}

}  // namespace
}  // namespace convert
