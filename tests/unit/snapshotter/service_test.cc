// SPDX-License-Identifier: Apache-2.0
// The gRPC service end to end in process: a real server on a unix socket and a real client
// stub, so the codes, messages and streamed List batches are what containerd would see.
#include <gtest/gtest.h>

#include <algorithm>

#include <grpcpp/grpcpp.h>

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
    std::string addr = "unix:" + dir_.sub("s.sock");
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
