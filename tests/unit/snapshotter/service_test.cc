// SPDX-License-Identifier: Apache-2.0
// The gRPC service end to end in process: a real server on a unix socket and a real client
// stub, so the codes, messages and streamed List batches are what containerd would see.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "base/unix_socket.h"
#include "snapshots.grpc.pb.h"
#include "snapshotter/server.h"
#include "tests/unit/temp_dir.h"

namespace snapshotter {
namespace {

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::open(dir_.sub("root"));
    ASSERT_TRUE(s) << s.error().to_string();
    store_ = std::move(*s);
    service_ = std::make_unique<Service>(*store_, true);
    std::string addr = "unix:" + sock_;
    auto server = Server::start(*service_, addr);
    ASSERT_TRUE(server) << server.error().to_string();
    server_ = std::move(*server);
    stub_ = api::Snapshots::NewStub(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) {
      server_->shutdown(std::chrono::system_clock::now());
    }
  }

  grpc::Status prepare(const std::string& key, const std::string& parent,
                       api::PrepareSnapshotResponse* resp = nullptr,
                       std::map<std::string, std::string> labels = {}) {
    grpc::ClientContext ctx;
    api::PrepareSnapshotRequest req;
    req.set_key(key);
    req.set_parent(parent);
    for (auto& [k, v] : labels) {
      (*req.mutable_labels())[k] = v;
    }
    api::PrepareSnapshotResponse r;
    return stub_->Prepare(&ctx, req, resp != nullptr ? resp : &r);
  }
  grpc::Status commit(const std::string& name, const std::string& key) {
    grpc::ClientContext ctx;
    api::CommitSnapshotRequest req;
    req.set_name(name);
    req.set_key(key);
    google::protobuf::Empty e;
    return stub_->Commit(&ctx, req, &e);
  }
  grpc::Status remove(const std::string& key) {
    grpc::ClientContext ctx;
    api::RemoveSnapshotRequest req;
    req.set_key(key);
    google::protobuf::Empty e;
    return stub_->Remove(&ctx, req, &e);
  }

  cfntest::TempDir dir_{"snapsvc"};
  std::string sock_ = dir_.sub("s.sock");
  std::unique_ptr<Store> store_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<api::Snapshots::Stub> stub_;
};

TEST_F(ServiceTest, PrepareCommitStatMounts) {
  api::PrepareSnapshotResponse p;
  ASSERT_TRUE(prepare("a", "", &p).ok());
  ASSERT_EQ(p.mounts_size(), 1);
  EXPECT_EQ(p.mounts(0).type(), "bind");
  ASSERT_TRUE(commit("c", "a").ok());
  api::PrepareSnapshotResponse top;
  ASSERT_TRUE(prepare("b", "c", &top, {{kVolatileLabel, "1"}}).ok());
  ASSERT_EQ(top.mounts_size(), 1);
  EXPECT_EQ(top.mounts(0).type(), "overlay");
  EXPECT_EQ(top.mounts(0).options(0), "index=off");
  EXPECT_EQ(top.mounts(0).options(1), "volatile");

  grpc::ClientContext ctx;
  api::StatSnapshotRequest sreq;
  sreq.set_key("b");
  api::StatSnapshotResponse sresp;
  ASSERT_TRUE(stub_->Stat(&ctx, sreq, &sresp).ok());
  EXPECT_EQ(sresp.info().name(), "b");
  EXPECT_EQ(sresp.info().parent(), "c");
  EXPECT_EQ(sresp.info().kind(), api::ACTIVE);
  EXPECT_GT(sresp.info().created_at().seconds(), 0);
  EXPECT_EQ(sresp.info().created_at().nanos(), sresp.info().updated_at().nanos());

  grpc::ClientContext mctx;
  api::MountsRequest mreq;
  mreq.set_key("b");
  api::MountsResponse mresp;
  ASSERT_TRUE(stub_->Mounts(&mctx, mreq, &mresp).ok());
  EXPECT_EQ(mresp.mounts(0).options_size(), top.mounts(0).options_size());

  grpc::ClientContext uctx;
  api::UsageRequest ureq;
  ureq.set_key("b");
  api::UsageResponse uresp;
  ASSERT_TRUE(stub_->Usage(&uctx, ureq, &uresp).ok());
  EXPECT_EQ(uresp.inodes(), 1);
}

