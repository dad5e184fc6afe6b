// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the control API's JSON lines. The first byte picks the decoder: a
// request (the daemon's side) or one of the answer decoders (the client's side). A
// request that parses must encode to a text that decodes to the same request; any
// bytes as a request's path encode (UTF-8) or are refused with EINVAL, never thrown.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "base/json_fields.h"
#include "control/api.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 10) {
    case 0: {
      auto r = control::request_from_json(text);
      if (!r) {
        return 0;
      }
      // Whatever the decoder accepts is UTF-8, so it encodes.
      const auto canon = control::to_json(*r);
      if (!canon) {
        std::abort();
      }
      auto again = control::request_from_json(*canon);
      if (!again || control::to_json(*again) != *canon) {
        std::abort();
      }
      break;
    }
    case 1:
      if (auto a = control::ping_from_json(text)) {
        (void)control::to_json(*a);
      }
      break;
    case 2:
      if (auto a = control::image_from_json(text)) {
        (void)control::to_json(*a);
      }
      break;
    case 3:
      if (auto a = control::images_from_json(text)) {
        (void)control::pretty_images(*a);
      }
      break;
    case 4:
      (void)control::files_from_json(text);
      break;
    case 5:
      if (auto a = control::metrics_from_json(text)) {
        (void)control::to_prometheus(*a);
        (void)control::pretty_metrics(*a);
      }
      break;
    case 6:
      (void)control::prometheus_from_json(text);
      break;
    case 8:
      if (auto a = control::cache_listing_from_json(text)) {
        (void)control::to_json(*a);
        (void)control::pretty_cache_listing(*a);
      }
      break;
    case 9:
      if (auto a = control::gc_from_json(text)) {
        (void)control::to_json(*a);
        (void)control::pretty_gc(*a);
      }
      break;
    default: {
      (void)control::ok_from_json(text);
      // The client's side: any bytes as a path (a command line's, a label's). It encodes
      // and decodes back the same, or, not being UTF-8, is refused with EINVAL; it never
      // throws.
      const control::UnbindRequest u{std::string(text), true};
      const auto t = control::to_json(control::Request{u});
      if (!t) {
        if (t.error().code != EINVAL || base::valid_utf8(text)) {
          std::abort();
        }
        break;
      }
      if (!base::valid_utf8(text)) {
        std::abort();
      }
      auto back = control::request_from_json(*t);
      if (back && !(std::get<control::UnbindRequest>(*back) == u)) {
        std::abort();
      }
      break;
    }
  }
  return 0;
}
