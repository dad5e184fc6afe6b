// SPDX-License-Identifier: Apache-2.0
// Fuzz target: reading an OCI image layout (convert's source: index.json -> nested
// index -> manifest -> config + layers, through registry::parse_descriptor). The input
// is index.json and blobs, split at lines "--blob--". Each blob is stored under its
// sha256 in a temporary layout; in any part, "sha256:@N" (N one digit) stands for the
// digest of blob N, so that mutations keep reaching the manifest and config parsers
// (a blob may name only later blobs). Nothing is written outside that directory.
#include <stdlib.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "base/digest.h"
#include "convert/sources.h"

namespace {

constexpr std::string_view kSplit = "\n--blob--\n";
constexpr std::size_t kMaxBlobs = 10;

std::string substitute(std::string_view text, const std::array<std::string, kMaxBlobs>& digests) {
  std::string out;
  constexpr std::string_view kToken = "sha256:@";
  std::size_t i = 0;
  while (i < text.size()) {
    if (text.substr(i, kToken.size()) == kToken && i + kToken.size() < text.size() &&
        text[i + kToken.size()] >= '0' && text[i + kToken.size()] <= '9' &&
        !digests[static_cast<std::size_t>(text[i + kToken.size()] - '0')].empty()) {
      out += "sha256:";
      out += digests[static_cast<std::size_t>(text[i + kToken.size()] - '0')];
      i += kToken.size() + 1;
    } else {
      out += text[i++];
    }
  }
  return out;
}

// A static buffer, not a std::string: the exit handler runs after static destructors.
const char* layout_dir() {
  static char dir[256];
  if (dir[0] == '\0') {
    const std::string tmpl =
        (std::filesystem::temp_directory_path() / "cfn-fuzz-oci.XXXXXX").string();
    if (tmpl.size() >= sizeof dir) {
      std::abort();
    }
    tmpl.copy(dir, tmpl.size());
    if (mkdtemp(dir) == nullptr) {
      std::abort();
    }
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(layout_dir(), ec);
    });
  }
  return dir;
}

void write(const std::filesystem::path& p, std::string_view data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  for (std::size_t pos = 0;;) {
    const std::size_t next = input.find(kSplit, pos);
    if (next == std::string_view::npos || parts.size() == kMaxBlobs) {
      parts.push_back(input.substr(pos));
      break;
    }
    parts.push_back(input.substr(pos, next - pos));
    pos = next + kSplit.size();
  }
  const std::filesystem::path dir(layout_dir());
  std::error_code ec;
  std::filesystem::remove_all(dir / "blobs", ec);
  std::filesystem::create_directories(dir / "blobs" / "sha256", ec);
  // Blobs last to first, so that blob N may name the digests of blobs after it.
  std::array<std::string, kMaxBlobs> digests;
  for (std::size_t n = parts.size() - 1; n >= 1; --n) {
    const std::string blob = substitute(parts[n], digests);
    digests[n - 1] = base::hex(base::sha256(base::as_bytes(blob)));
    write(dir / "blobs" / "sha256" / digests[n - 1], blob);
  }
  write(dir / "index.json", substitute(parts[0], digests));
  auto img = convert::open_oci_layout(dir.string());
  if (img) {
    for (const auto& l : img->layers) {
      // Layer paths are built from validated hex only: they stay inside the layout.
      if (l.path.rfind(dir.string() + "/blobs/sha256/", 0) != 0 ||
          l.path.find("..") != std::string::npos) {
        std::abort();
      }
    }
  }
  return 0;
}
