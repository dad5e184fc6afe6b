// SPDX-License-Identifier: Apache-2.0
#include "daemon/targz.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "erofs/tar_header.h"

namespace cfnd {
namespace {

constexpr std::size_t kBlock = erofs::kTarBlockSize;

std::string normalize(std::string_view name) {
  while (name.starts_with("./")) {
    name.remove_prefix(2);
  }
  while (name.starts_with('/')) {
    name.remove_prefix(1);
  }
  return std::string(name);
}

// The "path" record of a pax extended header ("<len> path=<value>\n" records).
base::Result<std::optional<std::string>> pax_path(std::string_view data) {
  std::optional<std::string> path;
  while (!data.empty()) {
    auto sp = data.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp > 20) {
      return base::make_error(EBADMSG, "tar: malformed pax record");
    }
    std::uint64_t len = 0;
    for (char c : data.substr(0, sp)) {
      if (c < '0' || c > '9') {
        return base::make_error(EBADMSG, "tar: malformed pax record length");
      }
      len = len * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (len <= sp + 1 || len > data.size() || data[len - 1] != '\n') {
      return base::make_error(EBADMSG, "tar: pax record length out of bounds");
    }
    auto rec = data.substr(sp + 1, len - sp - 2);
    auto eq = rec.find('=');
    if (eq == std::string_view::npos) {
      return base::make_error(EBADMSG, "tar: pax record without '='");
    }
    if (rec.substr(0, eq) == "path") {
      path = std::string(rec.substr(eq + 1));
    }
    data.remove_prefix(len);
  }
  return path;
}

}  // namespace

base::Result<std::vector<std::byte>> gunzip(base::Bytes gz, std::uint64_t max_bytes) {
  z_stream zs{};
  // 15 + 32: zlib or gzip header, detected.
  if (inflateInit2(&zs, 15 + 32) != Z_OK) {
    return base::make_error(ENOMEM, "gzip: inflateInit2 failed");
  }
  std::vector<std::byte> out;
  std::vector<std::byte> buf(256 * 1024);
  std::size_t in_off = 0;
  base::Status st;
  for (;;) {
    std::size_t avail = std::min<std::size_t>(gz.size() - in_off, 1U << 30);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(gz.data() + in_off));
    zs.avail_in = static_cast<uInt>(avail);
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = static_cast<uInt>(buf.size());
    int r = inflate(&zs, Z_NO_FLUSH);
    in_off += avail - zs.avail_in;
    std::size_t produced = buf.size() - zs.avail_out;
    if (out.size() + produced > max_bytes) {
      st = base::errorf(EMSGSIZE, "gzip: inflates to more than {} bytes", max_bytes);
      break;
    }
    out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(produced));
    if (r == Z_STREAM_END) {
      if (in_off == gz.size()) {
        break;
      }
      // Another gzip member follows (concatenated streams are one file).
      if (inflateReset(&zs) != Z_OK) {
        st = base::make_error(EBADMSG, "gzip: reset failed");
        break;
      }
      continue;
    }
    if (r == Z_BUF_ERROR && in_off == gz.size() && produced == 0) {
      st = base::make_error(EBADMSG, "gzip: truncated stream");
      break;
    }
    if (r != Z_OK && r != Z_BUF_ERROR) {
      st = base::errorf(EBADMSG, "gzip: corrupt stream ({})", zs.msg != nullptr ? zs.msg : "?");
      break;
    }
  }
  inflateEnd(&zs);
  if (!st) {
    return base::Unexpected(st.error());
  }
  return out;
}

base::Result<std::vector<std::byte>> extract_tar_member(base::Bytes tar, std::string_view member,
                                                        std::uint64_t max_member_bytes) {
  const std::string want = normalize(member);
  std::optional<std::string> next_name;  // from a pax 'x' or GNU 'L' entry
  std::optional<std::vector<std::byte>> found;
  std::size_t pos = 0;
  for (;;) {
    if (!base::in_bounds(pos, kBlock, tar.size())) {
      // A tar without its end-of-archive blocks: accept only at an entry boundary.
      if (pos == tar.size()) {
        break;
      }
      return base::errorf(EBADMSG, "tar: truncated header at {}", pos);
    }
    auto h = tar.subspan(pos, kBlock);
    if (erofs::is_zero_tar_block(h)) {
      break;
    }
    auto hdr = erofs::decode_tar_header(h);
    if (!hdr) {
      return base::Unexpected(std::move(hdr).error().wrap(fmt::format("tar: at {}", pos)));
    }
    const std::uint64_t size = hdr->size;
    const std::size_t data_off = pos + kBlock;
    if (!base::in_bounds(data_off, size, tar.size())) {
      return base::errorf(EBADMSG, "tar: entry at {} runs past the end ({} bytes)", pos, size);
    }
    auto data = tar.subspan(data_off, size);
    const char type = hdr->type;
    std::string name;
    if (next_name) {
      name = std::move(*next_name);
      next_name.reset();
    } else {
      name = std::move(hdr->name);  // with its ustar prefix
    }
    if (type == 'x') {
      CFN_ASSIGN_OR_RETURN(next_name, pax_path(base::as_chars(data)));
    } else if (type == 'L') {
      auto s = base::as_chars(data);
      next_name = std::string(s.substr(0, s.find('\0')));
    } else if (normalize(name) == want) {
      if (type != '0' && type != '\0') {
        return base::errorf(EINVAL, "tar: {} is not a regular file (type '{}')", want, type);
      }
      if (found) {
        return base::errorf(EBADMSG, "tar: {} appears twice", want);
      }
      if (size > max_member_bytes) {
        return base::errorf(EMSGSIZE, "tar: {} is {} bytes, over the limit of {}", want, size,
                            max_member_bytes);
      }
      found.emplace(data.begin(), data.end());
    }
    pos = data_off + base::align_up(size, kBlock);
    if (pos > tar.size()) {
      pos = tar.size();  // the last entry's padding may be missing
    }
  }
  if (!found) {
    return base::errorf(ENOENT, "tar: no {}", want);
  }
  return std::move(*found);
}

base::Result<std::vector<std::byte>> extract_tar_gz_member(base::Bytes tgz, std::string_view member,
                                                           std::uint64_t max_member_bytes,
                                                           std::uint64_t max_tar_bytes) {
  CFN_ASSIGN_OR_RETURN(auto tar, gunzip(tgz, max_tar_bytes));
  return extract_tar_member(tar, member, max_member_bytes);
}

}  // namespace cfnd
