// SPDX-License-Identifier: Apache-2.0
#include "daemon/nydus_layers.h"

#include <algorithm>
#include <set>

namespace cfnd {
namespace {

bool annotated(const registry::Descriptor& d, const char* key) {
  auto it = d.annotations.find(key);
  return it != d.annotations.end() && it->second == "true";
}

bool is_blob_layer(const registry::Descriptor& d) {
  return d.media_type == registry::kMediaNydusBlob || annotated(d, kAnnotationNydusBlob);
}

}  // namespace

base::Result<NydusLayers> nydus_layers(const registry::Manifest& m) {
  NydusLayers out;
  const registry::Descriptor* boot = nullptr;
  for (const auto& l : m.layers) {
    if (annotated(l, kAnnotationNydusBootstrap)) {
      if (boot != nullptr) {
        return base::make_error(EINVAL, "two nydus bootstrap layers in the manifest");
      }
      boot = &l;
    }
  }
  if (boot == nullptr && m.layers.size() >= 2 &&
      std::all_of(m.layers.begin(), m.layers.end() - 1, is_blob_layer) &&
      !is_blob_layer(m.layers.back())) {
    boot = &m.layers.back();
  }
  if (boot == nullptr) {
    return base::make_error(EINVAL,
                            "not a RAFS v6 (nydus) image: no layer annotated "
                            "containerd.io/snapshot/nydus-bootstrap");
  }
  out.bootstrap = *boot;
  for (const auto& l : m.layers) {
    if (&l != boot && is_blob_layer(l)) {
      out.blobs.push_back(l);
    }
  }
  return out;
}

std::map<std::string, std::string> renamed_blob_layers(const NydusLayers& layers) {
  std::map<std::string, std::string> out;
  for (const auto& l : layers.blobs) {
    auto it = l.annotations.find(kAnnotationNydusBlobDigest);
    if (it == l.annotations.end() || it->second == l.digest ||
        !registry::is_valid_digest(it->second) || !it->second.starts_with("sha256:")) {
      continue;
    }
    out.emplace(it->second.substr(7), l.digest);
  }
  return out;
}

base::Status check_blob_layers(const std::vector<std::string>& bootstrap_blob_ids,
                               const NydusLayers& layers) {
  std::set<std::string> have;
  for (const auto& l : layers.blobs) {
    have.insert(l.digest);
  }
  const auto renamed = renamed_blob_layers(layers);
  for (const auto& id : bootstrap_blob_ids) {
    if (!have.contains("sha256:" + id) && !renamed.contains(id)) {
      return base::errorf(EINVAL,
                          "the bootstrap names blob {} but the manifest has no data layer "
                          "sha256:{} nor one annotated {} sha256:{}",
                          id, id, kAnnotationNydusBlobDigest, id);
    }
  }
  return {};
}

}  // namespace cfnd
