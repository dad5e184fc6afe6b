// SPDX-License-Identifier: Apache-2.0
// The 512-byte tar header block (POSIX ustar, GNU and pax share its layout): the one
// reader and writer of it. Nydus frames the sections of a data blob with GNU headers
// (blob_meta.h); the nydus bootstrap layer is a tar.gz the daemon walks
// (daemon/targz.h). Pure: bytes in, values or errors out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace erofs {

inline constexpr std::size_t kTarBlockSize = 512;

enum class TarMagic {
  kNone,   // pre-POSIX (v7) header
  kUstar,  // POSIX "ustar\0" "00": the name is prefix + "/" + name
  kGnu,    // GNU "ustar  \0"
};

struct TarHeader {
  std::string name;  // the name field, joined to the prefix field under POSIX ustar
  std::uint64_t size = 0;
  char type = '\0';  // typeflag: '0' / '\0' regular, '5' directory, 'x' pax, 'L' GNU long name
  TarMagic magic = TarMagic::kNone;
};

// True for an all-zero block (the end-of-archive marker is two of them).
[[nodiscard]] bool is_zero_tar_block(base::Bytes block);

// Decode one header block. The checksum may be the unsigned or (old tars) the
// signed byte sum; the size octal (spaces and NULs around the digits) or GNU
// base-256. EBADMSG for a block that is not 512 bytes, a bad checksum or size.
[[nodiscard]] base::Result<TarHeader> decode_tar_header(base::Bytes block);

// A GNU header of a regular file, as nydus writes them: name (cut at 99 bytes),
// size (base-256 from 8 GiB up), mtime 0, type '0', checksum.
[[nodiscard]] std::vector<std::byte> encode_tar_header(std::string_view name, std::uint64_t size);

}  // namespace erofs
