// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/service.h"

#include <sys/stat.h>

#include <chrono>

#include <spdlog/spdlog.h>

#include "base/log.h"

namespace snapshotter {
namespace {

Labels labels_from(const google::protobuf::Map<std::string, std::string>& m) {
  return Labels(m.begin(), m.end());
}

void set_time(google::protobuf::Timestamp* t, int64_t ns) {
  int64_t s = ns / 1000000000;
  int64_t n = ns % 1000000000;
  if (n < 0) {
    n += 1000000000;
    --s;
  }
  t->set_seconds(s);
  t->set_nanos(static_cast<int32_t>(n));
}

void to_proto(const Info& i, api::Info* out) {
  out->set_name(i.name);
  out->set_parent(i.parent);
  switch (i.kind) {
    case Kind::kView:
      out->set_kind(api::VIEW);
      break;
    case Kind::kActive:
      out->set_kind(api::ACTIVE);
      break;
    case Kind::kCommitted:
      out->set_kind(api::COMMITTED);
      break;
  }
  set_time(out->mutable_created_at(), i.created_ns);
  set_time(out->mutable_updated_at(), i.updated_ns);
  auto* labels = out->mutable_labels();
  for (const auto& [k, v] : i.labels) {
    (*labels)[k] = v;
  }
}

// Errors that are the caller's (not found, exists, bad argument) are logged at debug; the
// rest once per second at error.
RpcStatus fail(std::string_view rpc, const base::Error& e) {
  RpcStatus st = to_grpc(e);
  if (st.error_code() == RpcCode::UNKNOWN) {
    static base::RateLimit rl;
    if (rl.allow()) {
      spdlog::error("{}: {}", rpc, e.to_string());
    }
  } else {
    spdlog::debug("{}: {}", rpc, e.to_string());
  }
  return st;
}

// One debug line as a call starts and one as it ends, with its time (the cold-start
// timeline of docs/benchmarks.md reads them).
class CallLog {
 public:
  CallLog(std::string_view rpc, const std::string& key)
      : on_(spdlog::should_log(spdlog::level::debug)), rpc_(rpc), key_(key) {
    if (on_) {
      start_ = std::chrono::steady_clock::now();
      spdlog::debug("{} {}: start", rpc_, key_);
    }
  }
  CallLog(const CallLog&) = delete;
  CallLog& operator=(const CallLog&) = delete;
  ~CallLog() {
    if (on_) {
      const std::chrono::duration<double, std::milli> ms =
          std::chrono::steady_clock::now() - start_;
      spdlog::debug("{} {}: done in {:.1f} ms", rpc_, key_, ms.count());
    }
  }

