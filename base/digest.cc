// SPDX-License-Identifier: Apache-2.0
#include "base/digest.h"

#include <new>

#include <openssl/evp.h>

extern "C" {
#include "blake3.h"
}

namespace base {

std::string_view digest_algo_name(DigestAlgo a) {
  return a == DigestAlgo::kBlake3 ? "blake3" : "sha256";
}

std::optional<DigestAlgo> parse_digest_algo(std::string_view name) {
  if (name == "blake3") {
    return DigestAlgo::kBlake3;
  }
  if (name == "sha256") {
    return DigestAlgo::kSha256;
  }
  return std::nullopt;
}

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

struct Hasher::Impl {
  blake3_hasher b3;
  std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter> evp;
};

Hasher::Hasher(DigestAlgo algo) : algo_(algo), impl_(std::make_unique<Impl>()) {
  if (algo_ == DigestAlgo::kSha256) {
    impl_->evp.reset(EVP_MD_CTX_new());
    if (!impl_->evp) {
      throw std::bad_alloc();
    }
  }
  reset();
}

Hasher::~Hasher() = default;
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;

void Hasher::reset() {
  if (algo_ == DigestAlgo::kBlake3) {
    blake3_hasher_init(&impl_->b3);
  } else {
    EVP_DigestInit_ex(impl_->evp.get(), EVP_sha256(), nullptr);
  }
}

void Hasher::update(Bytes data) {
  if (algo_ == DigestAlgo::kBlake3) {
    blake3_hasher_update(&impl_->b3, data.data(), data.size());
  } else {
    EVP_DigestUpdate(impl_->evp.get(), data.data(), data.size());
  }
}

Digest Hasher::finish() {
  Digest d{};
  if (algo_ == DigestAlgo::kBlake3) {
    blake3_hasher_finalize(&impl_->b3, reinterpret_cast<uint8_t*>(d.data()), d.size());
  } else {
    unsigned int len = 0;
    EVP_DigestFinal_ex(impl_->evp.get(), reinterpret_cast<unsigned char*>(d.data()), &len);
  }
  reset();
  return d;
}

Digest digest(DigestAlgo algo, Bytes data) {
  if (algo == DigestAlgo::kSha256) {
    Digest d{};
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(d.data()), &len,
               EVP_sha256(), nullptr);
    return d;
  }
  blake3_hasher h;
  blake3_hasher_init(&h);
  blake3_hasher_update(&h, data.data(), data.size());
  Digest d{};
  blake3_hasher_finalize(&h, reinterpret_cast<uint8_t*>(d.data()), d.size());
  return d;
}

}  // namespace base
