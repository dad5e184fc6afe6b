// SPDX-License-Identifier: Apache-2.0
// The service's nydus paths, called directly (no socket): the remote-snapshot handshake, the
// bootstrap layer unpacked as usual, a container on the image, and the clear error when the
// labels name no image. The daemon is a stand-in that records binds.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>

#include "snapshotter/service.h"
#include "tests/unit/temp_dir.h"

namespace snapshotter {
namespace {

class RecordingDaemon final : public Daemon {
 public:
  base::Status ensure() override { return {}; }
  base::Result<control::ImageInfo> bind(const control::BindRequest& r) override {
    binds.push_back(r);
    control::ImageInfo i;
    i.mountpoint = r.mountpoint;
    return i;
  }
  base::Status unbind(const control::UnbindRequest& r) override {
    unbinds.push_back(r.mountpoint);
    return {};
  }
  base::Result<std::vector<control::ImageInfo>> list() override {
    std::vector<control::ImageInfo> out;
    for (const auto& b : binds) {
      control::ImageInfo i;
      i.mountpoint = b.mountpoint;
      out.push_back(i);
    }
    return out;
  }
  base::Result<control::PrefetchAnswer> prefetch(const control::PrefetchRequest& r) override {
    std::lock_guard lk(mu);
    prefetches.push_back(r);
    if (prefetch_error) {
      return base::make_error(ENOENT, "bootstrap gone");
    }
    return control::PrefetchAnswer{1, 5};
  }
  std::vector<control::BindRequest> binds;
  std::vector<std::string> unbinds;
  std::mutex mu;  // prefetches: the prefetch thread appends
  std::vector<control::PrefetchRequest> prefetches;
  bool prefetch_error = false;
};

class NydusService : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::open(dir_.sub("root"));
    ASSERT_TRUE(s) << s.error().to_string();
    store_ = std::move(*s);
    daemon_ = std::make_shared<RecordingDaemon>();
    SnapshotFacts facts;
    facts.alive = [](const std::string&) { return true; };
    facts.committed_id = [](const std::string&) { return std::optional<int64_t>(); };
    auto m = ImageMounts::open(store_->root(), daemon_, {}, facts);
    ASSERT_TRUE(m);
    images_ = std::move(*m);
    service_ = std::make_unique<Service>(*store_, false, images_.get());
  }

  RpcStatus prepare(const std::string& key, const std::string& parent, const Labels& labels,
                    api::PrepareSnapshotResponse* resp) {
    api::PrepareSnapshotRequest req;
    req.set_key(key);
    req.set_parent(parent);
    for (const auto& [k, v] : labels) {
      (*req.mutable_labels())[k] = v;
    }
    return service_->Prepare(req, resp);
  }

  // A data layer through the handshake: its committed name.
  void skip_layer(const std::string& chain, const std::string& parent, const Labels& more) {
    Labels l = {{kTargetRefLabel, chain}, {kNydusBlobLabel, "true"}};
    l.insert(more.begin(), more.end());
    api::PrepareSnapshotResponse resp;
    auto st = prepare("ns/1/extract-" + chain, parent, l, &resp);
    ASSERT_EQ(st.error_code(), RpcCode::ALREADY_EXISTS) << st.error_message();
  }

  // The bootstrap layer, unpacked as usual with image/image.boot in it.
  void unpack_bootstrap(const std::string& chain, const std::string& parent, const Labels& l) {
    api::PrepareSnapshotResponse resp;
    std::string key = "ns/1/extract-boot";
    ASSERT_TRUE(prepare(key, parent, l, &resp).ok());
    auto s = store_->get(key);
    ASSERT_TRUE(s);
    std::filesystem::create_directories(fs_path(store_->root(), s->id) + "/image");
    std::ofstream(fs_path(store_->root(), s->id) + "/image/image.boot") << "boot";
    ASSERT_TRUE(store_->commit(chain, key, l));
  }

  cfntest::TempDir dir_{"nydus-service"};
  std::unique_ptr<Store> store_;
  std::shared_ptr<RecordingDaemon> daemon_;
  std::unique_ptr<ImageMounts> images_;
  std::unique_ptr<Service> service_;
};

