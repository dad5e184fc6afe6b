// SPDX-License-Identifier: Apache-2.0
#include "estargz/toc.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <ctime>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/json_fields.h"
#include "erofs/tar_header.h"

namespace estargz {
namespace {

// Footer layout (estargz.md "Footer"): a 10-byte gzip header with FEXTRA, XLEN = 26,
// subfield 'S' 'G' of LEN 22 holding "%016xSTARGZ", an empty final stored block, and
// the gzip trailer (CRC32 and ISIZE of nothing: zero).
constexpr std::size_t kXlenOff = 10;
constexpr std::size_t kSubfieldOff = 12;
constexpr std::size_t kSubLenOff = 14;
constexpr std::size_t kPayloadOff = 16;
constexpr std::size_t kPayloadLen = 22;  // 16 hex digits + "STARGZ"
constexpr std::size_t kTrailerOff = kPayloadOff + kPayloadLen;
constexpr std::string_view kMagic = "STARGZ";

std::uint8_t u8(base::Bytes b, std::size_t i) {
  return static_cast<std::uint8_t>(b[i]);
}

struct InflateEnd {
  void operator()(z_stream* z) const { inflateEnd(z); }
};

// Every member of a gzip stream, at most max bytes out.
base::Result<std::vector<std::byte>> gunzip_all(base::Bytes gz, std::uint64_t max) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    return base::make_error(ENOMEM, "TOC: inflateInit2 failed");
  }
  std::unique_ptr<z_stream, InflateEnd> guard(&zs);
  std::vector<std::byte> out;
  std::array<std::byte, 64 * 1024> buf{};
  std::size_t in_off = 0;
  bool ended = false;
  for (;;) {
    const std::size_t avail = std::min<std::size_t>(gz.size() - in_off, 1U << 30);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(gz.data() + in_off));
    zs.avail_in = static_cast<uInt>(avail);
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    const int r = inflate(&zs, Z_NO_FLUSH);
    in_off += avail - zs.avail_in;
    const std::size_t produced = buf.size() - zs.avail_out;
    if (out.size() + produced > max) {
      return base::errorf(EMSGSIZE, "TOC: inflates to more than {} bytes", max);
    }
    out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(produced));
    if (r == Z_STREAM_END) {
      ended = true;
      if (in_off == gz.size()) {
        break;
      }
      if (inflateReset(&zs) != Z_OK) {
        return base::make_error(EBADMSG, "TOC: gzip reset failed");
      }
      ended = false;
      continue;
    }
    if (r == Z_BUF_ERROR && in_off == gz.size() && produced == 0) {
      break;
    }
    if (r != Z_OK && r != Z_BUF_ERROR) {
      return base::errorf(EBADMSG, "TOC: corrupt gzip ({})", zs.msg != nullptr ? zs.msg : "?");
    }
  }
  if (!ended) {
    return base::make_error(EBADMSG, "TOC: truncated gzip member");
  }
  return out;
}

base::Result<EntryType> parse_type(std::string_view s) {
  static constexpr std::array<std::pair<std::string_view, EntryType>, 8> kTypes{{
      {"dir", EntryType::kDir},
      {"reg", EntryType::kReg},
      {"symlink", EntryType::kSymlink},
      {"hardlink", EntryType::kHardlink},
      {"char", EntryType::kChar},
      {"block", EntryType::kBlock},
      {"fifo", EntryType::kFifo},
      {"chunk", EntryType::kChunk},
  }};
  for (const auto& [name, t] : kTypes) {
    if (s == name) {
      return t;
    }
  }
  return base::errorf(EINVAL, "unknown type \"{}\"", s);
}

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+') {
    return 62;
  }
  if (c == '/') {
    return 63;
  }
  return -1;
}

