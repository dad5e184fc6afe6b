// SPDX-License-Identifier: Apache-2.0
// The Prometheus text exposition format 0.0.4, written: one builder both programs print
// their /metrics with (the daemon: control/api.cc to_prometheus; the snapshotter:
// snapshotter/metrics.cc). Pure: strings in, text out.
//
// Each family is written once with its "# HELP" and "# TYPE" lines, then its samples;
// samples of one family must be added together (the format forbids a family split in
// two). Label values are escaped (\\, \", \n); names are the caller's constants.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace base::prom {

using Labels = std::vector<std::pair<std::string, std::string>>;

// A label value with backslash, double quote and newline escaped.
[[nodiscard]] std::string escape_label_value(std::string_view v);
// A sample value as the format spells it: integers exactly, others shortest round-trip,
// "+Inf", "-Inf", "NaN".
[[nodiscard]] std::string format_value(double v);

class Text {
 public:
  // "# HELP name help" and "# TYPE name type" (type: counter, gauge, histogram, summary,
  // untyped). A counter's name should end in _total.
  void family(std::string_view name, std::string_view type, std::string_view help);
  // One sample line: name{labels} value.
  void sample(std::string_view name, const Labels& labels, double value);
  void sample(std::string_view name, const Labels& labels, std::uint64_t value);
  // A whole histogram's samples under a family() already written: name_bucket{...,le=U}
  // with cumulative counts for each upper bound in `le` (ascending, finite), then
  // le="+Inf" with `count`, name_sum and name_count. `counts[i]` is the number of
  // observations in (le[i-1], le[i]], not cumulative; counts.size() == le.size().
  void histogram(std::string_view name, const Labels& labels, std::span<const double> le,
                 std::span<const std::uint64_t> counts, double sum, std::uint64_t count);

  // Shorthands: family + one sample.
  void counter(std::string_view name, std::string_view help, std::uint64_t v);
  void gauge(std::string_view name, std::string_view help, double v);

  [[nodiscard]] const std::string& str() const { return out_; }
  [[nodiscard]] std::string take() { return std::move(out_); }

 private:
  void labels(const Labels& l, std::string_view extra_key = {}, std::string_view extra_value = {});
  std::string out_;
};

// The content type of this format.
inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace base::prom
