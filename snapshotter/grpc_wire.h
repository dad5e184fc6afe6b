// SPDX-License-Identifier: Apache-2.0
// gRPC over HTTP/2, the parts that are plain bytes (grpc/grpc doc/PROTOCOL-HTTP2.md):
// the grpc-timeout header, grpc-message's percent-encoding and the length-prefixed message
// framing. Pure: no I/O, no logging.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace snapshotter {

// grpc-timeout: 1 to 8 ASCII digits and a unit (H hours, M minutes, S seconds,
// m milliseconds, u microseconds, n nanoseconds). nullopt when it is not that.
[[nodiscard]] std::optional<std::chrono::nanoseconds> parse_grpc_timeout(std::string_view v);

// grpc-message: bytes outside 0x20-0x7E, and '%', become %XX (upper-case hex).
[[nodiscard]] std::string percent_encode(std::string_view v);

// Appends one uncompressed Length-Prefixed-Message: flag 0, 4-byte big-endian length, bytes.
void append_message(std::string& out, std::string_view msg);

// A request body as it stands: one Length-Prefixed-Message is what every call here sends.
enum class BodyState {
  kIncomplete,  // fewer bytes than the prefix declares (or than a prefix)
  kOne,         // exactly one message
  kCompressed,  // the compressed flag is set (we accept identity only)
  kBadFlag,     // a flag byte other than 0 or 1
  kTooLarge,    // the declared length is over the limit
  kTrailing,    // bytes after the first message
};
struct Body {
  BodyState state = BodyState::kIncomplete;
  std::string_view message;  // kOne: the message's bytes
};
// What `body` holds. Only the first prefix is read before the limit is checked, so a body
// may be checked as its bytes arrive (kTooLarge as soon as the prefix is in).
[[nodiscard]] Body parse_body(std::string_view body, uint32_t max_message);

}  // namespace snapshotter