TEST_F(ServiceTest, ErrorCodes) {
  EXPECT_EQ(prepare("", "").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(prepare("a", "missing").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(prepare("a", "").ok());
  EXPECT_EQ(prepare("a", "").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(prepare("b", "a").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(commit("c", "a").ok());
  ASSERT_TRUE(prepare("b", "c").ok());
  auto st = remove("c");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find("remove"), std::string::npos);
  EXPECT_EQ(commit("c2", "c").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(remove("nope").error_code(), grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext ctx;
  api::UpdateSnapshotRequest ureq;
  ureq.mutable_info()->set_name("b");
  ureq.mutable_update_mask()->add_paths("parent");
  api::UpdateSnapshotResponse uresp;
  EXPECT_EQ(stub_->Update(&ctx, ureq, &uresp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  grpc::ClientContext lctx;
  api::ListSnapshotsRequest lreq;
  lreq.add_filters("name==");
  auto reader = stub_->List(&lctx, lreq);
  api::ListSnapshotsResponse lresp;
  while (reader->Read(&lresp)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceTest, ListStreamsEverythingInBatches) {
  constexpr int kN = 250;
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(
        prepare("k/" + std::to_string(i), "", nullptr, {{"n", std::to_string(i % 2)}}).ok());
  }
  auto list = [&](std::vector<std::string> filters, int* messages) {
    grpc::ClientContext ctx;
    api::ListSnapshotsRequest req;
    for (auto& f : filters) {
      req.add_filters(f);
    }
    auto reader = stub_->List(&ctx, req);
    api::ListSnapshotsResponse resp;
    std::vector<std::string> names;
    *messages = 0;
    while (reader->Read(&resp)) {
      ++*messages;
      for (const auto& i : resp.info()) {
        names.push_back(i.name());
      }
    }
    EXPECT_TRUE(reader->Finish().ok());
    return names;
  };
  int messages = 0;
  EXPECT_EQ(list({}, &messages).size(), static_cast<size_t>(kN));
  EXPECT_EQ(messages, 3);  // 100 + 100 + 50
  EXPECT_EQ(list({"labels.n==1"}, &messages).size(), static_cast<size_t>(kN / 2));
  EXPECT_EQ(list({"name==k/7"}, &messages), std::vector<std::string>{"k/7"});
  EXPECT_TRUE(list({"name==none"}, &messages).empty());
  EXPECT_EQ(messages, 0);
}

// An HTTP/2 frame: 3-byte length, type, flags, stream id.
std::string frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  std::string f;
  auto n = static_cast<uint32_t>(payload.size());
  f += {static_cast<char>(n >> 16),
        static_cast<char>(n >> 8),
        static_cast<char>(n),
        static_cast<char>(type),
        static_cast<char>(flags),
        static_cast<char>(stream >> 24),
        static_cast<char>(stream >> 16),
        static_cast<char>(stream >> 8),
        static_cast<char>(stream)};
  f += payload;
  return f;
}

// HPACK: a literal header field without indexing, new name, no Huffman (short strings).
std::string literal(std::string_view name, std::string_view value) {
  std::string h(1, '\0');
  h += static_cast<char>(name.size());
  h += name;
  h += static_cast<char>(value.size());
  h += value;
  return h;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// A client that opens its flow-control windows wide, asks for many large List answers and
// never reads: the server stops reading it once that connection's output is full, and
// answers everyone else meanwhile.
TEST_F(ServiceTest, PeerThatNeverReadsDoesNotBlockOthers) {
  for (int i = 0; i < 40; ++i) {
    Labels labels{{"big", std::string(3000, 'x')}};
    api::PrepareSnapshotResponse r;
    ASSERT_TRUE(prepare("s" + std::to_string(i), "", &r, labels).ok());
  }
  auto fd = base::connect_unix(sock_, SOCK_STREAM);
  ASSERT_TRUE(fd) << fd.error().to_string();
  ASSERT_EQ(::fcntl(fd->get(), F_SETFL, O_NONBLOCK), 0);
  std::string bytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
  bytes += frame(0x4, 0, 0, std::string("\0\x04", 2) + be32(0x7fffffff));  // INITIAL_WINDOW_SIZE
  bytes += frame(0x8, 0, 0, be32(0x7fffffff - 65535));                     // WINDOW_UPDATE
  std::string headers = literal(":method", "POST") + literal(":scheme", "http") +
                        literal(":path", "/containerd.services.snapshots.v1.Snapshots/List") +
                        literal(":authority", "x") + literal("content-type", "application/grpc");
  for (uint32_t id = 1; id < 200; id += 2) {  // 100 Lists of ~120 KiB each
    bytes += frame(0x1, 0x4, id, headers);
    bytes += frame(0x0, 0x1, id, std::string(5, '\0'));
  }
  size_t sent = 0;
  for (int round = 0; round < 2000 && sent < bytes.size(); ++round) {
    ssize_t n = ::send(fd->get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EAGAIN) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    } else {
      FAIL() << "the server closed the connection: " << std::strerror(errno);
    }
  }
  // 12 MiB of answers wait for this client; Stat and Prepare on another connection go on.
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    api::StatSnapshotRequest req;
    req.set_key("s1");
    api::StatSnapshotResponse resp;
    EXPECT_TRUE(stub_->Stat(&ctx, req, &resp).ok());
    EXPECT_TRUE(prepare("after" + std::to_string(i), "").ok());
  }
  char c;
  EXPECT_GT(::recv(fd->get(), &c, 1, MSG_PEEK), 0);  // answers are waiting, unread
}

TEST_F(ServiceTest, ManyConcurrentCallsOnManyConnections) {
  ASSERT_TRUE(prepare("base", "").ok());
  ASSERT_TRUE(commit("c", "base").ok());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      // Each thread its own channel: its own connection.
      grpc::ChannelArguments args;
      args.SetInt("grpc.channel_id", t);  // no sharing of subchannels between threads
      auto stub = api::Snapshots::NewStub(
          grpc::CreateCustomChannel("unix:" + sock_, grpc::InsecureChannelCredentials(), args));
      for (int i = 0; i < 20; ++i) {
        grpc::ClientContext ctx;
        api::PrepareSnapshotRequest req;
        req.set_key("k" + std::to_string(t) + "-" + std::to_string(i));
        req.set_parent("c");
        api::PrepareSnapshotResponse resp;
        grpc::ClientContext sctx;
        api::StatSnapshotRequest sreq;
        sreq.set_key("c");
        api::StatSnapshotResponse sresp;
        if (stub->Prepare(&ctx, req, &resp).ok() && stub->Stat(&sctx, sreq, &sresp).ok()) {
          ++ok;
        }
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  EXPECT_EQ(ok.load(), 160);
}

// A worker writes the reply of the call it ran on the connection itself: a client that
// goes away while its calls run (some of them past a 1 us deadline, which the loop answers
// first) leaves the workers a dead connection, and the server goes on for the others.
TEST_F(ServiceTest, ClientGoneWhileItsCallsRun) {
  for (int round = 0; round < 4; ++round) {
    auto fd = base::connect_unix(sock_, SOCK_STREAM);
    ASSERT_TRUE(fd) << fd.error().to_string();
    std::string bytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    bytes += frame(0x4, 0, 0, "");  // SETTINGS
    for (uint32_t i = 0; i < 40; ++i) {
      std::string headers =
          literal(":method", "POST") + literal(":scheme", "http") +
          literal(":path", "/containerd.services.snapshots.v1.Snapshots/Prepare") +
          literal(":authority", "x") + literal("content-type", "application/grpc");
      if (i % 2 == 1) {
        headers += literal("grpc-timeout", "1u");
      }
      api::PrepareSnapshotRequest req;
      req.set_key("gone-" + std::to_string(round) + "-" + std::to_string(i));
      std::string msg = req.SerializeAsString();
      const uint32_t id = 2 * i + 1;
      bytes += frame(0x1, 0x4, id, headers);
      bytes +=
          frame(0x0, 0x1, id, std::string(1, '\0') + be32(static_cast<uint32_t>(msg.size())) + msg);
    }
    ASSERT_EQ(::send(fd->get(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
    if (round % 2 == 1) {
      char c;
      ASSERT_GT(::recv(fd->get(), &c, 1, 0), 0);  // the server is answering: go now
    }
    fd->reset();
    // The others' calls go on, on the loop (Stat) and on the workers (Prepare).
    api::PrepareSnapshotResponse r;
    ASSERT_TRUE(prepare("after-" + std::to_string(round), "", &r).ok());
    grpc::ClientContext ctx;
    api::StatSnapshotRequest sreq;
    sreq.set_key("after-" + std::to_string(round));
    api::StatSnapshotResponse sresp;
    EXPECT_TRUE(stub_->Stat(&ctx, sreq, &sresp).ok());
  }
  // Every Prepare that ran left a whole snapshot, which Remove takes.
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 40; ++i) {
      const std::string key = "gone-" + std::to_string(round) + "-" + std::to_string(i);
      auto st = remove(key);  // NOT_FOUND: it never ran (or runs still)
      EXPECT_TRUE(st.ok() || st.error_code() == grpc::StatusCode::NOT_FOUND)
          << key << ": " << st.error_message();
    }
  }
}

TEST_F(ServiceTest, UnknownMethodIsUnimplemented) {
  auto channel = grpc::CreateChannel("unix:" + sock_, grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::ClientContext ctx;
  grpc::Slice empty("");
  grpc::ByteBuffer req(&empty, 1);
  grpc::ByteBuffer resp;
  grpc::Status st;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  generic.UnaryCall(&ctx, "/containerd.services.snapshots.v1.Snapshots/Nope", grpc::StubOptions(),
                    &req, &resp, [&](grpc::Status s) {
                      std::lock_guard lk(mu);
                      st = std::move(s);
                      done = true;
                      cv.notify_one();
                    });
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return done; });
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_NE(st.error_message().find("Nope"), std::string::npos);
}

// SIGTERM's path: shutdown lets a call in flight finish before the server goes.
TEST_F(ServiceTest, ShutdownDrainsCallsInFlight) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::atomic<int> started{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      ++started;
      if (prepare("drain-" + std::to_string(t), "").ok()) {
        ++ok;
      }
    });
  }
  while (started.load() < 4) {
    std::this_thread::yield();
  }
  server_->shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  for (auto& th : threads) {
    th.join();
  }
  // Each call either finished (and its snapshot exists) or never reached the server.
  int exists = 0;
  for (int t = 0; t < 4; ++t) {
    exists += store_->stat("drain-" + std::to_string(t)).has_value() ? 1 : 0;
  }
  EXPECT_EQ(ok.load(), exists);
}

TEST(ToGrpc, Codes) {
  EXPECT_EQ(to_grpc(base::Error{ENOENT, "x"}).error_code(), RpcCode::NOT_FOUND);
  EXPECT_EQ(to_grpc(base::Error{EEXIST, "x"}).error_code(), RpcCode::ALREADY_EXISTS);
  EXPECT_EQ(to_grpc(base::Error{EINVAL, "x"}).error_code(), RpcCode::INVALID_ARGUMENT);
  EXPECT_EQ(to_grpc(base::Error{kErrFailedPrecondition, "x"}).error_code(),
            RpcCode::FAILED_PRECONDITION);
  auto other = to_grpc(base::Error{EIO, "disk on fire"});
  EXPECT_EQ(other.error_code(), RpcCode::UNKNOWN);
  EXPECT_EQ(other.error_message(), "disk on fire");
}

}  // namespace
}  // namespace snapshotter
