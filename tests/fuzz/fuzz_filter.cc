// SPDX-License-Identifier: Apache-2.0
// Fuzz target: containerd's filter syntax (snapshotter/filter.h), as List receives it from
// any client of the socket. Lines of the input are the filter strings; whatever parses is
// matched against a few snapshots. Parsing must fail cleanly or succeed; matching must not
// crash, and a parsed filter must match the same way twice.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "snapshotter/filter.h"
#include "snapshotter/store.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4096) {
    return 0;
  }
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> filters;
  size_t start = 0;
  while (start <= in.size()) {
    size_t end = in.find('\n', start);
    if (end == std::string_view::npos) {
      end = in.size();
    }
    filters.emplace_back(in.substr(start, end - start));
    start = end + 1;
  }
  auto f = snapshotter::Filter::parse_all(filters);
  if (!f) {
    if (f.error().code != EINVAL || f.error().message.empty()) {
      std::abort();
    }
    return 0;
  }
  using snapshotter::Info;
  using snapshotter::Kind;
  static const Info kInfos[] = {
      {"default/1/sha256:abc", "", Kind::kCommitted, 1, 1, {{"containerd.io/snapshot.ref", "x"}}},
      {"a", "p", Kind::kActive, 1, 2, {{"l", "2"}, {"a.b", ""}}},
      {"", "", Kind::kView, 0, 0, {}},
  };
  for (const auto& i : kInfos) {
    bool once = f->match(snapshotter::info_fields(i));
    if (once != f->match(snapshotter::info_fields(i))) {
      std::abort();
    }
  }
  return 0;
}
