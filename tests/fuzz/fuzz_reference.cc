// SPDX-License-Identifier: Apache-2.0
// Fuzz target: image references. Whatever parses must print as a canonical text that
// parses back to the same reference.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "registry/reference.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)registry::is_loopback_host(text);
  auto ref = registry::Reference::parse(text);
  if (!ref) {
    return 0;
  }
  (void)ref->api_host();
  (void)ref->manifest_ref();
  (void)registry::is_loopback_host(ref->host);
  const std::string canon = ref->to_string();
  auto again = registry::Reference::parse(canon);
  if (!again || again->host != ref->host || again->repository != ref->repository ||
      again->tag != ref->tag || again->digest != ref->digest || again->to_string() != canon) {
    std::abort();  // our own canonical text must parse back to the same reference
  }
  return 0;
}
