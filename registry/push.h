// SPDX-License-Identifier: Apache-2.0
// Pushes to the origin registry (internal): blob uploads (monolithic or in PATCH
// chunks, skipped when the blob is there, a cross-repository mount tried first
// when asked), manifests, and the HEAD of a blob both use.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "base/result.h"
#include "registry/auth.h"
#include "registry/client.h"
#include "registry/endpoints.h"
#include "registry/http.h"

namespace registry::internal {

class Pusher {
 public:
  Pusher(Endpoints& endpoints, Auth& auth) : endpoints_(endpoints), auth_(auth) {}

  // Client::push_blob: size bytes of body as digest.
  [[nodiscard]] base::Status push_blob(const Reference& repo, const std::string& digest,
                                       http::Body body, std::uint64_t size,
                                       const PushOptions& options);
  // Client::push_manifest.
  [[nodiscard]] base::Result<std::string> push_manifest(const Reference& ref,
                                                        std::string_view media_type,
                                                        base::Bytes body);
  // A blob's size at ep, nullopt when ep does not have it.
  [[nodiscard]] base::Result<std::optional<std::uint64_t>> head_blob_at(const Endpoint& ep,
                                                                        const Reference& repo,
                                                                        const std::string& digest,
                                                                        Scopes scopes);

 private:
  Endpoints& endpoints_;
  Auth& auth_;
};

}  // namespace registry::internal
