// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the WWW-Authenticate challenge parser. Every parsed challenge must
// respect the documented limits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "registry/www_authenticate.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  auto r = registry::parse_www_authenticate(s);
  if (!r) {
    return 0;
  }
  std::size_t params = 0;
  for (const registry::Challenge& c : *r) {
    if (c.scheme.empty()) {
      std::abort();
    }
    for (char ch : c.scheme) {
      if (ch >= 'A' && ch <= 'Z') {
        std::abort();
      }
    }
    params += c.params.size();
  }
  if (params > 32 || size > 8192) {
    std::abort();
  }
  return 0;
}
