// SPDX-License-Identifier: Apache-2.0
// Credentials from docker's config.json: "auths" (base64 "user:pass" in "auth", or
// username/password, or identitytoken), "credHelpers" per host and "credsStore",
// through `docker-credential-<name> get` with the server on stdin.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "registry/client.h"

namespace registry {

// Look up credentials for host (as in a reference; docker.io also matches
// "https://index.docker.io/v1/"). nullopt when the config has none for it; an error
// when the config or a helper is broken (named in the message).
[[nodiscard]] base::Result<std::optional<Credentials>> docker_credentials(
    const std::string& config_path, std::string_view host);

// $DOCKER_CONFIG/config.json, else $HOME/.docker/config.json.
[[nodiscard]] std::string default_docker_config_path();

}  // namespace registry
