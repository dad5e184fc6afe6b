// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/filter.h"

#include <gtest/gtest.h>

#include "snapshotter/store.h"

namespace snapshotter {
namespace {

Info snap(std::string name, std::string parent, Kind kind, Labels labels = {}) {
  return Info{std::move(name), std::move(parent), kind, 0, 0, std::move(labels)};
}

bool matches(const std::vector<std::string>& filters, const Info& i) {
  auto f = Filter::parse_all(filters);
  EXPECT_TRUE(f.has_value()) << (f ? "" : f.error().to_string());
  return f && f->match(info_fields(i));
}

TEST(Filter, EmptyMatchesEverything) {
  Info i = snap("a", "", Kind::kActive);
  EXPECT_TRUE(matches({}, i));
  EXPECT_TRUE(matches({""}, i));
  EXPECT_TRUE(matches({"name==zzz", ""}, i));
}

TEST(Filter, Fields) {
  Info i = snap("a-wl", "p-wl", Kind::kActive, {{"l", "2"}, {"containerd.io/gc.root", "x"}});
  EXPECT_TRUE(matches({"name==a-wl"}, i));
  EXPECT_FALSE(matches({"name==a"}, i));
  EXPECT_TRUE(matches({"kind==active"}, i));
  EXPECT_FALSE(matches({"kind==view"}, i));
  EXPECT_TRUE(matches({"parent==p-wl"}, i));
  EXPECT_TRUE(matches({"parent!=\"\""}, i));
  EXPECT_TRUE(matches({"labels.l"}, i));
  EXPECT_TRUE(matches({"labels.l==2"}, i));
  EXPECT_FALSE(matches({"labels.l==3"}, i));
  EXPECT_TRUE(matches({"labels.\"containerd.io/gc.root\"==x"}, i));
  // '/' starts a quoted literal, as in containerd: unquoted label keys cannot hold it.
  EXPECT_FALSE(Filter::parse("labels.containerd.io/gc.root==x").has_value());
  EXPECT_TRUE(matches({"name==a-wl,labels.l"}, i));
  EXPECT_FALSE(matches({"name==a-wl,labels.m"}, i));
  EXPECT_TRUE(matches({"name==zzz", "labels.l==2"}, i));  // any of the list
  EXPECT_FALSE(matches({"unknown"}, i));
  EXPECT_TRUE(matches({"unknown!=x"}, i));  // absent counts as ""
}

TEST(Filter, ParentEmptyAndNoLabels) {
  Info i = snap("p", "", Kind::kCommitted);
  EXPECT_TRUE(matches({"parent==\"\""}, i));
  EXPECT_FALSE(matches({"parent!=\"\""}, i));
  EXPECT_FALSE(matches({"labels.l"}, i));
  EXPECT_TRUE(matches({"labels.l!=1"}, i));
  EXPECT_TRUE(matches({"kind==committed"}, i));
  EXPECT_TRUE(matches({"kind==view"}, snap("v", "", Kind::kView)));
}

TEST(Filter, Regexp) {
  Info i = snap("default/12/sha256:abc", "", Kind::kCommitted, {{"k", "value-17"}});
  EXPECT_TRUE(matches({"name~=sha256"}, i));
  EXPECT_TRUE(matches({"name~=^default/"}, i));
  EXPECT_FALSE(matches({"name~=^sha256"}, i));
  EXPECT_TRUE(matches({"name~=/^default\\/12/"}, i));
  EXPECT_TRUE(matches({"labels.k~=|[0-9]+$|"}, i));
  EXPECT_TRUE(matches({"labels.k~=\"value-1[0-9]\""}, i));
  auto bad = Filter::parse("name~=(unclosed");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EINVAL);
}

TEST(Filter, Whitespace) {
  Info i = snap("a", "", Kind::kActive, {{"l", "1"}});
  EXPECT_TRUE(matches({"name == a"}, i));
  EXPECT_TRUE(matches({"  name==a"}, i));
  // containerd looks ahead without skipping spaces after a selector.
  EXPECT_FALSE(Filter::parse("name==a ,labels.l").has_value());
  EXPECT_FALSE(Filter::parse("name==a ").has_value());
}

TEST(Filter, Quoting) {
  Info i = snap("a b,c", "", Kind::kActive, {{"weird key.x", "v\"q"}});
  EXPECT_TRUE(matches({"name==\"a b,c\""}, i));
  EXPECT_TRUE(matches({"labels.\"weird key.x\"==\"v\\\"q\""}, i));
  EXPECT_TRUE(matches({"name==\"\\x61 b\\054c\""}, i));  // hex and octal escapes
  EXPECT_TRUE(matches({"name==\"\\u0061 b,c\""}, i));
  EXPECT_TRUE(matches({"name==a.b"}, snap("a.b", "", Kind::kActive)));
}

TEST(Filter, BadSyntaxIsInvalidArgument) {
  for (const char* s : {"name==", "name=x", "name===x", "==x", ",", "name==x,", "labels.",
                        "labels.\"unterminated", "name==\"bad\\q\"", "labels./re/", "name==/a/",
                        "name foo", "na-me==x", "name~=", "name==\"x\"y", "labels.\"a\"b"}) {
    auto f = Filter::parse(s);
    EXPECT_FALSE(f.has_value()) << s;
    if (!f) {
      EXPECT_EQ(f.error().code, EINVAL) << s;
      EXPECT_NE(f.error().message.find("parse error"), std::string::npos) << f.error().message;
    }
  }
  std::string nul("name==a\0b", 9);
  EXPECT_FALSE(Filter::parse(nul).has_value());
  EXPECT_FALSE(Filter::parse("name==\xff").has_value());  // not UTF-8
  EXPECT_TRUE(
      Filter::parse("name==x\"y\"").has_value());  // '"' inside a bare value is a value rune
  std::vector<std::string> list = {"name==a", "name=="};
  EXPECT_FALSE(Filter::parse_all(list).has_value());
}

TEST(Filter, ParsedShape) {
  auto f = Filter::parse_all(std::vector<std::string>{"labels.\"a.b\".c==1,kind", "name~=/x/"});
  ASSERT_TRUE(f);
  ASSERT_EQ(f->alternatives().size(), 2u);
  const auto& first = f->alternatives()[0];
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].fieldpath, (std::vector<std::string>{"labels", "a.b", "c"}));
  EXPECT_EQ(first[0].op, Filter::Op::kEqual);
  EXPECT_EQ(first[0].value, "1");
  EXPECT_EQ(first[1].op, Filter::Op::kPresent);
  EXPECT_EQ(f->alternatives()[1][0].value, "x");
  // labels."a.b".c looks up the label "a.b.c", as containerd joins the path with '.'.
  Info i = snap("n", "", Kind::kActive, {{"a.b.c", "1"}});
  EXPECT_TRUE(f->match(info_fields(i)));
}

}  // namespace
}  // namespace snapshotter