// Standard base64 with padding, as Go's encoding/json writes []byte.
std::optional<std::string> b64_decode(std::string_view s) {
  if (s.size() % 4 != 0) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(s.size() / 4 * 3);
  for (std::size_t i = 0; i < s.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s[i + static_cast<std::size_t>(k)];
      if (c == '=' && i + 4 == s.size() && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad != 0) {
        return std::nullopt;  // data after '='
      }
      v[k] = b64_value(c);
      if (v[k] < 0) {
        return std::nullopt;
      }
    }
    const std::uint32_t n =
        (static_cast<std::uint32_t>(v[0]) << 18) | (static_cast<std::uint32_t>(v[1]) << 12) |
        (static_cast<std::uint32_t>(v[2]) << 6) | static_cast<std::uint32_t>(v[3]);
    out.push_back(static_cast<char>((n >> 16) & 0xFF));
    if (pad < 2) {
      out.push_back(static_cast<char>((n >> 8) & 0xFF));
    }
    if (pad < 1) {
      out.push_back(static_cast<char>(n & 0xFF));
    }
  }
  return out;
}

bool digits(std::string_view s, std::size_t off, std::size_t n, int* out) {
  if (off + n > s.size()) {
    return false;
  }
  int v = 0;
  for (std::size_t i = off; i < off + n; ++i) {
    if (s[i] < '0' || s[i] > '9') {
      return false;
    }
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

// RFC 3339: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+hh:mm|-hh:mm).
std::optional<std::pair<std::int64_t, std::uint32_t>> parse_rfc3339(std::string_view s) {
  int y = 0;
  int mo = 0;
  int d = 0;
  int h = 0;
  int mi = 0;
  int se = 0;
  if (!digits(s, 0, 4, &y) || s.size() < 20 || s[4] != '-' || !digits(s, 5, 2, &mo) ||
      s[7] != '-' || !digits(s, 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
      !digits(s, 11, 2, &h) || s[13] != ':' || !digits(s, 14, 2, &mi) || s[16] != ':' ||
      !digits(s, 17, 2, &se)) {
    return std::nullopt;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) {
    return std::nullopt;
  }
  std::size_t i = 19;
  std::uint32_t nsec = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t n = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (n < 9) {
        nsec = nsec * 10 + static_cast<std::uint32_t>(s[i] - '0');
      }
      ++n;
      ++i;
    }
    if (n == 0) {
      return std::nullopt;
    }
    for (; n < 9; ++n) {
      nsec *= 10;
    }
  }
  std::int64_t offset = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh = 0;
    int om = 0;
    if (!digits(s, i + 1, 2, &oh) || i + 3 >= s.size() || s[i + 3] != ':' ||
        !digits(s, i + 4, 2, &om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset = (oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = se;
  const std::int64_t t = timegm(&tm);
  return std::make_pair(t - offset, nsec);
}

// The members of an entry that mean something, as the SAX walk meets their keys.
enum class Field : std::uint8_t {
  kName,
  kType,
  kMode,
  kUid,
  kGid,
  kSize,
  kLinkName,
  kDevMajor,
  kDevMinor,
  kOffset,
  kInnerOffset,
  kChunkOffset,
  kChunkSize,
  kChunkDigest,
  kModtime,
  kXattrs,
  kUnknown,  // any other key: walked over
};
constexpr std::size_t kFields = static_cast<std::size_t>(Field::kUnknown);
constexpr std::array<std::string_view, kFields> kFieldNames{
    "name",      "type",        "mode",     "uid",    "gid",         "size",
    "linkName",  "devMajor",    "devMinor", "offset", "innerOffset", "chunkOffset",
    "chunkSize", "chunkDigest", "modtime",  "xattrs",
};

Field field_of(std::string_view k) {
  // By length first: one or two comparisons per key.
  auto is = [&](Field f) { return k == kFieldNames[static_cast<std::size_t>(f)]; };
  auto pick = [&](std::initializer_list<Field> fs) {
    for (const Field f : fs) {
      if (is(f)) {
        return f;
      }
    }
    return Field::kUnknown;
  };
  switch (k.size()) {
    case 3:
      return pick({Field::kUid, Field::kGid});
    case 4:
      return pick({Field::kName, Field::kType, Field::kMode, Field::kSize});
    case 6:
      return pick({Field::kOffset, Field::kXattrs});
    case 7:
      return pick({Field::kModtime});
    case 8:
      return pick({Field::kLinkName, Field::kDevMajor, Field::kDevMinor});
    case 9:
      return pick({Field::kChunkSize});
    case 11:
      return pick({Field::kInnerOffset, Field::kChunkOffset, Field::kChunkDigest});
    default:
      return Field::kUnknown;
  }
}

// One entry of "entries" read straight from the SAX events into typed slots, the last
// value of a key given twice winning (as in a DOM); no JSON value is built. The checks
// run when the entry ends (make), in the order and with the words of the JsonFields
// walk over a DOM entry that this replaces: the name first, then type, mode, uid, gid,
// size, linkName, devMajor, devMinor, offset, innerOffset, chunkOffset, chunkSize,
// chunkDigest, modtime, xattrs, and a link without its target. A null member counts as
// absent (Go writes empty slices and maps as null); unknown members, nested or not, are
// walked over.
class EntryReader {
 public:
  // Each event returns true when it completed an element of "entries".
  bool scalar_null() { return scalar(Kind::kAbsent); }
  bool scalar_other() { return scalar(Kind::kOther); }  // bool, negative or float number
  bool scalar_uint(std::uint64_t v) {
    if (depth_ == 1 && field_ != Field::kUnknown && object_) {
      slot(field_).u = v;
    }
    return scalar(Kind::kUint);
  }
  bool scalar_string(std::string& v) {
    if (depth_ == 1 && field_ != Field::kUnknown && object_) {
      slot(field_).s.assign(v);
    } else if (depth_ == 2 && in_xattrs_) {
      xattrs_.insert_or_assign(xkey_, std::optional<std::string>(v));
      return false;
    }
    return scalar(Kind::kString);
  }
  void key(const std::string& k) {
    if (depth_ == 1) {
      field_ = object_ ? field_of(k) : Field::kUnknown;
    } else if (depth_ == 2 && in_xattrs_) {
      xkey_.assign(k);
    }
  }
  bool open(bool object) {
    if (depth_ == 0) {
      object_ = object;
      for (auto& s : slots_) {
        s.kind = Kind::kAbsent;
      }
      field_ = Field::kUnknown;
    } else if (depth_ == 1 && object_ && field_ != Field::kUnknown) {
      if (object && field_ == Field::kXattrs) {
        slot(field_).kind = Kind::kObject;
        xattrs_.clear();
        in_xattrs_ = true;
      } else {
        slot(field_).kind = Kind::kOther;
      }
    } else if (depth_ == 2 && in_xattrs_) {
      xattrs_.insert_or_assign(xkey_, std::nullopt);
    }
    ++depth_;
    return false;
  }
  bool close() {
    --depth_;
    if (depth_ == 1) {
      in_xattrs_ = false;
    }
    return depth_ == 0;
  }
  // Not inside an element: the next close is the end of "entries".
  [[nodiscard]] bool between() const { return depth_ == 0; }

  // The element just completed as the entry at index, or the first error about it.
  base::Status make(std::size_t index, Entry& e);

 private:
  enum class Kind : std::uint8_t { kAbsent, kUint, kString, kObject, kOther };
  struct Slot {
    Kind kind = Kind::kAbsent;
    std::uint64_t u = 0;
    std::string s;
  };

  Slot& slot(Field f) { return slots_[static_cast<std::size_t>(f)]; }

  bool scalar(Kind kind) {
    if (depth_ == 0) {
      object_ = false;  // an element that is not an object
      return true;
    }
    if (depth_ == 1 && field_ != Field::kUnknown && object_) {
      slot(field_).kind = kind;
      if (field_ == Field::kXattrs) {
        xattrs_.clear();
      }
    } else if (depth_ == 2 && in_xattrs_) {
      xattrs_.insert_or_assign(xkey_, std::nullopt);  // not a string
    }
    return false;
  }

  std::array<Slot, kFields> slots_;
  std::size_t depth_ = 0;          // 0: between elements; 1: in an element; more: below
  bool object_ = false;            // the element is an object
  Field field_ = Field::kUnknown;  // of the last key at depth 1
  bool in_xattrs_ = false;         // depth 2 is the "xattrs" object
  std::string xkey_;
  // "xattrs": name -> value, nullopt for a value that is not a string; sorted by name,
  // as a DOM object iterates.
  std::map<std::string, std::optional<std::string>> xattrs_;
};

base::Status EntryReader::make(std::size_t index, Entry& e) {
  // The error context, made only for an error: "TOC entry N", then " (name)".
  std::string where = "TOC entry " + std::to_string(index);
  auto fail = [&](std::string_view text) -> base::Status {
    return base::make_error(EINVAL, fmt::format("{}: {}", where, text));
  };
  if (!object_) {
    return fail("not an object");
  }
  auto name_of = [](Field f) { return kFieldNames[static_cast<std::size_t>(f)]; };
  // A string member (nullptr when absent), as JsonFields::opt_string checks it.
  auto str = [&](Field f, bool no_nul, const std::string** out) -> base::Status {
    *out = nullptr;
    const Slot& s = slot(f);
    if (s.kind == Kind::kAbsent) {
      return {};
    }
    if (s.kind != Kind::kString) {
      return fail(fmt::format("\"{}\" must be a string", name_of(f)));
    }
    if (no_nul && s.s.find('\0') != std::string::npos) {
      return fail(fmt::format("\"{}\" holds a NUL", name_of(f)));
    }
    *out = &s.s;
    return {};
  };
  // An unsigned member within [0, max] (nullptr when absent), as JsonFields::opt_uint.
  auto uint = [&](Field f, std::uint64_t max, const std::uint64_t** out) -> base::Status {
    *out = nullptr;
    const Slot& s = slot(f);
    if (s.kind == Kind::kAbsent) {
      return {};
    }
    if (s.kind != Kind::kUint) {
      return fail(fmt::format("\"{}\" must be an unsigned integer", name_of(f)));
    }
    if (s.u > max) {
      return fail(fmt::format("\"{}\" = {} outside [0, {}]", name_of(f), s.u, max));
    }
    *out = &s.u;
    return {};
  };
  const std::string* s = nullptr;
  CFN_TRY(str(Field::kName, true, &s));
  if (s == nullptr) {
    return fail("missing \"name\"");
  }
  e.name = std::move(slot(Field::kName).s);
  where += " (";
  where += e.name;
  where += ')';
  CFN_TRY(str(Field::kType, false, &s));
  if (s == nullptr) {
    return fail("missing \"type\"");
  }
  auto t = parse_type(*s);
  if (!t) {
    return fail(t.error().message);
  }
  e.type = *t;
  const std::string_view type = *s;
  constexpr std::uint64_t kU32 = 0xFFFFFFFFULL;
  constexpr std::uint64_t kI64 = std::numeric_limits<std::int64_t>::max();
  const std::uint64_t* u = nullptr;
  // Go writes tar's int64 mode; some tars keep the type bits in it (040755).
  CFN_TRY(uint(Field::kMode, kU32, &u));
  e.mode = u != nullptr ? static_cast<std::uint32_t>(*u & 07777) : 0;
  CFN_TRY(uint(Field::kUid, kU32, &u));
  e.uid = u != nullptr ? static_cast<std::uint32_t>(*u) : 0;
  CFN_TRY(uint(Field::kGid, kU32, &u));
  e.gid = u != nullptr ? static_cast<std::uint32_t>(*u) : 0;
  CFN_TRY(uint(Field::kSize, kI64, &u));
  e.size = u != nullptr ? *u : 0;
  CFN_TRY(str(Field::kLinkName, true, &s));
  if (s != nullptr) {
    e.link_name = std::move(slot(Field::kLinkName).s);
  }
  CFN_TRY(uint(Field::kDevMajor, kU32, &u));
  e.dev_major = u != nullptr ? static_cast<std::uint32_t>(*u) : 0;
  CFN_TRY(uint(Field::kDevMinor, kU32, &u));
  e.dev_minor = u != nullptr ? static_cast<std::uint32_t>(*u) : 0;
  CFN_TRY(uint(Field::kOffset, kI64, &u));
  if (u != nullptr) {
    e.offset = *u;
  }
  CFN_TRY(uint(Field::kInnerOffset, kI64, &u));
  e.inner_offset = u != nullptr ? *u : 0;
  CFN_TRY(uint(Field::kChunkOffset, kI64, &u));
  e.chunk_offset = u != nullptr ? *u : 0;
  CFN_TRY(uint(Field::kChunkSize, kI64, &u));
  e.chunk_size = u != nullptr ? *u : 0;
  CFN_TRY(str(Field::kChunkDigest, false, &s));
  if (s != nullptr && !s->empty()) {
    e.chunk_digest = parse_sha256(*s);
    if (!e.chunk_digest) {
      return fail(fmt::format("chunkDigest \"{}\" is not sha256:<64 hex>", *s));
    }
  }
  CFN_TRY(str(Field::kModtime, false, &s));
  if (s != nullptr && !s->empty()) {
    auto v = parse_rfc3339(*s);
    if (!v) {
      return fail(fmt::format("modtime \"{}\" is not RFC 3339", *s));
    }
    e.mtime = v->first;
    e.mtime_nsec = v->second;
  }
  const Slot& x = slot(Field::kXattrs);
  if (x.kind != Kind::kAbsent) {
    if (x.kind != Kind::kObject) {
      return fail("\"xattrs\" must be an object");
    }
    for (const auto& [k, v] : xattrs_) {
      if (!v) {
        return fail(fmt::format("\"xattrs\": \"{}\" must be a string", k));
      }
    }
    for (auto& [k, v] : xattrs_) {
      if (k.empty() || k.find('\0') != std::string::npos) {
        return fail("xattrs: an empty name or a name with NUL");
      }
      auto raw = b64_decode(*v);
      if (!raw) {
        return fail(fmt::format("xattrs: the value of {} is not base64", k));
      }
      e.xattrs.emplace_back(k, std::move(*raw));
    }
  }
  if ((e.type == EntryType::kSymlink || e.type == EntryType::kHardlink) && e.link_name.empty()) {
    return fail(fmt::format("a {} without linkName", type));
  }
  return {};
}

// The TOC without its DOM: a SAX handler that builds the DOM of the TOC object except
// the elements of its top-level "entries" array. Those go through an EntryReader,
// straight into Entry values (no JSON value per entry: docs/benchmarks.md, "eStargz
// rows"), so a TOC of 100k entries never exists as 100k JSON objects at once.
// The checks and their order are a DOM walk's: malformed JSON, then the version, then
// "entries", then the first bad entry; a key given twice counts with its last value.
class TocSax {
 public:
  using json = nlohmann::json;

  bool null() { return in_entries() ? entry_done(reader_.scalar_null()) : value(json(nullptr)); }
  bool boolean(bool v) {
    return in_entries() ? entry_done(reader_.scalar_other()) : value(json(v));
  }
  bool number_integer(json::number_integer_t v) {
    return in_entries() ? entry_done(reader_.scalar_other()) : value(json(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    return in_entries() ? entry_done(reader_.scalar_uint(v)) : value(json(v));
  }
  bool number_float(json::number_float_t v, const json::string_t& /*text*/) {
    return in_entries() ? entry_done(reader_.scalar_other()) : value(json(v));
  }
  bool string(json::string_t& v) {
    return in_entries() ? entry_done(reader_.scalar_string(v)) : value(json(std::move(v)));
  }
  bool binary(json::binary_t& v) {  // not in JSON text
    return in_entries() ? entry_done(reader_.scalar_other()) : value(json(std::move(v)));
  }
  bool key(json::string_t& k) {
    if (in_entries()) {
      reader_.key(k);
    } else {
      key_ = std::move(k);
    }
    return true;
  }
  bool start_object(std::size_t /*elements*/) {
    return in_entries() ? entry_done(reader_.open(true)) : open(json::object());
  }
  bool start_array(std::size_t /*elements*/) {
    return in_entries() ? entry_done(reader_.open(false)) : open(json::array());
  }
  bool end_object() { return in_entries() ? entry_done(reader_.close()) : close(); }
  bool end_array() {
    if (in_entries() && !reader_.between()) {
      return entry_done(reader_.close());
    }
    return close();
  }
  bool parse_error(std::size_t /*position*/, const std::string& /*token*/,
                   const nlohmann::detail::exception& /*ex*/) {
    return false;
  }

  // The TOC, once sax_parse returned ok.
  base::Result<Toc> finish(bool ok) {
    if (!ok || !root_.is_object()) {
      return base::make_error(EINVAL, "TOC: not a JSON object");
    }
    base::JsonFields f(root_, "TOC", true);
    std::uint64_t version = 0;
    CFN_TRY(f.read("version", version, 0, UINT64_MAX));
    if (version != 1) {
      return base::errorf(EINVAL, "TOC: version {} (only 1 is known)", version);
    }
    const nlohmann::json* entries = f.find("entries");
    if (entries == nullptr) {
      return Toc{};
    }
    if (!entries->is_array()) {
      return base::make_error(EINVAL, "TOC: entries is not an array");
    }
    if (entry_error_) {
      return base::Unexpected(std::move(*entry_error_));
    }
    return std::move(toc_);
  }

 private:
  // Inside the top-level "entries" array (an element of it or between elements).
  [[nodiscard]] bool in_entries() const {
    return entries_depth_ != 0 && stack_.size() == entries_depth_;
  }

  // Where a new value goes outside "entries": the root or its container.
  json* place(json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    if (stack_.size() == 1 && key_ == "entries") {
      // "entries" again: its last value counts, as in a DOM.
      toc_.entries.clear();
      entry_error_.reset();
      index_ = 0;
    }
    json& slot = top[key_];
    slot = std::move(v);
    return &slot;
  }

  bool value(json&& v) {
    place(std::move(v));
    return true;
  }

  bool open(json&& v) {
    const bool entries = stack_.size() == 1 && stack_.back()->is_object() && key_ == "entries" &&
                         v.is_array() && entries_depth_ == 0;
    stack_.push_back(place(std::move(v)));
    if (entries) {
      entries_depth_ = stack_.size();  // the array stays empty in root_
    }
    return true;
  }

  bool close() {
    if (stack_.empty()) {
      return false;
    }
    if (stack_.size() == entries_depth_) {
      entries_depth_ = 0;  // the end of "entries"
    }
    stack_.pop_back();
    return true;
  }

  // After an event inside "entries": when it completed an element, into the TOC (or the
  // first error).
  bool entry_done(bool done) {
    if (!done) {
      return true;
    }
    if (!entry_error_) {
      Entry e;
      if (auto st = reader_.make(index_, e); st) {
        toc_.entries.push_back(std::move(e));
      } else {
        entry_error_ = std::move(st).error();
        toc_.entries.clear();
        toc_.entries.shrink_to_fit();
      }
    }
    ++index_;
    return true;
  }

  json root_;
  std::vector<json*> stack_;       // open containers outside "entries", innermost last
  std::string key_;                // the last key seen outside "entries"
  std::size_t entries_depth_ = 0;  // stack_.size() inside the top-level "entries"; 0: not in it
  std::size_t index_ = 0;          // of the element being read
  EntryReader reader_;
  Toc toc_;
  std::optional<base::Error> entry_error_;
};

}  // namespace

std::string_view entry_type_name(EntryType t) {
  switch (t) {
    case EntryType::kDir:
      return "dir";
    case EntryType::kReg:
      return "reg";
    case EntryType::kSymlink:
      return "symlink";
    case EntryType::kHardlink:
      return "hardlink";
    case EntryType::kChar:
      return "char";
    case EntryType::kBlock:
      return "block";
    case EntryType::kFifo:
      return "fifo";
    case EntryType::kChunk:
      return "chunk";
  }
  return "?";
}

std::optional<base::Digest> parse_sha256(std::string_view s) {
  constexpr std::string_view kPrefix = "sha256:";
  if (s.size() != kPrefix.size() + 64 || s.substr(0, kPrefix.size()) != kPrefix) {
    return std::nullopt;
  }
  base::Digest d{};
  for (std::size_t i = 0; i < 32; ++i) {
    int v = 0;
    for (std::size_t k = 0; k < 2; ++k) {
      const char c = s[kPrefix.size() + 2 * i + k];
      int n = 0;
      if (c >= '0' && c <= '9') {
        n = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        n = c - 'a' + 10;
      } else {
        return std::nullopt;
      }
      v = v * 16 + n;
    }
    d[i] = static_cast<std::byte>(v);
  }
  return d;
}

base::Result<std::uint64_t> parse_footer(base::Bytes tail, std::uint64_t blob_size) {
  if (tail.size() < kFooterSize || blob_size < kFooterSize) {
    return base::errorf(EINVAL, "not an eStargz layer: {} bytes cannot hold the {}-byte footer",
                        blob_size, kFooterSize);
  }
  const base::Bytes f = tail.last(kFooterSize);
  const bool gzip_fextra =
      u8(f, 0) == 0x1f && u8(f, 1) == 0x8b && u8(f, 2) == 8 && (u8(f, 3) & 0x04) != 0;
  if (!gzip_fextra || base::le16(base::load<std::uint16_t>(f, kXlenOff)) != 4 + kPayloadLen ||
      u8(f, kSubfieldOff) != 'S' || u8(f, kSubfieldOff + 1) != 'G' ||
      base::le16(base::load<std::uint16_t>(f, kSubLenOff)) != kPayloadLen ||
      base::as_chars(f.subspan(kPayloadOff + 16, kMagic.size())) != kMagic) {
    return base::make_error(EINVAL,
                            "not an eStargz layer: no eStargz footer (a plain tar.gz, or a "
                            "legacy stargz layer)");
  }
  // The empty final stored block and the trailer of an empty member: a footer that
  // would inflate to anything else is not one.
  static constexpr std::array<std::uint8_t, 13> kEnd{0x01, 0x00, 0x00, 0xff, 0xff, 0, 0,
                                                     0,    0,    0,    0,    0,    0};
  for (std::size_t i = 0; i < kEnd.size(); ++i) {
    if (u8(f, kTrailerOff + i) != kEnd[i]) {
      return base::make_error(EBADMSG, "eStargz footer: not an empty gzip member");
    }
  }
  std::uint64_t off = 0;
  for (std::size_t i = 0; i < 16; ++i) {
    const char c = static_cast<char>(u8(f, kPayloadOff + i));
    int n = 0;
    if (c >= '0' && c <= '9') {
      n = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      n = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      n = c - 'A' + 10;
    } else {
      return base::make_error(EBADMSG, "eStargz footer: the TOC offset is not hex");
    }
    off = (off << 4) | static_cast<std::uint64_t>(n);
  }
  // A gzip member is at least 18 bytes.
  if (off > blob_size - kFooterSize || blob_size - kFooterSize - off < 18) {
    return base::errorf(EBADMSG, "eStargz footer: TOC offset {} leaves no TOC in a {}-byte layer",
                        off, blob_size);
  }
  return off;
}

base::Result<std::string> toc_json_from_member(base::Bytes member) {
  if (member.size() > kMaxTocMemberBytes) {
    return base::errorf(EMSGSIZE, "TOC member of {} bytes is over the limit of {}", member.size(),
                        kMaxTocMemberBytes);
  }
  CFN_ASSIGN_OR_RETURN(const auto tar, gunzip_all(member, kMaxTocJsonBytes + (1U << 20)));
  const base::Bytes t = tar;
  std::size_t off = 0;
  for (;;) {
    if (!base::in_bounds(off, erofs::kTarBlockSize, t.size())) {
      return base::make_error(EBADMSG, "TOC: tar ends before stargz.index.json");
    }
    const base::Bytes block = t.subspan(off, erofs::kTarBlockSize);
    if (erofs::is_zero_tar_block(block)) {
      return base::make_error(ENOENT, "TOC: the tar has no stargz.index.json");
    }
    auto h = erofs::decode_tar_header(block);
    if (!h) {
      return base::Unexpected(std::move(h).error().wrap("TOC tar"));
    }
    off += erofs::kTarBlockSize;
    if (h->size > t.size() - off) {
      return base::errorf(EBADMSG, "TOC: tar entry {} of {} bytes is truncated", h->name, h->size);
    }
    if (h->type == 'x' || h->type == 'g') {
      off += static_cast<std::size_t>(base::align_up(h->size, erofs::kTarBlockSize));
      off = std::min(off, t.size());
      continue;
    }
    if (h->name != kTocTarName || (h->type != '0' && h->type != '\0')) {
      return base::errorf(ENOENT, "TOC: the tar's entry is {}, not stargz.index.json", h->name);
    }
    if (h->size > kMaxTocJsonBytes) {
      return base::errorf(EMSGSIZE, "TOC: stargz.index.json of {} bytes is over the limit of {}",
                          h->size, kMaxTocJsonBytes);
    }
    return std::string(base::as_chars(t.subspan(off, static_cast<std::size_t>(h->size))));
  }
}

base::Result<Toc> parse_toc_json(std::string_view json) {
  TocSax sax;
  const bool ok = nlohmann::json::sax_parse(json, &sax);
  CFN_ASSIGN_OR_RETURN(Toc toc, sax.finish(ok));
  return toc;
}

base::Result<Toc> parse_toc(base::Bytes member, const base::Digest* expected) {
  CFN_ASSIGN_OR_RETURN(const std::string json, toc_json_from_member(member));
  if (expected != nullptr &&
      base::digest(base::DigestAlgo::kSha256, base::as_bytes(json)) != *expected) {
    return base::make_error(EBADMSG,
                            "TOC digest mismatch: the TOC is not the one the layer's "
                            "toc.digest annotation names");
  }
  return parse_toc_json(json);
}

base::Result<std::vector<std::string>> clean_name(std::string_view name) {
  if (name.find('\0') != std::string_view::npos) {
    return base::make_error(EINVAL, "a name with NUL");
  }
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i <= name.size()) {
    std::size_t j = name.find('/', i);
    if (j == std::string_view::npos) {
      j = name.size();
    }
    const std::string_view c = name.substr(i, j - i);
    i = j + 1;
    if (c.empty() || c == ".") {
      continue;
    }
    if (c == "..") {
      return base::errorf(EINVAL, "\"{}\": a .. component", name);
    }
    if (c.size() > 255) {
      return base::errorf(EINVAL, "\"{}\": a component over 255 bytes", name);
    }
    out.emplace_back(c);
  }
  return out;
}

}  // namespace estargz
