// SPDX-License-Identifier: Apache-2.0
#include "daemon/registry_backend.h"

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/log.h"
#include "daemon/nydus_layers.h"

namespace cfnd {
namespace {

bool is_sha256_hex(const std::string& id) {
  if (id.size() != 64) {
    return false;
  }
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

class RegistryBackend final : public Backend {
 public:
  RegistryBackend(std::shared_ptr<registry::Client> client, registry::Reference ref,
                  std::map<std::string, std::string> renamed, std::shared_ptr<EarlyRanges> early)
      : client_(std::move(client)),
        ref_(ref),
        repo_(std::move(ref)),
        renamed_(std::move(renamed)),
        early_(std::move(early)) {
    repo_.tag.clear();
    repo_.digest.clear();
  }

  void read(const std::string& blob_id, std::span<BackendRead> reads, Deadline deadline) override {
    if (!is_sha256_hex(blob_id)) {
      for (auto& r : reads) {
        r.result = base::errorf(EINVAL, "blob id '{}' is not a sha256 digest", blob_id);
      }
      return;
    }
    // The two request types have the same shape but are separate types (registry/
    // knows nothing of the daemon); the buffers are shared, only results are copied.
    // What the early ranges hold is copied first; only the rest of a read goes out.
    std::vector<registry::RangeRead> rr;
    std::vector<std::size_t> of;  // rr[k] is (the rest of) reads[of[k]]
    rr.reserve(reads.size());
    of.reserve(reads.size());
    for (std::size_t i = 0; i < reads.size(); ++i) {
      std::size_t held = 0;
      if (early_ && !reads[i].refetch) {
        held = early_->take(blob_id, reads[i].offset, reads[i].out, deadline);
      }
      if (held == reads[i].out.size()) {
        reads[i].result = {};
        reads[i].source.clear();
        continue;
      }
      registry::RangeRead r;
      r.offset = reads[i].offset + held;
      r.out = reads[i].out.subspan(held);
      r.no_cache = reads[i].refetch;
      r.avoid_endpoint = reads[i].avoid;
      rr.push_back(std::move(r));
      of.push_back(i);
    }
    if (rr.empty()) {
      return;
    }
    std::optional<registry::DeadlineScope> scope;
    if (deadline != kNoDeadline) {
      scope.emplace(deadline);
    }
    auto [digest, known] = digest_of(blob_id);
    client_->read_blob_ranges(repo_, digest, rr);
    if (!known && !rr.empty() && !rr[0].result && rr[0].result.error().code == ENOENT) {
      // No layer sha256:<id>: the manifest may name the blob's layer by annotation (the
      // snapshotter's binds hand over the bootstrap, so the manifest was not read).
      if (auto renamed = look_up_renamed(blob_id)) {
        for (auto& r : rr) {
          r.result = {};
          r.endpoint.clear();
        }
        client_->read_blob_ranges(repo_, *renamed, rr);
      }
    }
    for (std::size_t k = 0; k < rr.size(); ++k) {
      reads[of[k]].result = std::move(rr[k].result);
      reads[of[k]].source = std::move(rr[k].endpoint);
    }
  }

  [[nodiscard]] std::string describe() const override {
    return "registry:" + repo_.host + "/" + repo_.repository;
  }

 private:
  // The layer digest of blob_id and whether it is settled (from the manifest).
  std::pair<std::string, bool> digest_of(const std::string& blob_id) {
    std::lock_guard lk(mu_);
    if (auto it = renamed_.find(blob_id); it != renamed_.end()) {
      return {it->second, true};
    }
    return {"sha256:" + blob_id, looked_up_};
  }

  // Resolve the image's manifest once (serialised; a failed resolve is tried again by a
  // later read) and learn its renamed blob layers.
  std::optional<std::string> look_up_renamed(const std::string& blob_id) {
    std::lock_guard lk(resolve_mu_);
    {
      std::lock_guard g(mu_);
      if (auto it = renamed_.find(blob_id); it != renamed_.end()) {
        return it->second;
      }
      if (looked_up_) {
        return std::nullopt;
      }
    }
    auto resolved = client_->resolve(ref_);
    if (!resolved) {
      spdlog::warn("{}: blob {} not found and the manifest not read: {}", ref_.to_string(), blob_id,
                   resolved.error().to_string());
      return std::nullopt;
    }
    std::map<std::string, std::string> found;
    if (auto layers = nydus_layers(resolved->get())) {
      found = renamed_blob_layers(*layers);
    }
    std::lock_guard g(mu_);
    looked_up_ = true;
    for (auto& [id, digest] : found) {
      spdlog::info("{}: blob {} is layer {} ({})", ref_.to_string(), id, digest,
                   kAnnotationNydusBlobDigest);
      renamed_.emplace(id, digest);
    }
    if (auto it = renamed_.find(blob_id); it != renamed_.end()) {
      return it->second;
    }
    return std::nullopt;
  }

  std::shared_ptr<registry::Client> client_;  // shared by all backends of the program
  const registry::Reference ref_;             // the image (tag or digest): its manifest
  registry::Reference repo_;                  // the repository: its blobs
  std::mutex resolve_mu_;                     // one manifest resolve at a time
  std::mutex mu_;
  std::map<std::string, std::string> renamed_;  // blob id -> layer digest
  bool looked_up_ = false;                      // the manifest was read
  // Uses *client_: declared after it, so destroyed (its fetches waited for) first.
  std::shared_ptr<EarlyRanges> early_;
};

}  // namespace

std::unique_ptr<Backend> make_registry_backend(std::shared_ptr<registry::Client> client,
                                               registry::Reference ref,
                                               std::map<std::string, std::string> renamed,
                                               std::shared_ptr<EarlyRanges> early) {
  return std::make_unique<RegistryBackend>(std::move(client), std::move(ref), std::move(renamed),
                                           std::move(early));
}

}  // namespace cfnd
