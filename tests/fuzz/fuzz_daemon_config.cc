// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the daemon's JSON config (parse_config) and the registry options object
// (parse_registry_options); the first byte picks which. Registry options that parse
// must survive their canonical JSON unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "daemon/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  cfnd::RegistryOptions opts;
  if (data[0] % 2 == 0) {
    auto c = cfnd::parse_config(text);
    if (!c) {
      return 0;
    }
    (void)cfnd::fd_holder_socket(c->socket_path);
    opts = c->registry;
  } else {
    auto r = cfnd::parse_registry_options(text);
    if (!r) {
      return 0;
    }
    opts = *r;
  }
  const std::string canon = cfnd::registry_options_json(opts);
  auto again = cfnd::parse_registry_options(canon);
  if (!again || cfnd::registry_options_json(*again) != canon) {
    std::abort();  // our own canonical text must parse back to the same options
  }
  return 0;
}
