// SPDX-License-Identifier: Apache-2.0
#include "registry/docker_config.h"

#include <chrono>
#include <cstdlib>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "registry/util.h"

namespace registry {
namespace {

using nlohmann::json;

constexpr std::string_view kDockerHubServer = "https://index.docker.io/v1/";
constexpr std::size_t kMaxConfigBytes = 1U << 20;
constexpr std::size_t kMaxHelperOutput = 64U << 10;
constexpr auto kHelperTimeout = std::chrono::seconds(30);

bool is_docker_hub(std::string_view host) {
  return host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io";
}

// "https://host:5000/v1/" -> "host:5000"; "Host" -> "host".
std::string normalize_server(std::string_view key) {
  if (const auto p = key.find("://"); p != std::string_view::npos) {
    key = key.substr(p + 3);
  }
  key = key.substr(0, key.find('/'));
  return internal::lower(key);
}

bool server_matches(std::string_view key, std::string_view host) {
  const std::string k = normalize_server(key);
  const std::string h = internal::lower(host);
  if (is_docker_hub(h)) {
    return is_docker_hub(k);
  }
  return k == h;
}

struct HelperOutput {
  int exit_status = -1;
  std::string out;
  std::string err;
};

// The helper runs with a clean signal mask and default dispositions (base/subprocess.h): a
// daemon blocks SIGTERM for its signalfd, and a helper that inherited that could not
// be ended by SIGTERM.
base::Result<HelperOutput> run_helper(const std::string& program, std::string_view input) {
  base::SpawnOptions o;
  o.argv = {program, "get"};
  o.search_path = true;
  auto r = base::run_capture(o, input, std::chrono::steady_clock::now() + kHelperTimeout,
                             kMaxHelperOutput);
  if (!r) {
    if (r.error().code == ETIMEDOUT) {
      return base::errorf(ETIMEDOUT, "credential helper {} did not finish within {} s", program,
                          kHelperTimeout.count());
    }
    if (r.error().code == EMSGSIZE) {
      return base::errorf(EMSGSIZE, "credential helper {} wrote more than {} bytes", program,
                          kMaxHelperOutput);
    }
    return base::Unexpected(r.error().wrap("running credential helper " + program));
  }
  return HelperOutput{r->status, std::move(r->out), std::move(r->err)};
}

std::string first_line(std::string_view s) {
  while (!s.empty() && (s.front() == '\n' || s.front() == ' ')) {
    s.remove_prefix(1);
  }
  s = s.substr(0, s.find('\n'));
  return std::string(s.substr(0, 300));
}

base::Result<std::optional<Credentials>> from_helper(const std::string& name,
                                                     std::string_view server) {
  if (name.empty() || name.find('/') != std::string::npos || name.size() > 100) {
    return base::errorf(EINVAL, "docker config: bad credential helper name '{}'", name);
  }
  const std::string program = "docker-credential-" + name;
  CFN_ASSIGN_OR_RETURN(HelperOutput h, run_helper(program, server));
  if (h.exit_status != 0) {
    const std::string msg = first_line(h.out.empty() ? h.err : h.out);
    if (msg.find("credentials not found") != std::string::npos) {
      return std::optional<Credentials>();
    }
    return base::errorf(EACCES, "credential helper {} failed for {} (exit {}): {}", program, server,
                        h.exit_status, first_line(h.err.empty() ? h.out : h.err));
  }
  const json j = json::parse(h.out, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return base::errorf(EINVAL, "credential helper {}: output is not a JSON object", program);
  }
  Credentials c;
  const auto user = j.find("Username");
  const auto secret = j.find("Secret");
  if (user != j.end() && user->is_string()) {
    c.username = user->get<std::string>();
  }
  if (secret == j.end() || !secret->is_string()) {
    return base::errorf(EINVAL, "credential helper {}: no \"Secret\" in its output", program);
  }
  if (c.username == "<token>") {
    c.username.clear();
    c.identity_token = secret->get<std::string>();
  } else {
    c.password = secret->get<std::string>();
  }
  if (c.username.empty() && c.password.empty() && c.identity_token.empty()) {
    return std::optional<Credentials>();
  }
  return std::optional<Credentials>(std::move(c));
}

base::Result<std::optional<Credentials>> from_auths(const json& auths, std::string_view host,
                                                    const std::string& path) {
  if (!auths.is_object()) {
    return base::errorf(EINVAL, "docker config {}: \"auths\" is not an object", path);
  }
  for (const auto& item : auths.items()) {
    // Named, not a structured binding: clang 14 cannot capture bindings in the lambda below.
    const std::string& key = item.key();
    const json& entry = item.value();
    if (!server_matches(key, host)) {
      continue;
    }
    if (!entry.is_object()) {
      return base::errorf(EINVAL, "docker config {}: auths[\"{}\"] is not an object", path, key);
    }
    Credentials c;
    auto str = [&](const char* k) -> std::string {
      const auto it = entry.find(k);
      return it != entry.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    if (const std::string auth = str("auth"); !auth.empty()) {
      const auto decoded = internal::base64_decode(auth);
      if (!decoded) {
        return base::errorf(EINVAL, "docker config {}: auths[\"{}\"].auth is not base64", path,
                            key);
      }
      const auto colon = decoded->find(':');
      if (colon == std::string::npos) {
        return base::errorf(EINVAL, "docker config {}: auths[\"{}\"].auth is not user:password",
                            path, key);
      }
      c.username = decoded->substr(0, colon);
      c.password = decoded->substr(colon + 1);
    } else {
      c.username = str("username");
      c.password = str("password");
    }
    c.identity_token = str("identitytoken");
    if (c.username.empty() && c.password.empty() && c.identity_token.empty()) {
      continue;
    }
    return std::optional<Credentials>(std::move(c));
  }
  return std::optional<Credentials>();
}

}  // namespace

std::string default_docker_config_path() {
  if (const char* d = std::getenv("DOCKER_CONFIG"); d != nullptr && *d != '\0') {
    return std::string(d) + "/config.json";
  }
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    return std::string(h) + "/.docker/config.json";
  }
  return "/root/.docker/config.json";
}

namespace internal {

base::Result<std::optional<Credentials>> credentials_from_config(std::string_view text,
                                                                 std::string_view host,
                                                                 const std::string& path,
                                                                 const HelperRunner& helper) {
  if (text.size() > kMaxConfigBytes) {
    return base::errorf(EMSGSIZE, "docker config {}: over {} bytes", path, kMaxConfigBytes);
  }
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return base::errorf(EINVAL, "docker config {}: malformed JSON", path);
  }
  const std::string server =
      is_docker_hub(internal::lower(host)) ? std::string(kDockerHubServer) : std::string(host);

