// SPDX-License-Identifier: Apache-2.0
#include "convert/image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "base/file.h"
#include "base/unique_fd.h"
#include "convert/builder.h"
#include "registry/client.h"
#include "registry/manifest.h"
#include "registry/reference.h"

namespace convert {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kMaxConfigBytes = 64U << 20;
constexpr auto kProgressInterval = std::chrono::milliseconds(200);

std::string short_digest(const std::string& d) {
  return d.size() > 19 ? d.substr(0, 19) : d;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    u++;
  }
  return fmt::format("{:.1f} {}", b, units[u]);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Per-blob progress. On a terminal a status line is redrawn while a transfer runs
// (bytes so far, rate), watched through the size of the file being written; otherwise
// one log line per finished blob.
class Progress {
 public:
  Progress() : tty_(::isatty(STDERR_FILENO) == 1) {}

  // Runs fn() while a watcher redraws "verb i/n digest bytes/total rate" from the
  // size of the file behind fd (-1: no live byte count).
  template <typename Fn>
  auto run(std::string_view verb, std::size_t i, std::size_t n, const std::string& digest,
           std::uint64_t total, int watch_fd, Fn&& fn) {
    const auto t0 = Clock::now();
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::thread watcher;
    const std::string label = fmt::format("{} {}/{} {}", verb, i, n, short_digest(digest));
    if (tty_) {
      watcher = std::thread([&] {
        std::unique_lock lock(mu);
        while (!cv.wait_for(lock, kProgressInterval, [&] { return done; })) {
          std::uint64_t now = 0;
          struct stat st {};
          if (watch_fd >= 0 && ::fstat(watch_fd, &st) == 0) {
            now = static_cast<std::uint64_t>(st.st_size);
          }
          const double secs = seconds_since(t0);
          std::fprintf(stderr, "\r\033[K%s  %s / %s  %s/s", label.c_str(),
                       human_bytes(static_cast<double>(now)).c_str(),
                       human_bytes(static_cast<double>(total)).c_str(),
                       human_bytes(secs > 0 ? static_cast<double>(now) / secs : 0).c_str());
        }
      });
    }
    auto result = fn();
    {
      std::lock_guard lock(mu);
      done = true;
    }
    cv.notify_all();
    if (watcher.joinable()) {
      watcher.join();
      std::fprintf(stderr, "\r\033[K");
    }
    const double secs = seconds_since(t0);
    if (result) {
      spdlog::info("{}  {} in {:.2f} s ({}/s)", label, human_bytes(static_cast<double>(total)),
                   secs, human_bytes(secs > 0 ? static_cast<double>(total) / secs : 0));
    }
    return result;
  }

 private:
  bool tty_;
};

// A temporary directory removed with everything in it, unless kept.
class WorkDir {
 public:
  static base::Result<WorkDir> create(const std::string& parent, bool keep) {
    std::string base = parent;
    if (base.empty()) {
      const char* t = std::getenv("TMPDIR");
      base = (t != nullptr && *t != '\0') ? t : "/tmp";
    }
    std::string tmpl = base + "/nydus-convert-image-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      return base::errno_error("create a work directory in " + base);
    }
    return WorkDir(tmpl, keep);
  }
  WorkDir(WorkDir&& o) noexcept : path_(std::exchange(o.path_, {})), keep_(o.keep_) {}
  WorkDir& operator=(WorkDir&&) = delete;
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  ~WorkDir() {
    if (path_.empty()) {
      return;
    }
    if (keep_) {
      spdlog::info("work directory kept: {}", path_);
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  WorkDir(std::string p, bool keep) : path_(std::move(p)), keep_(keep) {}
  std::string path_;
  bool keep_;
};

std::string blob_path(const std::string& layout, const std::string& digest) {
  return layout + "/blobs/sha256/" + digest.substr(7);
}

base::Status write_new_file(const std::string& path, base::Bytes data) {
  CFN_ASSIGN_OR_RETURN(auto fd,
                       base::UniqueFd::open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644));
  return base::write_full(fd.get(), data);
}

base::Status make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) {
    return base::errorf(ec.value(), "create {}: {}", path, ec.message());
  }
  return {};
}