 private:
  bool on_;
  std::string_view rpc_;
  const std::string& key_;
  std::chrono::steady_clock::time_point start_{};
};

}  // namespace

RpcStatus to_grpc(const base::Error& e) {
  RpcCode code = RpcCode::UNKNOWN;
  switch (e.code) {
    case ENOENT:
      code = RpcCode::NOT_FOUND;
      break;
    case EEXIST:
      code = RpcCode::ALREADY_EXISTS;
      break;
    case EINVAL:
      code = RpcCode::INVALID_ARGUMENT;
      break;
    case kErrFailedPrecondition:
      code = RpcCode::FAILED_PRECONDITION;
      break;
    default:
      break;
  }
  return RpcStatus(code, e.message);
}

template <typename Resp>
void Service::add_mounts(const Snapshot& s, Resp* resp) const {
  MountFlags flags{index_off_, s.volatile_};
  for (auto& m : build_mounts(store_.root(), s.kind, s.id, s.parent_ids, flags)) {
    auto* pm = resp->add_mounts();
    pm->set_type(std::move(m.type));
    pm->set_source(std::move(m.source));
    for (auto& o : m.options) {
      pm->add_options(std::move(o));
    }
  }
}

template <typename Resp>
void Service::add_image_mounts(const Snapshot& s, const NydusImage& image,
                               const std::string& mountpoint, Resp* resp) const {
  MountFlags flags{index_off_, s.volatile_};
  for (auto& m :
       build_image_mounts(store_.root(), s.kind, s.id, image.upper_lowers, mountpoint, flags)) {
    auto* pm = resp->add_mounts();
    pm->set_type(std::move(m.type));
    pm->set_source(std::move(m.source));
    for (auto& o : m.options) {
      pm->add_options(std::move(o));
    }
  }
}

std::string Service::bootstrap_path(int64_t id) const {
  return fs_path(store_.root(), id) + "/" + kBootstrapInLayer;
}

base::Result<std::optional<NydusImage>> Service::image_below(const std::string& parent) {
  if (parent.empty()) {
    return std::optional<NydusImage>();
  }
  // A missing parent is the store's to report, in containerd's words.
  auto head = store_.entry(parent);
  if (!head) {
    if (head.error().code == ENOENT) {
      return std::optional<NydusImage>();
    }
    return base::Unexpected(head.error());
  }
  const int64_t id = head->id;
  auto has_bootstrap = [&](int64_t i) {
    struct stat st {};
    return ::stat(bootstrap_path(i).c_str(), &st) == 0 && S_ISREG(st.st_mode);
  };
  uint64_t gen = 0;
  {
    std::lock_guard lk(below_mu_);
    if (auto it = below_.find(id); it != below_.end()) {
      return it->second;
    }
    gen = below_gen_;
    // An ordinary layer (no handshake or nydus label, no bootstrap file) on a parent whose
    // answer is known: find_image passes over it, so the answer is the parent's, with this
    // layer as the nearest overlay lower above the image. This is each Prepare of a chain
    // being unpacked (its parent is the layer committed just before).
    auto below = below_.find(head->parent_id);
    if (below != below_.end() && is_ordinary_layer(head->labels) && !has_bootstrap(id)) {
      std::optional<NydusImage> image = below->second;
      if (image) {
        image->upper_lowers.insert(image->upper_lowers.begin(), id);
      }
      if (below_.size() >= kBelowMax) {
        below_.clear();
      }
      below_.emplace(id, image);
      return image;
    }
  }
  auto chain = store_.lineage(parent);
  if (!chain) {
    if (chain.error().code == ENOENT) {
      return std::optional<NydusImage>();
    }
    return base::Unexpected(chain.error());
  }
  auto image = find_image(*chain, has_bootstrap);
  // Only an answer about the snapshot asked for (not one made anew under the same name
  // meanwhile), and not an error: those are computed again.
  if (image && !chain->empty() && chain->front().id == id) {
    std::lock_guard lk(below_mu_);
    if (gen == below_gen_) {
      if (below_.size() >= kBelowMax) {
        below_.clear();
      }
      below_.emplace(id, *image);
    }
  }
  return image;
}

void Service::labels_changed() {
  std::lock_guard lk(below_mu_);
  ++below_gen_;
  below_.clear();
}

bool Service::is_estargz_layer(const std::string& name) {
  if (name.empty()) {
    return false;
  }
  auto info = store_.stat(name);
  return info && info->kind == Kind::kCommitted && is_estargz_handshake(info->labels);
}

RpcStatus Service::handshake(const std::string& key, const std::string& parent,
                             const Labels& labels, LayerKind kind) {
  RemoteLayer r = remote_layer(labels);
  if (r.image_ref.empty()) {
    return fail("prepare", base::make_error(kErrFailedPrecondition, kNoReferenceHint).value());
  }
  auto exists = [&] {
    return RpcStatus(RpcCode::ALREADY_EXISTS,
                     "target snapshot \"" + r.target + "\" already exists");
  };
  if (auto have = store_.stat(r.target)) {
    // An eStargz layer shared by two images records the reference of an image that ends
    // with it when one is pulled (a container on that image binds that reference).
    if (kind == LayerKind::kEstargz && have->kind == Kind::kCommitted &&
        is_estargz_handshake(have->labels) && !is_top_layer(have->labels) && is_top_layer(labels)) {
      Info in;
      in.name = r.target;
      in.labels = handshake_labels(labels, r, kind);
      auto u = store_.update(in, {});
      labels_changed();
      if (!u) {
        return fail("prepare", u.error());
      }
      spdlog::info("eStargz layer {} ({}): now recorded for {}, the image it is the top of",
                   r.layer_digest, r.target, r.image_ref);
    }
    return exists();
  }
  auto s = store_.create(Kind::kActive, key, parent, {});
  if (!s) {
    return fail("prepare", s.error());
  }
  auto st = store_.commit(r.target, key, handshake_labels(labels, r, kind));
  if (!st) {
    (void)store_.remove(key);
    if (st.error().code == EEXIST) {
      return exists();
    }
    return fail("prepare", st.error());
  }
  spdlog::debug("{} layer {} of {} skipped ({})",
                kind == LayerKind::kEstargz ? "eStargz" : "nydus data", r.layer_digest, r.image_ref,
                r.target);
  return exists();
}

template <typename Resp>
RpcStatus Service::create(std::string_view rpc, Kind kind, const std::string& key,
                          const std::string& parent, Labels labels, Resp* resp) {
  const LayerKind lk =
      kind == Kind::kActive ? classify_prepare(labels, enable_stargz_) : LayerKind::kPlain;
  if (lk == LayerKind::kNydusBlob) {
    return handshake(key, parent, labels, lk);
  }
  // Only a layer's Prepare (containerd's pull) asks the store about its parent here: a
  // container's Prepare or a View costs no extra lookup.
  const bool layer_prepare = kind == Kind::kActive && labels.contains(kTargetRefLabel);
  const bool on_estargz = layer_prepare && is_estargz_layer(parent);
  if (lk == LayerKind::kEstargz) {
    if (parent.empty() || on_estargz) {
      return handshake(key, parent, labels, lk);
    }
    // A layer below was unpacked (plain gzip): containerd downloads every layer above it
    // anyway, so this one is unpacked too.
    spdlog::info("eStargz layer {} of {} is above an unpacked layer: unpacked as usual",
                 remote_layer(labels).layer_digest, remote_layer(labels).image_ref);
  } else if (on_estargz) {
    // A layer to unpack (containerd's pull) on eStargz layers that were not downloaded:
    // its tar would be applied over an empty tree, and the image cannot be bound lazily
    // with a layer that is not eStargz (docs/estargz.md).
    RemoteLayer r = remote_layer(labels);
    return fail("prepare",
                base::errorf(kErrFailedPrecondition,
                             "layer {} of {} is not eStargz (no {} label) but the layers "
                             "below it are, served lazily: an image that mixes plain gzip "
                             "layers above eStargz ones is refused with --enable-stargz "
                             "(make every layer eStargz, e.g. with `ctr-remote image "
                             "optimize`, or serve it without --enable-stargz)",
                             r.layer_digest.empty() ? "?" : r.layer_digest,
                             r.image_ref.empty() ? "the image" : r.image_ref, kStargzTocDigestLabel)
                    .value());
  }
  auto image = image_below(parent);
  if (!image) {
    return fail(rpc, image.error());
  }
  if (!*image) {
    auto s = store_.create(kind, key, parent, std::move(labels));
    if (!s) {
      return fail(rpc, s.error());
    }
    add_mounts(*s, resp);
    return RpcStatus::OK;
  }
  if (images_ == nullptr) {
    return fail(rpc, base::make_error(EOPNOTSUPP, "nydus images are not enabled").value());
  }
  if (validate_key("key", key) && store_.stat(key)) {
    return fail(rpc, base::errorf(EEXIST, "snapshot {} already exists", key).value());
  }
  // An eStargz image has no bootstrap here: the daemon makes it from the layers' TOCs.
  auto mp = images_->acquire(
      key, **image, (*image)->estargz ? std::string() : bootstrap_path((*image)->bootstrap_id));
  if (!mp) {
    // The daemon's ENOENT / EEXIST / EINVAL are not about the caller's key or parent:
    // containerd must not read them as NotFound / AlreadyExists / InvalidArgument.
    base::Error e = mp.error();
    if (e.code == ENOENT || e.code == EEXIST || e.code == EINVAL ||
        e.code == kErrFailedPrecondition) {
      e.code = EIO;
    }
    return fail(rpc, e.wrap(std::string((*image)->estargz ? "mounting eStargz image "
                                                          : "mounting nydus image ") +
                            (*image)->image_ref));
  }
  auto s = store_.create(kind, key, parent, std::move(labels));
  if (!s) {
    images_->release(key);
    return fail(rpc, s.error());
  }
  add_image_mounts(*s, **image, *mp, resp);
  return RpcStatus::OK;
}

RpcStatus Service::Prepare(const api::PrepareSnapshotRequest& req,
                           api::PrepareSnapshotResponse* resp) {
  const OperationMetrics::Timer timer(metrics_, OperationMetrics::kPrepare);
  const CallLog call("prepare", req.key());
  return create("prepare", Kind::kActive, req.key(), req.parent(), labels_from(req.labels()), resp);
}

RpcStatus Service::View(const api::ViewSnapshotRequest& req, api::ViewSnapshotResponse* resp) {
  const OperationMetrics::Timer timer(metrics_, OperationMetrics::kView);
  const CallLog call("view", req.key());
  return create("view", Kind::kView, req.key(), req.parent(), labels_from(req.labels()), resp);
}

RpcStatus Service::Mounts(const api::MountsRequest& req, api::MountsResponse* resp) {
  const OperationMetrics::Timer timer(metrics_, OperationMetrics::kMounts);
  const CallLog call("mounts", req.key());
  auto s = store_.get(req.key());
  if (!s) {
    return fail("mounts", s.error());
  }
  if (images_ != nullptr) {
    auto use = images_->use_of(req.key());
    if (!use) {
      return fail("mounts", use.error());
    }
    if (*use) {
      auto info = store_.stat(req.key());
      if (!info) {
        return fail("mounts", info.error());
      }
      auto image = image_below(info->parent);
      if (!image) {
        return fail("mounts", image.error());
      }
      if (*image) {
        add_image_mounts(*s, **image, (*use)->mountpoint, resp);
        return RpcStatus::OK;
      }
    }
  }
  add_mounts(*s, resp);
  return RpcStatus::OK;
}

RpcStatus Service::Commit(const api::CommitSnapshotRequest& req, google::protobuf::Empty*) {
  const OperationMetrics::Timer timer(metrics_, OperationMetrics::kCommit);
  const CallLog call("commit", req.key());
  auto st = store_.commit(req.name(), req.key(), labels_from(req.labels()));
  if (!st) {
    return fail("commit", st.error());
  }
  if (images_ != nullptr) {
    images_->release(req.key());
    prefetch_at_pull(req.name(), req.labels());
  }
  return RpcStatus::OK;
}

void Service::prefetch_at_pull(const std::string& name,
                               const google::protobuf::Map<std::string, std::string>& labels) {
  // A pull's Commit of a nydus image's bootstrap layer (rpull's and CRI's carry the
  // layer's annotations and the image reference; `ctr image pull`'s none): the image's
  // prefetch list is fetched now, while containerd finishes the pull and before the first
  // container's bind, which then finds it present or in flight.
  const auto bootstrap = labels.find(kNydusBootstrapLabel);
  if (bootstrap == labels.end() || bootstrap->second != "true") {
    return;
  }
  const RemoteLayer r = remote_layer(labels_from(labels));
  if (r.image_ref.empty()) {
    return;
  }
  auto e = store_.entry(name);
  if (!e) {
    return;  // removed meanwhile
  }
  images_->prefetch(e->id, r.image_ref, bootstrap_path(e->id));
}

RpcStatus Service::Remove(const api::RemoveSnapshotRequest& req, google::protobuf::Empty*) {
  const OperationMetrics::Timer timer(metrics_, OperationMetrics::kRemove);
  const CallLog call("remove", req.key());
  auto st = store_.remove(req.key());
  if (!st) {
    return fail("remove", st.error());
  }
  if (images_ != nullptr) {
    images_->release(req.key());
  }
  return RpcStatus::OK;
}

RpcStatus Service::Stat(const api::StatSnapshotRequest& req, api::StatSnapshotResponse* resp) {
  const OperationMetrics::Timer timer(metrics_, OperationMetrics::kStat);
  auto i = store_.stat(req.key());
  if (!i) {
    return fail("stat", i.error());
  }
  to_proto(*i, resp->mutable_info());
  return RpcStatus::OK;
}

RpcStatus Service::Update(const api::UpdateSnapshotRequest& req,
                          api::UpdateSnapshotResponse* resp) {
  const OperationMetrics::Timer timer(metrics_, OperationMetrics::kUpdate);
  Info in;
  in.name = req.info().name();
  in.labels = labels_from(req.info().labels());
  std::vector<std::string> paths(req.update_mask().paths().begin(),
                                 req.update_mask().paths().end());
  auto i = store_.update(in, paths);
  labels_changed();  // also after a failure: it may have committed before its sync failed
  if (!i) {
    return fail("update", i.error());
  }
  to_proto(*i, resp->mutable_info());
  return RpcStatus::OK;
}

RpcStatus Service::List(const api::ListSnapshotsRequest& req,
                        std::vector<api::ListSnapshotsResponse>* batches) {
  const OperationMetrics::Timer timer(metrics_, OperationMetrics::kList);
  std::vector<std::string> filters(req.filters().begin(), req.filters().end());
  auto f = Filter::parse_all(filters);
  if (!f) {
    return fail("list", f.error());
  }
  auto infos = store_.list(*f);
  if (!infos) {
    return fail("list", infos.error());
  }
  size_t bytes = 0;  // of the last batch
  for (const auto& i : *infos) {
    if (batches->empty() || bytes >= kListBatchBytes ||
        batches->back().info_size() >= static_cast<int>(kListBatch)) {
      batches->emplace_back();
      bytes = 0;
    }
    auto* pi = batches->back().add_info();
    to_proto(i, pi);
    bytes += pi->ByteSizeLong();
  }
  return RpcStatus::OK;
}

RpcStatus Service::Usage(const api::UsageRequest& req, api::UsageResponse* resp) {
  const OperationMetrics::Timer timer(metrics_, OperationMetrics::kUsage);
  auto u = store_.usage(req.key());
  if (!u) {
    return fail("usage", u.error());
  }
  resp->set_size(u->size);
  resp->set_inodes(u->inodes);
  return RpcStatus::OK;
}

RpcStatus Service::Cleanup(const api::CleanupRequest&, google::protobuf::Empty*) {
  const OperationMetrics::Timer timer(metrics_, OperationMetrics::kCleanup);
  auto removed = store_.cleanup();
  if (!removed) {
    return fail("cleanup", removed.error());
  }
  if (!removed->empty()) {
    spdlog::info("cleanup removed {} directories no snapshot owned", removed->size());
  }
  return RpcStatus::OK;
}

}  // namespace snapshotter
