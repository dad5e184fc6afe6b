// SPDX-License-Identifier: Apache-2.0
#include "daemon/client_pool.h"

#include "daemon/registry_image.h"

namespace cfnd {

base::Result<std::shared_ptr<registry::Client>> ClientPool::get(const RegistryOptions& o,
                                                                const registry::Reference& ref) {
  const std::string key = ref.host + "\n" + registry_options_json(o);
  std::lock_guard lk(mu_);
  if (auto it = clients_.find(key); it != clients_.end()) {
    return it->second;
  }
  CFN_ASSIGN_OR_RETURN(auto c, registry::Client::create(client_config(o, ref)));
  std::shared_ptr<registry::Client> shared(std::move(c));
  clients_.emplace(key, shared);
  return shared;
}

ClientPool::RefetchCounts ClientPool::blob_refetch_counts() {
  std::lock_guard lk(mu_);
  RefetchCounts n;
  for (const auto& [key, c] : clients_) {
    n.refetches += c->blob_refetches();
    n.successes += c->blob_refetch_successes();
  }
  return n;
}

}  // namespace cfnd
