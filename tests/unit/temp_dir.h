// SPDX-License-Identifier: Apache-2.0
// The unit tests' one temporary directory: made (mkdtemp, 0700) under /tmp when
// constructed, removed with everything in it when destroyed. Under /tmp and not
// $TMPDIR on purpose: tests put unix sockets in it, and sun_path holds 107 bytes.
// Test-only, header-only, std only (no project folder: any test may include it).
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace cfntest {

class TempDir {
 public:
  // prefix names the test in the directory name ("/tmp/<prefix>-XXXXXX"). A failed
  // mkdtemp throws: gtest fails the test (or fixture) that made it.
  explicit TempDir(std::string_view prefix = "cfn-test") {
    std::string tmpl = "/tmp/" + std::string(prefix) + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw std::system_error(errno, std::generic_category(), "mkdtemp " + tmpl);
    }
    path_ = std::move(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::string& path() const { return path_; }
  // path() + "/" + name
  [[nodiscard]] std::string sub(std::string_view name) const {
    return path_ + "/" + std::string(name);
  }

 private:
  std::string path_;
};

}  // namespace cfntest
