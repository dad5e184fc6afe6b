// SPDX-License-Identifier: Apache-2.0
// Where a pull goes (internal): the origin (its scheme probed once for loopback
// hosts without configuration) and the configured mirrors, tried in order, with the
// one rule for when a failed mirror is skipped for a while.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "registry/client.h"
#include "registry/http.h"

namespace registry::internal {

struct Endpoint {
  std::string base;          // "https://host:port" (a mirror may carry a path prefix)
  std::string authority;     // "host:port"
  std::string cred_host;     // the key for credentials: the reference's host, or the mirror's
  bool relaxed_tls = false;  // plain HTTP or insecure configured: a plain-HTTP token realm is OK
  bool mirror = false;
  std::vector<std::string> headers;  // "Name: value", sent on every request to this endpoint
};

// The configuration of host (as in references), nullptr when there is none.
[[nodiscard]] const HostConfig* find_host_config(const ClientConfig& config,
                                                 const std::string& host);

// ep.base + "/v2/" + repository + tail.
[[nodiscard]] std::string repo_url(const Endpoint& ep, const std::string& repository,
                                   std::string_view tail);

// What a failed request through a mirror says about the mirror.
enum class MirrorFailure {
  kDeadline,  // the caller's deadline cut it: nothing about the mirror, and no time left
  kDown,      // reset, timeout or a server error: the mirror is skipped for mirror_recheck
  kAnswer,    // the mirror answered (404, 401 ...): try the next endpoint, keep the mirror
};
// The one rule, for whole pulls and for the ranges of read_blob_ranges alike.
[[nodiscard]] MirrorFailure classify_mirror_failure(const base::Error& e);

class Endpoints {
 public:
  Endpoints(const ClientConfig& config, http::Transport& http) : config_(config), http_(http) {}

  // The registry itself. Loopback hosts without configuration get what docker
  // gives them: HTTPS when the port speaks TLS, else plain HTTP (probed once).
  [[nodiscard]] base::Result<Endpoint> origin(const Reference& ref);
  // The configured mirrors of ref's host, in order.
  [[nodiscard]] std::vector<Endpoint> mirrors(const Reference& ref) const;
  // Whether to try this mirror now: healthy, or its recheck time has come and
  // GET /v2/ answers (any status below 500; 401 is an answer).
  [[nodiscard]] bool mirror_usable(const Endpoint& ep);
  // Skip the mirror for mirror_recheck; why goes into the warning.
  void mark_down(const Endpoint& ep, std::string_view why);

  // Run fn(endpoint) through each usable mirror, then the origin; the first
  // success wins. A mirror's failure is judged by classify_mirror_failure. A mirror
  // whose base is avoid is left out (it served bad bytes); the origin never is.
  template <typename T, typename F>
  base::Result<T> pull(const Reference& ref, F&& fn, std::string_view avoid = {}) {
    for (const Endpoint& ep : mirrors(ref)) {
      if ((!avoid.empty() && ep.base == avoid) || !mirror_usable(ep)) {
        continue;
      }
      base::Result<T> r = fn(ep);
      if (r) {
        return r;
      }
      switch (classify_mirror_failure(r.error())) {
        case MirrorFailure::kDeadline:
          return r;
        case MirrorFailure::kDown:
          mark_down(ep, r.error().message);
          break;
        case MirrorFailure::kAnswer:
          note_answer(ep, r.error());
          break;
      }
    }
    CFN_ASSIGN_OR_RETURN(const Endpoint ep, origin(ref));
    return fn(ep);
  }

 private:
  struct MirrorState {
    bool unhealthy = false;
    std::chrono::steady_clock::time_point recheck_at;
  };

  std::string probe_scheme(const std::string& authority);
  static void note_answer(const Endpoint& ep, const base::Error& e);

  std::chrono::steady_clock::time_point now() const {
    return config_.clock ? config_.clock() : std::chrono::steady_clock::now();
  }

  const ClientConfig& config_;
  http::Transport& http_;
  std::mutex mu_;                               // guards the two maps
  std::map<std::string, std::string> schemes_;  // loopback authority -> "http" / "https"
  std::map<std::string, MirrorState> mirrors_;  // by mirror base URL
};

}  // namespace registry::internal
