// SPDX-License-Identifier: Apache-2.0
// Authentication of registry requests (internal): the scheme a host asked for
// (basic or bearer, learnt from its 401 challenge), bearer tokens cached per
// endpoint and scope set and refreshed before they expire, and credentials from
// the configuration or the docker config.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "base/result.h"
#include "registry/client.h"
#include "registry/endpoints.h"
#include "registry/http.h"

namespace registry::internal {

using Scopes = std::set<std::string>;
[[nodiscard]] std::string scope_pull(const std::string& repository);
[[nodiscard]] std::string scope_push(const std::string& repository);

class Auth {
 public:
  Auth(const ClientConfig& config, http::Transport& http) : config_(config), http_(http) {}

  // One authenticated request to ep: learn the auth scheme from a 401 (or a 403
  // with a challenge) and try once more; a second refusal is EACCES. A mirror
  // gets one try (req.retry is cleared): the next mirror or the origin is its
  // retry. On return, req.authorization is what went with the last hop.
  [[nodiscard]] base::Result<http::Response> call(const Endpoint& ep, http::Request& req,
                                                  Scopes scopes);

 private:
  struct HostAuth {
    enum class Scheme { kNone, kBasic, kBearer } scheme = Scheme::kNone;
    std::string realm;
    std::string service;
  };
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point refresh_at;
    std::chrono::steady_clock::time_point expires_at;
  };

  base::Result<std::optional<Credentials>> credentials_for(const std::string& host);
  std::string credentials_tried(const std::string& host);
  // The Authorization value to send now ("" when the host asked for none yet).
  base::Result<std::string> authorization(const Endpoint& ep, const Scopes& scopes);
  // Learn from a challenge: which scheme, and for bearer a token for the scopes
  // the challenge names too (added to scopes).
  base::Status on_challenge(const Endpoint& ep, const http::Response& resp, Scopes& scopes);
  base::Result<std::string> fetch_token(const Endpoint& ep, const HostAuth& ha,
                                        const Scopes& scopes);

  std::chrono::steady_clock::time_point now() const {
    return config_.clock ? config_.clock() : std::chrono::steady_clock::now();
  }

  const ClientConfig& config_;
  http::Transport& http_;
  std::mutex mu_;                              // guards the maps below
  std::map<std::string, HostAuth> host_auth_;  // by authority
  std::map<std::string, Token> tokens_;        // by token_key()
  std::map<std::string, std::optional<Credentials>> creds_;
};

}  // namespace registry::internal
