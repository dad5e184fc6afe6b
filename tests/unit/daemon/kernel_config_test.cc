// SPDX-License-Identifier: Apache-2.0
// Which kernel options a .config leaves unset or builds as modules (the text of the
// cachefiles front end's "missing kernel feature" error).
#include "daemon/kernel_config.h"

#include <gtest/gtest.h>

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace cfnd {
namespace {

constexpr std::array<std::string_view, 3> kOptions = {
    "CONFIG_CACHEFILES", "CONFIG_CACHEFILES_ONDEMAND", "CONFIG_EROFS_FS_ONDEMAND"};

using Names = std::vector<std::string>;

TEST(KernelConfig, AbsentAndNotSetAreUnset) {
  // This build machine's kernel: EROFS on demand "is not set", cachefiles not even listed.
  const std::string text =
      "CONFIG_EROFS_FS=y\n"
      "# CONFIG_EROFS_FS_ONDEMAND is not set\n"
      "CONFIG_EROFS_FS_ZIP=y\n";
  EXPECT_EQ(unset_kernel_options(text, kOptions), Names(kOptions.begin(), kOptions.end()));
  EXPECT_TRUE(module_kernel_options(text, kOptions).empty());
}

TEST(KernelConfig, YesAndModuleAreSet) {
  const std::string text =
      "CONFIG_NETFS_SUPPORT=y\n"
      "CONFIG_CACHEFILES=m\n"
      "CONFIG_CACHEFILES_ONDEMAND=y\n"
      "CONFIG_EROFS_FS_ONDEMAND=y";  // no newline at the end
  EXPECT_TRUE(unset_kernel_options(text, kOptions).empty());
  EXPECT_EQ(module_kernel_options(text, kOptions), Names{"CONFIG_CACHEFILES"});
}

TEST(KernelConfig, PrefixOfAnotherOptionDoesNotCount) {
  // CONFIG_CACHEFILES_DEBUG=y must not read as CONFIG_CACHEFILES=y, nor CONFIG_CACHEFILES=y
  // as CONFIG_CACHEFILES_ONDEMAND.
  const std::string text =
      "CONFIG_CACHEFILES_DEBUG=y\n"
      "CONFIG_CACHEFILES_ERROR_INJECTION=y\n"
      "CONFIG_EROFS_FS_ONDEMAND=y\n";
  EXPECT_EQ(unset_kernel_options(text, kOptions),
            (Names{"CONFIG_CACHEFILES", "CONFIG_CACHEFILES_ONDEMAND"}));
  const std::string only_base = "CONFIG_CACHEFILES=y\n";
  EXPECT_EQ(unset_kernel_options(only_base, kOptions),
            (Names{"CONFIG_CACHEFILES_ONDEMAND", "CONFIG_EROFS_FS_ONDEMAND"}));
}

TEST(KernelConfig, OtherValuesAndGarbageAreUnset) {
  const std::string text =
      "CONFIG_CACHEFILES=n\n"
      "CONFIG_CACHEFILES_ONDEMAND=\"y\"\n"
      "\x01\xff garbage line without an equals sign\n"
      "CONFIG_EROFS_FS_ONDEMAND\n";
  EXPECT_EQ(unset_kernel_options(text, kOptions), Names(kOptions.begin(), kOptions.end()));
  EXPECT_EQ(unset_kernel_options("", kOptions), Names(kOptions.begin(), kOptions.end()));
}

}  // namespace
}  // namespace cfnd
