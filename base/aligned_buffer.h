// SPDX-License-Identifier: Apache-2.0
// AlignedBuffer: a heap buffer with a chosen alignment (page-aligned for O_DIRECT
// and for the kernel's cache files). Move-only.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <utility>

namespace base {

class AlignedBuffer {
 public:
  static constexpr std::size_t kPageSize = 4096;

  AlignedBuffer() = default;
  // Zero-filled. Throws std::bad_alloc on failure (start-up style); size 0 is empty.
  explicit AlignedBuffer(std::size_t size, std::size_t alignment = kPageSize)
      : size_(size), capacity_(round_up(size, alignment)) {
    if (capacity_ != 0) {
      data_ = static_cast<std::byte*>(std::aligned_alloc(alignment, capacity_));
      if (data_ == nullptr) {
        throw std::bad_alloc();
      }
      std::memset(data_, 0, capacity_);
    }
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
    }
    return *this;
  }
  ~AlignedBuffer() { std::free(data_); }

  [[nodiscard]] std::byte* data() { return data_; }
  [[nodiscard]] const std::byte* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  // Bytes allocated: size() rounded up to the alignment.
  [[nodiscard]] std::size_t capacity() const { return capacity_; }
  // Shrink or grow within capacity().
  void resize_within(std::size_t n) { size_ = n <= capacity_ ? n : capacity_; }
  [[nodiscard]] std::span<std::byte> span() { return {data_, size_}; }
  [[nodiscard]] std::span<const std::byte> span() const { return {data_, size_}; }

  static constexpr std::size_t round_up(std::size_t n, std::size_t a) {
    return (n + a - 1) / a * a;
  }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace base
