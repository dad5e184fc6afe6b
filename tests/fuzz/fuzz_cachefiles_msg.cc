// SPDX-License-Identifier: Apache-2.0
// Fuzz target: /dev/cachefiles messages. The input is one read() result. A message that
// parses must encode back to the same bytes; the same bytes also feed the command
// formatters, whose output must never carry a NUL or a newline.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fscache/protocol.h"

namespace {

void check_command(const base::Result<std::string>& cmd) {
  if (cmd && (cmd->find('\0') != std::string::npos || cmd->find('\n') != std::string::npos ||
              cmd->size() > fscache::kMaxCommandSize)) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const base::Bytes in(reinterpret_cast<const std::byte*>(data), size);
  auto m = fscache::parse_message(in);
  if (m) {
    const std::vector<std::byte> again = fscache::encode_message(*m);
    if (again.size() != in.size() || !std::equal(again.begin(), again.end(), in.begin())) {
      std::abort();
    }
    if (const auto* o = std::get_if<fscache::OpenRequest>(&m->body)) {
      (void)o->domain();
      check_command(fscache::format_tag(o->cookie_key));
    }
  }
  const std::string_view text = base::as_chars(in);
  check_command(fscache::format_dir(text));
  check_command(fscache::format_cull(text));
  return 0;
}
