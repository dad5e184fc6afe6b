// SPDX-License-Identifier: Apache-2.0
// RpcStatus: a gRPC status (code + message) as the handlers return it, without grpc++.
// The codes and their numbers are gRPC's (doc/statuscodes.md), sent as grpc-status.
#pragma once

#include <string>
#include <utility>

namespace snapshotter {

enum class RpcCode : int {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
};

class RpcStatus {
 public:
  RpcStatus() = default;
  RpcStatus(RpcCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static const RpcStatus OK;

  [[nodiscard]] bool ok() const { return code_ == RpcCode::OK; }
  [[nodiscard]] RpcCode error_code() const { return code_; }
  [[nodiscard]] const std::string& error_message() const { return message_; }

 private:
  RpcCode code_ = RpcCode::OK;
  std::string message_;
};

inline const RpcStatus RpcStatus::OK{};

}  // namespace snapshotter
