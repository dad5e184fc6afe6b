// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/metrics.h"

#include <gtest/gtest.h>

#include "snapshotter/config.h"

namespace snapshotter {
namespace {

using namespace std::chrono_literals;

TEST(OperationMetrics, HistogramPerOperation) {
  OperationMetrics m;
  m.record(OperationMetrics::kPrepare, 300us);  // <= 0.5 ms
  m.record(OperationMetrics::kPrepare, 7ms);    // <= 10 ms
  m.record(OperationMetrics::kPrepare, 20s);    // above every bound: +Inf only
  m.record(OperationMetrics::kRemove, 1ms);
  const std::string t = m.prometheus("9.9");
  const std::string h = "snapshotter_snapshot_operation_elapsed_milliseconds";
  EXPECT_NE(t.find("snapshotter_build_info{version=\"9.9\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("# TYPE " + h + " histogram\n"), std::string::npos);
  EXPECT_NE(t.find(h + "_bucket{operation_type=\"prepare\",le=\"0.5\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find(h + "_bucket{operation_type=\"prepare\",le=\"5\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find(h + "_bucket{operation_type=\"prepare\",le=\"10\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find(h + "_bucket{operation_type=\"prepare\",le=\"10000\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find(h + "_bucket{operation_type=\"prepare\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find(h + "_sum{operation_type=\"prepare\"} 20007.3\n"), std::string::npos) << t;
  EXPECT_NE(t.find(h + "_count{operation_type=\"remove\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find(h + "_count{operation_type=\"cleanup\"} 0\n"), std::string::npos);
}

TEST(OperationMetrics, TomlMetricsAddress) {
  Options o;
  ASSERT_TRUE(apply_toml("[metrics]\naddress = \"127.0.0.1:9110\"\n", "t", o));
  EXPECT_EQ(o.metrics_address, "127.0.0.1:9110");
  EXPECT_TRUE(o.unknown_keys.empty());
  Overrides ov;
  ov.metrics_address = "127.0.0.1:1";
  apply_overrides(ov, o);
  EXPECT_EQ(o.metrics_address, "127.0.0.1:1");
}

}  // namespace
}  // namespace snapshotter
