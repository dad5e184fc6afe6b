// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/grpc_h2.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <nghttp2/nghttp2.h>

#include "snapshotter/grpc_wire.h"

namespace snapshotter {

struct H2Connection::Stream {
  int32_t id = 0;
  std::string path;
  std::string method;
  std::string content_type;
  std::string body;  // the request's DATA so far
  std::optional<Clock::time_point> deadline;
  bool bad_timeout = false;
  size_t header_bytes = 0;
  bool dispatched = false;  // the call went to dispatch
  bool answered = false;    // a reply (or an error) was submitted
  bool request_done = false;
  bool reset_after_reply = false;  // answered before the request ended: RST once it is sent
  // The reply being sent: the framed messages, how far DATA has taken them, the trailers.
  std::string reply;
  size_t reply_off = 0;
  std::string grpc_status;
  std::string grpc_message;
};

namespace {

nghttp2_nv nv(std::string_view name, std::string_view value) {
  // nghttp2 copies names and values at submit (no NO_COPY flags).
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

// The callbacks, friends of H2Connection. user_data is the H2Connection.
struct H2Callbacks {
  static H2Connection& conn(void* user_data) { return *static_cast<H2Connection*>(user_data); }

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      return 0;
    }
    auto& c = conn(user_data);
    auto s = std::make_unique<H2Connection::Stream>();
    s->id = frame->hd.stream_id;
    c.streams_[s->id] = std::move(s);
    return 0;
  }

  static int on_header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                       void* user_data) {
    auto& c = conn(user_data);
    auto* s = c.stream(frame->hd.stream_id);
    if (s == nullptr || frame->hd.type != NGHTTP2_HEADERS) {
      return 0;
    }
    s->header_bytes += namelen + valuelen + 32;  // RFC 7541's entry size
    if (s->header_bytes > c.limits_.max_header_bytes) {
      // The stream is reset (REFUSED... INTERNAL_ERROR by nghttp2); on_stream_close frees it.
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      return 0;  // the client's trailers: nothing in them for us
    }
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":path") {
      s->path = v;
    } else if (n == ":method") {
      s->method = v;
    } else if (n == "content-type") {
      s->content_type = v;
    } else if (n == "grpc-timeout") {
      auto t = parse_grpc_timeout(v);
      if (!t) {
        s->bad_timeout = true;
      } else {
        auto now = Clock::now();
        // Saturate: a timeout of 99999999H is no deadline to speak of.
        c.set_deadline(*s, *t >= Clock::time_point::max() - now ? Clock::time_point::max()
                                                                : now + *t);
      }
    }
    (void)session;
    return 0;
  }

  static int on_data_chunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                           size_t len, void* user_data) {
    auto& c = conn(user_data);
    auto* s = c.stream(stream_id);
    if (s == nullptr || s->answered || s->dispatched) {
      return 0;  // answered early (an error): the rest of the request is dropped
    }
    if (c.buffered_ + len > c.limits_.max_buffered) {
      c.answer_error(*s, RpcCode::RESOURCE_EXHAUSTED,
                     "the connection's requests hold too many bytes");
      return 0;
    }
    s->body.append(reinterpret_cast<const char*>(data), len);
    c.buffered_ += len;
    auto b = parse_body(s->body, c.limits_.max_message);
    if (b.state == BodyState::kTooLarge) {
      c.answer_error(
          *s, RpcCode::RESOURCE_EXHAUSTED,
          "request message larger than " + std::to_string(c.limits_.max_message) + " bytes");
    } else if (b.state == BodyState::kCompressed) {
      c.answer_error(*s, RpcCode::UNIMPLEMENTED, "compressed messages are not supported");
    } else if (b.state == BodyState::kBadFlag) {
      c.answer_error(*s, RpcCode::INTERNAL, "bad message flag");
    }
    return 0;
  }

  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
      return 0;
    }
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
      return 0;
    }
    auto& c = conn(user_data);
    if (auto* s = c.stream(frame->hd.stream_id); s != nullptr) {
      s->request_done = true;
      c.end_of_request(*s);
    }
    return 0;
  }

  static int on_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
    if (frame->hd.type != NGHTTP2_HEADERS || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
      return 0;
    }
    auto* s = conn(user_data).stream(frame->hd.stream_id);
    if (s != nullptr && s->reset_after_reply && !s->request_done) {
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    }
    return 0;
  }

  static int on_stream_close(nghttp2_session*, int32_t stream_id, uint32_t, void* user_data) {
    auto& c = conn(user_data);
    auto it = c.streams_.find(stream_id);
    if (it != c.streams_.end()) {
      c.buffered_ -= it->second->body.size();
      c.drop_deadline(*it->second);
      c.streams_.erase(it);
    }
    return 0;
  }

  static ssize_t read_reply(nghttp2_session* session, int32_t stream_id, uint8_t* buf,
                            size_t length, uint32_t* data_flags, nghttp2_data_source* source,
                            void*) {
    auto* s = static_cast<H2Connection::Stream*>(source->ptr);
    size_t n = std::min(length, s->reply.size() - s->reply_off);
    std::memcpy(buf, s->reply.data() + s->reply_off, n);
    s->reply_off += n;
    if (s->reply_off == s->reply.size()) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      std::vector<nghttp2_nv> trailers{nv("grpc-status", s->grpc_status)};
      if (!s->grpc_message.empty()) {
        trailers.push_back(nv("grpc-message", s->grpc_message));
      }
      if (nghttp2_submit_trailer(session, stream_id, trailers.data(), trailers.size()) != 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
      std::string().swap(s->reply);
      s->reply_off = 0;
    }
    return static_cast<ssize_t>(n);
  }
};

