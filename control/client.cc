// SPDX-License-Identifier: Apache-2.0
#include "control/client.h"

#include "control/wire.h"

namespace control {

base::Result<std::string> Client::call(const Request& r) const {
  CFN_ASSIGN_OR_RETURN(const std::string text, to_json(r));
  return control::call(path_, text, timeout_);
}

base::Result<PingAnswer> Client::ping() const {
  CFN_ASSIGN_OR_RETURN(auto a, call(PingRequest{}));
  return ping_from_json(a);
}

base::Result<ImageInfo> Client::bind(const BindRequest& r) const {
  CFN_ASSIGN_OR_RETURN(auto a, call(r));
  return image_from_json(a);
}

base::Status Client::unbind(const UnbindRequest& r) const {
  CFN_ASSIGN_OR_RETURN(auto a, call(r));
  return ok_from_json(a);
}

base::Result<std::vector<ImageInfo>> Client::list() const {
  CFN_ASSIGN_OR_RETURN(auto a, call(ListRequest{}));
  return images_from_json(a);
}

base::Result<std::vector<std::string>> Client::accessed(const std::string& mountpoint) const {
  CFN_ASSIGN_OR_RETURN(auto a, call(AccessedRequest{mountpoint}));
  return files_from_json(a);
}

base::Result<Metrics> Client::metrics() const {
  CFN_ASSIGN_OR_RETURN(auto a, call(MetricsRequest{}));
  return metrics_from_json(a);
}

base::Result<std::string> Client::metrics_prometheus() const {
  CFN_ASSIGN_OR_RETURN(auto a, call(MetricsRequest{.prometheus = true}));
  return prometheus_from_json(a);
}

base::Result<CacheListing> Client::cache_ls() const {
  CFN_ASSIGN_OR_RETURN(auto a, call(CacheLsRequest{}));
  return cache_listing_from_json(a);
}

base::Result<GcAnswer> Client::cache_gc(bool dry_run) const {
  CFN_ASSIGN_OR_RETURN(auto a, call(CacheGcRequest{dry_run}));
  return gc_from_json(a);
}

base::Status Client::cache_rm(const std::string& id) const {
  CFN_ASSIGN_OR_RETURN(auto a, call(CacheRmRequest{id}));
  return ok_from_json(a);
}

base::Result<StatusAnswer> Client::status() const {
  CFN_ASSIGN_OR_RETURN(auto a, call(StatusRequest{}));
  return status_from_json(a);
}

base::Result<PrefetchAnswer> Client::prefetch(const PrefetchRequest& r) const {
  CFN_ASSIGN_OR_RETURN(auto a, call(r));
  return prefetch_from_json(a);
}

base::Result<PingAnswer> Client::stop() const {
  CFN_ASSIGN_OR_RETURN(auto a, call(StopRequest{}));
  return ping_from_json(a);
}

}  // namespace control
