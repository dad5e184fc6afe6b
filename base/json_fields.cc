// SPDX-License-Identifier: Apache-2.0
#include "base/json_fields.h"

#include <algorithm>

namespace base {
namespace {

std::string prefixed(std::string_view where, std::string_view text) {
  return where.empty() ? std::string(text) : fmt::format("{}: {}", where, text);
}

Status check_string(const nlohmann::json& v, std::string_view where, std::string_view what,
                    StringRule rule) {
  if (!v.is_string()) {
    return make_error(EINVAL, prefixed(where, fmt::format("{} must be a {}string", what,
                                                          rule.non_empty ? "non-empty " : "")));
  }
  const auto& s = v.get_ref<const std::string&>();
  if (rule.non_empty && s.empty()) {
    return make_error(EINVAL, prefixed(where, fmt::format("{} is empty", what)));
  }
  if (rule.no_nul && s.find('\0') != std::string::npos) {
    return make_error(EINVAL, prefixed(where, fmt::format("{} holds a NUL", what)));
  }
  return {};
}

std::string quoted(std::string_view key) {
  return fmt::format("\"{}\"", key);
}

// The path of the first string in j (a key or a value) that is not UTF-8, if any.
std::optional<std::string> non_utf8_member(const nlohmann::json& j, const std::string& path) {
  if (j.is_string()) {
    if (!valid_utf8(j.get_ref<const std::string&>())) {
      return path.empty() ? std::string("a string") : path;
    }
    return std::nullopt;
  }
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      // A key that is not UTF-8 is named by its valid prefix only.
      if (!valid_utf8(k)) {
        std::size_t n = 0;
        while (n < k.size() && valid_utf8(std::string_view(k).substr(0, n + 1))) {
          ++n;
        }
        return fmt::format("the key \"{}...\"{}", k.substr(0, n),
                           path.empty() ? "" : " in " + path);
      }
      auto sub = non_utf8_member(v, path.empty() ? k : path + "." + k);
      if (sub) {
        return sub;
      }
    }
    return std::nullopt;
  }
  if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i) {
      auto sub = non_utf8_member(j[i], fmt::format("{}[{}]", path, i));
      if (sub) {
        return sub;
      }
    }
  }
  return std::nullopt;
}

}  // namespace

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n = 0;
    std::uint32_t cp = 0;
    std::uint32_t min = 0;
    if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;  // a continuation byte first, or 0xF8..0xFF
    }
    if (s.size() - i <= n) {
      return false;
    }
    for (std::size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

Result<std::string> json_text(const nlohmann::json& j, std::string_view where, int indent) {
  if (auto bad = non_utf8_member(j, "")) {
    return make_error(EINVAL, prefixed(where, fmt::format("{} is not valid UTF-8", *bad)));
  }
  return j.dump(indent);
}

Result<nlohmann::json> parse_json_object(std::string_view text, std::string_view where) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(EINVAL, prefixed(where, "not a JSON object"));
  }
  return j;
}

Result<std::vector<std::string>> json_strings(const nlohmann::json& value, std::string_view where,
                                              std::string_view what, StringRule rule) {
  if (!value.is_array()) {
    return make_error(EINVAL, prefixed(where, fmt::format("{} must be an array of strings", what)));
  }
  std::vector<std::string> out;
  out.reserve(value.size());
  for (const auto& e : value) {
    CFN_TRY(check_string(e, where, fmt::format("an element of {}", what), rule));
    out.push_back(e.get<std::string>());
  }
  return out;
}

const nlohmann::json* JsonFields::find(std::string_view key) const {
  if (!obj_.is_object()) {
    return nullptr;
  }
  const auto it = obj_.find(key);
  if (it == obj_.end() || (null_is_absent_ && it->is_null())) {
    return nullptr;
  }
  return &*it;
}

Unexpected JsonFields::error(std::string_view text) const {
  return make_error(EINVAL, prefixed(where_, text));
}

Result<std::optional<std::string>> JsonFields::opt_string(std::string_view key,
                                                          StringRule rule) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    return std::nullopt;
  }
  CFN_TRY(check_string(*v, where_, quoted(key), rule));
  return v->get<std::string>();
}

Result<std::string> JsonFields::string(std::string_view key, StringRule rule) const {
  CFN_ASSIGN_OR_RETURN(auto v, opt_string(key, rule));
  if (!v) {
    return error(fmt::format("missing \"{}\"", key));
  }
  return std::move(*v);
}

Result<std::optional<std::uint64_t>> JsonFields::opt_uint(std::string_view key, std::uint64_t min,
                                                          std::uint64_t max) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_number_unsigned()) {
    return error(fmt::format("\"{}\" must be an unsigned integer", key));
  }
  const auto n = v->get<std::uint64_t>();
  if (n < min || n > max) {
    return error(fmt::format("\"{}\" = {} outside [{}, {}]", key, n, min, max));
  }
  return n;
}

Result<std::optional<bool>> JsonFields::opt_bool(std::string_view key) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    return std::nullopt;
  }
  if (!v->is_boolean()) {
    return error(fmt::format("\"{}\" must be true or false", key));
  }
  return v->get<bool>();
}

Result<std::optional<std::vector<std::string>>> JsonFields::opt_strings(std::string_view key,
                                                                        StringRule rule) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    return std::nullopt;
  }
  return json_strings(*v, where_, quoted(key), rule);
}

Result<std::map<std::string, std::string>> JsonFields::string_map(std::string_view key) const {
  std::map<std::string, std::string> out;
  const nlohmann::json* v = find(key);
  if (v == nullptr) {
    return out;
  }
  if (!v->is_object()) {
    return error(fmt::format("\"{}\" must be an object", key));
  }
  for (const auto& [k, e] : v->items()) {
    if (!e.is_string()) {
      return error(fmt::format("\"{}\": \"{}\" must be a string", key, k));
    }
    out.emplace(k, e.get<std::string>());
  }
  return out;
}

Status JsonFields::only_keys(std::span<const std::string_view> keys) const {
  if (!obj_.is_object()) {
    return {};
  }
  for (const auto& [key, value] : obj_.items()) {
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      return error(fmt::format("unknown key \"{}\"", key));
    }
  }
  return {};
}

Status JsonFields::read(std::string_view key, std::string& out, StringRule rule) const {
  CFN_ASSIGN_OR_RETURN(auto v, opt_string(key, rule));
  if (v) {
    out = std::move(*v);
  }
  return {};
}

Status JsonFields::read(std::string_view key, bool& out) const {
  CFN_ASSIGN_OR_RETURN(const auto v, opt_bool(key));
  if (v) {
    out = *v;
  }
  return {};
}

Status JsonFields::read(std::string_view key, std::vector<std::string>& out,
                        StringRule rule) const {
  CFN_ASSIGN_OR_RETURN(auto v, opt_strings(key, rule));
  if (v) {
    out = std::move(*v);
  }
  return {};
}

}  // namespace base