TEST_F(NydusService, HandshakeCommitsTheTargetWithTheRecordedLabels) {
  Labels rpull = {{kStargzRefLabel, "127.0.0.1:5000/x:nydus"},
                  {kStargzDigestLabel, "sha256:l1"},
                  {"containerd.io/snapshot/remote/urls", ""}};
  skip_layer("sha256:c1", "", rpull);
  auto info = store_->stat("sha256:c1");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, Kind::kCommitted);
  EXPECT_EQ(info->parent, "");
  EXPECT_EQ(info->labels.at(kTargetRefLabel), "sha256:c1");
  EXPECT_EQ(info->labels.at(kImageRefLabel), "127.0.0.1:5000/x:nydus");
  EXPECT_EQ(info->labels.at(kLayerDigestLabel), "sha256:l1");
  EXPECT_FALSE(info->labels.contains("containerd.io/snapshot/remote/urls"));
  // The key Prepare was given is not left behind.
  EXPECT_FALSE(store_->stat("ns/1/extract-sha256:c1"));
  // Again (another pull of the same image): AlreadyExists, nothing new.
  skip_layer("sha256:c1", "", rpull);
  skip_layer("sha256:c2", "sha256:c1", rpull);
  info = store_->stat("sha256:c2");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->parent, "sha256:c1");
}

TEST_F(NydusService, HandshakeWithoutAnImageReferenceIsAClearError) {
  api::PrepareSnapshotResponse resp;
  auto st = prepare("ns/1/extract-1", "",
                    {{kTargetRefLabel, "sha256:c1"}, {kNydusBlobLabel, "true"}}, &resp);
  EXPECT_EQ(st.error_code(), RpcCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find("disable_snapshot_annotations = false"), std::string::npos);
  EXPECT_FALSE(store_->stat("sha256:c1"));
}

