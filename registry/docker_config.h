// SPDX-License-Identifier: Apache-2.0
// Credentials from docker's config.json: "auths" (base64 "user:pass" in "auth", or
// username/password, or identitytoken), "credHelpers" per host and "credsStore",
// through `docker-credential-<name> get` with the server on stdin.
#pragma once

#include <functional>
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

namespace internal {

// Runs credential helper `name` for `server`; nullopt when it has nothing for it.
using HelperRunner = std::function<base::Result<std::optional<Credentials>>(
    const std::string& name, std::string_view server)>;

// Pure but for `helper`: docker_credentials on the config's text (path only names it in
// errors). The fuzz target passes a helper that runs nothing.
[[nodiscard]] base::Result<std::optional<Credentials>> credentials_from_config(
    std::string_view text, std::string_view host, const std::string& path,
    const HelperRunner& helper);

}  // namespace internal

}  // namespace registry
