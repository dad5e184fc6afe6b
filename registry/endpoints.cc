// SPDX-License-Identifier: Apache-2.0
#include "registry/endpoints.h"

#include "base/bytes.h"
#include "base/log.h"
#include "registry/util.h"

namespace registry::internal {

std::string repo_url(const Endpoint& ep, const std::string& repository, std::string_view tail) {
  return ep.base + "/v2/" + repository + std::string(tail);
}

MirrorFailure classify_mirror_failure(const base::Error& e) {
  if (DeadlineScope::passed()) {
    return MirrorFailure::kDeadline;
  }
  if (e.code == ECONNRESET || e.code == ETIMEDOUT || e.code == EIO) {
    return MirrorFailure::kDown;
  }
  return MirrorFailure::kAnswer;
}

const HostConfig* find_host_config(const ClientConfig& config, const std::string& host) {
  const auto it = config.hosts.find(host);
  return it == config.hosts.end() ? nullptr : &it->second;
}

base::Result<Endpoint> Endpoints::origin(const Reference& ref) {
  Endpoint ep;
  ep.authority = ref.api_host();
  ep.cred_host = ref.host;
  const HostConfig* hc = find_host_config(config_, ref.host);
  const bool plain = config_.plain_http || (hc != nullptr && hc->plain_http);
  ep.relaxed_tls = plain || (hc != nullptr && hc->insecure_skip_verify);
  if (plain) {
    ep.base = "http://" + ep.authority;
    return ep;
  }
  if (!is_loopback_host(ep.authority)) {
    ep.base = "https://" + ep.authority;
    return ep;
  }
  ep.relaxed_tls = true;
  {
    std::lock_guard lock(mu_);
    if (const auto it = schemes_.find(ep.authority); it != schemes_.end()) {
      ep.base = it->second + "://" + ep.authority;
      return ep;
    }
  }
  const std::string scheme = probe_scheme(ep.authority);
  ep.base = scheme + "://" + ep.authority;
  return ep;
}

std::string Endpoints::probe_scheme(const std::string& authority) {
  auto probe = [&](const std::string& scheme) {
    http::Request req;
    req.url = scheme + "://" + authority + "/v2/";
    req.retry = false;
    req.follow_redirects = false;
    req.max_body = 64U << 10;
    return http_.perform(req);
  };
  // Plain HTTP first: most loopback registries speak it, and a TLS probe of a plain port
  // costs a TLS set-up and a failed handshake (170 ms of a loaded 2-core machine's cold
  // container start, docs/benchmarks.md). A TLS port answers plain HTTP with a 400 naming
  // HTTPS (Go's servers, nginx) or not at all; then HTTPS is probed, and when that fails
  // too (a certificate, most likely) HTTPS is still the answer: its failure is the story.
  std::string scheme;
  auto plain = probe("http");
  const bool tls_port = plain && plain->status == 400 &&
                        base::as_chars(plain->body).find("HTTPS") != std::string::npos;
  if (plain && !tls_port) {
    scheme = "http";
  } else if (auto tls = probe("https"); tls || tls_port) {
    scheme = "https";
  } else {
    return "https";  // nothing answers; do not cache
  }
  spdlog::debug("registry: {} speaks {}", authority, scheme);
  std::lock_guard lock(mu_);
  schemes_[authority] = scheme;
  return scheme;
}

std::vector<Endpoint> Endpoints::mirrors(const Reference& ref) const {
  std::vector<Endpoint> out;
  const HostConfig* hc = find_host_config(config_, ref.host);
  if (hc == nullptr) {
    return out;
  }
  for (const std::string& m : hc->mirrors) {
    auto u = parse_url(m);
    if (!u) {
      continue;  // checked in Client::create()
    }
    Endpoint ep;
    ep.base = m;
    while (!ep.base.empty() && ep.base.back() == '/') {
      ep.base.pop_back();
    }
    ep.authority = u->authority;
    ep.cred_host = u->authority;
    ep.mirror = true;
    if (auto h = hc->mirror_headers.find(m); h != hc->mirror_headers.end()) {
      for (const auto& [name, value] : h->second) {
        ep.headers.push_back(name + ": " + value);
      }
    }
    const HostConfig* mc = find_host_config(config_, u->authority);
    ep.relaxed_tls = u->scheme == "http" || (mc != nullptr && mc->insecure_skip_verify) ||
                     hc->insecure_skip_verify;
    out.push_back(std::move(ep));
  }
  return out;
}

bool Endpoints::mirror_usable(const Endpoint& ep) {
  {
    std::lock_guard lock(mu_);
    MirrorState& st = mirrors_[ep.base];
    if (!st.unhealthy) {
      return true;
    }
    if (now() < st.recheck_at) {
      return false;
    }
    st.recheck_at = now() + config_.mirror_recheck;  // one prober at a time
  }
  http::Request req;
  req.url = ep.base + "/v2/";
  req.headers = ep.headers;
  req.retry = false;
  req.max_body = 64U << 10;
  auto r = http_.perform(req);
  const bool ok = r && r->status < 500;
  std::lock_guard lock(mu_);
  MirrorState& st = mirrors_[ep.base];
  st.unhealthy = !ok;
  st.recheck_at = now() + config_.mirror_recheck;
  if (ok) {
    spdlog::info("registry: mirror {} is healthy again", ep.base);
  }
  return ok;
}

void Endpoints::mark_down(const Endpoint& ep, std::string_view why) {
  {
    std::lock_guard lock(mu_);
    MirrorState& st = mirrors_[ep.base];
    st.unhealthy = true;
    st.recheck_at = now() + config_.mirror_recheck;
  }
  spdlog::warn("registry: mirror {} failed ({}); skipping it for {} s", ep.base, why,
               std::chrono::duration_cast<std::chrono::seconds>(config_.mirror_recheck).count());
}

void Endpoints::note_answer(const Endpoint& ep, const base::Error& e) {
  spdlog::debug("registry: mirror {}: {}; trying the next", ep.base, e.message);
}

}  // namespace registry::internal
