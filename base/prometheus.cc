// SPDX-License-Identifier: Apache-2.0
#include "base/prometheus.h"

#include <cmath>

#include <fmt/format.h>

namespace base::prom {

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) {
    return "NaN";
  }
  if (std::isinf(v)) {
    return v > 0 ? "+Inf" : "-Inf";
  }
  if (v == std::floor(v) && std::fabs(v) < 9.007199254740992e15) {
    return fmt::format("{}", static_cast<std::int64_t>(v));
  }
  return fmt::format("{}", v);  // shortest round-trip
}

void Text::family(std::string_view name, std::string_view type, std::string_view help) {
  std::string h;
  for (const char c : help) {  // HELP escapes backslash and newline only
    if (c == '\\') {
      h += "\\\\";
    } else if (c == '\n') {
      h += "\\n";
    } else {
      h += c;
    }
  }
  out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, h, name, type);
}

void Text::labels(const Labels& l, std::string_view extra_key, std::string_view extra_value) {
  if (l.empty() && extra_key.empty()) {
    return;
  }
  out_ += '{';
  bool first = true;
  for (const auto& [k, v] : l) {
    out_ += fmt::format("{}{}=\"{}\"", first ? "" : ",", k, escape_label_value(v));
    first = false;
  }
  if (!extra_key.empty()) {
    out_ += fmt::format("{}{}=\"{}\"", first ? "" : ",", extra_key, extra_value);
  }
  out_ += '}';
}

void Text::sample(std::string_view name, const Labels& l, double value) {
  out_ += name;
  labels(l);
  out_ += ' ';
  out_ += format_value(value);
  out_ += '\n';
}

void Text::sample(std::string_view name, const Labels& l, std::uint64_t value) {
  out_ += name;
  labels(l);
  out_ += fmt::format(" {}\n", value);
}

void Text::histogram(std::string_view name, const Labels& l, std::span<const double> le,
                     std::span<const std::uint64_t> counts, double sum, std::uint64_t count) {
  const std::string bucket = std::string(name) + "_bucket";
  std::uint64_t cum = 0;
  for (std::size_t i = 0; i < le.size() && i < counts.size(); ++i) {
    cum += counts[i];
    out_ += bucket;
    labels(l, "le", format_value(le[i]));
    out_ += fmt::format(" {}\n", cum);
  }
  out_ += bucket;
  labels(l, "le", "+Inf");
  out_ += fmt::format(" {}\n", count);
  sample(std::string(name) + "_sum", l, sum);
  sample(std::string(name) + "_count", l, count);
}

void Text::counter(std::string_view name, std::string_view help, std::uint64_t v) {
  family(name, "counter", help);
  sample(name, {}, v);
}

void Text::gauge(std::string_view name, std::string_view help, double v) {
  family(name, "gauge", help);
  sample(name, {}, v);
}

}  // namespace base::prom
