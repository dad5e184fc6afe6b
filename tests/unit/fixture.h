// SPDX-License-Identifier: Apache-2.0
// The upstream nydus fixture (../shared/fixtures, beside the clone). A test that needs
// it skips where it is absent (a developer's clone without ../shared) and fails under
// CI (environment CI=true), where an absent fixture is a broken checkout that must not
// pass as "skipped". Test-only, header-only.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <string_view>

namespace cfntest {

inline bool under_ci() {
  const char* v = std::getenv("CI");
  return v != nullptr && std::string_view(v) == "true";
}

}  // namespace cfntest

// In a test body or SetUp: path must be readable; else the test skips, or fails under CI.
#define CFN_REQUIRE_FIXTURE(path)                                                            \
  do {                                                                                       \
    const std::string cfn_fixture_ = (path);                                                 \
    if (::access(cfn_fixture_.c_str(), R_OK) != 0) {                                         \
      if (::cfntest::under_ci()) {                                                           \
        FAIL() << cfn_fixture_ << " is missing: under CI (CI=true) the fixture is required"; \
      }                                                                                      \
      GTEST_SKIP() << cfn_fixture_ << " is absent";                                          \
    }                                                                                        \
  } while (0)
