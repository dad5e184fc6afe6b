// SPDX-License-Identifier: Apache-2.0
// WWW-Authenticate parsing (RFC 7235 challenges, as registries send them):
//   Bearer realm="https://auth.example/token",service="registry",scope="repository:x:pull"
//   Basic realm="test-realm"
// Pure. Hostile input (unterminated quotes, huge headers, junk) gives EINVAL.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace registry {

struct Challenge {
  std::string scheme;                         // lower-cased: "bearer", "basic"
  std::map<std::string, std::string> params;  // keys lower-cased, values unquoted
};

// One header value may carry several challenges. Limits: 8 KiB, 32 params.
[[nodiscard]] base::Result<std::vector<Challenge>> parse_www_authenticate(std::string_view value);

}  // namespace registry