TEST_F(NydusService, AContainerGetsTheImageMountAndRemovingTheBootstrapUnbinds) {
  Labels rpull = {{kStargzRefLabel, "127.0.0.1:5000/x:nydus"}};
  skip_layer("sha256:c1", "", rpull);
  skip_layer("sha256:c2", "sha256:c1", rpull);
  Labels boot = rpull;
  boot[kTargetRefLabel] = "sha256:c3";
  boot[kNydusBootstrapLabel] = "true";
  unpack_bootstrap("sha256:c3", "sha256:c2", boot);
  EXPECT_TRUE(daemon_->binds.empty());  // unpacking binds nothing

  api::PrepareSnapshotResponse r1;
  ASSERT_TRUE(prepare("ns/1/ctr1", "sha256:c3", {}, &r1).ok());
  ASSERT_EQ(daemon_->binds.size(), 1U);
  EXPECT_EQ(daemon_->binds[0].reference, "127.0.0.1:5000/x:nydus");
  // The bootstrap the layer unpacked goes with the reference: not downloaded twice.
  EXPECT_NE(daemon_->binds[0].bootstrap.find("/image/image.boot"), std::string::npos);
  EXPECT_EQ(daemon_->binds[0].blob_dir, "");
  const std::string mp = daemon_->binds[0].mountpoint;
  ASSERT_EQ(r1.mounts_size(), 1);
  EXPECT_EQ(r1.mounts(0).type(), "overlay");
  auto s1 = store_->get("ns/1/ctr1");
  ASSERT_TRUE(s1);
  std::vector<std::string> opts(r1.mounts(0).options().begin(), r1.mounts(0).options().end());
  EXPECT_EQ(opts, (std::vector<std::string>{"workdir=" + work_path(store_->root(), s1->id),
                                            "upperdir=" + fs_path(store_->root(), s1->id),
                                            "lowerdir=" + mp}));
  // Mounts answers the same.
  api::MountsRequest mreq;
  mreq.set_key("ns/1/ctr1");
  api::MountsResponse mresp;
  ASSERT_TRUE(service_->Mounts(mreq, &mresp).ok());
  ASSERT_EQ(mresp.mounts_size(), 1);
  EXPECT_EQ(mresp.mounts(0).options(2), "lowerdir=" + mp);

  // A second container and a view share the mount.
  api::PrepareSnapshotResponse r2;
  ASSERT_TRUE(prepare("ns/1/ctr2", "sha256:c3", {}, &r2).ok());
  api::ViewSnapshotRequest vreq;
  vreq.set_key("ns/1/view");
  vreq.set_parent("sha256:c3");
  api::ViewSnapshotResponse vresp;
  ASSERT_TRUE(service_->View(vreq, &vresp).ok());
  ASSERT_EQ(vresp.mounts_size(), 1);
  EXPECT_EQ(vresp.mounts(0).type(), "bind");
  EXPECT_EQ(vresp.mounts(0).source(), mp);
  EXPECT_EQ(daemon_->binds.size(), 1U);
  // The same key again: AlreadyExists, and the count is unchanged.
  api::PrepareSnapshotResponse r3;
  EXPECT_EQ(prepare("ns/1/ctr2", "sha256:c3", {}, &r3).error_code(), RpcCode::ALREADY_EXISTS);

  auto remove = [&](const std::string& key) {
    api::RemoveSnapshotRequest rm;
    rm.set_key(key);
    google::protobuf::Empty e;
    return service_->Remove(rm, &e);
  };
  // The last container going leaves the image mounted for the next one.
  for (const char* key : {"ns/1/ctr1", "ns/1/view", "ns/1/ctr2"}) {
    ASSERT_TRUE(remove(key).ok()) << key;
    images_->drain();
    EXPECT_TRUE(daemon_->unbinds.empty()) << key;
  }
  api::PrepareSnapshotResponse r4;
  ASSERT_TRUE(prepare("ns/1/ctr3", "sha256:c3", {}, &r4).ok());
  EXPECT_EQ(r4.mounts(0).options(2), "lowerdir=" + mp);
  EXPECT_EQ(daemon_->binds.size(), 1U);
  ASSERT_TRUE(remove("ns/1/ctr3").ok());
  // The image's removal (containerd removes its snapshots top down) unbinds it once its
  // bootstrap snapshot goes.
  ASSERT_TRUE(remove("sha256:c3").ok());
  images_->drain();
  EXPECT_EQ(daemon_->unbinds, std::vector<std::string>{mp});
  ASSERT_TRUE(remove("sha256:c2").ok());
  ASSERT_TRUE(remove("sha256:c1").ok());
  images_->drain();
  EXPECT_EQ(daemon_->unbinds, std::vector<std::string>{mp});
}

// Layers committed on a container of the image (a build): each one's Prepare reuses the
// answer for its parent (service.h, below_) and puts the layer above the image; an Update
// that makes a layer a nydus data layer drops the answers kept.
TEST_F(NydusService, LayersCommittedAboveTheImageAreItsOverlayLowers) {
  Labels rpull = {{kStargzRefLabel, "127.0.0.1:5000/x:nydus"}};
  skip_layer("sha256:c1", "", rpull);
  Labels boot = rpull;
  boot[kTargetRefLabel] = "sha256:c2";
  boot[kNydusBootstrapLabel] = "true";
  unpack_bootstrap("sha256:c2", "sha256:c1", boot);
  api::PrepareSnapshotResponse r;
  ASSERT_TRUE(prepare("b/1", "sha256:c2", {}, &r).ok());
  ASSERT_EQ(daemon_->binds.size(), 1U);
  const std::string mp = daemon_->binds[0].mountpoint;
  ASSERT_TRUE(store_->commit("up1", "b/1", {}));
  ASSERT_TRUE(prepare("b/2", "up1", {}, &r).ok());
  ASSERT_TRUE(store_->commit("up2", "b/2", {}));
  auto id = [&](const std::string& name) { return store_->entry(name)->id; };
  auto lowers = [&](const std::string& key, const std::string& parent) {
    api::PrepareSnapshotResponse resp;
    EXPECT_TRUE(prepare(key, parent, {}, &resp).ok()) << key;
    return resp.mounts_size() == 1 ? resp.mounts(0).options(2) : std::string();
  };
  const std::string up1 = fs_path(store_->root(), id("up1"));
  const std::string up2 = fs_path(store_->root(), id("up2"));
  EXPECT_EQ(lowers("ctr/1", "up2"), "lowerdir=" + up2 + ":" + up1 + ":" + mp);
  EXPECT_EQ(lowers("ctr/2", "up2"), "lowerdir=" + up2 + ":" + up1 + ":" + mp);  // kept
  api::UpdateSnapshotRequest u;
  u.mutable_info()->set_name("up1");
  (*u.mutable_info()->mutable_labels())[kNydusBlobLabel] = "true";
  u.mutable_update_mask()->add_paths(std::string("labels.") + kNydusBlobLabel);
  api::UpdateSnapshotResponse ur;
  ASSERT_TRUE(service_->Update(u, &ur).ok());
  EXPECT_EQ(lowers("ctr/3", "up2"), "lowerdir=" + up2 + ":" + mp);
  EXPECT_EQ(daemon_->binds.size(), 1U);
}

