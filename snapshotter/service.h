// SPDX-License-Identifier: Apache-2.0
// containerd's snapshots.v1 gRPC service over a Store. Store errors become gRPC codes the
// way containerd's errdefs.ToGRPC maps them (ENOENT NotFound, EEXIST AlreadyExists, EINVAL
// InvalidArgument, kErrFailedPrecondition FailedPrecondition, anything else Unknown), with
// the error text as the message.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "snapshots.pb.h"
#include "snapshotter/image_mounts.h"
#include "snapshotter/metrics.h"
#include "snapshotter/nydus.h"
#include "snapshotter/rpc_status.h"
#include "snapshotter/store.h"

namespace snapshotter {

namespace api = ::containerd::services::snapshots::v1;

[[nodiscard]] RpcStatus to_grpc(const base::Error& e);

// The handlers, one per RPC of snapshots.v1, without a transport: snapshotter/server.h
// serves them on a socket; tests call them directly. Thread-safe (the store and the image
// mounts are).
class Service {
 public:
  // store (and images, when given) must outlive the service. index_off: pass index=off on
  // overlay mounts. images: nydus image mounts; null: nydus images are refused at Prepare.
  // metrics (when given) must outlive the service: every call's time is recorded there.
  // enable_stargz (--enable-stargz): eStargz layers go through the handshake and their
  // images are bound by reference; otherwise containerd unpacks them.
  Service(Store& store, bool index_off, ImageMounts* images = nullptr,
          OperationMetrics* metrics = nullptr, bool enable_stargz = false)
      : store_(store),
        index_off_(index_off),
        images_(images),
        metrics_(metrics),
        enable_stargz_(enable_stargz) {}

  RpcStatus Prepare(const api::PrepareSnapshotRequest& req, api::PrepareSnapshotResponse* resp);
  RpcStatus View(const api::ViewSnapshotRequest& req, api::ViewSnapshotResponse* resp);
  RpcStatus Mounts(const api::MountsRequest& req, api::MountsResponse* resp);
  RpcStatus Commit(const api::CommitSnapshotRequest& req, google::protobuf::Empty* resp);
  RpcStatus Remove(const api::RemoveSnapshotRequest& req, google::protobuf::Empty* resp);
  RpcStatus Stat(const api::StatSnapshotRequest& req, api::StatSnapshotResponse* resp);
  RpcStatus Update(const api::UpdateSnapshotRequest& req, api::UpdateSnapshotResponse* resp);
  // The matching infos in the batches the server streams: at most kListBatch infos or about
  // kListBatchBytes each (gRPC's message limit is 4 MiB); none when nothing matches.
  RpcStatus List(const api::ListSnapshotsRequest& req,
                 std::vector<api::ListSnapshotsResponse>* batches);
  RpcStatus Usage(const api::UsageRequest& req, api::UsageResponse* resp);
  RpcStatus Cleanup(const api::CleanupRequest& req, google::protobuf::Empty* resp);

  static constexpr size_t kListBatch = 100;
  static constexpr size_t kListBatchBytes = 1 << 20;

 private:
  template <typename Resp>
  void add_mounts(const Snapshot& s, Resp* resp) const;
  template <typename Resp>
  void add_image_mounts(const Snapshot& s, const NydusImage& image, const std::string& mountpoint,
                        Resp* resp) const;
  // Prepare and View: the handshake, a snapshot on a nydus image, or an ordinary one.
  template <typename Resp>
  RpcStatus create(std::string_view rpc, Kind kind, const std::string& key,
                   const std::string& parent, Labels labels, Resp* resp);
  RpcStatus handshake(const std::string& key, const std::string& parent, const Labels& labels,
                      LayerKind kind);
  // Whether the committed snapshot `name` is an eStargz handshake.
  [[nodiscard]] bool is_estargz_layer(const std::string& name);
  // The nydus image below a snapshot whose parent is `parent` (nullopt: none).
  [[nodiscard]] base::Result<std::optional<NydusImage>> image_below(const std::string& parent);
  // Update changed labels, which image_below reads: its answers are dropped.
  void labels_changed();
  [[nodiscard]] std::string bootstrap_path(int64_t id) const;
  // After a Commit: when it committed a nydus image's bootstrap layer with the image's
  // reference in its labels, queue the image's prefetch list (ImageMounts::prefetch).
  void prefetch_at_pull(const std::string& name,
                        const google::protobuf::Map<std::string, std::string>& labels);

  Store& store_;
  bool index_off_;
  ImageMounts* images_;
  OperationMetrics* metrics_;
  bool enable_stargz_;

  // image_below's answers by the parent's id. They depend only on committed snapshots: the
  // chain below a committed snapshot never changes, ids are never reused, and a committed
  // snapshot's files (the bootstrap) are fixed; its labels are not (Update): each Update
  // bumps below_gen_ and empties the map, and an answer computed across one is not kept.
  // Without it every Prepare on a 50-layer chain read 50 rows, their labels and 50 stats.
  static constexpr size_t kBelowMax = 65536;  // then emptied: answers are cheap to redo
  std::mutex below_mu_;
  uint64_t below_gen_ = 0;
  std::unordered_map<int64_t, std::optional<NydusImage>> below_;
};

}  // namespace snapshotter
