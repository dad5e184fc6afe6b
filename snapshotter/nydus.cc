// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/nydus.h"

namespace snapshotter {
namespace {

std::string label(const Labels& l, const char* key) {
  auto it = l.find(key);
  return it == l.end() ? std::string() : it->second;
}

bool is_true(const Labels& l, const char* key) {
  return label(l, key) == "true";
}

std::string first_of(const Labels& l, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    if (auto v = label(l, k); !v.empty()) {
      return v;
    }
  }
  return {};
}

std::vector<std::string> split_digests(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) {
      end = s.size();
    }
    if (end > start) {
      out.push_back(s.substr(start, end - start));
    }
    start = end + 1;
  }
  return out;
}

std::string join_digests(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& d : v) {
    out += (out.empty() ? "" : ",") + d;
  }
  return out;
}

}  // namespace

LayerKind classify_prepare(const Labels& labels, bool enable_stargz) {
  if (label(labels, kTargetRefLabel).empty()) {
    return LayerKind::kPlain;
  }
  if (is_true(labels, kNydusBlobLabel)) {
    return LayerKind::kNydusBlob;
  }
  if (enable_stargz && !label(labels, kStargzTocDigestLabel).empty()) {
    return LayerKind::kEstargz;
  }
  return LayerKind::kPlain;
}

bool is_estargz_handshake(const Labels& labels) {
  return is_true(labels, kEstargzLayerLabel);
}

bool is_top_layer(const Labels& labels) {
  auto layers = split_digests(
      first_of(labels, {kImageLayersLabel, kCriImageLayersLabel, kStargzLayersLabel}));
  return layers.size() <= 1;
}

RemoteLayer remote_layer(const Labels& labels) {
  RemoteLayer r;
  r.target = label(labels, kTargetRefLabel);
  r.image_ref = first_of(labels, {kImageRefLabel, kCriImageRefLabel, kStargzRefLabel});
  r.layer_digest = first_of(labels, {kLayerDigestLabel, kCriLayerDigestLabel, kStargzDigestLabel});
  r.manifest_digest = first_of(labels, {kManifestDigestLabel, kCriManifestDigestLabel});
  r.image_layers = split_digests(
      first_of(labels, {kImageLayersLabel, kCriImageLayersLabel, kStargzLayersLabel}));
  return r;
}

Labels handshake_labels(const Labels& labels, const RemoteLayer& r, LayerKind kind) {
  Labels out = labels;
  if (!r.image_layers.empty()) {
    out[kImageLayersLabel] = join_digests(r.image_layers);
  }
  if (kind == LayerKind::kEstargz) {
    out[kEstargzLayerLabel] = "true";
  }
  if (!r.image_ref.empty()) {
    out[kImageRefLabel] = r.image_ref;
  }
  if (!r.layer_digest.empty()) {
    out[kLayerDigestLabel] = r.layer_digest;
  }
  if (!r.manifest_digest.empty()) {
    out[kManifestDigestLabel] = r.manifest_digest;
  }
  return out;
}

bool is_ordinary_layer(const Labels& labels) {
  return !is_estargz_handshake(labels) && !is_true(labels, kNydusBlobLabel) &&
         !is_true(labels, kNydusBootstrapLabel);
}

base::Result<std::optional<NydusImage>> find_image(
    const std::vector<ChainEntry>& chain, const std::function<bool(int64_t)>& has_bootstrap) {
  for (size_t i = 0; i < chain.size(); ++i) {
    const ChainEntry& e = chain[i];
    if (is_estargz_handshake(e.labels)) {
      // The top layer of an eStargz image: everything above it is ordinary layers.
      NydusImage im;
      im.estargz = true;
      im.bootstrap_id = e.id;
      im.bootstrap_name = e.name;
      for (size_t j = 0; j < i; ++j) {
        im.upper_lowers.push_back(chain[j].id);
      }
      RemoteLayer r = remote_layer(e.labels);
      im.image_ref = r.image_ref;
      im.manifest_digest = r.manifest_digest;
      if (im.image_ref.empty()) {
        return base::make_error(EINVAL, kNoReferenceHint);
      }
      if (!is_top_layer(e.labels)) {
        return base::errorf(EINVAL,
                            "eStargz layer {} ({}) was pulled lazily for {}, which has {} more "
                            "layer(s) above it: pull the image that ends with this layer with "
                            "`ctr-remote image rpull` (or CRI) once, so its reference is recorded",
                            r.layer_digest, e.name, im.image_ref, r.image_layers.size() - 1);
      }
      return std::optional<NydusImage>(std::move(im));
    }
    if (is_true(e.labels, kNydusBlobLabel)) {
      // A data layer above any bootstrap: not an image we can mount (a layer
      // unpacked on top of skipped ones is impossible in containerd's pull order).
      continue;
    }
    bool is_boot = is_true(e.labels, kNydusBootstrapLabel);
    if (!is_boot && has_bootstrap(e.id)) {
      // Unlabelled (a pull that passed no annotations but skipped the data layers):
      // the image only when every parent below is a handshake of a data layer.
      bool below_all_blobs = i + 1 < chain.size();
      for (size_t j = i + 1; j < chain.size(); ++j) {
        below_all_blobs = below_all_blobs && is_true(chain[j].labels, kNydusBlobLabel);
      }
      is_boot = below_all_blobs;
    }
    if (!is_boot) {
      continue;
    }
    NydusImage im;
    im.bootstrap_id = e.id;
    im.bootstrap_name = e.name;
    for (size_t j = 0; j < i; ++j) {
      if (!is_true(chain[j].labels, kNydusBlobLabel)) {
        im.upper_lowers.push_back(chain[j].id);
      }
    }
    // The bootstrap's own labels first, then the data layers' below it.
    for (size_t j = i; j < chain.size() && (im.image_ref.empty() || im.manifest_digest.empty());
         ++j) {
      RemoteLayer r = remote_layer(chain[j].labels);
      if (im.image_ref.empty()) {
        im.image_ref = r.image_ref;
      }
      if (im.manifest_digest.empty()) {
        im.manifest_digest = r.manifest_digest;
      }
    }
    if (im.image_ref.empty()) {
      return base::make_error(EINVAL, kNoReferenceHint);
    }
    return std::optional<NydusImage>(std::move(im));
  }
  return std::optional<NydusImage>();
}

}  // namespace snapshotter
