// SPDX-License-Identifier: Apache-2.0
// defer(f): run f at scope exit unless cancel() was called. For multi-step set-up
// where a later failure must undo earlier steps.
#pragma once

#include <utility>

namespace base {

template <typename F>
class [[nodiscard]] Deferred {
 public:
  explicit Deferred(F f) : f_(std::move(f)) {}
  Deferred(const Deferred&) = delete;
  Deferred& operator=(const Deferred&) = delete;
  ~Deferred() {
    if (armed_) {
      f_();
    }
  }
  void cancel() { armed_ = false; }

 private:
  F f_;
  bool armed_ = true;
};

template <typename F>
[[nodiscard]] Deferred<F> defer(F f) {
  return Deferred<F>(std::move(f));
}

}  // namespace base
