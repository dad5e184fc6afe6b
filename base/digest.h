// SPDX-License-Identifier: Apache-2.0
// Content digests: SHA-256 (OpenSSL EVP) and BLAKE3 (the official C implementation).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/bytes.h"

namespace base {

enum class DigestAlgo : std::uint8_t { kBlake3, kSha256 };

using Digest = std::array<std::byte, 32>;

std::string_view digest_algo_name(DigestAlgo a);  // "blake3" / "sha256"
std::optional<DigestAlgo> parse_digest_algo(std::string_view name);

// Incremental hasher. Not copyable; cheap to reset.
class Hasher {
 public:
  explicit Hasher(DigestAlgo algo);
  ~Hasher();
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void update(Bytes data);
  Digest finish();  // also resets for reuse
  void reset();
  [[nodiscard]] DigestAlgo algo() const { return algo_; }

 private:
  struct Impl;
  DigestAlgo algo_;
  std::unique_ptr<Impl> impl_;
};

Digest digest(DigestAlgo algo, Bytes data);
inline Digest sha256(Bytes data) {
  return digest(DigestAlgo::kSha256, data);
}
inline std::string hex(const Digest& d) {
  return to_hex(d);
}
// "sha256:<hex>" as OCI writes it.
inline std::string oci_digest(const Digest& sha) {
  return "sha256:" + to_hex(sha);
}

}  // namespace base
