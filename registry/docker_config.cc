// SPDX-License-Identifier: Apache-2.0
#include "registry/docker_config.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "base/unique_fd.h"
#include "registry/util.h"

extern char** environ;

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

// The input (a server URL) fits in the pipe buffer, so this never blocks. SIGPIPE
// (a helper that exited without reading) is blocked for this thread and any
// pending one consumed, so it cannot kill the process.
void write_input(int fd, std::string_view input) {
  sigset_t pipe_set;
  sigset_t old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  std::size_t done = 0;
  while (done < input.size()) {
    const ssize_t w = ::write(fd, input.data() + done, input.size() - done);
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w <= 0) {
      break;
    }
    done += static_cast<std::size_t>(w);
  }
  const timespec zero = {0, 0};
  while (sigtimedwait(&pipe_set, nullptr, &zero) == SIGPIPE) {
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

struct HelperOutput {
  int exit_status = -1;
  std::string out;
  std::string err;
};

base::Result<HelperOutput> run_helper(const std::string& program, std::string_view input) {
  int in_pipe[2];
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) {
    return base::errno_error("pipe");
  }
  base::UniqueFd in_r(in_pipe[0]);
  base::UniqueFd in_w(in_pipe[1]);
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    return base::errno_error("pipe");
  }
  base::UniqueFd out_r(out_pipe[0]);
  base::UniqueFd out_w(out_pipe[1]);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    return base::errno_error("pipe");
  }
  base::UniqueFd err_r(err_pipe[0]);
  base::UniqueFd err_w(err_pipe[1]);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_r.get(), 0);
  posix_spawn_file_actions_adddup2(&fa, out_w.get(), 1);
  posix_spawn_file_actions_adddup2(&fa, err_w.get(), 2);
  std::string arg0 = program;
  std::string arg1 = "get";
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, program.c_str(), &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    return base::errno_error(rc, fmt::format("running credential helper {}", program));
  }
  in_r.reset();
  out_w.reset();
  err_w.reset();

  HelperOutput result;
  const auto deadline = std::chrono::steady_clock::now() + kHelperTimeout;
  write_input(in_w.get(), input);
  in_w.reset();
  bool timed_out = false;
  bool overflow = false;
  while (out_r || err_r) {
    pollfd fds[3];
    nfds_t n = 0;
    int idx_out = -1;
    int idx_err = -1;
    if (out_r) {
      idx_out = static_cast<int>(n);
      fds[n++] = {out_r.get(), POLLIN, 0};
    }
    if (err_r) {
      idx_err = static_cast<int>(n);
      fds[n++] = {err_r.get(), POLLIN, 0};
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    const int pr = poll(fds, n, static_cast<int>(left.count()));
    if (pr < 0) {
      if (errno == EINTR) {
        continue;
      }
      break;
    }
    auto drain = [&](int idx, base::UniqueFd& fd, std::string& into) {
      if (idx < 0 || fds[idx].revents == 0) {
        return;
      }
      char buf[4096];
      const ssize_t r = ::read(fd.get(), buf, sizeof(buf));
      if (r <= 0) {
        fd.reset();
        return;
      }
      if (into.size() + static_cast<std::size_t>(r) > kMaxHelperOutput) {
        overflow = true;
        fd.reset();
        return;
      }
      into.append(buf, static_cast<std::size_t>(r));
    };
    drain(idx_out, out_r, result.out);
    drain(idx_err, err_r, result.err);
    if (overflow) {
      break;
    }
  }
  if (timed_out || overflow) {
    kill(pid, SIGKILL);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return base::errorf(ETIMEDOUT, "credential helper {} did not finish within {} s", program,
                        kHelperTimeout.count());
  }
  if (overflow) {
    return base::errorf(EMSGSIZE, "credential helper {} wrote more than {} bytes", program,
                        kMaxHelperOutput);
  }
  result.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
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
  for (const auto& [key, entry] : auths.items()) {
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

base::Result<std::optional<Credentials>> docker_credentials(const std::string& config_path,
                                                            std::string_view host) {
  const std::string path = config_path.empty() ? default_docker_config_path() : config_path;
  if (access(path.c_str(), F_OK) != 0 && errno == ENOENT) {
    return std::optional<Credentials>();
  }
  CFN_ASSIGN_OR_RETURN(const std::vector<std::byte> bytes, base::read_file(path));
  if (bytes.size() > kMaxConfigBytes) {
    return base::errorf(EMSGSIZE, "docker config {}: over {} bytes", path, kMaxConfigBytes);
  }
  const json j = json::parse(base::as_chars(bytes), nullptr, false);
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
        auto c = from_helper(name.get<std::string>(), server);
        if (!c) {
          return base::Unexpected(std::move(c).error().wrap(fmt::format("docker config {}", path)));
        }
        return c;
      }
    }
    if (const auto store = j.find("credsStore");
        store != j.end() && store->is_string() && !store->get<std::string>().empty()) {
      auto c = from_helper(store->get<std::string>(), server);
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

}  // namespace registry
