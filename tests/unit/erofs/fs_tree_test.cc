// SPDX-License-Identifier: Apache-2.0
#include "erofs/fs_tree.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace erofs {
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

TEST(FsTree, DirectoryMeetingDirectoryKeepsChildrenAndTakesMetadata) {
  FsTree base;
  NodeId d = base.add_node(dir_node());
  ASSERT_TRUE(base.add_child(0, "d", d, "d"));
  ASSERT_TRUE(base.add_child(d, "x", base.add_node(file_node()), "d/x"));
  FsTree layer;
  ASSERT_TRUE(layer.add_child(0, "d", layer.add_node(dir_node(0711)), "d"));
  ASSERT_TRUE(base.merge_layer(layer));
  EXPECT_TRUE(base.lookup({"d", "x"}));
  EXPECT_EQ(base.node(*base.lookup({"d"})).meta.mode, 0040711);
  // An implicit directory of the layer leaves the lower one's metadata alone.
  FsTree layer2;
  auto p = layer2.make_parents({"d", "y"}, "d/y");
  ASSERT_TRUE(p);
  ASSERT_TRUE(layer2.add_child(*p, "y", layer2.add_node(file_node()), "d/y"));
  ASSERT_TRUE(base.merge_layer(layer2));
  EXPECT_EQ(base.node(*base.lookup({"d"})).meta.mode, 0040711);
  EXPECT_TRUE(base.lookup({"d", "x"}));
  EXPECT_TRUE(base.lookup({"d", "y"}));
}

TEST(FsTree, LaterEntryReplacesEarlierAcrossLayers) {
  FsTree base;
  NodeId d = base.add_node(dir_node());
  ASSERT_TRUE(base.add_child(0, "p", d, "p"));
  ASSERT_TRUE(base.add_child(d, "x", base.add_node(file_node()), "p/x"));
  FsTree layer;
  BuildNode f = file_node();
  f.origin = 7;
  ASSERT_TRUE(layer.add_child(0, "p", layer.add_node(f), "p"));
  ASSERT_TRUE(base.merge_layer(layer));
  auto p = base.lookup({"p"});
  ASSERT_TRUE(p);
  EXPECT_FALSE(is_dir(base.node(*p)));
  EXPECT_EQ(base.node(*p).origin, 7U);  // the caller's tag comes along
  EXPECT_FALSE(base.lookup({"p", "x"}));
}

TEST(FsTree, HardlinkToALowerLayerSharesItsNode) {
  FsTree base;
  NodeId d = base.add_node(dir_node());
  ASSERT_TRUE(base.add_child(0, "d", d, "d"));
  BuildNode f = file_node();
  f.chunk_slots = {3, 4};
  ASSERT_TRUE(base.add_child(d, "f", base.add_node(f), "d/f"));
  FsTree layer;
  BuildNode link;
  link.meta.mode = 0100000;
  link.lower_link = {"d", "f"};
  ASSERT_TRUE(layer.add_child(0, "l", layer.add_node(link), "l"));
  ASSERT_TRUE(base.merge_layer(layer));
  EXPECT_EQ(*base.lookup({"l"}), *base.lookup({"d", "f"}));
  EXPECT_EQ(base.node(*base.lookup({"l"})).chunk_slots, (std::vector<ChunkSlot>{3, 4}));
}

TEST(FsTree, HardlinkToALowerLayerThatIsNotThereFails) {
  auto merge_with_link = [](FsTree& base, FsTree& layer, std::vector<std::string> to) {
    BuildNode link;
    link.meta.mode = 0100000;
    link.lower_link = std::move(to);
    EXPECT_TRUE(layer.add_child(0, "l", layer.add_node(link), "l"));
    return base.merge_layer(layer);
  };
  auto base_with_file = [] {
    FsTree base;
    NodeId d = base.add_node(dir_node());
    EXPECT_TRUE(base.add_child(0, "d", d, "d"));
    EXPECT_TRUE(base.add_child(d, "f", base.add_node(file_node()), "d/f"));
    return base;
  };
  {
    FsTree base = base_with_file();
    FsTree layer;
    auto r = merge_with_link(base, layer, {"d", "nothing"});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_NE(r.error().message.find("in no lower layer"), std::string::npos);
  }
  {
    FsTree base = base_with_file();
    FsTree layer;
    auto r = merge_with_link(base, layer, {"d"});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("a directory"), std::string::npos);
  }
  {  // whited out by the same layer
    FsTree base = base_with_file();
    FsTree layer;
    auto ld = layer.make_parents({"d", ".wh.f"}, "d/.wh.f");
    ASSERT_TRUE(ld);
    ASSERT_TRUE(layer.add_child(*ld, ".wh.f", 0, "d/.wh.f"));
    auto r = merge_with_link(base, layer, {"d", "f"});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("removes"), std::string::npos);
  }
  {  // below a directory the same layer makes opaque
    FsTree base = base_with_file();
    FsTree layer;
    auto ld = layer.make_parents({"d", ".wh..wh..opq"}, "d/opq");
    ASSERT_TRUE(ld);
    ASSERT_TRUE(layer.add_child(*ld, ".wh..wh..opq", 0, "d/opq"));
    auto r = merge_with_link(base, layer, {"d", "f"});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("removes"), std::string::npos);
  }
}

TEST(FsTree, WhiteoutOfWhatIsNotThereAndAufsMarkersAreHarmless) {
  FsTree base;
  FsTree layer;
  ASSERT_TRUE(layer.add_child(0, ".wh.absent", 0, ".wh.absent"));
  ASSERT_TRUE(layer.add_child(0, ".wh..wh.plnk", 0, ".wh..wh.plnk"));
  ASSERT_TRUE(layer.add_child(0, "f", layer.add_node(file_node()), "f"));
  ASSERT_TRUE(base.merge_layer(layer));
  EXPECT_EQ(base.reachable_count(), 2U);
  EXPECT_FALSE(base.lookup({".wh..wh.plnk"}));
  EXPECT_FALSE(layer.add_child(0, ".wh.", 0, ".wh."));  // a whiteout of nothing
}

TEST(FsTree, OpaqueDirKeepsWhatTheSameLayerAdds) {
  FsTree base;
  NodeId d = base.add_node(dir_node());
  ASSERT_TRUE(base.add_child(0, "d", d, "d"));
  ASSERT_TRUE(base.add_child(d, "old", base.add_node(file_node()), "d/old"));
  FsTree layer;
  NodeId ld = layer.add_node(dir_node(0700));
  ASSERT_TRUE(layer.add_child(0, "d", ld, "d"));
  // The marker after the new entry still hides only the lower ones.
  ASSERT_TRUE(layer.add_child(ld, "new", layer.add_node(file_node()), "d/new"));
  ASSERT_TRUE(layer.add_child(ld, ".wh..wh..opq", 0, "d/.wh..wh..opq"));
  ASSERT_TRUE(base.merge_layer(layer));
  EXPECT_FALSE(base.lookup({"d", "old"}));
  EXPECT_TRUE(base.lookup({"d", "new"}));
  EXPECT_EQ(base.node(*base.lookup({"d"})).meta.mode, 0040700);
}

}  // namespace
}  // namespace erofs
