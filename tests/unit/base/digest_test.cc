// SPDX-License-Identifier: Apache-2.0
#include "base/digest.h"

#include <gtest/gtest.h>

#include <string>

namespace base {
namespace {

// Known answers: sha256("abc") from FIPS 180-2, blake3("") and blake3("abc") from
// the BLAKE3 reference test vectors (b3sum agrees).
TEST(Digest, Sha256KnownAnswer) {
  EXPECT_EQ(hex(sha256(as_bytes("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Digest, Blake3KnownAnswer) {
  EXPECT_EQ(hex(digest(DigestAlgo::kBlake3, as_bytes(""))),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
  EXPECT_EQ(hex(digest(DigestAlgo::kBlake3, as_bytes("abc"))),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
}

TEST(Digest, IncrementalEqualsOneShot) {
  std::string data(100000, 'x');
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<char>(i * 7);
  }
  for (auto algo : {DigestAlgo::kSha256, DigestAlgo::kBlake3}) {
    Hasher h(algo);
    h.update(as_bytes(std::string_view(data).substr(0, 333)));
    h.update(as_bytes(std::string_view(data).substr(333)));
    EXPECT_EQ(h.finish(), digest(algo, as_bytes(data)));
    // finish() resets for reuse
    h.update(as_bytes(data));
    EXPECT_EQ(h.finish(), digest(algo, as_bytes(data)));
  }
}

TEST(Digest, ParseAlgo) {
  EXPECT_EQ(parse_digest_algo("sha256"), DigestAlgo::kSha256);
  EXPECT_EQ(parse_digest_algo("blake3"), DigestAlgo::kBlake3);
  EXPECT_FALSE(parse_digest_algo("md5").has_value());
}

}  // namespace
}  // namespace base
