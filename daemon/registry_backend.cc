// SPDX-License-Identifier: Apache-2.0
#include "daemon/registry_backend.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

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
  RegistryBackend(std::shared_ptr<registry::Client> client, registry::Reference repo)
      : client_(std::move(client)), repo_(std::move(repo)) {
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
    std::vector<registry::RangeRead> rr(reads.size());
    for (std::size_t i = 0; i < reads.size(); ++i) {
      rr[i].offset = reads[i].offset;
      rr[i].out = reads[i].out;
      rr[i].no_cache = reads[i].refetch;
      rr[i].avoid_endpoint = reads[i].avoid;
    }
    std::optional<registry::DeadlineScope> scope;
    if (deadline != kNoDeadline) {
      scope.emplace(deadline);
    }
    client_->read_blob_ranges(repo_, "sha256:" + blob_id, rr);
    for (std::size_t i = 0; i < reads.size(); ++i) {
      reads[i].result = std::move(rr[i].result);
      reads[i].source = std::move(rr[i].endpoint);
    }
  }

  [[nodiscard]] std::string describe() const override {
    return "registry:" + repo_.host + "/" + repo_.repository;
  }

 private:
  std::shared_ptr<registry::Client> client_;  // shared by all backends of the program
  registry::Reference repo_;
};

}  // namespace

std::unique_ptr<Backend> make_registry_backend(std::shared_ptr<registry::Client> client,
                                               registry::Reference repo) {
  return std::make_unique<RegistryBackend>(std::move(client), std::move(repo));
}

}  // namespace cfnd
