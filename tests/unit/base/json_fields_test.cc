// SPDX-License-Identifier: Apache-2.0
#include "base/json_fields.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace base {
namespace {

using nlohmann::json;

int code(const Status& s) {
  return s ? 0 : s.error().code;
}
template <typename T>
int code(const Result<T>& r) {
  return r ? 0 : r.error().code;
}

TEST(JsonFields, ParseObject) {
  EXPECT_TRUE(parse_json_object(R"({"a":1})", "cfg"));
  for (const char* bad : {"", "[1]", "\"x\"", "{", "nul"}) {
    auto r = parse_json_object(bad, "cfg");
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_EQ(r.error().message, "cfg: not a JSON object");
  }
}

TEST(JsonFields, Strings) {
  const json j = json::parse(R"({"s":"v","e":"","n":null,"i":3,"z":"a\u0000b"})");
  const JsonFields f(j, "where");
  EXPECT_EQ(**f.opt_string("s"), "v");
  EXPECT_FALSE(*f.opt_string("absent"));
  EXPECT_EQ(*f.opt_string("e"), std::optional<std::string>(""));
  EXPECT_EQ(code(f.opt_string("e", {.non_empty = true})), EINVAL);
  EXPECT_EQ(code(f.opt_string("i")), EINVAL);
  EXPECT_EQ(code(f.opt_string("n")), EINVAL);  // null is a value unless told otherwise
  EXPECT_TRUE(f.opt_string("z"));
  EXPECT_EQ(code(f.opt_string("z", {.no_nul = true})), EINVAL);
  auto missing = f.string("absent");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message, "where: missing \"absent\"");
  EXPECT_EQ(f.opt_string("i").error().message, "where: \"i\" must be a string");

  const JsonFields lax(j, "", /*null_is_absent=*/true);
  EXPECT_FALSE(*lax.opt_string("n"));
  EXPECT_FALSE(lax.has("n"));
  EXPECT_EQ(lax.string("n").error().message, "missing \"n\"");

  std::string out = "kept";
  EXPECT_TRUE(f.read("absent", out));
  EXPECT_EQ(out, "kept");
  EXPECT_TRUE(f.read("s", out));
  EXPECT_EQ(out, "v");
}

TEST(JsonFields, NumbersAndBools) {
  const json j = json::parse(R"({"u":5,"neg":-1,"f":1.5,"b":true,"big":18446744073709551615})");
  const JsonFields f(j, "w");
  EXPECT_EQ(**f.opt_uint("u"), 5U);
  EXPECT_EQ(code(f.opt_uint("u", 6, 10)), EINVAL);
  EXPECT_EQ(code(f.opt_uint("u", 0, 4)), EINVAL);
  EXPECT_EQ(code(f.opt_uint("neg")), EINVAL);
  EXPECT_EQ(code(f.opt_uint("f")), EINVAL);
  EXPECT_EQ(code(f.opt_uint("b")), EINVAL);
  EXPECT_EQ(**f.opt_uint("big"), UINT64_MAX);
  std::uint32_t small = 7;
  EXPECT_TRUE(f.read("absent", small, 0, 10));
  EXPECT_EQ(small, 7U);
  EXPECT_TRUE(f.read("u", small, 0, 10));
  EXPECT_EQ(small, 5U);
  EXPECT_EQ(code(f.read("big", small, 0, UINT32_MAX)), EINVAL);  // never truncated
  bool b = false;
  EXPECT_TRUE(f.read("b", b));
  EXPECT_TRUE(b);
  EXPECT_EQ(code(f.read("u", b)), EINVAL);
}

TEST(JsonFields, ArraysMapsAndKeys) {
  const json j = json::parse(
      R"({"l":["a","b"],"bad":["a",1],"empty":["a",""],"m":{"k":"v"},"mbad":{"k":1},"x":1})");
  const JsonFields f(j, "w");
  EXPECT_EQ(**f.opt_strings("l"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(code(f.opt_strings("bad")), EINVAL);
  EXPECT_TRUE(f.opt_strings("empty"));
  EXPECT_EQ(code(f.opt_strings("empty", {.non_empty = true})), EINVAL);
  EXPECT_EQ(code(f.opt_strings("m")), EINVAL);
  EXPECT_EQ(f.string_map("m")->at("k"), "v");
  EXPECT_TRUE(f.string_map("absent")->empty());
  EXPECT_EQ(code(f.string_map("mbad")), EINVAL);
  EXPECT_EQ(code(f.string_map("l")), EINVAL);
  EXPECT_EQ(code(json_strings(json::parse("[1]"), "w", "list")), EINVAL);

  static constexpr std::string_view kAll[] = {"l", "bad", "empty", "m", "mbad", "x"};
  EXPECT_TRUE(f.only_keys(kAll));
  static constexpr std::string_view kSome[] = {"l", "bad", "empty", "m", "mbad"};
  auto s = f.only_keys(kSome);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message, "w: unknown key \"x\"");
}

TEST(JsonFields, NotAnObjectHasNoMembers) {
  const json arr = json::parse("[1,2]");
  const JsonFields f(arr, "w");
  EXPECT_FALSE(f.has("0"));
  EXPECT_FALSE(*f.opt_string("a"));
  EXPECT_TRUE(f.only_keys({}));
}

TEST(JsonFields, ValidUtf8) {
  for (const char* ok : {"", "/mnt/a", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                         "\xf4\x8f\xbf\xbf"}) {
    EXPECT_TRUE(valid_utf8(ok)) << ok;
  }
  for (const char* bad : {"caf\xe9", "\xff", "\x80", "\xc3", "\xe2\x82", "\xc0\xaf" /* overlong */,
                          "\xe0\x80\xaf" /* overlong */, "\xed\xa0\x80" /* surrogate */,
                          "\xf4\x90\x80\x80" /* > U+10FFFF */, "\xf8\x88\x80\x80\x80"}) {
    EXPECT_FALSE(valid_utf8(bad)) << bad;
  }
  // What we accept is what the parser accepts, both ways.
  for (const char* s : {"caf\xc3\xa9", "caf\xe9", "\xed\xa0\x80", "\xf0\x9f\x98\x80", "\xc0\xaf"}) {
    const std::string text = std::string("\"") + s + "\"";
    EXPECT_EQ(valid_utf8(s), !json::parse(text, nullptr, false).is_discarded()) << s;
  }
}

TEST(JsonFields, JsonTextNamesTheMemberThatIsNotUtf8) {
  json j = {{"a", "ok"}, {"list", {"x", "caf\xe9"}}};
  auto t = json_text(j, "state");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, EINVAL);
  EXPECT_EQ(t.error().message, "state: list[1] is not valid UTF-8");
  json k = {{"o", {{"k\xff", 1}}}};
  t = json_text(k, "");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().message, "the key \"k...\" in o is not valid UTF-8");
  json good = {{"a", "caf\xc3\xa9"}, {"n", 1}};
  auto g = json_text(good, "w");
  ASSERT_TRUE(g);
  EXPECT_EQ(*g, good.dump());
  EXPECT_EQ(*json_text(good, "w", 2), good.dump(2));
}

}  // namespace
}  // namespace base
