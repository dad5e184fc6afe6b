// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the fanotify front end's in-flight record (parse_inflight), which a
// restarted daemon reads from the cache directory a dead one left. The first byte picks
// the form: the raw file; or a valid header (slots from the size, fd bound from the first
// 8 bytes) before the input as slots, so mutations reach the slot checks; or the input as
// records, formatted and parsed back. Whatever parses must keep only records whose fd is
// its own slot's, within bounds, and format to a file that parses to the same records.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "daemon/fanotify_inflight.h"

namespace {

template <typename T>
T take(const std::uint8_t*& p, std::size_t& n) {
  T v{};
  const std::size_t k = n < sizeof v ? n : sizeof v;
  std::memcpy(&v, p, k);
  p += k;
  n -= k;
  return v;
}

void check(const cfnd::InflightFile& f) {
  int last = -1;
  for (const auto& r : f.records) {
    if (r.fd <= last || static_cast<std::uint64_t>(r.fd) >= f.slots ||
        r.count > UINT64_MAX - r.offset) {
      std::abort();  // records come by fd number, each its slot's, ranges that fit
    }
    last = r.fd;
  }
  const auto bytes = cfnd::format_inflight(f.slots, f.fd_bound, f.records);
  auto again = cfnd::parse_inflight(bytes);
  if (!again || again->records != f.records || again->torn != 0 || again->slots != f.slots ||
      again->fd_bound != f.fd_bound) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1 || size > (1U << 20)) {
    return 0;
  }
  const int mode = data[0] % 3;
  const std::uint8_t* p = data + 1;
  std::size_t n = size - 1;
  if (mode == 0) {
    auto f = cfnd::parse_inflight(std::as_bytes(std::span(p, n)));
    if (f) {
      check(*f);
    } else if (f.error().code != EINVAL || f.error().message.empty()) {
      std::abort();
    }
    return 0;
  }
  if (mode == 1) {
    const auto fd_bound = take<std::uint64_t>(p, n);
    const auto slots = static_cast<std::uint32_t>(n / cfnd::kInflightSlotSize);
    auto bytes = cfnd::format_inflight(slots, fd_bound, {});
    std::memcpy(bytes.data() + cfnd::kInflightHeaderSize, p,
                std::size_t{slots} * cfnd::kInflightSlotSize);
    auto f = cfnd::parse_inflight(bytes);
    if (!f) {
      if (fd_bound != 0) {
        std::abort();  // a valid header of the right size parses, whatever the slots hold
      }
      return 0;
    }
    if (f->records.size() + f->torn > slots) {
      std::abort();
    }
    check(*f);
    return 0;
  }
  // Records: slots (u16), fd bound (u8), then per record fd (i16), dev, ino, offset, count.
  const std::uint32_t slots = take<std::uint16_t>(p, n);
  const std::uint64_t fd_bound = take<std::uint8_t>(p, n) + 1U;
  std::vector<cfnd::InflightRecord> records;
  while (n > 0) {
    cfnd::InflightRecord r;
    r.fd = take<std::int16_t>(p, n);
    r.dev = take<std::uint64_t>(p, n);
    r.ino = take<std::uint64_t>(p, n);
    r.offset = take<std::uint64_t>(p, n);
    r.count = take<std::uint64_t>(p, n);
    records.push_back(r);
  }
  auto f = cfnd::parse_inflight(cfnd::format_inflight(slots, fd_bound, records));
  if (!f || f->slots != slots || f->fd_bound != fd_bound) {
    std::abort();
  }
  // Every record in range with a range that fits comes back (the last one of an fd wins),
  // and no other.
  std::vector<bool> want(slots, false);
  for (const auto& r : records) {
    if (r.fd >= 0 && static_cast<std::uint32_t>(r.fd) < slots) {
      want[static_cast<std::size_t>(r.fd)] = r.count <= UINT64_MAX - r.offset;
    }
  }
  if (static_cast<std::size_t>(std::count(want.begin(), want.end(), true)) != f->records.size()) {
    std::abort();
  }
  for (const auto& r : f->records) {
    bool found = false;
    for (auto it = records.rbegin(); it != records.rend(); ++it) {
      if (it->fd == r.fd) {
        found = *it == r;
        break;
      }
    }
    if (!found) {
      std::abort();
    }
  }
  return 0;
}
