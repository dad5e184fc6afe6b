// SPDX-License-Identifier: Apache-2.0
// Range reads of a blob (internal): one Range GET through the mirrors and the
// origin, or many at once on one curl multi handle once a first read has settled
// auth, the endpoint and the blob's URL after redirects.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "base/bytes.h"
#include "base/result.h"
#include "registry/auth.h"
#include "registry/client.h"
#include "registry/endpoints.h"
#include "registry/http.h"

namespace registry::internal {

class RangeReader {
 public:
  RangeReader(const ClientConfig& config, http::Transport& http, Endpoints& endpoints, Auth& auth)
      : config_(config), http_(http), endpoints_(endpoints), auth_(auth) {}

  // Client::read_blob_range, the digest already checked.
  [[nodiscard]] base::Status read(const Reference& repo, const std::string& digest,
                                  std::uint64_t offset, base::MutableBytes out) {
    RangeRead r;
    r.offset = offset;
    r.out = out;
    return read_one(repo, digest, r, nullptr);
  }
  // Client::read_blob_ranges, the digest already checked.
  void read_many(const Reference& repo, const std::string& digest, std::span<RangeRead> reads);

 private:
  // Where a blob's ranges go once one read got through: the endpoint it was read
  // from, the URL after redirects and the Authorization sent there.
  struct BlobSource {
    Endpoint ep;
    std::string url;
    std::string authorization;
  };

  // r's range (its no_cache and avoid_endpoint too); sets r.endpoint on success.
  base::Status read_one(const Reference& repo, const std::string& digest, RangeRead& r,
                        BlobSource* source);
  base::Result<bool> read_range_from(const Endpoint& ep, const Reference& repo,
                                     const std::string& digest, const RangeRead& r,
                                     BlobSource* source);

  const ClientConfig& config_;
  http::Transport& http_;
  Endpoints& endpoints_;
  Auth& auth_;
};

}  // namespace registry::internal
