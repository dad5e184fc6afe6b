// SPDX-License-Identifier: Apache-2.0
// Reading the members of a JSON object: the one helper set for every parser of JSON
// we are handed (the daemon's config and state files, control requests, registry
// manifests and indexes). base/ uses nlohmann-json (header-only, Debian's
// nlohmann-json3-dev) for this alone; the helpers are pure: no I/O, no logging.
//
// Every error is EINVAL, prefixed with the reader's context ("config: ...",
// "state: image 2: ..."), naming the key.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace base {

// What a string member must be beyond being a JSON string.
struct StringRule {
  bool non_empty = false;
  bool no_nul = false;  // refuse "\u0000" (strings that become paths or C strings)
};

// text parsed as a JSON object; EINVAL "<where>: not a JSON object" otherwise.
[[nodiscard]] Result<nlohmann::json> parse_json_object(std::string_view text,
                                                       std::string_view where);

// A JSON array of strings (not a member: a value), e.g. a map's values; what names it.
[[nodiscard]] Result<std::vector<std::string>> json_strings(const nlohmann::json& value,
                                                            std::string_view where,
                                                            std::string_view what,
                                                            StringRule rule = {});

// True when s is well-formed UTF-8: what nlohmann's parser accepts in a string (no
// overlong forms, no surrogates, nothing above U+10FFFF) and its dump() can write.
[[nodiscard]] bool valid_utf8(std::string_view s);

// The text of j (compact, or indented by indent), or EINVAL "<where>: <member> is not
// valid UTF-8" naming the first string, key or value, that is not (e.g.
// `"registry.ca_files[1]"`). JSON carries only UTF-8, and nlohmann's dump() throws on
// anything else: strings from outside (paths, references, labels) go through this.
[[nodiscard]] Result<std::string> json_text(const nlohmann::json& j, std::string_view where,
                                            int indent = -1);

class JsonFields {
 public:
  // obj must outlive the reader; a non-object obj has no members. where: the error
  // context, "" for none. null_is_absent: a member whose value is null counts as
  // absent (Go's encoders write empty slices and maps as null); otherwise a null is
  // a value of the wrong type.
  JsonFields(const nlohmann::json& obj, std::string_view where, bool null_is_absent = false)
      : obj_(obj), where_(where), null_is_absent_(null_is_absent) {}

  [[nodiscard]] bool has(std::string_view key) const { return find(key) != nullptr; }
  // The member's value, nullptr when absent.
  [[nodiscard]] const nlohmann::json* find(std::string_view key) const;

  // Absent: nullopt (optional forms) or "missing" (required forms).
  [[nodiscard]] Result<std::optional<std::string>> opt_string(std::string_view key,
                                                              StringRule rule = {}) const;
  [[nodiscard]] Result<std::string> string(std::string_view key, StringRule rule = {}) const;
  // A non-negative integer within [min, max].
  [[nodiscard]] Result<std::optional<std::uint64_t>> opt_uint(std::string_view key,
                                                              std::uint64_t min = 0,
                                                              std::uint64_t max = UINT64_MAX) const;
  [[nodiscard]] Result<std::optional<bool>> opt_bool(std::string_view key) const;
  [[nodiscard]] Result<std::optional<std::vector<std::string>>> opt_strings(
      std::string_view key, StringRule rule = {}) const;
  // An object of string values (OCI annotations); absent: empty.
  [[nodiscard]] Result<std::map<std::string, std::string>> string_map(std::string_view key) const;
  // EINVAL naming the first member whose key is not in keys.
  [[nodiscard]] Status only_keys(std::span<const std::string_view> keys) const;

  // Assigning forms: out keeps its value when the key is absent.
  [[nodiscard]] Status read(std::string_view key, std::string& out, StringRule rule = {}) const;
  [[nodiscard]] Status read(std::string_view key, bool& out) const;
  [[nodiscard]] Status read(std::string_view key, std::vector<std::string>& out,
                            StringRule rule = {}) const;
  template <typename T>
  [[nodiscard]] Status read(std::string_view key, T& out, std::uint64_t min,
                            std::uint64_t max) const {
    CFN_ASSIGN_OR_RETURN(const auto v, opt_uint(key, min, max));
    if (v) {
      out = static_cast<T>(*v);
    }
    return {};
  }

  // "<where>: <text>", or text alone when where is empty.
  [[nodiscard]] Unexpected error(std::string_view text) const;

 private:
  const nlohmann::json& obj_;
  std::string where_;
  bool null_is_absent_;
};

}  // namespace base
