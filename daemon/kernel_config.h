// SPDX-License-Identifier: Apache-2.0
// The running kernel's build config, read to say exactly which option a front end misses:
// /proc/config.gz (CONFIG_IKCONFIG_PROC) or /boot/config-RELEASE, whichever is there.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cfnd {

// Of options (e.g. "CONFIG_CACHEFILES"), those that config_text (a kernel .config) does not
// set to y or m, in the order given. An option absent from the text is not set. Pure.
[[nodiscard]] std::vector<std::string> unset_kernel_options(
    std::string_view config_text, std::span<const std::string_view> options);

// Of options, those set to m (modules), in the order given. Pure.
[[nodiscard]] std::vector<std::string> module_kernel_options(
    std::string_view config_text, std::span<const std::string_view> options);

// The running kernel's config: its text and the file it came from (/proc/config.gz, else
// /boot/config-RELEASE). nullopt when neither can be read.
struct KernelConfig {
  std::string path;
  std::string text;
};
[[nodiscard]] std::optional<KernelConfig> read_kernel_config();

// The running kernel's release (uname -r), "unknown" when uname fails.
[[nodiscard]] std::string kernel_release();

// A sentence naming, for the running kernel, which of options its config leaves unset and
// which are modules, with the file it read: "its /proc/config.gz leaves CONFIG_A and
// CONFIG_B unset". "" when neither config file can be read (nothing to add to the error).
[[nodiscard]] std::string kernel_config_note(std::span<const std::string_view> options);

}  // namespace cfnd