H2Connection::H2Connection(Dispatch dispatch, H2Limits limits)
    : dispatch_(std::move(dispatch)), limits_(limits) {}

H2Connection::~H2Connection() {
  if (session_ != nullptr) {
    nghttp2_session_del(session_);
  }
}

base::Result<std::unique_ptr<H2Connection>> H2Connection::create(Dispatch dispatch,
                                                                 H2Limits limits) {
  std::unique_ptr<H2Connection> c(new H2Connection(std::move(dispatch), limits));
  nghttp2_session_callbacks* cbs = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0) {
    return base::errorf(ENOMEM, "nghttp2: no memory for callbacks");
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, H2Callbacks::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, H2Callbacks::on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, H2Callbacks::on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, H2Callbacks::on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, H2Callbacks::on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, H2Callbacks::on_frame_send);
  // No HTTP messaging checks: grpc-go sends the unix socket's path as :authority, which
  // nghttp2's RFC 3986 check refuses (PROTOCOL_ERROR). What a call needs (POST, :path,
  // content-type, the body's framing) is checked in end_of_request.
  nghttp2_option* opt = nullptr;
  if (nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cbs);
    return base::errorf(ENOMEM, "nghttp2: no memory for options");
  }
  nghttp2_option_set_no_http_messaging(opt, 1);
  int rv = nghttp2_session_server_new2(&c->session_, cbs, c.get(), opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    c->session_ = nullptr;
    return base::errorf(ENOMEM, "nghttp2: {}", nghttp2_strerror(rv));
  }
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits.max_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(limits.window)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(limits.max_header_bytes)},
  };
  rv = nghttp2_submit_settings(c->session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  if (rv == 0) {
    rv = nghttp2_session_set_local_window_size(c->session_, NGHTTP2_FLAG_NONE, 0, limits.window);
  }
  if (rv != 0) {
    return base::errorf(ENOMEM, "nghttp2: {}", nghttp2_strerror(rv));
  }
  return c;
}

H2Connection::Stream* H2Connection::stream(int32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

bool H2Connection::recv(std::string_view bytes) {
  if (broken_) {
    return false;
  }
  auto rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(bytes.data()),
                                     bytes.size());
  if (rv < 0) {
    broken_ = true;
    return false;
  }
  return true;
}

void H2Connection::produce() {
  if (broken_) {
    return;
  }
  while (out_.size() - out_off_ < limits_.out_high) {
    const uint8_t* data = nullptr;
    auto n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      broken_ = true;
      return;
    }
    if (n == 0) {
      return;
    }
    if (out_off_ == out_.size()) {
      out_.clear();
      out_off_ = 0;
    }
    out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
}

void H2Connection::consume(size_t n) {
  out_off_ += std::min(n, out_.size() - out_off_);
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  } else if (out_off_ > (64 << 10) && out_off_ * 2 > out_.size()) {
    out_.erase(0, out_off_);
    out_off_ = 0;
  }
}

bool H2Connection::wants_read() const {
  return !broken_ && out_.size() - out_off_ < limits_.out_high &&
         nghttp2_session_want_read(session_) != 0;
}

bool H2Connection::done() const {
  return broken_ || (out_.size() == out_off_ && nghttp2_session_want_read(session_) == 0 &&
                     nghttp2_session_want_write(session_) == 0);
}

void H2Connection::goaway() {
  if (!broken_) {
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                          nullptr, 0);
  }
}

