// SPDX-License-Identifier: Apache-2.0
#include "registry/auth.h"

#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/log.h"
#include "registry/docker_config.h"
#include "registry/util.h"
#include "registry/www_authenticate.h"

namespace registry::internal {
namespace {

constexpr std::string_view kClientId = "cachefilesd-nydus";
constexpr std::uint64_t kMaxTokenResponse = 1U << 20;
constexpr auto kDefaultTokenTtl = std::chrono::seconds(60);

std::string join(const Scopes& s, std::string_view sep) {
  std::string out;
  for (const std::string& x : s) {
    if (!out.empty()) {
      out += sep;
    }
    out += x;
  }
  return out;
}

std::string token_key(const Endpoint& ep, const Scopes& scopes) {
  return ep.authority + "|" + join(scopes, " ");
}

}  // namespace

std::string scope_pull(const std::string& repository) {
  return "repository:" + repository + ":pull";
}
std::string scope_push(const std::string& repository) {
  return "repository:" + repository + ":pull,push";
}

base::Result<std::optional<Credentials>> Auth::credentials_for(const std::string& host) {
  if (const HostConfig* hc = find_host_config(config_, host); hc != nullptr && hc->credentials) {
    return hc->credentials;
  }
  {
    std::lock_guard lock(mu_);
    if (const auto it = creds_.find(host); it != creds_.end()) {
      return it->second;
    }
  }
  CFN_ASSIGN_OR_RETURN(std::optional<Credentials> c,
                       docker_credentials(config_.docker_config, host));
  std::lock_guard lock(mu_);
  creds_[host] = c;
  return c;
}

// Which credentials went to host, for an error: their source and user, never a secret.
std::string Auth::credentials_tried(const std::string& host) {
  const std::string docker = config_.docker_config.empty()
                                 ? "$DOCKER_CONFIG/config.json or ~/.docker/config.json"
                                 : "docker config " + config_.docker_config;
  if (const HostConfig* hc = find_host_config(config_, host); hc != nullptr && hc->credentials) {
    return fmt::format("the configured credentials for {} (user '{}')", host,
                       hc->credentials->username);
  }
  auto c = credentials_for(host);
  if (!c) {
    return fmt::format("anonymous ({}: {})", docker, c.error().message);
  }
  if (!*c) {
    return fmt::format("anonymous (no entry for {} in {})", host, docker);
  }
  if (!(*c)->identity_token.empty() && (*c)->username.empty()) {
    return fmt::format("an identity token for {} from {}", host, docker);
  }
  return fmt::format("user '{}' for {} from {}", (*c)->username, host, docker);
}

// The Authorization value to send now ("" when the host asked for none yet).
base::Result<std::string> Auth::authorization(const Endpoint& ep, const Scopes& scopes) {
  HostAuth ha;
  std::optional<Token> cached;
  {
    std::lock_guard lock(mu_);
    const auto it = host_auth_.find(ep.authority);
    if (it == host_auth_.end()) {
      return std::string();
    }
    ha = it->second;
    if (const auto t = tokens_.find(token_key(ep, scopes)); t != tokens_.end()) {
      cached = t->second;
    }
  }
  if (ha.scheme == HostAuth::Scheme::kBasic) {
    CFN_ASSIGN_OR_RETURN(const auto creds, credentials_for(ep.cred_host));
    if (!creds) {
      return base::errorf(EACCES, "{} requires credentials; credentials tried: {}", ep.authority,
                          credentials_tried(ep.cred_host));
    }
    return "Basic " + base64_encode(creds->username + ":" + creds->password);
  }
  if (ha.scheme != HostAuth::Scheme::kBearer) {
    return std::string();
  }
  const auto now = this->now();
  if (cached && now < cached->refresh_at) {
    return "Bearer " + cached->value;
  }
  auto fresh = fetch_token(ep, ha, scopes);
  if (!fresh) {
    if (cached && now < cached->expires_at) {
      spdlog::warn("registry: token refresh for {} failed ({}); using the current token",
                   ep.authority, fresh.error().message);
      return "Bearer " + cached->value;
    }
    return base::Unexpected(std::move(fresh).error());
  }
  return "Bearer " + *fresh;
}

// Learn from a 401 (or a 403 with a challenge): which scheme, and for bearer a
// token for the scopes the challenge names too.
base::Status Auth::on_challenge(const Endpoint& ep, const http::Response& resp, Scopes& scopes) {
  std::vector<Challenge> challenges;
  const auto [lo, hi] = resp.headers.equal_range("www-authenticate");
  for (auto it = lo; it != hi; ++it) {
    auto parsed = parse_www_authenticate(it->second);
    if (!parsed) {
      return base::errorf(EACCES, "{}: unusable WWW-Authenticate: {}", ep.authority,
                          parsed.error().message);
    }
    challenges.insert(challenges.end(), parsed->begin(), parsed->end());
  }
  const Challenge* bearer = nullptr;
  const Challenge* basic = nullptr;
  for (const Challenge& c : challenges) {
    if (c.scheme == "bearer" && bearer == nullptr && c.params.count("realm") != 0) {
      bearer = &c;
    } else if (c.scheme == "basic" && basic == nullptr) {
      basic = &c;
    }
  }
  HostAuth ha;
  if (bearer != nullptr) {
    ha.scheme = HostAuth::Scheme::kBearer;
    ha.realm = bearer->params.at("realm");
    if (const auto s = bearer->params.find("service"); s != bearer->params.end()) {
      ha.service = s->second;
    }
    if (const auto s = bearer->params.find("scope"); s != bearer->params.end()) {
      std::string_view rest = s->second;
      while (!rest.empty()) {
        const auto sp = rest.find(' ');
        const std::string_view one = rest.substr(0, sp);
        if (!one.empty() && scopes.size() < 16 && one.size() < 512) {
          scopes.emplace(one);
        }
        rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
      }
    }
  } else if (basic != nullptr) {
    ha.scheme = HostAuth::Scheme::kBasic;
    CFN_ASSIGN_OR_RETURN(const auto creds, credentials_for(ep.cred_host));
    if (!creds || (creds->username.empty() && creds->password.empty())) {
      return base::errorf(EACCES, "{} requires basic auth (HTTP {}); credentials tried: {}",
                          ep.authority, resp.status, credentials_tried(ep.cred_host));
    }
  } else {
    return base::errorf(EACCES, "{}: HTTP {} without a usable challenge", ep.authority,
                        resp.status);
  }
  {
    std::lock_guard lock(mu_);
    host_auth_[ep.authority] = ha;
    tokens_.erase(token_key(ep, scopes));
  }
  if (ha.scheme == HostAuth::Scheme::kBearer) {
    CFN_TRY(fetch_token(ep, ha, scopes));
  }
  return {};
}

base::Result<std::string> Auth::fetch_token(const Endpoint& ep, const HostAuth& ha,
                                            const Scopes& scopes) {
  CFN_ASSIGN_OR_RETURN(const Url realm, parse_url(ha.realm));
  if (realm.scheme != "https" && !is_loopback_host(realm.authority) && !ep.relaxed_tls) {
    return base::errorf(EACCES, "{}: refusing to send credentials to a plain-HTTP token server {}",
                        ep.authority, ha.realm);
  }
  CFN_ASSIGN_OR_RETURN(const auto creds, credentials_for(ep.cred_host));
  const std::string what = fmt::format("token from {} for {}", ha.realm, ep.authority);

  std::optional<http::Response> resp;
  const bool has_password = creds && !creds->username.empty() && !creds->password.empty();
  const bool has_refresh = creds && !creds->identity_token.empty();
  if (has_password || has_refresh) {
    std::string form;
    if (has_refresh) {
      form = "grant_type=refresh_token&refresh_token=" + url_escape(creds->identity_token);
    } else {
      form = "grant_type=password&username=" + url_escape(creds->username) +
             "&password=" + url_escape(creds->password);
    }
    form += "&client_id=" + url_escape(kClientId);
    if (!ha.service.empty()) {
      form += "&service=" + url_escape(ha.service);
    }
    if (!scopes.empty()) {
      form += "&scope=" + url_escape(join(scopes, " "));
    }
    http::Request post;
    post.method = "POST";
    post.url = ha.realm;
    post.headers.push_back("Content-Type: application/x-www-form-urlencoded");
    post.body = http::Body{base::as_bytes(form), -1, 0, 0};
    post.max_body = kMaxTokenResponse;
    CFN_ASSIGN_OR_RETURN(http::Response r, http_.perform(post));
    const bool fall_back =
        (r.status == 400 || r.status == 401 || r.status == 404 || r.status == 405) && has_password;
    if (!fall_back) {
      resp = std::move(r);
    }
  }
  if (!resp) {
    std::string url = ha.realm;
    if (!ha.service.empty()) {
      url = with_query(url, "service=" + url_escape(ha.service));
    }
    for (const std::string& s : scopes) {
      url = with_query(url, "scope=" + url_escape(s));
    }
    url = with_query(url, "client_id=" + url_escape(kClientId));
    http::Request get;
    get.url = url;
    get.max_body = kMaxTokenResponse;
    if (has_password) {
      get.authorization = "Basic " + base64_encode(creds->username + ":" + creds->password);
    }
    CFN_ASSIGN_OR_RETURN(http::Response r, http_.perform(get));
    resp = std::move(r);
  }
  if (resp->status != 200) {
    auto e = status_error(*resp, what);
    // Name what was sent (source, user), never the secret itself.
    return base::errorf(EACCES, "{}; credentials tried: {}", e.value().message,
                        credentials_tried(ep.cred_host));
  }
  const auto j = nlohmann::json::parse(base::as_chars(resp->body), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return base::errorf(EBADMSG, "{}: response is not a JSON object", what);
  }
  std::string token;
  for (const char* key : {"token", "access_token"}) {
    if (const auto it = j.find(key); it != j.end() && it->is_string() && token.empty()) {
      token = it->get<std::string>();
    }
  }
  if (token.empty() || token.size() > 64U << 10 ||
      token.find_first_of("\r\n") != std::string::npos) {
    return base::errorf(EBADMSG, "{}: no usable token in the response", what);
  }
  std::chrono::seconds ttl = kDefaultTokenTtl;
  if (const auto it = j.find("expires_in"); it != j.end() && it->is_number()) {
    const double v = it->get<double>();
    if (v >= 1 && v < 1e8) {
      ttl = std::chrono::seconds(static_cast<std::int64_t>(v));
    }
  }
  const auto now = this->now();
  Token t;
  t.value = token;
  t.expires_at = now + ttl;
  t.refresh_at = now + ttl * 9 / 10;  // refresh once 90% of the lifetime is gone
  std::lock_guard lock(mu_);
  tokens_[token_key(ep, scopes)] = std::move(t);
  return token;
}

base::Result<http::Response> Auth::call(const Endpoint& ep, http::Request& req, Scopes scopes) {
  // A mirror gets one try: the next mirror or the origin is the retry.
  if (ep.mirror) {
    req.retry = false;
  }
  req.headers.insert(req.headers.end(), ep.headers.begin(), ep.headers.end());
  for (int round = 0;; ++round) {
    req.authorization.clear();
    CFN_ASSIGN_OR_RETURN(const Url u, parse_url(req.url));
    if (lower(u.authority) == lower(ep.authority)) {
      CFN_ASSIGN_OR_RETURN(req.authorization, authorization(ep, scopes));
    }
    CFN_ASSIGN_OR_RETURN(http::Response resp, http_.perform(req));
    const bool challenged =
        resp.status == 401 || (resp.status == 403 && resp.headers.count("www-authenticate"));
    if (!challenged) {
      return resp;
    }
    if (round > 0) {
      return base::errorf(
          EACCES, "{} {}: access denied after authenticating (HTTP {}{}); credentials tried: {}",
          req.method, url_for_log(req.url), resp.status,
          registry_error_text(resp).empty() ? "" : ": " + registry_error_text(resp),
          credentials_tried(ep.cred_host));
    }
    CFN_TRY(on_challenge(ep, resp, scopes));
  }
}

}  // namespace registry::internal
