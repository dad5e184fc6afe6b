// SPDX-License-Identifier: Apache-2.0
// snapshotter/grpc_h2.h and grpc_wire.h without a socket: an nghttp2 client session talks
// to an H2Connection through memory, so every frame both sides send is real HTTP/2.
#include "snapshotter/grpc_h2.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include <nghttp2/nghttp2.h>

#include "snapshotter/grpc_wire.h"

namespace snapshotter {
namespace {

using namespace std::chrono_literals;

TEST(GrpcWire, Timeout) {
  EXPECT_EQ(parse_grpc_timeout("1S"), 1s);
  EXPECT_EQ(parse_grpc_timeout("250m"), 250ms);
  EXPECT_EQ(parse_grpc_timeout("7u"), 7us);
  EXPECT_EQ(parse_grpc_timeout("99999999n"), 99999999ns);
  EXPECT_EQ(parse_grpc_timeout("2M"), 120s);
  EXPECT_EQ(parse_grpc_timeout("1H"), 3600s);
  EXPECT_EQ(parse_grpc_timeout("99999999H"), std::chrono::nanoseconds::max());  // saturated
  EXPECT_FALSE(parse_grpc_timeout(""));
  EXPECT_FALSE(parse_grpc_timeout("S"));
  EXPECT_FALSE(parse_grpc_timeout("123456789S"));  // 9 digits
  EXPECT_FALSE(parse_grpc_timeout("1s"));
  EXPECT_FALSE(parse_grpc_timeout("-1S"));
  EXPECT_FALSE(parse_grpc_timeout("1 S"));
}

TEST(GrpcWire, PercentEncode) {
  EXPECT_EQ(percent_encode("not found: a/b"), "not found: a/b");
  EXPECT_EQ(percent_encode("caf\xc3\xa9 100%\n"), "caf%C3%A9 100%25%0A");
  EXPECT_EQ(percent_encode(std::string("a\0b", 3)), "a%00b");
}

TEST(GrpcWire, Body) {
  std::string b;
  append_message(b, "hello");
  ASSERT_EQ(b.size(), 10u);
  EXPECT_EQ(b.substr(0, 5), std::string("\0\0\0\0\5", 5));
  auto one = parse_body(b, 100);
  EXPECT_EQ(one.state, BodyState::kOne);
  EXPECT_EQ(one.message, "hello");
  EXPECT_EQ(parse_body(b.substr(0, 4), 100).state, BodyState::kIncomplete);
  EXPECT_EQ(parse_body(b.substr(0, 9), 100).state, BodyState::kIncomplete);
  EXPECT_EQ(parse_body(b + "x", 100).state, BodyState::kTrailing);
  EXPECT_EQ(parse_body(b, 4).state, BodyState::kTooLarge);
  // The limit is checked from the prefix alone: 4 GiB - 1 declared, 5 bytes present.
  EXPECT_EQ(parse_body(std::string("\0\xff\xff\xff\xff", 5), 4 << 20).state, BodyState::kTooLarge);
  std::string compressed = b;
  compressed[0] = 1;
  EXPECT_EQ(parse_body(compressed, 100).state, BodyState::kCompressed);
  compressed[0] = 2;
  EXPECT_EQ(parse_body(compressed, 100).state, BodyState::kBadFlag);
  std::string empty;
  append_message(empty, "");
  EXPECT_EQ(parse_body(empty, 100).state, BodyState::kOne);
}

// A gRPC client on nghttp2's client session.
class Client {
 public:
  struct Response {
    std::map<std::string, std::string> headers;
    std::map<std::string, std::string> trailers;
    std::string data;
    bool closed = false;
    uint32_t error = 0;  // RST_STREAM code
  };

  explicit Client(int32_t window = 65535, bool auto_window = true) {
    nghttp2_session_callbacks* cbs = nullptr;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    nghttp2_option* opt = nullptr;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, auto_window ? 0 : 1);
    nghttp2_session_client_new2(&s_, cbs, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(window)}};
    nghttp2_submit_settings(s_, NGHTTP2_FLAG_NONE, iv, 1);
  }
  ~Client() { nghttp2_session_del(s_); }

