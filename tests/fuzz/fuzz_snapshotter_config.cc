// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the snapshotter's TOML config (snapshotter::apply_toml, --config). A file
// either fails with EINVAL naming its source, or sets options; applying the same text
// again over them gives the same options (but for the unknown keys, reported again).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "snapshotter/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 65536) {
    return 0;
  }
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  snapshotter::Options o;
  auto st = snapshotter::apply_toml(text, "fuzz.toml", o);
  if (!st) {
    if (st.error().code != EINVAL || st.error().message.find("fuzz.toml") == std::string::npos) {
      std::abort();
    }
    return 0;
  }
  snapshotter::Options twice = o;
  if (!snapshotter::apply_toml(text, "fuzz.toml", twice)) {
    std::abort();
  }
  if (twice.unknown_keys.size() != 2 * o.unknown_keys.size()) {
    std::abort();
  }
  twice.unknown_keys = o.unknown_keys;
  if (twice.address != o.address || twice.root != o.root || twice.log_level != o.log_level ||
      twice.fs_driver != o.fs_driver || twice.domain_id != o.domain_id ||
      twice.nydusd_config != o.nydusd_config || twice.daemon_address != o.daemon_address ||
      twice.metrics_address != o.metrics_address || twice.log_to_stdout != o.log_to_stdout) {
    std::abort();
  }
  // What main() checks next must answer, not crash.
  (void)snapshotter::check_fs_driver(o.fs_driver);
  (void)snapshotter::frontend_of(o.fs_driver);
  (void)snapshotter::check_log_level(o.log_level);
  return 0;
}
