// SPDX-License-Identifier: Apache-2.0
// Fuzz target: what a registry's answers carry besides manifests, on the pull and the
// push path: the Location of an upload (resolve_location, then with_query for the
// digest), Content-Length (parse_u64), Content-Range, Retry-After and an error body
// (registry_error_text). The first byte picks the parser; for Location the input is
// "base\nlocation". Every error must go into a control API answer (the daemon's answer
// to a bind or a push is the error's text) without throwing.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "control/api.h"
#include "registry/util.h"

namespace {

namespace ri = registry::internal;

bool has_control(std::string_view s) {
  for (const char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return true;
    }
  }
  return false;
}

void answer(const base::Error& e) {
  if (control::error_to_json(e).empty()) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1 || size > 16384) {
    return 0;
  }
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 5) {
    case 0: {
      const auto nl = text.find('\n');
      const std::string_view base = nl == std::string_view::npos
                                        ? "https://registry.example/v2/r/blobs/uploads/"
                                        : text.substr(0, nl);
      const std::string_view loc = nl == std::string_view::npos ? text : text.substr(nl + 1);
      auto r = ri::resolve_location(base, loc);
      if (!r) {
        answer(r.error());
        return 0;
      }
      // The next request's URL: absolute http(s), nothing that ends a header line, and
      // resolving it again changes nothing.
      if (has_control(*r) || r->find('#') != std::string::npos || !ri::parse_url(*r)) {
        std::abort();
      }
      auto again = ri::resolve_location(base, *r);
      if (!again || *again != *r) {
        std::abort();
      }
      const std::string put = ri::with_query(*r, "digest=sha256%3Aabc");
      if (!ri::parse_url(put)) {
        std::abort();
      }
      break;
    }
    case 1: {
      const auto v = ri::parse_u64(text);
      if (v &&
          std::to_string(*v) != text.substr(text.find_first_not_of('0') == std::string_view::npos
                                                ? text.size() - 1
                                                : text.find_first_not_of('0'))) {
        std::abort();  // decimal digits only, no overflow
      }
      break;
    }
    case 2: {
      const auto v = ri::parse_content_range(text);
      if (v) {
        if (v->last < v->first) {
          std::abort();
        }
        const std::string canon = "bytes " + std::to_string(v->first) + "-" +
                                  std::to_string(v->last) + "/" +
                                  (v->total ? std::to_string(*v->total) : std::string("*"));
        const auto again = ri::parse_content_range(canon);
        if (!again || again->first != v->first || again->last != v->last ||
            again->total != v->total) {
          std::abort();
        }
      }
      break;
    }
    case 3: {
      const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1765000000));
      const auto v = ri::parse_retry_after(text, now);
      if (v && v->count() < 0) {
        std::abort();
      }
      break;
    }
    default: {
      registry::http::Response resp;
      resp.status = 500;
      resp.body.assign(reinterpret_cast<const std::byte*>(text.data()),
                       reinterpret_cast<const std::byte*>(text.data() + text.size()));
      const std::string t = ri::registry_error_text(resp);
      if (t.size() > 300) {
        std::abort();
      }
      answer(ri::status_error(resp, "push blob").value());
      break;
    }
  }
  return 0;
}
