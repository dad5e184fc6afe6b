// SPDX-License-Identifier: Apache-2.0
// eStargz layers: the footer and the TOC (stargz.index.json). Pure: bytes in, values or
// errors out, no I/O, no logging; fuzzed (tests/fuzz/fuzz_estargz_toc.cc).
//
// An eStargz layer is an ordinary tar.gz whose regular file contents (each chunk of a
// large file) start gzip members of their own, followed by a gzip member holding a tar
// with one entry, stargz.index.json (the TOC), and a 51-byte footer: an empty gzip
// member whose extra field says where the TOC member starts. The TOC lists every tar
// entry with its metadata and, for each chunk, the compressed offset of its member and
// the sha256 of its uncompressed bytes (chunkDigest). The format:
// /usr/share/doc/stargz-snapshotter/estargz.md.gz; what we do with it: docs/estargz.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/digest.h"
#include "base/result.h"

namespace estargz {

inline constexpr std::size_t kFooterSize = 51;
inline constexpr std::string_view kTocTarName = "stargz.index.json";
inline constexpr std::string_view kPrefetchLandmark = ".prefetch.landmark";
inline constexpr std::string_view kNoPrefetchLandmark = ".no.prefetch.landmark";
// The layer annotation holding the sha256 of the TOC JSON.
inline constexpr std::string_view kTocDigestAnnotation = "containerd.io/snapshot/stargz/toc.digest";
// Caps on untrusted sizes: the TOC's JSON (a layer of 100k files has a TOC of ~30 MB)
// and its compressed member.
inline constexpr std::uint64_t kMaxTocJsonBytes = 256ULL << 20;
inline constexpr std::uint64_t kMaxTocMemberBytes = 128ULL << 20;

enum class EntryType : std::uint8_t {
  kDir,
  kReg,
  kSymlink,
  kHardlink,
  kChar,
  kBlock,
  kFifo,
  kChunk
};

// "dir", "reg", ... as the TOC spells them.
[[nodiscard]] std::string_view entry_type_name(EntryType t);

struct Entry {
  std::string name;  // as in the tar (not cleaned: see clean_name)
  EntryType type = EntryType::kReg;
  std::uint64_t size = 0;  // reg: the whole file's size
  std::uint32_t mode = 0;  // permission bits with setuid/setgid/sticky (07777)
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::string link_name;  // symlink target; hardlink: the name of the linked entry
  std::uint32_t dev_major = 0;
  std::uint32_t dev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // name, raw value; sorted by name
  std::int64_t mtime = 0;                                   // seconds since the epoch
  std::uint32_t mtime_nsec = 0;
  // reg (non-empty) and chunk: where the chunk's gzip member starts in the layer, where
  // the chunk starts in the member's uncompressed bytes, where in the file, its size
  // (0: the rest of the file) and the sha256 of its bytes.
  std::optional<std::uint64_t> offset;
  std::uint64_t inner_offset = 0;
  std::uint64_t chunk_offset = 0;
  std::uint64_t chunk_size = 0;
  std::optional<base::Digest> chunk_digest;
};

struct Toc {
  std::vector<Entry> entries;  // in layer order
};

// The TOC offset out of the footer. tail: the last bytes of the layer (at least
// kFooterSize; only the last kFooterSize are read); blob_size: the layer's size.
// EINVAL "not an eStargz layer" when the footer is not eStargz's (a plain tar.gz, or
// a legacy stargz 47-byte footer), EBADMSG when the offset does not leave room for a
// TOC member before the footer.
[[nodiscard]] base::Result<std::uint64_t> parse_footer(base::Bytes tail, std::uint64_t blob_size);

// The TOC JSON out of the TOC member (layer bytes [toc offset, size - kFooterSize)):
// gunzip (capped at kMaxTocJsonBytes + a little), then the tar's stargz.index.json
// entry (pax headers before it are skipped). EBADMSG for a corrupt or truncated gzip or
// tar, EMSGSIZE over the cap, ENOENT when the first entry is not stargz.index.json.
[[nodiscard]] base::Result<std::string> toc_json_from_member(base::Bytes member);

// Parse the TOC JSON. Each entry: name (required, no NUL), type (one of the eight),
// mode, uid, gid, size, linkName (required for symlink and hardlink), devMajor and
// devMinor, xattrs (base64 values), modtime (RFC 3339), offset, innerOffset,
// chunkOffset, chunkSize, chunkDigest ("sha256:" + 64 lower-case hex). Unknown members
// are ignored (newer writers add some). EINVAL naming the entry (index and name) and
// the member for anything else: a wrong type, a value out of range, a version not 1.
[[nodiscard]] base::Result<Toc> parse_toc_json(std::string_view json);

// toc_json_from_member + (when expected is given) the JSON's sha256 must equal it
// (EBADMSG "TOC digest mismatch") + parse_toc_json.
[[nodiscard]] base::Result<Toc> parse_toc(base::Bytes member, const base::Digest* expected);

// "sha256:<64 hex>" -> digest; nullopt for anything else.
[[nodiscard]] std::optional<base::Digest> parse_sha256(std::string_view s);

// A tar entry name as a path in the image: leading "./" and "/" dropped, trailing "/"
// dropped, "." and empty components dropped ("a//b" is "a/b"). Empty: the root.
// EINVAL for a ".." component, a NUL, a component over 255 bytes.
[[nodiscard]] base::Result<std::vector<std::string>> clean_name(std::string_view name);

}  // namespace estargz
