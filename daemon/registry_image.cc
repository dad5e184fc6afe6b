// SPDX-License-Identifier: Apache-2.0
#include "daemon/registry_image.h"

#include <sys/stat.h>

#include <filesystem>

#include "base/file.h"
#include "base/log.h"
#include "daemon/targz.h"
#include "erofs/reader.h"

namespace cfnd {

registry::ClientConfig client_config(const RegistryOptions& o, const registry::Reference& ref) {
  registry::ClientConfig c;
  c.plain_http = o.plain_http;
  c.docker_config = o.docker_config;
  c.platform.os = "linux";
  c.platform.architecture = registry::host_architecture();
  c.connect_timeout = std::chrono::milliseconds(o.connect_timeout_ms);
  c.request_timeout = std::chrono::milliseconds(o.request_timeout_ms);
  c.stall_timeout = std::chrono::milliseconds(o.stall_timeout_ms);
  c.retry.max_retries = static_cast<int>(o.retries);
  c.max_parallel = static_cast<int>(o.max_parallel);
  registry::HostConfig h;
  h.insecure_skip_verify = o.insecure;
  h.ca_files = o.ca_files;
  if (auto it = o.mirrors.find(ref.host); it != o.mirrors.end()) {
    h.mirrors = it->second;
    for (const auto& m : h.mirrors) {
      if (auto hd = o.mirror_headers.find(m); hd != o.mirror_headers.end()) {
        h.mirror_headers[m] = hd->second;
      }
    }
  }
  c.hosts[ref.host] = std::move(h);
  return c;
}

std::string bootstraps_dir(const std::string& cache_dir) {
  return cache_dir + "/bootstraps";
}

base::Result<PulledImage> pull_bootstrap(registry::Client& client, const registry::Reference& ref,
                                         const std::string& cache_dir,
                                         std::uint64_t max_bootstrap_bytes) {
  auto resolved = client.resolve(ref);
  if (!resolved) {
    return base::Unexpected(resolved.error().wrap("resolving " + ref.to_string()));
  }
  const registry::Manifest& m = resolved->get();
  auto layers = nydus_layers(m);
  if (!layers) {
    return base::Unexpected(layers.error().wrap(ref.to_string()));
  }
  PulledImage out;
  out.manifest_digest = resolved->manifest.digest;
  if (!registry::is_valid_digest(out.manifest_digest) ||
      !registry::is_valid_digest(layers->bootstrap.digest)) {
    return base::errorf(EINVAL, "{}: unsupported digest", ref.to_string());
  }
  const std::string dir = bootstraps_dir(cache_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return base::errorf(ec.value(), "create {}: {}", dir, ec.message());
  }
  out.bootstrap_path = dir + "/" + out.manifest_digest.substr(7) + ".boot";

  std::vector<std::byte> boot;
  struct stat st {};
  if (::stat(out.bootstrap_path.c_str(), &st) == 0) {
    // Only complete files are ever renamed into place.
    CFN_ASSIGN_OR_RETURN(boot, base::read_file(out.bootstrap_path));
    out.bootstrap_cached = true;
  } else {
    if (layers->bootstrap.size > kMaxBootstrapLayerBytes) {
      return base::errorf(EMSGSIZE, "{}: bootstrap layer of {} bytes is over the limit of {}",
                          ref.to_string(), layers->bootstrap.size, kMaxBootstrapLayerBytes);
    }
    auto tgz = client.get_blob(ref, layers->bootstrap.digest, kMaxBootstrapLayerBytes);
    if (!tgz) {
      return base::Unexpected(
          tgz.error().wrap("downloading bootstrap layer " + layers->bootstrap.digest));
    }
    auto b = extract_tar_gz_member(*tgz, kBootstrapMember, max_bootstrap_bytes,
                                   max_bootstrap_bytes + (1U << 20));
    if (!b) {
      return base::Unexpected(b.error().wrap("bootstrap layer " + layers->bootstrap.digest));
    }
    boot = std::move(*b);
  }
  auto img = erofs::Image::parse(boot);
  if (!img) {
    return base::Unexpected(img.error().wrap("bootstrap of " + ref.to_string()));
  }
  if (!img->is_rafs()) {
    return base::errorf(EINVAL, "{}: not a RAFS v6 (nydus) image: the bootstrap is plain EROFS",
                        ref.to_string());
  }
  for (const auto& bi : img->blobs()) {
    out.blob_ids.push_back(bi.id);
  }
  out.blob_digests = renamed_blob_layers(*layers);
  CFN_TRY(check_blob_layers(out.blob_ids, *layers).map_error([&](base::Error e) {
    return std::move(e).wrap(ref.to_string());
  }));
  if (!out.bootstrap_cached) {
    CFN_TRY(base::write_file_atomic(out.bootstrap_path, boot, 0644));
    spdlog::info("{}: bootstrap {} ({} bytes, {} blobs) -> {}", ref.to_string(),
                 layers->bootstrap.digest, boot.size(), out.blob_ids.size(), out.bootstrap_path);
  }
  return out;
}

}  // namespace cfnd
