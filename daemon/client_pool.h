// SPDX-License-Identifier: Apache-2.0
// The registry clients of the daemon: one per host and distinct option set, shared by
// every image bound with them and kept for the daemon's life (connections and tokens
// are reused). Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/result.h"
#include "daemon/config.h"
#include "registry/client.h"
#include "registry/reference.h"

namespace cfnd {

class ClientPool {
 public:
  // The client for images of ref's host under options o: made on first use. Errors:
  // registry::Client::create's (a bad CA file, a bad mirror URL ...).
  // shared_ptr: the registry backends of bound images hold it too.
  [[nodiscard]] base::Result<std::shared_ptr<registry::Client>> get(const RegistryOptions& o,
                                                                    const registry::Reference& ref);
  // Summed over the clients made so far (registry::Client's counters).
  [[nodiscard]] std::uint64_t blob_refetches();
  [[nodiscard]] std::uint64_t blob_refetch_successes();

 private:
  std::mutex mu_;  // guards clients_
  std::map<std::string, std::shared_ptr<registry::Client>> clients_;
};

}  // namespace cfnd
