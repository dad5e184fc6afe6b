// SPDX-License-Identifier: Apache-2.0
// nydus-convert: build RAFS v6 images (bootstrap + blobs + OCI layout) and read them back.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include <CLI/CLI.hpp>

#include "base/file.h"
#include "base/log.h"
#include "base/version.h"
#include "convert/builder.h"
#include "convert/image.h"
#include "convert/tools.h"

namespace {

int fail(const base::Error& e) {
  spdlog::error("{}", e.to_string());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nydus-convert: build and inspect RAFS v6 (nydus) images"};
  app.set_version_flag("--version", std::string("nydus-convert ") + CFN_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // --log-level is accepted after the subcommand too
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  convert::BuildOptions opts;
  std::string source;
  std::string outdir;
  std::string compressor = "zstd";
  std::string digester = "sha256";
  std::string chunk_size = "1M";
  auto* build = app.add_subcommand("build", "SOURCE (dir, layer tar, OCI layout) -> OUTDIR");
  build->add_option("SOURCE", source, "directory, tar (plain/gzip/zstd) or OCI layout")->required();
  build->add_option("OUTDIR", outdir, "gets image.boot, blobs/<id>, oci/")->required();
  build->add_option("--compressor", compressor, "zstd | lz4_block | none")
      ->check(CLI::IsMember({"zstd", "lz4_block", "none"}));
  build->add_option("--digester", digester, "sha256 | blake3")
      ->check(CLI::IsMember({"sha256", "blake3"}));
  build->add_option("--chunk-size", chunk_size, "power of two, 4K..16M (e.g. 1M, 64K)");
  build->add_option("--threads", opts.workers, "compression workers (0 = one per CPU)");
  std::string prefetch_files;
  build->add_option("--prefetch-files", prefetch_files,
                    "file of paths to fetch first, one a line ('-': stdin): the prefetch table; "
                    "their chunks go first in the blob, in list order");

  std::string bootstrap;
  std::string blob_dir;
  std::string path;
  auto* inspect = app.add_subcommand("inspect", "print a bootstrap's summary as JSON");
  inspect->add_option("BOOTSTRAP", bootstrap)->required();
  auto* unpack = app.add_subcommand("unpack", "write each blob's uncompressed layout");
  unpack->add_option("BOOTSTRAP", bootstrap)->required();
  unpack->add_option("--blob-dir", blob_dir, "directory of blob files named by id")->required();
  unpack->add_option("--out", outdir, "output directory")->required();
  auto* cat = app.add_subcommand("cat", "print a file's bytes, every chunk verified");
  cat->add_option("BOOTSTRAP", bootstrap)->required();
  cat->add_option("PATH", path)->required();
  cat->add_option("--blob-dir", blob_dir)->required();
  auto* check = app.add_subcommand("check", "read every file through the blobs and verify");
  check->add_option("BOOTSTRAP", bootstrap)->required();
  check->add_option("--blob-dir", blob_dir)->required();

  convert::ImageOptions image_opts;
  std::string src_ref;
  std::string dst_ref;
  std::string platform;
  auto* image = app.add_subcommand("image", "SRC_REF -> RAFS v6 -> DST_REF (registry to registry)");
  image->add_option("SRC_REF", src_ref, "source image, e.g. 127.0.0.1:5000/busybox:latest")
      ->required();
  image->add_option("DST_REF", dst_ref, "target image (a tag)")->required();
  image->add_flag("--plain-http", image_opts.plain_http, "http:// for both registries");
  image->add_flag("--insecure", image_opts.insecure, "TLS without certificate verification");
  image->add_option("--ca-file", image_opts.ca_files, "extra trusted CA (PEM); repeatable");
  image->add_option("--platform", platform, "OS/ARCH[/VARIANT] picked from an index");
  image->add_option("--docker-config", image_opts.docker_config,
                    "config.json with credentials (default: $DOCKER_CONFIG or ~/.docker)");
  image->add_option("--work-dir", image_opts.work_dir, "parent of the temporary directory");
  image->add_flag("--keep-work-dir", image_opts.keep_work_dir, "keep the pulled layout and build");
  image->add_option("--compressor", compressor, "zstd | lz4_block | none")
      ->check(CLI::IsMember({"zstd", "lz4_block", "none"}));
  image->add_option("--digester", digester, "sha256 | blake3")
      ->check(CLI::IsMember({"sha256", "blake3"}));
  image->add_option("--chunk-size", chunk_size, "power of two, 4K..16M (e.g. 1M, 64K)");
  image->add_option("--threads", opts.workers, "compression workers (0 = one per CPU)");
  image->add_option("--prefetch-files", prefetch_files,
                    "file of paths to fetch first, one a line ('-': stdin): the prefetch table; "
                    "their chunks go first in the blob, in list order");

  CLI11_PARSE(app, argc, argv);
  base::init_logging("nydus-convert", log_level);

  if (!prefetch_files.empty()) {
    std::string text;
    if (prefetch_files == "-") {
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    } else {
      auto bytes = base::read_file(prefetch_files);
      if (!bytes) {
        return fail(bytes.error().wrap("--prefetch-files"));
      }
      text.assign(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    }
    auto list = convert::parse_prefetch_list(text);
    if (!list) {
      return fail(list.error().wrap(prefetch_files));
    }
    opts.prefetch_files = std::move(*list);
  }

  if (build->parsed()) {
    opts.compressor = *base::parse_compressor(compressor);
    opts.digester = *base::parse_digest_algo(digester);
    auto cs = convert::parse_chunk_size(chunk_size);
    if (!cs) {
      return fail(cs.error());
    }
    opts.chunk_size = *cs;
    auto r = convert::build_image(source, outdir, opts);
    return r ? 0 : fail(r.error());
  }
  if (image->parsed()) {
    opts.compressor = *base::parse_compressor(compressor);
    opts.digester = *base::parse_digest_algo(digester);
    auto cs = convert::parse_chunk_size(chunk_size);
    if (!cs) {
      return fail(cs.error());
    }
    opts.chunk_size = *cs;
    image_opts.build = opts;
    if (!platform.empty()) {
      auto p = convert::parse_platform(platform);
      if (!p) {
        return fail(p.error());
      }
      image_opts.platform = *p;
    }
    auto r = convert::convert_image(src_ref, dst_ref, image_opts);
    if (!r) {
      return fail(r.error());
    }
    std::printf("%s\n",
                r->index_digest.empty() ? r->manifest_digest.c_str() : r->index_digest.c_str());
    return 0;
  }
  if (inspect->parsed()) {
    auto r = convert::inspect_json(bootstrap);
    if (!r) {
      return fail(r.error());
    }
    std::printf("%s\n", r->c_str());
    return 0;
  }
  if (unpack->parsed()) {
    auto r = convert::unpack_blobs(bootstrap, blob_dir, outdir);
    return r ? 0 : fail(r.error());
  }
  if (cat->parsed()) {
    auto r = convert::cat_file(bootstrap, path, blob_dir, STDOUT_FILENO);
    return r ? 0 : fail(r.error());
  }
  if (check->parsed()) {
    auto r = convert::check_image(bootstrap, blob_dir);
    if (!r) {
      return fail(r.error());
    }
    std::printf("check OK: %llu inodes, %llu files, %llu bytes, %llu chunks verified, %llu blobs\n",
                static_cast<unsigned long long>(r->inodes),
                static_cast<unsigned long long>(r->files),
                static_cast<unsigned long long>(r->bytes),
                static_cast<unsigned long long>(r->chunks_verified),
                static_cast<unsigned long long>(r->blobs));
    return 0;
  }
  return 2;
}
