// SPDX-License-Identifier: Apache-2.0
#include "base/result.h"

#include <gtest/gtest.h>

namespace base {
namespace {

Result<int> half(int v) {
  if (v % 2 != 0) {
    return errorf(EINVAL, "{} is odd", v);
  }
  return v / 2;
}

Result<int> quarter(int v) {
  CFN_ASSIGN_OR_RETURN(int h, half(v));
  return half(h);
}

Status check_even(int v) {
  CFN_TRY(half(v));
  return {};
}

TEST(Result, PropagatesErrors) {
  EXPECT_EQ(*quarter(8), 2);
  auto r = quarter(6);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_EQ(r.error().message, "3 is odd");
  EXPECT_TRUE(check_even(2));
  EXPECT_FALSE(check_even(3));
}

TEST(Result, WrapAddsContext) {
  Error e{ENOENT, "no such blob"};
  EXPECT_EQ(e.wrap("fetching abc").message, "fetching abc: no such blob");
  EXPECT_NE(e.to_string().find("No such file"), std::string::npos);
}

}  // namespace
}  // namespace base