// The source image as an OCI layout: oci-layout, index.json naming the platform's
// manifest (stored as fetched, so its digest holds), config and layers, each verified
// by the client against its digest as it was downloaded.
base::Result<std::size_t> pull_to_layout(registry::Client& client, const registry::Reference& src,
                                         const registry::ResolvedImage& image,
                                         const std::string& layout, Progress& progress,
                                         ImageReport& report) {
  const registry::Manifest& m = image.get();
  CFN_TRY(make_dirs(layout + "/blobs/sha256"));
  CFN_TRY(write_new_file(layout + "/oci-layout",
                         base::as_bytes(std::string(R"({"imageLayoutVersion":"1.0.0"})"))));
  std::vector<std::string> digests = {image.manifest.digest, m.config.digest};
  for (const auto& l : m.layers) {
    digests.push_back(l.digest);
  }
  for (const auto& d : digests) {
    if (!registry::is_valid_digest(d)) {
      return base::errorf(EINVAL, "source manifest {}: unsupported digest '{}'",
                          image.manifest.digest, d);
    }
  }
  CFN_TRY(write_new_file(blob_path(layout, image.manifest.digest), image.manifest.bytes));

  CFN_ASSIGN_OR_RETURN(
      auto config,
      client.get_blob(src, m.config.digest, kMaxConfigBytes).map_error([&](base::Error e) {
        return std::move(e).wrap("pulling config " + m.config.digest);
      }));
  CFN_TRY(write_new_file(blob_path(layout, m.config.digest), config));

  std::set<std::string> have = {m.config.digest};
  std::size_t i = 0;
  for (const auto& l : m.layers) {
    i++;
    if (!have.insert(l.digest).second) {
      continue;  // the same layer twice: one file serves both entries
    }
    const std::string path = blob_path(layout, l.digest);
    CFN_ASSIGN_OR_RETURN(
        auto fd, base::UniqueFd::open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644));
    auto n = progress.run("pull", i, m.layers.size(), l.digest, l.size, fd.get(),
                          [&] { return client.get_blob_to_fd(src, l.digest, fd.get()); });
    if (!n) {
      return base::Unexpected(n.error().wrap("pulling layer " + l.digest));
    }
    report.bytes_pulled += *n;
  }

  json entry = {
      {"mediaType", image.manifest.media_type.empty() ? std::string(registry::kMediaOciManifest)
                                                      : image.manifest.media_type},
      {"digest", image.manifest.digest},
      {"size", image.manifest.bytes.size()}};
  json index = {{"schemaVersion", 2},
                {"mediaType", registry::kMediaOciIndex},
                {"manifests", json::array({entry})}};
  CFN_TRY(write_new_file(layout + "/index.json", base::as_bytes(index.dump())));
  return m.layers.size();
}

// Upload one blob of the built layout unless the target has it already.
base::Status push_one(registry::Client& client, const registry::Reference& dst,
                      const std::string& layout, const registry::Descriptor& d, std::size_t i,
                      std::size_t n, Progress& progress, ImageReport& report) {
  auto have = client.head_blob(dst, d.digest);
  if (!have) {
    return base::Unexpected(have.error().wrap("HEAD " + d.digest));
  }
  if (have->has_value() && **have == d.size) {
    spdlog::info("push {}/{} {}  already in {}", i, n, short_digest(d.digest), dst.repository);
    report.blobs_skipped++;
    return {};
  }
  CFN_ASSIGN_OR_RETURN(auto fd, base::UniqueFd::open(blob_path(layout, d.digest), O_RDONLY));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return base::errno_error("stat " + blob_path(layout, d.digest));
  }
  if (static_cast<std::uint64_t>(st.st_size) != d.size) {
    return base::errorf(EBADMSG, "{}: {} bytes on disk but {} in the manifest", d.digest,
                        st.st_size, d.size);
  }
  auto s = progress.run("push", i, n, d.digest, d.size, -1, [&] {
    return client.push_blob(dst, d.digest, fd.get(), d.size, registry::PushOptions{});
  });
  if (!s) {
    return base::Unexpected(s.error().wrap("pushing " + d.digest));
  }
  report.blobs_pushed++;
  report.bytes_pushed += d.size;
  return {};
}

// The index nydusify writes for a converted platform: the nydus manifest with the
// source platform and os.features ["nydus.remoteimage.v1"].
std::string nydus_index(const std::string& manifest_digest, std::uint64_t manifest_size,
                        const registry::Platform& p) {
  json platform = {{"os", p.os}, {"architecture", p.architecture}};
  if (!p.variant.empty()) {
    platform["variant"] = p.variant;
  }
  platform["os.features"] = json::array({kNydusOsFeature});
  json entry = {{"mediaType", registry::kMediaOciManifest},
                {"digest", manifest_digest},
                {"size", manifest_size},
                {"platform", platform}};
  json index = {{"schemaVersion", 2},
                {"mediaType", registry::kMediaOciIndex},
                {"manifests", json::array({entry})}};
  return index.dump();
}

// The platform of the index entry that the resolved manifest came from.
registry::Platform source_platform(const registry::ResolvedImage& image,
                                   const registry::Platform& wanted) {
  if (image.index) {
    if (const auto* idx = std::get_if<registry::Index>(&image.index->parsed)) {
      for (const auto& d : idx->manifests) {
        if (d.digest == image.manifest.digest && d.platform) {
          return *d.platform;
        }
      }
    }
  }
  return wanted;
}

}  // namespace

base::Result<registry::Platform> parse_platform(std::string_view text) {
  registry::Platform p;
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const auto slash = text.find('/', start);
    parts.emplace_back(text.substr(start, slash - start));
    if (slash == std::string_view::npos) {
      break;
    }
    start = slash + 1;
  }
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty() ||
      (parts.size() == 3 && parts[2].empty())) {
    return base::errorf(EINVAL, "platform '{}': expected OS/ARCH[/VARIANT]", text);
  }
  p.os = parts[0];
  p.architecture = parts[1];
  p.variant = parts.size() == 3 ? parts[2] : "";
  return p;
}

