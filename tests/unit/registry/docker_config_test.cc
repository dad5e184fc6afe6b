// SPDX-License-Identifier: Apache-2.0
#include "registry/docker_config.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/temp_dir.h"

namespace registry {
namespace {

namespace fs = std::filesystem;

class DockerConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* old = getenv("PATH");
    old_path_ = old != nullptr ? old : "";
    setenv("PATH", (dir_ + ":" + old_path_).c_str(), 1);
    // A helper that answers for two servers and records its argv and stdin.
    write_helper("fake", R"(#!/bin/sh
read -r server
echo "$1 $server" >> ")" + dir_ +
                             R"(/calls"
case "$server" in
  registry.example.com) echo '{"ServerURL":"registry.example.com","Username":"alice","Secret":"s3cret"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"x","Username":"<token>","Secret":"refresh-me"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
)");
    write_helper("broken", "#!/bin/sh\necho 'helper exploded: no keyring' >&2\nexit 3\n");
    write_helper("garbage", "#!/bin/sh\necho 'not json'\n");
  }
  void TearDown() override { setenv("PATH", old_path_.c_str(), 1); }
  void write_helper(const std::string& name, const std::string& body) {
    const std::string p = dir_ + "/docker-credential-" + name;
    std::ofstream(p) << body;
    chmod(p.c_str(), 0755);
  }
  std::string write_config(const std::string& json) {
    const std::string p = dir_ + "/config.json";
    std::ofstream(p) << json;
    return p;
  }

  cfntest::TempDir tmp_{"cfn-dockercfg"};
  const std::string dir_ = tmp_.path();
  std::string old_path_;
};

TEST_F(DockerConfigTest, AuthsBase64) {
  const auto p =
      write_config(R"({"auths":{"https://127.0.0.1:15001":{"auth":"dGVzdHVzZXI6dGVzdHBhc3M="},
      "other.example":{"auth":"eDp5"}}})");
  auto c = docker_credentials(p, "127.0.0.1:15001");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->username, "testuser");
  EXPECT_EQ((*c)->password, "testpass");
  auto none = docker_credentials(p, "127.0.0.1:15002");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
}

TEST_F(DockerConfigTest, UsernamePasswordAndIdentityToken) {
  const auto p = write_config(R"({"auths":{"a.example":{"username":"u","password":"p:w"},
      "https://index.docker.io/v1/":{"identitytoken":"tok"}}})");
  auto a = docker_credentials(p, "a.example");
  ASSERT_TRUE(a && a->has_value());
  EXPECT_EQ((*a)->username, "u");
  EXPECT_EQ((*a)->password, "p:w");
  auto hub = docker_credentials(p, "docker.io");
  ASSERT_TRUE(hub && hub->has_value());
  EXPECT_EQ((*hub)->identity_token, "tok");
}

TEST_F(DockerConfigTest, MissingFileIsNoCredentials) {
  auto c = docker_credentials(dir_ + "/nope.json", "x.example");
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->has_value());
}

TEST_F(DockerConfigTest, Malformed) {
  for (const char* bad : {"{", "[]", R"({"auths":[]})", R"({"auths":{"h.example":{"auth":"!!"}}})",
                          R"({"auths":{"h.example":{"auth":"bm9jb2xvbg=="}}})"}) {
    const auto p = write_config(bad);
    auto c = docker_credentials(p, "h.example");
    ASSERT_FALSE(c) << bad;
    EXPECT_NE(c.error().message.find(p), std::string::npos) << c.error().message;
  }
}

TEST_F(DockerConfigTest, CredHelpers) {
  const auto p = write_config(R"({"credHelpers":{"registry.example.com":"fake","docker.io":"fake"},
      "auths":{"registry.example.com":{"auth":"eDp5"}}})");
  auto c = docker_credentials(p, "registry.example.com");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->username, "alice");
  EXPECT_EQ((*c)->password, "s3cret");
  auto hub = docker_credentials(p, "docker.io");
  ASSERT_TRUE(hub) << hub.error().message;
  ASSERT_TRUE(hub->has_value());
  EXPECT_EQ((*hub)->username, "");
  EXPECT_EQ((*hub)->identity_token, "refresh-me");
  std::ifstream calls(dir_ + "/calls");
  std::string line;
  std::getline(calls, line);
  EXPECT_EQ(line, "get registry.example.com");
}

