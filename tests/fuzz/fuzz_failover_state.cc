// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the failover state files (parse_state, as cachefiles', fanotify's and
// FUSE's). A state that parses must serialize to a text that parses back to the same
// images.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "daemon/failover_state.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto fe :
       {cfnd::Frontend::kCachefiles, cfnd::Frontend::kFanotify, cfnd::Frontend::kFuse}) {
    auto images = cfnd::parse_state(text, fe);
    if (!images) {
      continue;
    }
    const std::string canon = cfnd::serialize_state(*images).value();
    auto again = cfnd::parse_state(canon, fe);
    if (!again || *again != *images || cfnd::serialize_state(*again).value() != canon) {
      std::abort();
    }
  }
  return 0;
}
