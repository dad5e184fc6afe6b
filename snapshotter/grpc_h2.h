// SPDX-License-Identifier: Apache-2.0
// H2Connection: the server side of one gRPC-over-HTTP/2 connection on nghttp2, without a
// socket: bytes in (recv), bytes out (out/consume). The owner (snapshotter/server.cc) moves
// the bytes and runs the calls.
//
// What it does (grpc/grpc doc/PROTOCOL-HTTP2.md): h2c with prior knowledge (the client's
// preface first); each stream is one call, :path names the method; the request is one
// Length-Prefixed-Message (compressed: UNIMPLEMENTED, over max_message: RESOURCE_EXHAUSTED);
// the reply is HEADERS, the messages in DATA, then trailers with grpc-status and a
// percent-encoded grpc-message (Trailers-Only when no message is sent); grpc-timeout sets a
// deadline (DEADLINE_EXCEEDED is answered when it passes first). nghttp2 answers PING and
// SETTINGS and does flow control: the reply's DATA is sent as the peer's windows allow.
//
// Bounds: max_streams concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS), max_buffered
// request bytes held for the connection's streams together (past it: RESOURCE_EXHAUSTED),
// max_header_bytes per header block, and out() grows past out_high only by one frame: the
// owner stops reading from a peer whose out() is full (wants_read), so a peer that never
// reads costs at most that much.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "snapshotter/rpc_status.h"

struct nghttp2_session;

namespace snapshotter {

using Clock = std::chrono::steady_clock;

// What a call answers: a status and the serialized messages before it (a unary call sends
// one when the status is OK, a server-streaming call any number).
struct GrpcReply {
  RpcStatus status;
  std::vector<std::string> messages;
};

struct H2Limits {
  uint32_t max_message = 4 << 20;  // gRPC's default receive limit
  size_t max_buffered = 16 << 20;
  uint32_t max_streams = 100;
  size_t max_header_bytes = 16 << 10;
  size_t out_high = 256 << 10;
  int32_t window = 1 << 20;  // each stream's receive window and the connection's
};

class H2Connection {
 public:
  struct Call {
    int32_t stream_id = 0;
    std::string path;
    std::string request;  // the message's bytes
    std::optional<Clock::time_point> deadline;
  };
  // A complete call: answer it now, or return nullopt and complete() it later (or never,
  // if the connection is gone by then). Runs inside recv().
  using Dispatch = std::function<std::optional<GrpcReply>(Call&&)>;

  // ENOMEM when nghttp2 cannot make the session.
  [[nodiscard]] static base::Result<std::unique_ptr<H2Connection>> create(Dispatch dispatch,
                                                                          H2Limits limits = {});
  ~H2Connection();
  H2Connection(const H2Connection&) = delete;
  H2Connection& operator=(const H2Connection&) = delete;

  // Bytes from the peer. false: the connection is broken (bad preface, a protocol error
  // nghttp2 cannot answer on the connection): close it. Then produce().
  [[nodiscard]] bool recv(std::string_view bytes);
  // Moves the frames nghttp2 has ready into out() until it holds out_high bytes.
  void produce();
  // The bytes to write, and how many of them were written.
  [[nodiscard]] std::string_view out() const { return std::string_view(out_).substr(out_off_); }
  void consume(size_t n);

  // The answer to a call that dispatch left pending; ignored when the stream is gone (the
  // peer reset it) or already answered (its deadline passed).
  void complete(int32_t stream_id, GrpcReply reply);
  // Answers DEADLINE_EXCEEDED for the streams whose deadline is at or before now (only
  // those: O(log n) each).
  void expire(Clock::time_point now);
  // The earliest deadline of a stream not answered yet. O(1): an ordered set, not a scan.
  [[nodiscard]] std::optional<Clock::time_point> next_deadline() const;

  // GOAWAY: no new streams; the ones open go on.
  void goaway();
  // Streams not closed yet (dispatched, or being answered).
  [[nodiscard]] size_t open_streams() const { return streams_.size(); }
  // Worth reading from the peer: nghttp2 wants to and out() is below out_high.
  [[nodiscard]] bool wants_read() const;
  // Nothing more to do: nghttp2 wants neither to read nor to write and out() is empty.
  [[nodiscard]] bool done() const;

  struct Stream;

 private:
  H2Connection(Dispatch dispatch, H2Limits limits);

  // nghttp2's callbacks (grpc_h2.cc) reach these.
  friend struct H2Callbacks;
  Stream* stream(int32_t id);
  void end_of_request(Stream& s);
  void answer(Stream& s, GrpcReply reply);
  void answer_error(Stream& s, RpcCode code, std::string message, int http_status = 200);
  // deadlines_ holds (deadline, id) of every stream that has a deadline and is not answered
  // yet: set when its grpc-timeout arrives, dropped when it is answered or closed.
  void set_deadline(Stream& s, Clock::time_point t);
  void drop_deadline(Stream& s);

  Dispatch dispatch_;
  H2Limits limits_;
  nghttp2_session* session_ = nullptr;
  std::map<int32_t, std::unique_ptr<Stream>> streams_;
  std::set<std::pair<Clock::time_point, int32_t>> deadlines_;
  size_t buffered_ = 0;  // request bytes held in streams_
  std::string out_;
  size_t out_off_ = 0;
  bool broken_ = false;
};

}  // namespace snapshotter
