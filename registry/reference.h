// SPDX-License-Identifier: Apache-2.0
// Image references as docker and containerd spell them:
//   [host[:port]/]path[:tag][@sha256:hex]
// A first component is a host when it contains '.' or ':' or is "localhost".
// docker.io is the default host; one-component paths there get "library/".
#pragma once

#include <string>
#include <string_view>

#include "base/result.h"

namespace registry {

struct Reference {
  std::string host;        // "docker.io", "127.0.0.1:5000", "localhost"
  std::string repository;  // "library/busybox", "team/app"
  std::string tag;         // empty when only a digest was given; "latest" when neither
  std::string digest;      // "sha256:<64 hex>" or empty

  // EINVAL with a reason for anything docker would refuse (upper case in the path,
  // empty components, bad tag characters, a malformed digest).
  [[nodiscard]] static base::Result<Reference> parse(std::string_view s);

  // The host to talk to: registry-1.docker.io for docker.io.
  [[nodiscard]] std::string api_host() const;
  // Tag or digest as used in /v2/<repo>/manifests/<here>; the digest wins.
  [[nodiscard]] std::string manifest_ref() const;
  // Canonical text: host/repository[:tag][@digest].
  [[nodiscard]] std::string to_string() const;
};

// True for localhost, 127.0.0.0/8 and [::1] (with or without a port): hosts where
// plain HTTP is allowed by default, as docker does.
[[nodiscard]] bool is_loopback_host(std::string_view host);

}  // namespace registry