TEST_F(NydusService, TheBootstrapWithAContainerOnItStaysMounted) {
  Labels rpull = {{kStargzRefLabel, "127.0.0.1:5000/x:nydus"}};
  skip_layer("sha256:c1", "", rpull);
  Labels boot = rpull;
  boot[kNydusBootstrapLabel] = "true";
  unpack_bootstrap("sha256:c2", "sha256:c1", boot);
  api::PrepareSnapshotResponse r1;
  ASSERT_TRUE(prepare("ns/1/ctr1", "sha256:c2", {}, &r1).ok());
  api::RemoveSnapshotRequest rm;
  rm.set_key("sha256:c2");
  google::protobuf::Empty e;
  EXPECT_EQ(service_->Remove(rm, &e).error_code(), RpcCode::FAILED_PRECONDITION);
  images_->drain();
  EXPECT_TRUE(daemon_->unbinds.empty());
}

TEST_F(NydusService, CriDefaultLabelsFailAtTheContainersPrepareToo) {
  // A bootstrap over handshakes whose labels name no image (recorded by an older pull):
  // the container's Prepare fails clearly instead of an empty lower layer.
  api::PrepareSnapshotResponse resp;
  ASSERT_TRUE(prepare("k1", "", {}, &resp).ok());
  ASSERT_TRUE(store_->commit("sha256:c1", "k1", {{kNydusBlobLabel, "true"}}));
  unpack_bootstrap("sha256:c2", "sha256:c1", {{kNydusBootstrapLabel, "true"}});
  api::PrepareSnapshotResponse r;
  auto st = prepare("ns/1/ctr", "sha256:c2", {}, &r);
  EXPECT_EQ(st.error_code(), RpcCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("rpull"), std::string::npos);
  EXPECT_FALSE(store_->stat("ns/1/ctr"));
  EXPECT_TRUE(daemon_->binds.empty());
}

TEST_F(NydusService, OrdinaryImagesAreUntouched) {
  api::PrepareSnapshotResponse resp;
  ASSERT_TRUE(prepare("k1", "", {{kTargetRefLabel, "sha256:x"}}, &resp).ok());
  ASSERT_TRUE(store_->commit("sha256:x", "k1", {}));
  ASSERT_TRUE(prepare("ctr", "sha256:x", {}, &resp).ok());
  EXPECT_TRUE(daemon_->binds.empty());
}