TEST_F(DockerConfigTest, CredsStoreFallsBackToAuths) {
  const auto p = write_config(R"({"credsStore":"fake","auths":{"plain.example":{"auth":"eDp5"}}})");
  auto c = docker_credentials(p, "registry.example.com");
  ASSERT_TRUE(c && c->has_value());
  EXPECT_EQ((*c)->username, "alice");
  auto d = docker_credentials(p, "plain.example");
  ASSERT_TRUE(d) << d.error().message;
  ASSERT_TRUE(d->has_value());
  EXPECT_EQ((*d)->username, "x");
  auto none = docker_credentials(p, "unknown.example");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
}

TEST_F(DockerConfigTest, BrokenHelpers) {
  auto p = write_config(R"({"credHelpers":{"h.example":"broken"}})");
  auto c = docker_credentials(p, "h.example");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("helper exploded: no keyring"), std::string::npos)
      << c.error().message;
  EXPECT_NE(c.error().message.find("docker-credential-broken"), std::string::npos);

  p = write_config(R"({"credHelpers":{"h.example":"missing-helper"}})");
  c = docker_credentials(p, "h.example");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("docker-credential-missing-helper"), std::string::npos);

  p = write_config(R"({"credHelpers":{"h.example":"garbage"}})");
  c = docker_credentials(p, "h.example");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, EINVAL);

  p = write_config(R"({"credHelpers":{"h.example":"../../bin/sh"}})");
  c = docker_credentials(p, "h.example");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, EINVAL);
}

TEST_F(DockerConfigTest, DefaultPath) {
  const char* old = getenv("DOCKER_CONFIG");
  const std::string saved = old != nullptr ? old : "";
  setenv("DOCKER_CONFIG", "/etc/dc", 1);
  EXPECT_EQ(default_docker_config_path(), "/etc/dc/config.json");
  if (old != nullptr) {
    setenv("DOCKER_CONFIG", saved.c_str(), 1);
  } else {
    unsetenv("DOCKER_CONFIG");
  }
}

// A daemon blocks SIGTERM (for its signalfd): a helper that hangs must still end on
// SIGTERM, so it must not inherit that mask.
TEST_F(DockerConfigTest, HangingHelperEndsOnSigterm) {
  const std::string fifo = dir_ + "/pid";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  write_helper("hang", "#!/bin/sh\necho $$ > " + fifo + "\nexec sleep 1000\n");
  const auto p = write_config(R"({"credHelpers":{"h.example":"hang"}})");
  base::Result<std::optional<Credentials>> c = std::optional<Credentials>{};
  std::thread caller([&] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    c = docker_credentials(p, "h.example");
  });
  std::ifstream in(fifo);  // opens once the helper opens it for writing
  pid_t pid = 0;
  in >> pid;
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  caller.join();
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().code, ETIMEDOUT) << c.error().message;
  EXPECT_NE(c.error().message.find("docker-credential-hang"), std::string::npos)
      << c.error().message;
}

// The text parser on its own, as the fuzz target drives it: the helper it is given is
// asked for the matching server, and the store's "none" falls through to inline auths.
TEST(DockerConfigText, HelperRunnerAndFallThrough) {
  std::vector<std::string> asked;
  const internal::HelperRunner helper =
      [&](const std::string& name,
          std::string_view server) -> base::Result<std::optional<Credentials>> {
    asked.push_back(name + "@" + std::string(server));
    return std::optional<Credentials>();
  };
  const std::string text =
      R"({"credsStore":"store","auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}})";
  auto c = internal::credentials_from_config(text, "docker.io", "t.json", helper);
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->username, "u");
  EXPECT_EQ((*c)->password, "p");
  EXPECT_EQ(asked, std::vector<std::string>{"store@https://index.docker.io/v1/"});

  auto bad = internal::credentials_from_config("[1", "docker.io", "t.json", helper);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("t.json"), std::string::npos) << bad.error().message;
}

}  // namespace
}  // namespace registry
