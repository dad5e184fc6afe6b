// SPDX-License-Identifier: Apache-2.0
// containerd's filter syntax (the `filters` package of containerd 1.6), as used by the
// snapshots API's List: a filter string is selectors joined by `,` (all must match); a
// list of filter strings matches when any one does; an empty list or an empty string
// matches everything.
//
//   selector  := fieldpath [ operator value ]
//   fieldpath := field ( '.' field )*            field := [A-Za-z0-9_]+ | "quoted"
//   operator  := '==' | '!=' | '~='              value := quoted | run of printable non-space,
//   non-',' quoted    := Go string syntax between "..."; a ~= value may also be /.../ or |...|
//
// A selector without operator tests presence; `!=` and `~=` treat an absent field as "".
// `~=` is an RE2 regular expression (Go's regexp syntax), matched anywhere in the value.
// Differences from containerd, on purpose: an invalid regular expression is a parse
// error here (containerd matches nothing and logs), and "printable" is approximated by
// "not a control character".
//
// Pure: no I/O, no logging.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace re2 {
class RE2;
}

namespace snapshotter {

// The value of a field path of the object being matched, or nullopt when absent.
using FieldLookup = std::function<std::optional<std::string_view>(std::span<const std::string>)>;

class Filter {
 public:
  enum class Op { kPresent, kEqual, kNotEqual, kMatches };
  struct Selector {
    std::vector<std::string> fieldpath;
    Op op = Op::kPresent;
    std::string value;
    std::shared_ptr<const re2::RE2> re;  // kMatches only; shared by copies of the filter
  };

  // Parse a list of filter strings. Errors are EINVAL with containerd-like text
  // ("filters: parse error: [name >|=|< =x]: expected field or quoted").
  [[nodiscard]] static base::Result<Filter> parse_all(std::span<const std::string> filters);
  // One filter string (the ANDed selectors); "" matches everything.
  [[nodiscard]] static base::Result<Filter> parse(std::string_view filter);

  [[nodiscard]] bool match(const FieldLookup& lookup) const;
  [[nodiscard]] bool matches_everything() const { return any_.empty(); }
  // The parsed alternatives (for tests): each inner vector is ANDed.
  [[nodiscard]] const std::vector<std::vector<Selector>>& alternatives() const { return any_; }

 private:
  // Empty: always matches. An alternative that is empty also always matches.
  std::vector<std::vector<Selector>> any_;
};

}  // namespace snapshotter