// A pull's Commit of the bootstrap layer (rpull's labels): the image's prefetch list is asked
// of the daemon in the background, with the local bootstrap; nothing is bound.
class PullPrefetch : public NydusService {
 protected:
  void open_with(bool prefetch_at_pull) {
    service_.reset();
    images_.reset();
    SnapshotFacts facts;
    facts.alive = [](const std::string&) { return true; };
    facts.committed_id = [](const std::string&) { return std::optional<int64_t>(); };
    MountPolicy policy;
    policy.prefetch_at_pull = prefetch_at_pull;
    auto m = ImageMounts::open(store_->root(), daemon_, policy, facts);
    ASSERT_TRUE(m);
    images_ = std::move(*m);
    service_ = std::make_unique<Service>(*store_, false, images_.get());
  }
  // containerd's unpack of the bootstrap layer: Prepare, the tar applied, Commit (through
  // the service) with the layer's labels.
  RpcStatus pull_bootstrap(const Labels& labels, int64_t* id) {
    api::PrepareSnapshotResponse resp;
    const std::string key = "ns/1/extract-boot";
    auto st = prepare(key, "sha256:c1", labels, &resp);
    if (!st.ok()) {
      return st;
    }
    auto s = store_->get(key);
    *id = s ? s->id : -1;
    std::filesystem::create_directories(fs_path(store_->root(), *id) + "/image");
    std::ofstream(fs_path(store_->root(), *id) + "/image/image.boot") << "boot";
    api::CommitSnapshotRequest c;
    c.set_name("sha256:c2");
    c.set_key(key);
    for (const auto& [k, v] : labels) {
      (*c.mutable_labels())[k] = v;
    }
    google::protobuf::Empty empty;
    return service_->Commit(c, &empty);
  }
  Labels rpull_ = {{kStargzRefLabel, "127.0.0.1:5000/x:nydus"}};
  Labels boot() const {
    Labels l = rpull_;
    l[kTargetRefLabel] = "sha256:c2";
    l[kNydusBootstrapLabel] = "true";
    return l;
  }
  std::vector<control::PrefetchRequest> prefetches() {
    images_->prefetch_drain();
    std::lock_guard lk(daemon_->mu);
    return daemon_->prefetches;
  }
};

TEST_F(PullPrefetch, CommitOfTheBootstrapLayerAsksForThePrefetchList) {
  skip_layer("sha256:c1", "", rpull_);
  int64_t id = 0;
  auto st = pull_bootstrap(boot(), &id);
  ASSERT_TRUE(st.ok()) << st.error_message();
  auto got = prefetches();
  ASSERT_EQ(got.size(), 1U);
  EXPECT_EQ(got[0].reference, "127.0.0.1:5000/x:nydus");
  EXPECT_EQ(got[0].bootstrap, fs_path(store_->root(), id) + "/image/image.boot");
  EXPECT_FALSE(got[0].registry);
  EXPECT_TRUE(daemon_->binds.empty());  // nothing mounted at pull
  // The first container binds as before (the daemon finds the chunks in its cache).
  api::PrepareSnapshotResponse r1;
  ASSERT_TRUE(prepare("ns/1/ctr1", "sha256:c2", {}, &r1).ok());
  EXPECT_EQ(daemon_->binds.size(), 1U);
}

TEST_F(PullPrefetch, TheKnobOffAsksNothing) {
  open_with(false);
  skip_layer("sha256:c1", "", rpull_);
  int64_t id = 0;
  ASSERT_TRUE(pull_bootstrap(boot(), &id).ok());
  EXPECT_TRUE(prefetches().empty());
}

TEST_F(PullPrefetch, OtherCommitsAskNothing) {
  skip_layer("sha256:c1", "", rpull_);
  int64_t id = 0;
  // A bootstrap layer without an image reference (CRI with annotations off; it cannot be
  // bound either).
  Labels no_ref = {{kTargetRefLabel, "sha256:c2"}, {kNydusBootstrapLabel, "true"}};
  ASSERT_TRUE(pull_bootstrap(no_ref, &id).ok());
  // An ordinary layer's Commit, and a container's.
  api::PrepareSnapshotResponse resp;
  ASSERT_TRUE(prepare("k1", "", {{kTargetRefLabel, "sha256:x"}}, &resp).ok());
  api::CommitSnapshotRequest c;
  c.set_name("sha256:x");
  c.set_key("k1");
  (*c.mutable_labels())[kStargzRefLabel] = "127.0.0.1:5000/x:nydus";
  google::protobuf::Empty empty;
  ASSERT_TRUE(service_->Commit(c, &empty).ok());
  EXPECT_TRUE(prefetches().empty());
}

TEST_F(PullPrefetch, ADaemonErrorNeverFailsThePull) {
  daemon_->prefetch_error = true;
  skip_layer("sha256:c1", "", rpull_);
  int64_t id = 0;
  auto st = pull_bootstrap(boot(), &id);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(prefetches().size(), 1U);
  EXPECT_TRUE(store_->stat("sha256:c2"));
}

