// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the snapshotter's gRPC-over-HTTP/2 server side (snapshotter/grpc_h2.h) as
// any local client of its socket reaches it: the input is the bytes a client sends after
// the connection preface (the target adds the preface, so the frames are what is fuzzed),
// fed in pieces. Calls to /t/Echo answer at once with their request twice; /t/Later
// answers when the next piece arrives (a worker's reply); /t/Error answers a status whose
// message needs percent-encoding; anything else is UNIMPLEMENTED. The connection must not
// crash, must keep its own bounds (out() never far past out_high, requests within
// max_buffered), and grpc-timeout's parser and the percent-encoder get the first bytes too.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "snapshotter/grpc_h2.h"
#include "snapshotter/grpc_wire.h"

namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 256 << 10) {
    return 0;
  }
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)snapshotter::parse_grpc_timeout(in.substr(0, 10));
  std::string enc = snapshotter::percent_encode(in.substr(0, 64));
  for (char c : enc) {
    if (c < 0x20 || c > 0x7e) {
      std::abort();
    }
  }

  snapshotter::H2Limits limits;
  limits.max_message = 4096;
  limits.max_buffered = 16384;
  limits.max_streams = 8;
  limits.max_header_bytes = 2048;
  limits.out_high = 8192;
  std::vector<int32_t> later;
  auto made = snapshotter::H2Connection::create(
      [&later](snapshotter::H2Connection::Call&& call) -> std::optional<snapshotter::GrpcReply> {
        if (call.request.size() > 4096) {
          std::abort();  // over max_message: must have been refused
        }
        if (call.path == "/t/Echo") {
          return snapshotter::GrpcReply{{}, {call.request, call.request}};
        }
        if (call.path == "/t/Later") {
          later.push_back(call.stream_id);
          return std::nullopt;
        }
        if (call.path == "/t/Error") {
          return snapshotter::GrpcReply{
              snapshotter::RpcStatus(snapshotter::RpcCode::NOT_FOUND, "caf\xc3\xa9 100%\n"), {}};
        }
        return snapshotter::GrpcReply{
            snapshotter::RpcStatus(snapshotter::RpcCode::UNIMPLEMENTED, "unknown " + call.path),
            {}};
      },
      limits);
  if (!made) {
    return 0;
  }
  auto& c = **made;
  bool ok = c.recv(kPreface);
  // Pieces: the first byte of the input sets the piece size (1-256), so frames split at
  // every boundary get tried.
  size_t piece = in.empty() ? 1 : static_cast<unsigned char>(in[0]) + 1;
  size_t pos = in.empty() ? 0 : 1;
  int rounds = 0;
  while (ok && pos < in.size()) {
    size_t n = std::min(piece, in.size() - pos);
    if (c.wants_read()) {
      ok = c.recv(in.substr(pos, n));
      pos += n;
    } else if (c.out().empty()) {
      break;  // nghttp2 wants no more (GOAWAY, a connection error): the server closes
    }
    for (auto id : later) {
      c.complete(id, snapshotter::GrpcReply{{}, {std::string(100, 'x')}});
    }
    later.clear();
    c.expire(snapshotter::Clock::now());
    c.produce();
    if (c.out().size() > limits.out_high + (1 << 15)) {
      std::abort();  // out() may pass out_high by one frame only
    }
    // The peer reads half of what is there each round, then all every fourth round.
    c.consume(++rounds % 4 == 0 ? c.out().size() : c.out().size() / 2);
  }
  c.complete(12345, snapshotter::GrpcReply{});  // a stream that is not there
  c.goaway();
  c.produce();
  (void)c.done();
  return 0;
}
