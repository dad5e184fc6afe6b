// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the daemon's bootstrap-layer reader (gzip + tar headers). The first
// byte picks gzip'd or plain tar input; whatever it returns must respect the caps.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "daemon/targz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  constexpr std::uint64_t kMember = 1 << 20;
  constexpr std::uint64_t kTar = 4 << 20;
  const base::Bytes in(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  auto r = (data[0] & 1) != 0 ? cfnd::extract_tar_member(in, "image/image.boot", kMember)
                              : cfnd::extract_tar_gz_member(in, "image/image.boot", kMember, kTar);
  if (r && r->size() > kMember) {
    std::abort();
  }
  return 0;
}