  // A call: HEADERS, then `body` as DATA with END_STREAM (no DATA when end is false and
  // body is empty: the request stays open).
  int32_t call(const std::string& path, std::string body,
               std::vector<std::pair<std::string, std::string>> extra = {}, bool end = true) {
    std::vector<std::pair<std::string, std::string>> h = {{":method", "POST"},
                                                          {":scheme", "http"},
                                                          {":path", path},
                                                          // what grpc-go sends on a unix socket
                                                          {":authority", "/run/x/s.sock"},
                                                          {"content-type", "application/grpc"},
                                                          {"te", "trailers"}};
    h.insert(h.end(), extra.begin(), extra.end());
    std::vector<nghttp2_nv> nva;
    for (auto& [n, v] : h) {
      nva.push_back({reinterpret_cast<uint8_t*>(n.data()), reinterpret_cast<uint8_t*>(v.data()),
                     n.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
    }
    auto src = std::make_unique<Source>();
    src->bytes = std::move(body);
    src->end = end;
    nghttp2_data_provider prd{};
    prd.source.ptr = src.get();
    prd.read_callback = read_body;
    int32_t id = nghttp2_submit_request(s_, nullptr, nva.data(), nva.size(), &prd, nullptr);
    sources_.push_back(std::move(src));
    return id;
  }
  void rst(int32_t id) { nghttp2_submit_rst_stream(s_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL); }
  void ping() { nghttp2_submit_ping(s_, NGHTTP2_FLAG_NONE, nullptr); }
  void consumed(int32_t id, size_t n) { nghttp2_session_consume(s_, id, n); }

  std::string send() {
    std::string out;
    for (;;) {
      const uint8_t* d = nullptr;
      auto n = nghttp2_session_mem_send(s_, &d);
      if (n <= 0) {
        return out;
      }
      out.append(reinterpret_cast<const char*>(d), static_cast<size_t>(n));
    }
  }
  bool recv(std::string_view b) {
    return nghttp2_session_mem_recv(s_, reinterpret_cast<const uint8_t*>(b.data()), b.size()) ==
           static_cast<ssize_t>(b.size());
  }

  std::map<int32_t, Response> resp;

 private:
  struct Source {
    std::string bytes;
    size_t off = 0;
    bool end = true;
  };
  static ssize_t read_body(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                           nghttp2_data_source* source, void*) {
    auto* s = static_cast<Source*>(source->ptr);
    size_t n = std::min(len, s->bytes.size() - s->off);
    memcpy(buf, s->bytes.data() + s->off, n);
    s->off += n;
    if (s->off == s->bytes.size()) {
      if (!s->end) {
        return n == 0 ? ssize_t{NGHTTP2_ERR_DEFERRED} : static_cast<ssize_t>(n);
      }
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return static_cast<ssize_t>(n);
  }
  static int on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t nl,
                       const uint8_t* value, size_t vl, uint8_t, void* ud) {
    auto& r = static_cast<Client*>(ud)->resp[f->hd.stream_id];
    std::string n(reinterpret_cast<const char*>(name), nl);
    std::string v(reinterpret_cast<const char*>(value), vl);
    (f->headers.cat == NGHTTP2_HCAT_HEADERS ? r.trailers : r.headers)[n] = v;
    return 0;
  }
  static int on_data(nghttp2_session*, uint8_t, int32_t id, const uint8_t* d, size_t n, void* ud) {
    static_cast<Client*>(ud)->resp[id].data.append(reinterpret_cast<const char*>(d), n);
    return 0;
  }
  static int on_close(nghttp2_session*, int32_t id, uint32_t err, void* ud) {
    auto& r = static_cast<Client*>(ud)->resp[id];
    r.closed = true;
    r.error = err;
    return 0;
  }

  nghttp2_session* s_ = nullptr;
  std::vector<std::unique_ptr<Source>> sources_;
};

std::string framed(std::string_view m) {
  std::string b;
  append_message(b, m);
  return b;
}

// The grpc-status of a response: the trailers', or the headers' for Trailers-Only.
std::string status_of(const Client::Response& r) {
  auto it = r.trailers.find("grpc-status");
  if (it != r.trailers.end()) {
    return it->second;
  }
  it = r.headers.find("grpc-status");
  return it == r.headers.end() ? "" : it->second;
}

class H2Test : public ::testing::Test {
 protected:
  void make(H2Limits limits = {}) {
    auto c = H2Connection::create(
        [this](H2Connection::Call&& call) -> std::optional<GrpcReply> {
          calls_.push_back(call.path);
          deadlines_.push_back(call.deadline);
          if (call.path == "/t/Echo") {
            return GrpcReply{{}, {call.request}};
          }
          if (call.path == "/t/Many") {
            GrpcReply r;
            for (int i = 0; i < 200; ++i) {
              r.messages.push_back(std::string(64 << 10, static_cast<char>('a' + i % 26)));
            }
            return r;
          }
          if (call.path == "/t/Fail") {
            return GrpcReply{RpcStatus(RpcCode::NOT_FOUND, "caf\xc3\xa9 100%"), {}};
          }
          if (call.path == "/t/Later") {
            later_.push_back(call.stream_id);
            return std::nullopt;
          }
          return GrpcReply{RpcStatus(RpcCode::UNIMPLEMENTED, "unknown method " + call.path), {}};
        },
        limits);
    ASSERT_TRUE(c) << c.error().to_string();
    server_ = std::move(*c);  // the client's first bytes are the preface
  }
  // Moves bytes both ways until neither side has any.
  void exchange(Client& client) {
    for (int i = 0; i < 10000; ++i) {
      std::string up = client.send();
      if (!up.empty()) {
        ASSERT_TRUE(server_->recv(up));
      }
      server_->produce();
      std::string down(server_->out());
      server_->consume(down.size());
      if (!down.empty()) {
        ASSERT_TRUE(client.recv(down));
      }
      if (up.empty() && down.empty()) {
        return;
      }
    }
    FAIL() << "no end to the exchange";
  }

  std::unique_ptr<H2Connection> server_;
  std::vector<std::string> calls_;
  std::vector<std::optional<Clock::time_point>> deadlines_;
  std::vector<int32_t> later_;
};

TEST_F(H2Test, UnaryCall) {
  make();
  Client c;
  int32_t id = c.call("/t/Echo", framed("ping"));
  exchange(c);
  auto& r = c.resp[id];
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(r.error, 0u);
  EXPECT_EQ(r.headers[":status"], "200");
  EXPECT_EQ(r.headers["content-type"], "application/grpc");
  EXPECT_EQ(r.data, framed("ping"));
  EXPECT_EQ(r.trailers["grpc-status"], "0");
  EXPECT_EQ(server_->open_streams(), 0u);
  EXPECT_FALSE(server_->done());  // the connection stays for more calls
}

TEST_F(H2Test, ErrorsAreTrailersOnlyWithPercentEncodedMessage) {
  make();
  Client c;
  int32_t fail = c.call("/t/Fail", framed(""));
  int32_t unknown = c.call("/t/Nope", framed(""));
  exchange(c);
  EXPECT_TRUE(c.resp[fail].closed);
  EXPECT_EQ(c.resp[fail].headers["grpc-status"], "5");
  EXPECT_EQ(c.resp[fail].headers["grpc-message"], "caf%C3%A9 100%25");
  EXPECT_TRUE(c.resp[fail].trailers.empty());
  EXPECT_TRUE(c.resp[fail].data.empty());
  EXPECT_EQ(c.resp[unknown].headers["grpc-status"], "12");
  EXPECT_EQ(c.resp[unknown].headers["grpc-message"], "unknown method /t/Nope");
}

TEST_F(H2Test, BadRequestsAnswered) {
  H2Limits limits;
  limits.max_message = 1000;
  make(limits);
  Client c;
  std::string compressed = framed("x");
  compressed[0] = 1;
  int32_t comp = c.call("/t/Echo", compressed);
  int32_t none = c.call("/t/Echo", "");
  int32_t two = c.call("/t/Echo", framed("a") + framed("b"));
  int32_t half = c.call("/t/Echo", framed("abc").substr(0, 6));
  // Over max_message: answered from the prefix, before the request ends.
  int32_t big = c.call("/t/Echo", framed(std::string(1001, 'x')).substr(0, 5), {}, false);
  int32_t wrong_type = c.call("/t/Echo", framed("x"), {{"content-type", "application/json"}});
  int32_t bad_timeout = c.call("/t/Echo", framed("x"), {{"grpc-timeout", "soon"}});
  exchange(c);
  EXPECT_EQ(status_of(c.resp[comp]), "12");
  EXPECT_EQ(status_of(c.resp[none]), "13");
  EXPECT_EQ(status_of(c.resp[two]), "13");
  EXPECT_EQ(status_of(c.resp[half]), "13");
  EXPECT_EQ(status_of(c.resp[big]), "8");
  EXPECT_TRUE(c.resp[big].closed);
  EXPECT_EQ(c.resp[wrong_type].headers[":status"], "415");
  EXPECT_EQ(status_of(c.resp[bad_timeout]), "13");
  EXPECT_TRUE(calls_.empty());
  EXPECT_EQ(server_->open_streams(), 0u);
}

TEST_F(H2Test, LargeStreamFollowsFlowControl) {
  make();
  Client c(16 << 10);  // a 16 KiB stream window: the 12.5 MiB reply needs many updates
  int32_t id = c.call("/t/Many", framed(""));
  exchange(c);
  auto& r = c.resp[id];
  ASSERT_TRUE(r.closed);
  EXPECT_EQ(r.trailers["grpc-status"], "0");
  std::string want;
  for (int i = 0; i < 200; ++i) {
    append_message(want, std::string(64 << 10, static_cast<char>('a' + i % 26)));
  }
  EXPECT_EQ(r.data.size(), want.size());
  EXPECT_TRUE(r.data == want);
}

TEST_F(H2Test, PeerThatNeverReadsIsBounded) {
  H2Limits limits;
  limits.out_high = 64 << 10;
  make(limits);
  Client c(1 << 30);
  // The client sends a big call and many PINGs and reads nothing.
  c.call("/t/Many", framed(""));
  for (int i = 0; i < 500; ++i) {
    c.ping();
  }
  std::string up = c.send();
  size_t fed = 0;
  while (fed < up.size() && server_->wants_read()) {
    size_t n = std::min<size_t>(1000, up.size() - fed);
    ASSERT_TRUE(server_->recv(std::string_view(up).substr(fed, n)));
    fed += n;
    server_->produce();
  }
  server_->produce();
  EXPECT_FALSE(server_->wants_read());
  EXPECT_LT(server_->out().size(), limits.out_high + (32 << 10));
}

TEST_F(H2Test, ManyStreamsAnsweredOutOfOrder) {
  make();
  Client c;
  std::vector<int32_t> ids;
  for (int i = 0; i < 50; ++i) {
    ids.push_back(c.call("/t/Later", framed(std::to_string(i))));
  }
  exchange(c);
  ASSERT_EQ(later_.size(), 50u);
  EXPECT_EQ(server_->open_streams(), 50u);
  for (auto it = later_.rbegin(); it != later_.rend(); ++it) {
    server_->complete(*it, GrpcReply{{}, {"r" + std::to_string(*it)}});
  }
  exchange(c);
  for (auto id : ids) {
    EXPECT_EQ(c.resp[id].data, framed("r" + std::to_string(id)));
    EXPECT_EQ(c.resp[id].trailers["grpc-status"], "0");
  }
  EXPECT_EQ(server_->open_streams(), 0u);
}

TEST_F(H2Test, ClientCancelDropsTheLateReply) {
  make();
  Client c;
  int32_t id = c.call("/t/Later", framed("x"));
  exchange(c);
  ASSERT_EQ(later_.size(), 1u);
  c.rst(id);
  exchange(c);
  EXPECT_EQ(server_->open_streams(), 0u);
  server_->complete(id, GrpcReply{{}, {"late"}});  // the stream is gone: nothing happens
  exchange(c);
  EXPECT_TRUE(c.resp[id].data.empty());
  EXPECT_EQ(c.resp[id].error, static_cast<uint32_t>(NGHTTP2_CANCEL));
}

TEST_F(H2Test, DeadlineAnsweredWhenItPasses) {
  make();
  Client c;
  int32_t id = c.call("/t/Later", framed("x"), {{"grpc-timeout", "5S"}});
  int32_t none = c.call("/t/Later", framed("y"));
  exchange(c);
  ASSERT_EQ(deadlines_.size(), 2u);
  ASSERT_TRUE(deadlines_[0].has_value());
  EXPECT_FALSE(deadlines_[1].has_value());
  auto d = server_->next_deadline();
  ASSERT_TRUE(d);
  server_->expire(*d - 1ms);
  exchange(c);
  EXPECT_FALSE(c.resp[id].closed);
  server_->expire(*d);
  exchange(c);
  EXPECT_EQ(status_of(c.resp[id]), "4");
  server_->complete(id, GrpcReply{{}, {"late"}});  // already answered
  server_->complete(none, GrpcReply{{}, {"ok"}});
  exchange(c);
  EXPECT_TRUE(c.resp[id].data.empty());
  EXPECT_EQ(c.resp[none].data, framed("ok"));
  EXPECT_FALSE(server_->next_deadline());
}

// The deadlines are kept in order: next_deadline is the earliest stream not answered yet,
// expire answers exactly the streams due, and a stream answered, reset by the peer or still
// sending its request leaves or keeps its place as it should.
TEST_F(H2Test, DeadlinesExpireInOrder) {
  make();
  Client c;
  const int32_t s3 = c.call("/t/Later", framed("3"), {{"grpc-timeout", "3S"}});
  const int32_t s1 = c.call("/t/Later", framed("1"), {{"grpc-timeout", "1S"}});
  const int32_t s2 = c.call("/t/Later", framed("2"), {{"grpc-timeout", "2S"}});
  const int32_t gone = c.call("/t/Later", framed("g"), {{"grpc-timeout", "500m"}});
  const int32_t done = c.call("/t/Later", framed("d"), {{"grpc-timeout", "700m"}});
  const int32_t open = c.call("/t/Later", framed("o"), {{"grpc-timeout", "4S"}}, false);
  exchange(c);
  ASSERT_EQ(deadlines_.size(), 5u);  // the open one is not dispatched yet
  const auto d1 = *deadlines_[1];
  const auto d2 = *deadlines_[2];
  const auto d3 = *deadlines_[0];
  EXPECT_LT(d1, d2);
  EXPECT_LT(d2, d3);
  EXPECT_EQ(server_->next_deadline(), deadlines_[3]);  // the 500 ms one
  c.rst(gone);
  exchange(c);
  EXPECT_EQ(server_->next_deadline(), deadlines_[4]);
  server_->complete(done, GrpcReply{{}, {"ok"}});
  exchange(c);
  EXPECT_EQ(c.resp[done].data, framed("ok"));
  EXPECT_EQ(server_->next_deadline(), d1);
  server_->expire(d2);  // s1 and s2 are due, s3 and the open one not
  exchange(c);
  EXPECT_EQ(status_of(c.resp[s1]), "4");
  EXPECT_EQ(status_of(c.resp[s2]), "4");
  EXPECT_FALSE(c.resp[s3].closed);
  const auto d4 = server_->next_deadline();
  ASSERT_TRUE(d4);
  EXPECT_EQ(*d4, d3);
  server_->expire(d3 + 1h);  // s3, and the request still being sent
  exchange(c);
  EXPECT_EQ(status_of(c.resp[s3]), "4");
  EXPECT_EQ(status_of(c.resp[open]), "4");
  EXPECT_FALSE(server_->next_deadline());
}

TEST_F(H2Test, GoawayLetsOpenStreamsFinish) {
  make();
  Client c;
  int32_t id = c.call("/t/Later", framed("x"));
  exchange(c);
  server_->goaway();
  exchange(c);
  int32_t after = c.call("/t/Echo", framed("y"));  // the client may not start it
  exchange(c);
  server_->complete(id, GrpcReply{{}, {"done"}});
  exchange(c);
  EXPECT_EQ(c.resp[id].data, framed("done"));
  EXPECT_TRUE(c.resp[after].data.empty());
  EXPECT_EQ(calls_.size(), 1u);
}

TEST_F(H2Test, BadPrefaceBreaksTheConnection) {
  auto c = H2Connection::create([](H2Connection::Call&&) { return std::optional<GrpcReply>(); });
  ASSERT_TRUE(c);
  EXPECT_FALSE((*c)->recv("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_TRUE((*c)->done());
}

}  // namespace
}  // namespace snapshotter