void H2Connection::end_of_request(Stream& s) {
  if (s.answered || s.dispatched) {
    return;
  }
  if (s.method != "POST") {
    answer_error(s, RpcCode::UNIMPLEMENTED, "method " + s.method + " is not POST", 405);
    return;
  }
  std::string_view ct = s.content_type;
  if (ct.substr(0, 16) != "application/grpc" ||
      (ct.size() > 16 && ct[16] != '+' && ct[16] != ';')) {
    answer_error(s, RpcCode::UNKNOWN, "content-type " + s.content_type + " is not application/grpc",
                 415);
    return;
  }
  if (s.bad_timeout) {
    answer_error(s, RpcCode::INTERNAL, "bad grpc-timeout");
    return;
  }
  auto b = parse_body(s.body, limits_.max_message);
  if (b.state != BodyState::kOne) {
    answer_error(s, RpcCode::INTERNAL,
                 b.state == BodyState::kTrailing ? "more than one request message"
                                                 : "no complete request message");
    return;
  }
  if (s.deadline && *s.deadline <= Clock::now()) {
    answer_error(s, RpcCode::DEADLINE_EXCEEDED, "deadline exceeded before the call started");
    return;
  }
  s.dispatched = true;
  Call call{s.id, std::move(s.path), std::string(b.message), s.deadline};
  buffered_ -= s.body.size();
  std::string().swap(s.body);
  auto reply = dispatch_(std::move(call));
  if (reply) {
    // dispatch may have run long: the stream is still there (nghttp2 calls back only
    // from recv and produce).
    answer(s, std::move(*reply));
  }
}

void H2Connection::complete(int32_t stream_id, GrpcReply reply) {
  if (auto* s = stream(stream_id); s != nullptr && !broken_) {
    answer(*s, std::move(reply));
  }
}

void H2Connection::answer(Stream& s, GrpcReply reply) {
  if (s.answered) {
    return;
  }
  if (!reply.status.ok() || reply.messages.empty()) {
    answer_error(s, reply.status.error_code(), reply.status.error_message());
    return;
  }
  s.answered = true;
  drop_deadline(s);
  size_t total = 0;
  for (const auto& m : reply.messages) {
    total += 5 + m.size();
  }
  s.reply.reserve(total);
  for (const auto& m : reply.messages) {
    append_message(s.reply, m);
  }
  s.grpc_status = "0";
  const nghttp2_nv headers[] = {nv(":status", "200"), nv("content-type", "application/grpc")};
  nghttp2_data_provider prd{};
  prd.source.ptr = &s;
  prd.read_callback = H2Callbacks::read_reply;
  if (nghttp2_submit_response(session_, s.id, headers, std::size(headers), &prd) != 0) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_INTERNAL_ERROR);
  }
}

void H2Connection::answer_error(Stream& s, RpcCode code, std::string message, int http_status) {
  if (s.answered) {
    return;
  }
  s.answered = true;
  drop_deadline(s);
  buffered_ -= s.body.size();
  std::string().swap(s.body);
  // Trailers-Only: one HEADERS with END_STREAM.
  std::string status = std::to_string(http_status);
  std::string grpc_status = std::to_string(static_cast<int>(code));
  std::string grpc_message = percent_encode(message);
  std::vector<nghttp2_nv> headers{nv(":status", status), nv("content-type", "application/grpc"),
                                  nv("grpc-status", grpc_status)};
  if (!grpc_message.empty()) {
    headers.push_back(nv("grpc-message", grpc_message));
  }
  if (nghttp2_submit_response(session_, s.id, headers.data(), headers.size(), nullptr) != 0) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  // Answered before the request ended (too large, compressed, deadline): the rest of it
  // is not wanted (RFC 9113 8.1: RST_STREAM NO_ERROR after a complete response; nghttp2
  // would send a RST_STREAM submitted now before the HEADERS, so on_frame_send does it).
  s.reset_after_reply = !s.request_done;
}

void H2Connection::set_deadline(Stream& s, Clock::time_point t) {
  drop_deadline(s);  // a second grpc-timeout replaces the first
  s.deadline = t;
  if (!s.answered) {
    deadlines_.emplace(t, s.id);
  }
}

void H2Connection::drop_deadline(Stream& s) {
  if (s.deadline) {
    deadlines_.erase({*s.deadline, s.id});
  }
}

void H2Connection::expire(Clock::time_point now) {
  // answer_error drops each from deadlines_; the ones due are at its front.
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const int32_t id = deadlines_.begin()->second;
    Stream* s = stream(id);
    if (s == nullptr || s->answered) {
      deadlines_.erase(deadlines_.begin());  // not expected: the set follows the streams
      continue;
    }
    answer_error(*s, RpcCode::DEADLINE_EXCEEDED, "deadline exceeded");
  }
}

std::optional<Clock::time_point> H2Connection::next_deadline() const {
  if (deadlines_.empty()) {
    return std::nullopt;
  }
  return deadlines_.begin()->first;
}

}  // namespace snapshotter
