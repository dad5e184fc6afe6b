// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the failover state file (parse_state). A state that parses must
// serialize to a text that parses back to the same images.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "daemon/failover_state.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto images = cfnd::parse_state(text);
  if (!images) {
    return 0;
  }
  const std::string canon = cfnd::serialize_state(*images);
  auto again = cfnd::parse_state(canon);
  if (!again || *again != *images || cfnd::serialize_state(*again) != canon) {
    std::abort();
  }
  return 0;
}
