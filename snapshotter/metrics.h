// SPDX-License-Identifier: Apache-2.0
// The snapshotter's Prometheus metrics, served on --metrics-address ([metrics] address in
// the TOML) by base/metrics_http.h. Names follow nydus-snapshotter's where one exists:
// snapshotter_snapshot_operation_elapsed_milliseconds (a histogram labelled
// operation_type: prepare, view, mounts, commit, remove, stat, update, list, usage,
// cleanup). Recording is lock-free (relaxed atomics) from any gRPC thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace snapshotter {

class OperationMetrics {
 public:
  enum Op : std::uint8_t {
    kPrepare,
    kView,
    kMounts,
    kCommit,
    kRemove,
    kStat,
    kUpdate,
    kList,
    kUsage,
    kCleanup,
    kOpCount
  };
  // The bucket bounds, milliseconds (nydus-snapshotter's histogram spans the same range).
  static constexpr std::array<double, 14> kBucketsMs = {0.5, 1,   2.5, 5,    10,   25,   50,
                                                        100, 250, 500, 1000, 2500, 5000, 10000};

  static std::string_view name(Op op);

  void record(Op op, std::chrono::nanoseconds elapsed);
  // Times one call: records on destruction.
  class Timer {
   public:
    Timer(OperationMetrics* m, Op op) : m_(m), op_(op), start_(std::chrono::steady_clock::now()) {}
    Timer(const Timer&) = delete;
    Timer& operator=(const Timer&) = delete;
    ~Timer() {
      if (m_ != nullptr) {
        m_->record(op_, std::chrono::steady_clock::now() - start_);
      }
    }

   private:
    OperationMetrics* m_;
    Op op_;
    std::chrono::steady_clock::time_point start_;
  };

  // The Prometheus text of every operation's histogram plus snapshotter_build_info.
  [[nodiscard]] std::string prometheus(std::string_view version) const;

 private:
  struct PerOp {
    std::array<std::atomic<std::uint64_t>, kBucketsMs.size()> buckets{};  // not cumulative
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> sum_ns{0};
  };
  std::array<PerOp, kOpCount> ops_{};
};

}  // namespace snapshotter
