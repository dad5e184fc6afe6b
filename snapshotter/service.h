// SPDX-License-Identifier: Apache-2.0
// containerd's snapshots.v1 gRPC service over a Store. Store errors become gRPC codes the
// way containerd's errdefs.ToGRPC maps them (ENOENT NotFound, EEXIST AlreadyExists, EINVAL
// InvalidArgument, kErrFailedPrecondition FailedPrecondition, anything else Unknown), with
// the error text as the message.
#pragma once

#include <grpcpp/grpcpp.h>

#include "base/result.h"
#include "snapshots.grpc.pb.h"
#include "snapshotter/image_mounts.h"
#include "snapshotter/nydus.h"
#include "snapshotter/store.h"

namespace snapshotter {

namespace api = ::containerd::services::snapshots::v1;

[[nodiscard]] grpc::Status to_grpc(const base::Error& e);

class Service final : public api::Snapshots::Service {
 public:
  // store (and images, when given) must outlive the service. index_off: pass index=off on
  // overlay mounts. images: nydus image mounts; null: nydus images are refused at Prepare.
  Service(Store& store, bool index_off, ImageMounts* images = nullptr)
      : store_(store), index_off_(index_off), images_(images) {}

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
  template <typename Resp>
  void add_image_mounts(const Snapshot& s, const NydusImage& image, const std::string& mountpoint,
                        Resp* resp) const;
  // Prepare and View: the handshake, a snapshot on a nydus image, or an ordinary one.
  template <typename Resp>
  grpc::Status create(std::string_view rpc, Kind kind, const std::string& key,
                      const std::string& parent, Labels labels, Resp* resp);
  grpc::Status handshake(const std::string& key, const std::string& parent, const Labels& labels);
  // The nydus image below a snapshot whose parent is `parent` (nullopt: none).
  [[nodiscard]] base::Result<std::optional<NydusImage>> image_below(const std::string& parent);
  [[nodiscard]] std::string bootstrap_path(int64_t id) const;

  Store& store_;
  bool index_off_;
  ImageMounts* images_;
};

}  // namespace snapshotter
