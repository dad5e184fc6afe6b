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
  // registry::Client's whole-blob refetch counters, summed over the clients made so far
  // in one pass under the lock.
  struct RefetchCounts {
    std::uint64_t refetches = 0;
    std::uint64_t successes = 0;
  };
  [[nodiscard]] RefetchCounts blob_refetch_counts();

 private:
  std::mutex mu_;  // guards clients_
  std::map<std::string, std::shared_ptr<registry::Client>> clients_;
};

}  // namespace cfnd
