// SPDX-License-Identifier: Apache-2.0
// containerd's snapshots.v1 gRPC service over a Store. Store errors become gRPC codes the
// way containerd's errdefs.ToGRPC maps them (ENOENT NotFound, EEXIST AlreadyExists, EINVAL
// InvalidArgument, kErrFailedPrecondition FailedPrecondition, anything else Unknown), with
// the error text as the message.
#pragma once

#include <grpcpp/grpcpp.h>

#include "base/result.h"
#include "snapshots.grpc.pb.h"
#include "snapshotter/store.h"

namespace snapshotter {

namespace api = ::containerd::services::snapshots::v1;

[[nodiscard]] grpc::Status to_grpc(const base::Error& e);

class Service final : public api::Snapshots::Service {
 public:
  // store must outlive the service. index_off: pass index=off on overlay mounts.
  Service(Store& store, bool index_off) : store_(store), index_off_(index_off) {}

  grpc::Status Prepare(grpc::ServerContext* ctx, const api::PrepareSnapshotRequest* req,
                       api::PrepareSnapshotResponse* resp) override;
  grpc::Status View(grpc::ServerContext* ctx, const api::ViewSnapshotRequest* req,
                    api::ViewSnapshotResponse* resp) override;
  grpc::Status Mounts(grpc::ServerContext* ctx, const api::MountsRequest* req,
                      api::MountsResponse* resp) override;
  grpc::Status Commit(grpc::ServerContext* ctx, const api::CommitSnapshotRequest* req,
                      google::protobuf::Empty* resp) override;
  grpc::Status Remove(grpc::ServerContext* ctx, const api::RemoveSnapshotRequest* req,
                      google::protobuf::Empty* resp) override;
  grpc::Status Stat(grpc::ServerContext* ctx, const api::StatSnapshotRequest* req,
                    api::StatSnapshotResponse* resp) override;
  grpc::Status Update(grpc::ServerContext* ctx, const api::UpdateSnapshotRequest* req,
                      api::UpdateSnapshotResponse* resp) override;
  grpc::Status List(grpc::ServerContext* ctx, const api::ListSnapshotsRequest* req,
                    grpc::ServerWriter<api::ListSnapshotsResponse>* writer) override;
  grpc::Status Usage(grpc::ServerContext* ctx, const api::UsageRequest* req,
                     api::UsageResponse* resp) override;
  grpc::Status Cleanup(grpc::ServerContext* ctx, const api::CleanupRequest* req,
                       google::protobuf::Empty* resp) override;

 private:
  template <typename Resp>
  void add_mounts(const Snapshot& s, Resp* resp) const;

  Store& store_;
  bool index_off_;
};

}  // namespace snapshotter