// eStargz (--enable-stargz): every layer through the handshake, the image bound by reference.
class EstargzService : public NydusService {
 protected:
  void SetUp() override {
    NydusService::SetUp();
    service_ = std::make_unique<Service>(*store_, false, images_.get(), nullptr, true);
  }
  // rpull's labels of layer `digest` of image `ref`, with the digests of this layer and
  // those above it.
  static Labels esgz(const std::string& chain, const std::string& ref, const std::string& digest,
                     const std::string& layers) {
    return {{kTargetRefLabel, chain},
            {kStargzTocDigestLabel, "sha256:toc-" + digest},
            {kStargzRefLabel, ref},
            {kStargzDigestLabel, digest},
            {kStargzLayersLabel, layers}};
  }
  RpcStatus remove(const std::string& key) {
    api::RemoveSnapshotRequest rm;
    rm.set_key(key);
    google::protobuf::Empty e;
    return service_->Remove(rm, &e);
  }
};

TEST_F(NydusService, EstargzLayersAreUnpackedWithoutTheFlag) {
  Labels l = {{kTargetRefLabel, "sha256:c1"},
              {kStargzTocDigestLabel, "sha256:t"},
              {kStargzRefLabel, "reg/x:esgz"}};
  api::PrepareSnapshotResponse resp;
  ASSERT_TRUE(prepare("ns/1/extract-1", "", l, &resp).ok());
  EXPECT_EQ(resp.mounts_size(), 1);
  EXPECT_FALSE(store_->stat("sha256:c1"));  // nothing committed by us
  ASSERT_TRUE(store_->commit("sha256:c1", "ns/1/extract-1", l));
  ASSERT_TRUE(prepare("ns/1/ctr", "sha256:c1", {}, &resp).ok());
  EXPECT_TRUE(daemon_->binds.empty());
}

TEST_F(EstargzService, EveryLayerIsSkippedAndAContainerBindsTheImageByReference) {
  const std::string ref = "127.0.0.1:5000/x:esgz";
  auto l1 = esgz("sha256:c1", ref, "sha256:l1", "sha256:l1,sha256:l2");
  auto l2 = esgz("sha256:c2", ref, "sha256:l2", "sha256:l2");
  api::PrepareSnapshotResponse resp;
  auto st = prepare("ns/1/extract-1", "", l1, &resp);
  ASSERT_EQ(st.error_code(), RpcCode::ALREADY_EXISTS) << st.error_message();
  st = prepare("ns/1/extract-2", "sha256:c1", l2, &resp);
  ASSERT_EQ(st.error_code(), RpcCode::ALREADY_EXISTS) << st.error_message();
  auto info = store_->stat("sha256:c2");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, Kind::kCommitted);
  EXPECT_EQ(info->parent, "sha256:c1");
  EXPECT_EQ(info->labels.at(kEstargzLayerLabel), "true");
  EXPECT_EQ(info->labels.at(kImageRefLabel), ref);
  EXPECT_EQ(info->labels.at(kImageLayersLabel), "sha256:l2");
  EXPECT_TRUE(daemon_->binds.empty());

  api::PrepareSnapshotResponse r1;
  ASSERT_TRUE(prepare("ns/1/ctr1", "sha256:c2", {}, &r1).ok());
  ASSERT_EQ(daemon_->binds.size(), 1U);
  EXPECT_EQ(daemon_->binds[0].reference, ref);
  EXPECT_EQ(daemon_->binds[0].bootstrap, "");  // the daemon makes it from the TOCs
  const std::string mp = daemon_->binds[0].mountpoint;
  ASSERT_EQ(r1.mounts_size(), 1);
  auto s1 = store_->get("ns/1/ctr1");
  ASSERT_TRUE(s1);
  std::vector<std::string> opts(r1.mounts(0).options().begin(), r1.mounts(0).options().end());
  EXPECT_EQ(opts, (std::vector<std::string>{"workdir=" + work_path(store_->root(), s1->id),
                                            "upperdir=" + fs_path(store_->root(), s1->id),
                                            "lowerdir=" + mp}));
  // The second layer's snapshot is the image's: a container leaving keeps it bound, the
  // image's removal unbinds it.
  ASSERT_TRUE(remove("ns/1/ctr1").ok());
  images_->drain();
  EXPECT_TRUE(daemon_->unbinds.empty());
  ASSERT_TRUE(remove("sha256:c2").ok());
  images_->drain();
  EXPECT_EQ(daemon_->unbinds, std::vector<std::string>{mp});
  ASSERT_TRUE(remove("sha256:c1").ok());
}

