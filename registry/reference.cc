// SPDX-License-Identifier: Apache-2.0
#include "registry/reference.h"

#include <algorithm>

#include <arpa/inet.h>

#include "registry/util.h"

namespace registry {
namespace {

constexpr std::string_view kDockerHub = "docker.io";
constexpr std::size_t kMaxNameLength = 255;

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// One path component: [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
bool valid_component(std::string_view c) {
  if (c.empty() || !is_lower_alnum(c.front()) || !is_lower_alnum(c.back())) {
    return false;
  }
  std::size_t i = 0;
  while (i < c.size()) {
    if (is_lower_alnum(c[i])) {
      ++i;
      continue;
    }
    // A separator run: ".", "_", "__" or "-"+.
    std::size_t j = i;
    while (j < c.size() && !is_lower_alnum(c[j])) {
      ++j;
    }
    const std::string_view sep = c.substr(i, j - i);
    const bool ok = sep == "." || sep == "_" || sep == "__" ||
                    std::all_of(sep.begin(), sep.end(), [](char x) { return x == '-'; });
    if (!ok) {
      return false;
    }
    i = j;
  }
  return true;
}

// host[:port]; host is dot-separated labels of [A-Za-z0-9-] or a bracketed IPv6.
bool valid_domain(std::string_view d) {
  std::string_view host = d;
  std::string_view port;
  if (d.starts_with('[')) {
    const auto close = d.find(']');
    if (close == std::string_view::npos) {
      return false;
    }
    const std::string addr(d.substr(1, close - 1));
    in6_addr a6;
    if (inet_pton(AF_INET6, addr.c_str(), &a6) != 1) {
      return false;
    }
    std::string_view rest = d.substr(close + 1);
    if (rest.empty()) {
      return true;
    }
    if (rest.front() != ':') {
      return false;
    }
    port = rest.substr(1);
    host = {};
  } else if (const auto colon = d.find(':'); colon != std::string_view::npos) {
    host = d.substr(0, colon);
    port = d.substr(colon + 1);
    if (port.empty()) {
      return false;
    }
  }
  if (!port.empty() || d.find(':') != std::string_view::npos) {
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
  }
  if (d.starts_with('[')) {
    return true;
  }
  if (host.empty()) {
    return false;
  }
  std::size_t start = 0;
  while (start <= host.size()) {
    const auto dot = host.find('.', start);
    const std::string_view label =
        host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      const bool ok =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
      if (!ok) {
        return false;
      }
    }
    if (dot == std::string_view::npos) {
      break;
    }
    start = dot + 1;
  }
  return true;
}

// [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
bool valid_tag(std::string_view t) {
  if (t.empty() || t.size() > 128) {
    return false;
  }
  for (std::size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    const bool word =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!word && (i == 0 || (c != '.' && c != '-'))) {
      return false;
    }
  }
  return true;
}

}  // namespace

base::Result<Reference> Reference::parse(std::string_view s) {
  const std::string_view original = s;
  if (s.empty()) {
    return base::errorf(EINVAL, "empty image reference");
  }
  if (s.size() > 4096) {
    return base::errorf(EINVAL, "image reference too long ({} bytes)", s.size());
  }
  Reference r;
  if (const auto at = s.find('@'); at != std::string_view::npos) {
    const std::string_view d = s.substr(at + 1);
    const auto colon = d.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return base::errorf(EINVAL, "invalid reference '{}': malformed digest", original);
    }
    if (d.substr(0, colon) != "sha256") {
      return base::errorf(EINVAL, "invalid reference '{}': unsupported digest algorithm '{}'",
                          original, d.substr(0, colon));
    }
    if (!is_valid_digest(d)) {
      return base::errorf(EINVAL, "invalid reference '{}': malformed digest '{}'", original, d);
    }
    r.digest = std::string(d);
    s = s.substr(0, at);
  }
  // A tag follows the last ':' that comes after the last '/'.
  const auto last_slash = s.rfind('/');
  const auto last_colon = s.rfind(':');
  if (last_colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || last_colon > last_slash)) {
    const std::string_view tag = s.substr(last_colon + 1);
    if (!valid_tag(tag)) {
      return base::errorf(EINVAL, "invalid reference '{}': bad tag '{}'", original, tag);
    }
    r.tag = std::string(tag);
    s = s.substr(0, last_colon);
  }
  if (s.empty()) {
    return base::errorf(EINVAL, "invalid reference '{}': empty name", original);
  }
  std::string_view path = s;
  const auto first_slash = s.find('/');
  if (first_slash != std::string_view::npos) {
    const std::string_view first = s.substr(0, first_slash);
    if (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos ||
        first.starts_with('[') || first == "localhost") {
      if (!valid_domain(first)) {
        return base::errorf(EINVAL, "invalid reference '{}': bad registry host '{}'", original,
                            first);
      }
      r.host = std::string(first);
      path = s.substr(first_slash + 1);
    }
  }
  if (r.host.empty() || r.host == "index.docker.io") {
    r.host = std::string(kDockerHub);
  }
  if (path.empty()) {
    return base::errorf(EINVAL, "invalid reference '{}': empty repository", original);
  }
  std::size_t start = 0;
  while (true) {
    const auto slash = path.find('/', start);
    const std::string_view comp = path.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (!valid_component(comp)) {
      const bool upper =
          std::any_of(comp.begin(), comp.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
      return base::errorf(EINVAL, "invalid reference '{}': {} path component '{}'", original,
                          upper ? "upper case in" : "bad", comp);
    }
    if (slash == std::string_view::npos) {
      break;
    }
    start = slash + 1;
  }
  r.repository = std::string(path);
  if (r.host == kDockerHub && r.repository.find('/') == std::string::npos) {
    r.repository = "library/" + r.repository;
  }
  if (r.host.size() + 1 + r.repository.size() > kMaxNameLength) {
    return base::errorf(EINVAL, "invalid reference '{}': name longer than {} characters", original,
                        kMaxNameLength);
  }
  if (r.tag.empty() && r.digest.empty()) {
    r.tag = "latest";
  }
  return r;
}

std::string Reference::api_host() const {
  if (host == kDockerHub) {
    return "registry-1.docker.io";
  }
  return host;
}

std::string Reference::manifest_ref() const {
  return digest.empty() ? tag : digest;
}

std::string Reference::to_string() const {
  std::string s = host + "/" + repository;
  if (!tag.empty()) {
    s += ":" + tag;
  }
  if (!digest.empty()) {
    s += "@" + digest;
  }
  return s;
}

bool is_loopback_host(std::string_view host) {
  std::string h = internal::lower(internal::authority_host(host));
  if (h == "localhost" || h == "ip6-localhost") {
    return true;
  }
  in6_addr a6;
  if (inet_pton(AF_INET6, h.c_str(), &a6) == 1) {
    static const in6_addr kLoop = IN6ADDR_LOOPBACK_INIT;
    return std::equal(std::begin(a6.s6_addr), std::end(a6.s6_addr), std::begin(kLoop.s6_addr));
  }
  in_addr a4;
  if (inet_pton(AF_INET, h.c_str(), &a4) == 1) {
    return (ntohl(a4.s_addr) >> 24) == 127;
  }
  return false;
}

}  // namespace registry
