// SPDX-License-Identifier: Apache-2.0
#include "daemon/registry_image.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "base/digest.h"
#include "base/file.h"
#include "base/log.h"
#include "daemon/targz.h"
#include "erofs/blob_meta.h"
#include "erofs/reader.h"
#include "estargz/bootstrap.h"
#include "estargz/toc.h"

namespace cfnd {

bool is_estargz_image(const registry::Manifest& m) {
  return std::any_of(m.layers.begin(), m.layers.end(), [](const registry::Descriptor& l) {
    return l.annotations.contains(std::string(estargz::kTocDigestAnnotation));
  });
}

namespace {

// Where the bootstrap file `name` is cached (its directory made) and, when an earlier pull
// left it there, its bytes (only complete files are ever renamed into place).
base::Status cached_bootstrap(const std::string& cache_dir, const std::string& name,
                              PulledImage& out, std::vector<std::byte>& boot) {
  const std::string dir = bootstraps_dir(cache_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return base::errorf(ec.value(), "create {}: {}", dir, ec.message());
  }
  out.bootstrap_path = dir + "/" + name;
  struct stat st {};
  if (::stat(out.bootstrap_path.c_str(), &st) == 0) {
    CFN_ASSIGN_OR_RETURN(boot, base::read_file(out.bootstrap_path));
    out.bootstrap_cached = true;
  }
  return {};
}

constexpr std::size_t kParallelTocs = 4;

// The eStargz bootstrap's file name. The key: the layers (their digests fix every byte,
// the TOCs included) and the builder's version, so a builder that lays bootstraps out
// anew gets new files.
std::string estargz_bootstrap_name(const registry::Manifest& m) {
  std::string key = "estargz-bootstrap-v1\n";
  for (const auto& l : m.layers) {
    key += l.digest + "\n";
  }
  return "estargz-" + base::hex(base::sha256(base::as_bytes(key))) + ".boot";
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// The last n bytes of layer l (n <= l.size), by one Range GET.
base::Result<std::vector<std::byte>> read_tail(registry::Client& client,
                                               const registry::Reference& ref,
                                               const registry::Descriptor& l, std::uint64_t n) {
  std::vector<std::byte> tail(n);
  CFN_TRY(client.read_blob_range(ref, l.digest, l.size - n, tail).map_error([&](base::Error e) {
    return std::move(e).wrap("layer " + l.digest + " footer");
  }));
  return tail;
}

// Whether the gzip layer l ends with an eStargz footer: one Range GET of its last
// min(tail_bytes, size) bytes, kept in tail for read_estargz_layer_toc. false (with why)
// for a layer that is not eStargz; the client's errors.
base::Result<bool> has_estargz_footer(registry::Client& client, const registry::Reference& ref,
                                      const registry::Descriptor& l, std::uint64_t tail_bytes,
                                      std::vector<std::byte>& tail, std::string& why) {
  if (!registry::is_valid_digest(l.digest) || l.size < estargz::kFooterSize) {
    why = "layer " + l.digest + " is too small for an eStargz footer";
    return false;
  }
  CFN_ASSIGN_OR_RETURN(
      tail, read_tail(client, ref, l,
                      std::clamp<std::uint64_t>(tail_bytes, estargz::kFooterSize, l.size)));
  auto off = estargz::parse_footer(tail, l.size);
  if (!off) {
    why = "layer " + l.digest + ": " + off.error().message;
    tail.clear();
    return false;
  }
  return true;
}

bool is_gzip_layer(const registry::Descriptor& l) {
  return l.media_type == "application/vnd.oci.image.layer.v1.tar+gzip" ||
         l.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

}  // namespace

base::Result<estargz::LayerToc> read_estargz_layer_toc(
    registry::Client& client, const registry::Reference& ref, const registry::Descriptor& l,
    std::uint64_t tail_bytes, std::vector<std::byte> tail, int* gets, std::uint64_t* bytes) {
  if (!registry::is_valid_digest(l.digest) || l.digest.substr(0, 7) != "sha256:") {
    return base::errorf(EINVAL, "layer {}: unsupported digest", l.digest);
  }
  std::optional<base::Digest> toc_digest;
  if (auto it = l.annotations.find(std::string(estargz::kTocDigestAnnotation));
      it != l.annotations.end()) {
    toc_digest = estargz::parse_sha256(it->second);
    if (!toc_digest) {
      return base::errorf(EINVAL, "layer {}: toc.digest annotation \"{}\" is not sha256", l.digest,
                          it->second);
    }
  }
  if (l.size < estargz::kFooterSize) {
    return base::errorf(EINVAL, "layer {} of {} bytes is not eStargz", l.digest, l.size);
  }
  // Every Range GET of this function goes through here, and is counted here.
  const auto get = [&](std::uint64_t offset, base::MutableBytes out,
                       std::string_view what) -> base::Status {
    CFN_TRY(client.read_blob_range(ref, l.digest, offset, out).map_error([&](base::Error e) {
      return std::move(e).wrap(fmt::format("layer {} {}", l.digest, what));
    }));
    if (gets != nullptr) {
      ++*gets;
    }
    if (bytes != nullptr) {
      *bytes += out.size();
    }
    return {};
  };
  // One GET for the footer and (when it fits in the tail) the TOC member before it.
  if (tail.size() < estargz::kFooterSize || tail.size() > l.size) {
    tail.resize(static_cast<std::size_t>(
        std::clamp<std::uint64_t>(tail_bytes, estargz::kFooterSize, l.size)));
    CFN_TRY(get(l.size - tail.size(), tail, "footer"));
  }
  auto off = estargz::parse_footer(tail, l.size);
  if (!off) {
    const std::string what = "layer " + l.digest +
                             (off.error().code == EINVAL ? " (a plain gzip layer is refused)" : "");
    return base::Unexpected(std::move(off).error().wrap(what));
  }
  const std::uint64_t len = l.size - estargz::kFooterSize - *off;
  if (len > estargz::kMaxTocMemberBytes) {
    return base::errorf(EMSGSIZE, "layer {}: TOC member of {} bytes is over the limit of {}",
                        l.digest, len, estargz::kMaxTocMemberBytes);
  }
  // The tail covers layer bytes [tail_start, size); the member is [*off, size - footer).
  const std::uint64_t tail_start = l.size - tail.size();
  std::vector<std::byte> member;
  if (*off >= tail_start) {
    tail.resize(tail.size() - estargz::kFooterSize);
    tail.erase(tail.begin(), tail.begin() + static_cast<std::ptrdiff_t>(*off - tail_start));
    member = std::move(tail);
  } else {
    // A TOC bigger than the tail: only its head is read again.
    member.resize(static_cast<std::size_t>(len));
    const std::size_t head = static_cast<std::size_t>(tail_start - *off);
    CFN_TRY(get(*off, base::MutableBytes(member).first(head), "TOC"));
    std::copy(tail.begin(), tail.end() - estargz::kFooterSize,
              member.begin() + static_cast<std::ptrdiff_t>(head));
  }
  auto toc = estargz::parse_toc(member, toc_digest ? &*toc_digest : nullptr);
  if (!toc) {
    return base::Unexpected(std::move(toc).error().wrap("layer " + l.digest));
  }
  estargz::LayerToc out;
  out.blob_id = l.digest.substr(7);
  out.blob_size = l.size;
  out.toc_offset = *off;
  out.toc = std::move(*toc);
  return out;
}

namespace {

// pull_estargz_bootstrap, with the first layer's tail when a footer probe read it.
base::Result<PulledImage> pull_estargz(registry::Client& client, const registry::Reference& ref,
                                       const registry::Manifest& m,
                                       const std::string& manifest_digest,
                                       const std::string& cache_dir,
                                       std::uint64_t max_bootstrap_bytes,
                                       std::vector<std::byte> first_tail) {
  const auto t0 = std::chrono::steady_clock::now();
  PulledImage out;
  out.manifest_digest = manifest_digest;
  std::vector<std::byte> boot;
  CFN_TRY(cached_bootstrap(cache_dir, estargz_bootstrap_name(m), out, boot));
  double tocs_ms = 0;
  double build_ms = 0;
  int gets = 0;
  std::uint64_t got_bytes = 0;
  if (!out.bootstrap_cached) {
    // The layers' footers and TOCs are read (and parsed) kParallelTocs at a time: each
    // layer costs a round trip or two, which one after the other add up for many layers.
    // As each TOC is parsed, its prioritized files' GETs start (early), while the other
    // layers are read and the bootstrap is built.
    const std::size_t n = m.layers.size();
    std::vector<base::Result<estargz::LayerToc>> got(n, base::make_error(ECANCELED, "not read"));
    auto early = std::make_shared<EarlyRanges>(client);
    std::atomic<std::size_t> next{0};
    std::mutex mu;  // early_left, gets, got_bytes
    std::uint64_t early_left = kEstargzEarlyBytes;
    std::uint64_t early_bytes = 0;
    const auto deadline = registry::DeadlineScope::current();
    auto work = [&] {
      std::optional<registry::DeadlineScope> scope;
      if (deadline) {
        scope.emplace(*deadline);
      }
      for (std::size_t i = next++; i < n; i = next++) {
        // The probe's GET of the first layer's tail counts as this layer's.
        int g = i == 0 && !first_tail.empty() ? 1 : 0;
        std::uint64_t bytes = i == 0 ? first_tail.size() : 0;
        got[i] = read_estargz_layer_toc(client, ref, m.layers[i], kEstargzTailBytes,
                                        i == 0 ? std::move(first_tail) : std::vector<std::byte>{},
                                        &g, &bytes);
        std::lock_guard lk(mu);
        gets += g;
        got_bytes += bytes;
        if (!got[i] || early_left == 0) {
          continue;
        }
        std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
        for (const auto& r : estargz::prefetch_ranges(*got[i], early_left)) {
          ranges.emplace_back(r.offset, r.length);
          early_left -= r.length;
          early_bytes += r.length;
        }
        if (!ranges.empty()) {
          early->add(ref, got[i]->blob_id, m.layers[i].digest, ranges);
        }
      }
    };
    std::vector<std::thread> helpers;
    for (std::size_t k = 1; k < std::min(n, kParallelTocs); ++k) {
      helpers.emplace_back(work);
    }
    work();
    for (auto& t : helpers) {
      t.join();
    }
    tocs_ms = ms_since(t0);
    std::vector<estargz::LayerToc> tocs;
    for (auto& t : got) {
      if (!t) {
        // The lowest failing layer's error.
        return base::Unexpected(std::move(t).error().wrap(ref.to_string()));
      }
      tocs.push_back(std::move(*t));
    }
    auto built = estargz::build_bootstrap(tocs);
    if (!built) {
      return base::Unexpected(std::move(built).error().wrap(ref.to_string() + ": eStargz"));
    }
    if (built->bootstrap.size() > max_bootstrap_bytes) {
      return base::errorf(EMSGSIZE, "{}: the eStargz bootstrap of {} bytes is over the limit of {}",
                          ref.to_string(), built->bootstrap.size(), max_bootstrap_bytes);
    }
    boot = std::move(built->bootstrap);
    build_ms = ms_since(t0) - tocs_ms;
    if (early_bytes > 0) {
      out.early = std::move(early);
    }
  }
  auto img = erofs::Image::parse(boot);
  if (!img || !img->is_rafs()) {
    (void)::unlink(out.bootstrap_path.c_str());
    return base::errorf(EBADMSG, "{}: the eStargz bootstrap does not parse{}", ref.to_string(),
                        img ? "" : ": " + img.error().to_string());
  }
  std::set<std::string> layer_ids;
  for (const auto& l : m.layers) {
    layer_ids.insert(l.digest);
  }
  for (const auto& bi : img->blobs()) {
    if (!erofs::is_bootstrap_indexed(bi) || !layer_ids.contains("sha256:" + bi.id)) {
      (void)::unlink(out.bootstrap_path.c_str());
      return base::errorf(EBADMSG, "{}: the eStargz bootstrap names blob {}, not a layer",
                          ref.to_string(), bi.id);
    }
    out.blob_ids.push_back(bi.id);
  }
  if (!out.bootstrap_cached) {
    CFN_TRY(base::write_file_atomic(out.bootstrap_path, boot, 0644));
    const double total_ms = ms_since(t0);
    std::string early_text = "none";
    if (out.early) {
      const auto st = out.early->stats();
      early_text = fmt::format("first GET at {} ms", st.first_get_ms.count());
    }
    out.timings = fmt::format(
        "footers and TOCs {:.1f} ms ({} GETs, {} bytes, parsed), bootstrap build {:.1f} ms, "
        "check and write {:.1f} ms; early prefetch: {}",
        tocs_ms, gets, got_bytes, build_ms, total_ms - tocs_ms - build_ms, early_text);
    spdlog::info("{}: eStargz bootstrap from {} layer TOCs ({} bytes, {} blobs) -> {}; {}",
                 ref.to_string(), m.layers.size(), boot.size(), out.blob_ids.size(),
                 out.bootstrap_path, out.timings);
  }
  return out;
}

}  // namespace

base::Result<PulledImage> pull_estargz_bootstrap(registry::Client& client,
                                                 const registry::Reference& ref,
                                                 const registry::Manifest& m,
                                                 const std::string& manifest_digest,
                                                 const std::string& cache_dir,
                                                 std::uint64_t max_bootstrap_bytes) {
  return pull_estargz(client, ref, m, manifest_digest, cache_dir, max_bootstrap_bytes, {});
}

registry::ClientConfig client_config(const RegistryOptions& o, const registry::Reference& ref) {
  registry::ClientConfig c;
  c.plain_http = o.plain_http;
  c.docker_config = o.docker_config;
  c.platform.os = "linux";
  c.platform.architecture = registry::host_architecture();
  c.connect_timeout = std::chrono::milliseconds(o.connect_timeout_ms);
  c.request_timeout = std::chrono::milliseconds(o.request_timeout_ms);
  c.stall_timeout = std::chrono::milliseconds(o.stall_timeout_ms);
  c.idle_connection_timeout = std::chrono::milliseconds(o.idle_connection_timeout_ms);
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
  if (!layers && is_estargz_image(m)) {
    if (!registry::is_valid_digest(resolved->manifest.digest)) {
      return base::errorf(EINVAL, "{}: unsupported digest", ref.to_string());
    }
    return pull_estargz_bootstrap(client, ref, m, resolved->manifest.digest, cache_dir,
                                  max_bootstrap_bytes);
  }
  if (!layers && !m.layers.empty() &&
      std::all_of(m.layers.begin(), m.layers.end(), is_gzip_layer)) {
    // No layer says toc.digest (an image whose annotations were dropped): an eStargz layer
    // is still known by its footer. Probed on the first layer; the others are read as
    // eStargz and refused by name when they are not.
    if (!registry::is_valid_digest(resolved->manifest.digest)) {
      return base::errorf(EINVAL, "{}: unsupported digest", ref.to_string());
    }
    // A bootstrap made from these very layers is cached: the probe needs the footer only
    // (the tail's TOC would not be read).
    struct stat st {};
    const bool cached =
        ::stat((bootstraps_dir(cache_dir) + "/" + estargz_bootstrap_name(m)).c_str(), &st) == 0;
    std::string why;
    std::vector<std::byte> tail;  // the first layer's, read again by no one
    auto esgz = has_estargz_footer(client, ref, m.layers.front(),
                                   cached ? estargz::kFooterSize : kEstargzTailBytes, tail, why);
    if (!esgz) {
      return base::Unexpected(esgz.error().wrap(ref.to_string()));
    }
    if (!*esgz) {
      return base::errorf(EINVAL, "{}: {}; not eStargz either ({}: a plain gzip layer is refused)",
                          ref.to_string(), layers.error().message, why);
    }
    spdlog::warn(
        "{}: eStargz by its layers' footers, without toc.digest annotations: the TOCs are used "
        "without a digest to verify them against (each chunk is still checked against the "
        "TOC's chunkDigest)",
        ref.to_string());
    return pull_estargz(client, ref, m, resolved->manifest.digest, cache_dir, max_bootstrap_bytes,
                        std::move(tail));
  }
  if (!layers) {
    return base::Unexpected(layers.error().wrap(ref.to_string()));
  }
  PulledImage out;
  out.manifest_digest = resolved->manifest.digest;
  if (!registry::is_valid_digest(out.manifest_digest) ||
      !registry::is_valid_digest(layers->bootstrap.digest)) {
    return base::errorf(EINVAL, "{}: unsupported digest", ref.to_string());
  }
  std::vector<std::byte> boot;
  CFN_TRY(cached_bootstrap(cache_dir, out.manifest_digest.substr(7) + ".boot", out, boot));
  if (!out.bootstrap_cached) {
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