  try {
    if (const auto helpers = j.find("credHelpers"); helpers != j.end() && helpers->is_object()) {
      for (const auto& [key, name] : helpers->items()) {
        if (!server_matches(key, host)) {
          continue;
        }
        if (!name.is_string()) {
          return base::errorf(EINVAL, "docker config {}: credHelpers[\"{}\"] is not a string", path,
                              key);
        }
        auto c = helper(name.get<std::string>(), server);
        if (!c) {
          return base::Unexpected(std::move(c).error().wrap(fmt::format("docker config {}", path)));
        }
        return c;
      }
    }
    if (const auto store = j.find("credsStore");
        store != j.end() && store->is_string() && !store->get<std::string>().empty()) {
      auto c = helper(store->get<std::string>(), server);
      if (!c) {
        return base::Unexpected(std::move(c).error().wrap(fmt::format("docker config {}", path)));
      }
      if (*c) {
        return c;
      }
      // Not in the store: fall through to inline auths.
    }
    if (const auto auths = j.find("auths"); auths != j.end() && !auths->is_null()) {
      return from_auths(*auths, host, path);
    }
  } catch (const std::exception& e) {
    return base::errorf(EINVAL, "docker config {}: {}", path, e.what());
  }
  return std::optional<Credentials>();
}

}  // namespace internal

base::Result<std::optional<Credentials>> docker_credentials(const std::string& config_path,
                                                            std::string_view host) {
  const std::string path = config_path.empty() ? default_docker_config_path() : config_path;
  if (access(path.c_str(), F_OK) != 0 && errno == ENOENT) {
    return std::optional<Credentials>();
  }
  CFN_ASSIGN_OR_RETURN(const std::vector<std::byte> bytes, base::read_file(path));
  return internal::credentials_from_config(base::as_chars(bytes), host, path, from_helper);
}

}  // namespace registry
