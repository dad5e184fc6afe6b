// SPDX-License-Identifier: Apache-2.0
// A registry::Client whose every call fails with ENOSYS: the daemon tests' fake
// registries derive from it and override only what they serve.
#pragma once

#include <cerrno>

#include "registry/client.h"

namespace cfntest {

class StubRegistryClient : public registry::Client {
 public:
  base::Result<registry::FetchedManifest> get_manifest(const registry::Reference&) override {
    return stub();
  }
  base::Result<registry::ResolvedImage> resolve(const registry::Reference&) override {
    return stub();
  }
  base::Result<std::vector<std::byte>> get_blob(const registry::Reference&, const std::string&,
                                                std::uint64_t) override {
    return stub();
  }
  base::Result<std::uint64_t> get_blob_to_fd(const registry::Reference&, const std::string&,
                                             int) override {
    return stub();
  }
  base::Status read_blob_range(const registry::Reference&, const std::string&, std::uint64_t,
                               base::MutableBytes) override {
    return stub();
  }
  void read_blob_ranges(const registry::Reference&, const std::string&,
                        std::span<registry::RangeRead> reads) override {
    for (auto& r : reads) {
      r.result = stub();
    }
  }
  base::Result<std::optional<std::uint64_t>> head_blob(const registry::Reference&,
                                                       const std::string&) override {
    return stub();
  }
  base::Status push_blob(const registry::Reference&, const std::string&, int, std::uint64_t,
                         const registry::PushOptions&) override {
    return stub();
  }
  base::Status push_blob(const registry::Reference&, const std::string&, base::Bytes,
                         const registry::PushOptions&) override {
    return stub();
  }
  base::Result<std::string> push_manifest(const registry::Reference&, std::string_view,
                                          base::Bytes) override {
    return stub();
  }

 private:
  static base::Unexpected stub() { return base::make_error(ENOSYS, "not faked"); }
};

}  // namespace cfntest
