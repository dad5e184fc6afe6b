// SPDX-License-Identifier: Apache-2.0
// Fuzz target: docker's config.json. The JSON text is parsed for a few hosts; credential
// helpers are never run (the helper given answers "none" for every name, or an error
// for one name so that the error path is walked too).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "registry/docker_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  static constexpr std::string_view kHosts[] = {
      "docker.io", "registry-1.docker.io", "127.0.0.1:5000", "localhost", "ghcr.io", "",
  };
  const std::string_view host = kHosts[data[0] % std::size(kHosts)];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const registry::internal::HelperRunner helper =
      [](const std::string& name,
         std::string_view /*server*/) -> base::Result<std::optional<registry::Credentials>> {
    if (name == "fail") {
      return base::errorf(EIO, "helper {} failed", name);
    }
    return std::optional<registry::Credentials>();
  };
  auto c = registry::internal::credentials_from_config(text, host, "fuzz/config.json", helper);
  if (c && *c && (*c)->username.empty() && (*c)->password.empty() && (*c)->identity_token.empty()) {
    std::abort();  // "found" credentials must carry something
  }
  return 0;
}