TEST_F(EstargzService, APlainLayerAboveLazyEstargzLayersIsRefusedClearly) {
  const std::string ref = "127.0.0.1:5000/x:mixed";
  api::PrepareSnapshotResponse resp;
  ASSERT_EQ(prepare("ns/1/extract-1", "",
                    esgz("sha256:c1", ref, "sha256:l1", "sha256:l1,sha256:l2"), &resp)
                .error_code(),
            RpcCode::ALREADY_EXISTS);
  Labels plain = {
      {kTargetRefLabel, "sha256:c2"}, {kStargzRefLabel, ref}, {kStargzDigestLabel, "sha256:l2"}};
  auto st = prepare("ns/1/extract-2", "sha256:c1", plain, &resp);
  EXPECT_EQ(st.error_code(), RpcCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find("layer sha256:l2 of " + ref + " is not eStargz"),
            std::string::npos)
      << st.error_message();
  EXPECT_FALSE(store_->stat("ns/1/extract-2"));
  EXPECT_FALSE(store_->stat("sha256:c2"));
}

TEST_F(EstargzService, AnEstargzLayerAboveAnUnpackedOneIsUnpackedToo) {
  api::PrepareSnapshotResponse resp;
  ASSERT_TRUE(prepare("k1", "", {{kTargetRefLabel, "sha256:c1"}}, &resp).ok());
  ASSERT_TRUE(store_->commit("sha256:c1", "k1", {}));
  auto l2 = esgz("sha256:c2", "reg/x:1", "sha256:l2", "sha256:l2");
  ASSERT_TRUE(prepare("k2", "sha256:c1", l2, &resp).ok());
  ASSERT_TRUE(store_->commit("sha256:c2", "k2", l2));
  api::PrepareSnapshotResponse ctr;
  ASSERT_TRUE(prepare("ctr", "sha256:c2", {}, &ctr).ok());
  EXPECT_TRUE(daemon_->binds.empty());
  ASSERT_EQ(ctr.mounts_size(), 1);
  EXPECT_EQ(ctr.mounts(0).type(), "overlay");
}

TEST_F(EstargzService, ASharedLayerIsBoundForTheImageItIsTheTopOf) {
  // Image A = [l1, l2] pulled first records l1 for A; a container on l1 alone would bind
  // A's two layers: refused until an image ending with l1 is pulled.
  api::PrepareSnapshotResponse resp;
  ASSERT_EQ(
      prepare("e1", "", esgz("sha256:c1", "reg/a:1", "sha256:l1", "sha256:l1,sha256:l2"), &resp)
          .error_code(),
      RpcCode::ALREADY_EXISTS);
  auto st = prepare("ctr", "sha256:c1", {}, &resp);
  EXPECT_EQ(st.error_code(), RpcCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("1 more layer(s) above it"), std::string::npos)
      << st.error_message();
  EXPECT_TRUE(daemon_->binds.empty());
  // Image B = [l1]: its pull records B on the shared layer; A pulled again changes nothing.
  ASSERT_EQ(
      prepare("e2", "", esgz("sha256:c1", "reg/b:1", "sha256:l1", "sha256:l1"), &resp).error_code(),
      RpcCode::ALREADY_EXISTS);
  ASSERT_EQ(
      prepare("e3", "", esgz("sha256:c1", "reg/a:1", "sha256:l1", "sha256:l1,sha256:l2"), &resp)
          .error_code(),
      RpcCode::ALREADY_EXISTS);
  ASSERT_TRUE(prepare("ctr", "sha256:c1", {}, &resp).ok());
  ASSERT_EQ(daemon_->binds.size(), 1U);
  EXPECT_EQ(daemon_->binds[0].reference, "reg/b:1");
}

}  // namespace
}  // namespace snapshotter
