// SPDX-License-Identifier: Apache-2.0
// Fuzz target: a read() of a fanotify pre-content group (parse_fan_events). The parser
// must never read past the buffer, must return at most one event per 24 bytes, and a
// range it reports never wraps.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "daemon/fanotify_frontend.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  const auto events = cfnd::parse_fan_events(in);
  if (events.size() > size / sizeof(cfnd::FanEventMetadata)) {
    std::abort();
  }
  for (const auto& ev : events) {
    if (ev.range_offset && ev.range_count > UINT64_MAX - *ev.range_offset) {
      std::abort();
    }
  }
  // The reusing overload appends the same events.
  std::vector<cfnd::FanEvent> again(1);
  cfnd::parse_fan_events(in, again);
  if (again.size() != events.size() + 1) {
    std::abort();
  }
  return 0;
}
