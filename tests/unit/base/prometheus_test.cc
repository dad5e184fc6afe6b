// SPDX-License-Identifier: Apache-2.0
#include "base/prometheus.h"

#include <gtest/gtest.h>

#include <array>

namespace base::prom {
namespace {

TEST(Prometheus, EscapesLabelValues) {
  EXPECT_EQ(escape_label_value(R"(a\b"c)"
                               "\n"),
            R"(a\\b\"c\n)");
  EXPECT_EQ(escape_label_value("/mnt/x"), "/mnt/x");
}

TEST(Prometheus, FormatsValues) {
  EXPECT_EQ(format_value(3), "3");
  EXPECT_EQ(format_value(0.5), "0.5");
  EXPECT_EQ(format_value(1e-6), "1e-06");
  EXPECT_EQ(format_value(1.0 / 0.0), "+Inf");
}

TEST(Prometheus, CounterAndLabelledGauge) {
  Text t;
  t.counter("x_bytes_total", "Bytes.\\ and\nmore", 7);
  t.family("x_image_chunks", "gauge", "Chunks.");
  t.sample("x_image_chunks", {{"mountpoint", "/m\"1"}, {"frontend", "fuse"}}, std::uint64_t{4});
  EXPECT_EQ(t.str(),
            "# HELP x_bytes_total Bytes.\\\\ and\\nmore\n# TYPE x_bytes_total counter\n"
            "x_bytes_total 7\n"
            "# HELP x_image_chunks Chunks.\n# TYPE x_image_chunks gauge\n"
            "x_image_chunks{mountpoint=\"/m\\\"1\",frontend=\"fuse\"} 4\n");
}

TEST(Prometheus, HistogramIsCumulativeWithSumAndCount) {
  Text t;
  t.family("op_ms", "histogram", "Ops.");
  const std::array<double, 3> le{1, 10, 100};
  const std::array<std::uint64_t, 3> counts{2, 0, 3};
  // One observation above the last bound: only in +Inf and the count.
  t.histogram("op_ms", {{"operation_type", "prepare"}}, le, counts, 412.5, 6);
  EXPECT_EQ(t.str(),
            "# HELP op_ms Ops.\n# TYPE op_ms histogram\n"
            "op_ms_bucket{operation_type=\"prepare\",le=\"1\"} 2\n"
            "op_ms_bucket{operation_type=\"prepare\",le=\"10\"} 2\n"
            "op_ms_bucket{operation_type=\"prepare\",le=\"100\"} 5\n"
            "op_ms_bucket{operation_type=\"prepare\",le=\"+Inf\"} 6\n"
            "op_ms_sum{operation_type=\"prepare\"} 412.5\n"
            "op_ms_count{operation_type=\"prepare\"} 6\n");
}

TEST(Prometheus, HistogramWithoutLabels) {
  Text t;
  const std::array<double, 1> le{0.5};
  const std::array<std::uint64_t, 1> counts{1};
  t.histogram("h", {}, le, counts, 0.25, 1);
  EXPECT_EQ(t.str(), "h_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.25\nh_count 1\n");
}

}  // namespace
}  // namespace base::prom
