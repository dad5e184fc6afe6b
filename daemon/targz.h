// SPDX-License-Identifier: Apache-2.0
// One regular file out of a gzip-compressed tar held in memory: the reader of the nydus
// bootstrap layer (a tar+gzip layer holding image/image.boot). Pure: bytes in, bytes
// out, no I/O, no logging.
//
// Deliberately small instead of libarchive (which DESIGN.md keeps out of daemon/): it
// reads one member of a small, untrusted layer, is fuzzed (tests/fuzz/fuzz_targz.cc),
// and shares the one tar header codec, erofs/tar_header.h, with the blob framing.
// zlib inflates (single or concatenated gzip members), then 512-byte ustar/GNU headers
// are walked with every header checksum checked and every size bounded. Understood:
// regular files ('0', '\0'), ustar name prefixes, pax 'x' path records and GNU 'L'
// long names for the next entry; every other entry (directories, links, 'g', ...) is
// skipped. The member must appear exactly once and be a regular file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace cfnd {

// Errors: EMSGSIZE when the tar inflates past max_tar_bytes or the member is larger
// than max_member_bytes; EBADMSG for a corrupt gzip stream, a bad header checksum, a
// truncated entry, or the member named twice; ENOENT when the member is absent;
// EINVAL when it is not a regular file.
[[nodiscard]] base::Result<std::vector<std::byte>> extract_tar_gz_member(
    base::Bytes tgz, std::string_view member, std::uint64_t max_member_bytes,
    std::uint64_t max_tar_bytes);

// The tar part alone (already inflated); same errors but the gzip ones.
[[nodiscard]] base::Result<std::vector<std::byte>> extract_tar_member(
    base::Bytes tar, std::string_view member, std::uint64_t max_member_bytes);

// Inflate gzip (one or more concatenated members); EMSGSIZE past max_bytes.
[[nodiscard]] base::Result<std::vector<std::byte>> gunzip(base::Bytes gz, std::uint64_t max_bytes);

}  // namespace cfnd
