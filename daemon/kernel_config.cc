// SPDX-License-Identifier: Apache-2.0
#include "daemon/kernel_config.h"

#include <sys/utsname.h>
#include <zlib.h>

#include <array>

#include <fmt/core.h>

namespace cfnd {
namespace {

constexpr std::size_t kMaxConfig = 4U << 20;  // a .config is ~300 KB

// The value of "NAME=value" in config_text; "" when the option is absent or "# NAME is not set".
std::string_view option_value(std::string_view text, std::string_view name) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    const std::string_view line = text.substr(pos, end - pos);
    if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == '=') {
      return line.substr(name.size() + 1);
    }
    pos = end + 1;
  }
  return {};
}

// gzread copes with /proc files (size 0) and plain files alike; "" on any failure.
std::string read_config(const std::string& path) {
  gzFile f = ::gzopen(path.c_str(), "rb");
  if (f == nullptr) {
    return {};
  }
  std::string out;
  std::array<char, 65536> buf{};
  for (;;) {
    const int n = ::gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      out.clear();
      break;
    }
    if (n == 0) {
      break;
    }
    out.append(buf.data(), static_cast<std::size_t>(n));
    if (out.size() > kMaxConfig) {
      out.clear();
      break;
    }
  }
  ::gzclose(f);
  return out;
}

std::string join_and(const std::vector<std::string>& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) {
      out += i + 1 == names.size() ? " and " : ", ";
    }
    out += names[i];
  }
  return out;
}

}  // namespace

std::vector<std::string> unset_kernel_options(std::string_view config_text,
                                              std::span<const std::string_view> options) {
  std::vector<std::string> out;
  for (const std::string_view name : options) {
    const std::string_view v = option_value(config_text, name);
    if (v != "y" && v != "m") {
      out.emplace_back(name);
    }
  }
  return out;
}

std::vector<std::string> module_kernel_options(std::string_view config_text,
                                               std::span<const std::string_view> options) {
  std::vector<std::string> out;
  for (const std::string_view name : options) {
    if (option_value(config_text, name) == "m") {
      out.emplace_back(name);
    }
  }
  return out;
}

std::optional<KernelConfig> read_kernel_config() {
  utsname u{};
  std::vector<std::string> paths = {"/proc/config.gz"};
  if (::uname(&u) == 0) {
    paths.push_back(std::string("/boot/config-") + u.release);
  }
  for (std::string& path : paths) {
    std::string text = read_config(path);
    if (text.find("CONFIG_") != std::string::npos) {
      return KernelConfig{std::move(path), std::move(text)};
    }
  }
  return std::nullopt;
}

std::string kernel_release() {
  utsname u{};
  return ::uname(&u) == 0 ? std::string(u.release) : std::string("unknown");
}

std::string kernel_config_note(std::span<const std::string_view> options) {
  if (auto config = read_kernel_config()) {
    const std::string& path = config->path;
    const std::string& text = config->text;
    const auto unset = unset_kernel_options(text, options);
    const auto modules = module_kernel_options(text, options);
    std::string note;
    if (!unset.empty()) {
      note = fmt::format("its {} leaves {} unset (rebuild the kernel with {})", path,
                         join_and(unset), unset.size() == 1 ? "it" : "them");
    }
    if (!modules.empty()) {
      note += fmt::format("{}{} {}", note.empty() ? "" : "; ", join_and(modules),
                          modules.size() == 1 ? "is built as a module: is it loaded?"
                                              : "are built as modules: are they loaded?");
    }
    return note.empty() ? fmt::format("its {} sets every one of them", path) : note;
  }
  return {};
}

}  // namespace cfnd
