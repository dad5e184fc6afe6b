// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/metrics.h"

#include "base/prometheus.h"

namespace snapshotter {

std::string_view OperationMetrics::name(Op op) {
  static constexpr std::array<std::string_view, kOpCount> kNames = {
      "prepare", "view",   "mounts", "commit", "remove",
      "stat",    "update", "list",   "usage",  "cleanup"};
  return kNames[op];
}

void OperationMetrics::record(Op op, std::chrono::nanoseconds elapsed) {
  auto& o = ops_[op];
  const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(0, elapsed.count()));
  const double ms = static_cast<double>(ns) / 1e6;
  for (std::size_t i = 0; i < kBucketsMs.size(); ++i) {
    if (ms <= kBucketsMs[i]) {
      o.buckets[i].fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  o.sum_ns.fetch_add(ns, std::memory_order_relaxed);
  o.count.fetch_add(1, std::memory_order_relaxed);
}

std::string OperationMetrics::prometheus(std::string_view version) const {
  base::prom::Text t;
  t.family("snapshotter_build_info", "gauge", "The program's version (the value is 1).");
  t.sample("snapshotter_build_info", {{"version", std::string(version)}}, std::uint64_t{1});
  const std::string h = "snapshotter_snapshot_operation_elapsed_milliseconds";
  t.family(h, "histogram", "Time spent in each snapshots API call, milliseconds.");
  for (int i = 0; i < kOpCount; ++i) {
    const auto& o = ops_[static_cast<std::size_t>(i)];
    std::array<std::uint64_t, kBucketsMs.size()> counts{};
    for (std::size_t b = 0; b < counts.size(); ++b) {
      counts[b] = o.buckets[b].load(std::memory_order_relaxed);
    }
    t.histogram(h, {{"operation_type", std::string(name(static_cast<Op>(i)))}}, kBucketsMs, counts,
                static_cast<double>(o.sum_ns.load(std::memory_order_relaxed)) / 1e6,
                o.count.load(std::memory_order_relaxed));
  }
  return t.take();
}

}  // namespace snapshotter