base::Result<ImageReport> convert_image(const std::string& src_ref, const std::string& dst_ref,
                                        const ImageOptions& options) {
  CFN_ASSIGN_OR_RETURN(auto src, registry::Reference::parse(src_ref).map_error([](base::Error e) {
    return std::move(e).wrap("source reference");
  }));
  CFN_ASSIGN_OR_RETURN(auto dst, registry::Reference::parse(dst_ref).map_error([](base::Error e) {
    return std::move(e).wrap("target reference");
  }));
  if (!dst.digest.empty()) {
    return base::errorf(EINVAL, "target {}: give a tag, not a digest (the digest is the result)",
                        dst_ref);
  }

  registry::ClientConfig cc;
  cc.plain_http = options.plain_http;
  cc.docker_config = options.docker_config;
  cc.platform =
      options.platform.value_or(registry::Platform{"linux", registry::host_architecture(), ""});
  for (const auto* r : {&src, &dst}) {
    auto& h = cc.hosts[r->host];
    h.insecure_skip_verify = options.insecure;
    h.ca_files = options.ca_files;
  }
  const registry::Platform wanted = cc.platform;
  CFN_ASSIGN_OR_RETURN(auto client, registry::Client::create(std::move(cc)));

  ImageReport report;
  Progress progress;
  const auto t0 = Clock::now();
  CFN_ASSIGN_OR_RETURN(auto image, client->resolve(src).map_error([&](base::Error e) {
    return std::move(e).wrap("resolving " + src.to_string());
  }));
  spdlog::info("source {}: manifest {}{} with {} layer(s)", src.to_string(), image.manifest.digest,
               image.index ? fmt::format(" (from index {})", image.index->digest) : "",
               image.get().layers.size());

  CFN_ASSIGN_OR_RETURN(WorkDir work, WorkDir::create(options.work_dir, options.keep_work_dir));
  const std::string layout = work.path() + "/source";
  CFN_ASSIGN_OR_RETURN(report.layers,
                       pull_to_layout(*client, src, image, layout, progress, report));
  spdlog::info("pulled {} layer(s), {} in {:.2f} s", report.layers,
               human_bytes(static_cast<double>(report.bytes_pulled)), seconds_since(t0));

  const std::string outdir = work.path() + "/nydus";
  CFN_ASSIGN_OR_RETURN(auto built, build_image(layout, outdir, options.build));

  // Push what the builder wrote into OUTDIR/oci, verbatim: its manifest digest is the
  // one the build reported.
  const std::string oci = outdir + "/oci";
  if (!registry::is_valid_digest(built.manifest_digest)) {
    return base::errorf(EINVAL, "build reported manifest digest '{}'", built.manifest_digest);
  }
  CFN_ASSIGN_OR_RETURN(auto manifest_bytes, base::read_file(blob_path(oci, built.manifest_digest)));
  CFN_ASSIGN_OR_RETURN(auto parsed,
                       registry::parse_manifest(manifest_bytes, registry::kMediaOciManifest));
  const auto* manifest = std::get_if<registry::Manifest>(&parsed);
  if (manifest == nullptr) {
    return base::errorf(EINVAL, "the built image's manifest is an index");
  }
  std::vector<registry::Descriptor> blobs = manifest->layers;
  blobs.push_back(manifest->config);
  for (std::size_t i = 0; i < blobs.size(); i++) {
    if (!registry::is_valid_digest(blobs[i].digest)) {
      return base::errorf(EINVAL, "built manifest: bad digest '{}'", blobs[i].digest);
    }
    CFN_TRY(push_one(*client, dst, oci, blobs[i], i + 1, blobs.size(), progress, report));
  }

  if (image.index) {
    auto by_digest = dst;
    by_digest.digest = built.manifest_digest;
    CFN_ASSIGN_OR_RETURN(
        report.manifest_digest,
        client->push_manifest(by_digest, registry::kMediaOciManifest, manifest_bytes));
    const std::string index =
        nydus_index(report.manifest_digest, manifest_bytes.size(), source_platform(image, wanted));
    CFN_ASSIGN_OR_RETURN(report.index_digest, client->push_manifest(dst, registry::kMediaOciIndex,
                                                                    base::as_bytes(index)));
  } else {
    CFN_ASSIGN_OR_RETURN(report.manifest_digest,
                         client->push_manifest(dst, registry::kMediaOciManifest, manifest_bytes));
  }
  spdlog::info("pushed {}: manifest {}{}; {} blob(s) uploaded ({}), {} already there; {:.2f} s",
               dst.to_string(), report.manifest_digest,
               report.index_digest.empty() ? "" : ", index " + report.index_digest,
               report.blobs_pushed, human_bytes(static_cast<double>(report.bytes_pushed)),
               report.blobs_skipped, seconds_since(t0));
  return report;
}

}  // namespace convert
