// SPDX-License-Identifier: Apache-2.0
// Fuzz target: FUSE requests as read from /dev/fuse (daemon/fuse_wire.h): the header,
// every fixed argument the front end reads, names, and the INIT negotiation. Nothing
// may read outside the input; an answered INIT never claims more than both sides have.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "daemon/fuse_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace cfnd::fusewire;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  auto r = parse_request(bytes);
  if (!r) {
    return 0;
  }
  if (r->args.size() + sizeof(fuse_in_header) != size) {
    std::abort();
  }
  (void)fixed_arg<fuse_read_in>(*r);
  (void)fixed_arg<fuse_open_in>(*r);
  (void)fixed_arg<fuse_getxattr_in>(*r);
  (void)name_arg(*r, 0);
  if (auto n = name_arg(*r, sizeof(fuse_getxattr_in)); n && n->empty()) {
    std::abort();
  }
  if (auto init = negotiate_init(*r, InitWants{})) {
    if (init->out.minor > kOurMinor || init->params.minor > init->params.kernel_minor ||
        init->size > sizeof init->out) {
      std::abort();
    }
  }
  // A directory entry named by the request's bytes, into a small buffer.
  std::vector<std::byte> buf(256);
  const std::string_view name(reinterpret_cast<const char*>(r->args.data()),
                              std::min<std::size_t>(r->args.size(), 255));
  const std::size_t n = add_dirent(buf, 0, 1, 1, 0, name);
  const std::size_t m = add_direntplus(buf, 0, fuse_entry_out{}, 1, 0, name);
  if (n > buf.size() || m > buf.size()) {
    std::abort();
  }
  return 0;
}
