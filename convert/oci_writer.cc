// SPDX-License-Identifier: Apache-2.0
#include "convert/oci_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <memory>

#include <nlohmann/json.hpp>

#include "base/digest.h"
#include "convert/fs_util.h"
#include "registry/manifest.h"

namespace convert {
namespace {

using json = nlohmann::json;

struct WriteArchiveDeleter {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};

la_ssize_t append_cb(struct archive* /*a*/, void* self, const void* buf, size_t n) {
  auto* out = static_cast<std::vector<std::byte>*>(self);
  const auto* p = static_cast<const std::byte*>(buf);
  out->insert(out->end(), p, p + n);
  return static_cast<la_ssize_t>(n);
}

json descriptor(const std::string& media_type, const std::string& digest, std::uint64_t size) {
  return json{{"mediaType", media_type}, {"digest", digest}, {"size", size}};
}

// Store bytes under blobs/sha256; returns "sha256:<hex>".
base::Result<std::string> put_blob(int sha_dir, base::Bytes data) {
  std::string hex = base::hex(base::sha256(data));
  struct stat st {};
  if (::fstatat(sha_dir, hex.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    CFN_TRY(write_new_file_at(sha_dir, hex, data));
  }
  return "sha256:" + hex;
}

}  // namespace

base::Result<std::vector<std::byte>> make_single_file_tar(const std::string& path,
                                                          base::Bytes data) {
  std::vector<std::byte> out;
  std::unique_ptr<struct archive, WriteArchiveDeleter> a(archive_write_new());
  if (!a || archive_write_set_format_pax_restricted(a.get()) != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(a.get(), 1) != ARCHIVE_OK ||
      archive_write_open(a.get(), &out, nullptr, append_cb, nullptr) != ARCHIVE_OK) {
    return base::errorf(EIO, "tar writer: {}", a ? archive_error_string(a.get()) : "no memory");
  }
  std::unique_ptr<struct archive_entry, EntryDeleter> e(archive_entry_new());
  auto slash = path.rfind('/');
  if (slash != std::string::npos) {
    archive_entry_set_pathname(e.get(), path.substr(0, slash + 1).c_str());
    archive_entry_set_filetype(e.get(), AE_IFDIR);
    archive_entry_set_perm(e.get(), 0755);
    archive_entry_set_mtime(e.get(), 0, 0);
    if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK) {
      return base::errorf(EIO, "tar writer: {}", archive_error_string(a.get()));
    }
    archive_entry_clear(e.get());
  }
  archive_entry_set_pathname(e.get(), path.c_str());
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0644);
  archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
  archive_entry_set_mtime(e.get(), 0, 0);
  if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK ||
      archive_write_data(a.get(), data.data(), data.size()) !=
          static_cast<la_ssize_t>(data.size()) ||
      archive_write_close(a.get()) != ARCHIVE_OK) {
    return base::errorf(EIO, "tar writer: {}", archive_error_string(a.get()));
  }
  return out;
}

base::Result<std::vector<std::byte>> gzip_bytes(base::Bytes data) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return base::errorf(EIO, "deflateInit2 failed");
  }
  std::vector<std::byte> out(deflateBound(&zs, data.size()) + 64);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int r = deflate(&zs, Z_FINISH);
  std::size_t n = zs.total_out;
  deflateEnd(&zs);
  if (r != Z_STREAM_END) {
    return base::errorf(EIO, "gzip: deflate failed ({})", r);
  }
  out.resize(n);
  return out;
}

base::Result<std::string> write_oci_layout(int oci_dir, int blobs_dir, const OciOutput& out) {
  CFN_ASSIGN_OR_RETURN(base::UniqueFd blobs_root, make_dir_at(oci_dir, "blobs"));
  CFN_ASSIGN_OR_RETURN(base::UniqueFd sha_dir, make_dir_at(blobs_root.get(), "sha256"));

  json layers = json::array();
  json diff_ids = json::array();
  for (const auto& b : out.blobs) {
    if (::linkat(blobs_dir, b.id.c_str(), sha_dir.get(), b.id.c_str(), 0) != 0 && errno != EEXIST) {
      return base::errno_error("hardlink blob " + b.id + " into the OCI layout");
    }
    std::string digest = "sha256:" + b.id;
    json d = descriptor(kMediaTypeNydusBlob, digest, b.compressed_size);
    d["annotations"] = {{kAnnotationNydusBlob, "true"}, {kAnnotationUncompressed, digest}};
    layers.push_back(std::move(d));
    diff_ids.push_back(digest);
  }

  CFN_ASSIGN_OR_RETURN(auto tar, make_single_file_tar(kBootstrapTarPath, out.bootstrap));
  std::string diff_id = base::oci_digest(base::sha256(tar));
  CFN_ASSIGN_OR_RETURN(auto tgz, gzip_bytes(tar));
  CFN_ASSIGN_OR_RETURN(std::string boot_digest, put_blob(sha_dir.get(), tgz));
  json bd = descriptor(kMediaTypeLayerTarGzip, boot_digest, tgz.size());
  bd["annotations"] = {{kAnnotationNydusBootstrap, "true"},
                       {kAnnotationFsVersion, "6"},
                       {kAnnotationUncompressed, diff_id}};
  layers.push_back(std::move(bd));
  diff_ids.push_back(diff_id);

  json src = json::object();
  if (!out.source_config_json.empty()) {
    src = json::parse(out.source_config_json, nullptr, /*allow_exceptions=*/false);
    if (src.is_discarded() || !src.is_object()) {
      return base::errorf(EINVAL, "source image config is not a JSON object");
    }
  }
  json config = json::object();
  auto copy_string = [&](const char* key, const std::string& fallback) {
    auto it = src.find(key);
    if (it != src.end() && it->is_string()) {
      config[key] = *it;
    } else if (!fallback.empty()) {
      config[key] = fallback;
    }
  };
  copy_string("architecture", registry::host_architecture());
  copy_string("os", "linux");
  copy_string("variant", "");
  copy_string("created", "");
  copy_string("author", "");
  if (auto it = src.find("config"); it != src.end() && it->is_object()) {
    config["config"] = *it;  // Env, Cmd, Entrypoint, WorkingDir, User, Labels, ...
  } else {
    config["config"] = json::object();
  }
  config["rootfs"] = {{"type", "layers"}, {"diff_ids", diff_ids}};
  std::string config_text = config.dump();
  CFN_ASSIGN_OR_RETURN(std::string config_digest,
                       put_blob(sha_dir.get(), base::as_bytes(config_text)));

  json manifest = {{"schemaVersion", 2},
                   {"mediaType", kMediaTypeManifest},
                   {"config", descriptor(kMediaTypeConfig, config_digest, config_text.size())},
                   {"layers", layers}};
  std::string manifest_text = manifest.dump();
  CFN_ASSIGN_OR_RETURN(std::string manifest_digest,
                       put_blob(sha_dir.get(), base::as_bytes(manifest_text)));

  json entry = descriptor(kMediaTypeManifest, manifest_digest, manifest_text.size());
  entry["platform"] = {{"os", config["os"]}, {"architecture", config["architecture"]}};
  entry["annotations"] = {
      {"org.opencontainers.image.ref.name", out.ref_name.empty() ? "latest" : out.ref_name}};
  json index = {
      {"schemaVersion", 2}, {"mediaType", kMediaTypeIndex}, {"manifests", json::array({entry})}};
  CFN_TRY(write_new_file_at(oci_dir, "oci-layout",
                            base::as_bytes(std::string(R"({"imageLayoutVersion":"1.0.0"})"))));
  CFN_TRY(write_new_file_at(oci_dir, "index.json", base::as_bytes(index.dump())));
  return manifest_digest;
}

}  // namespace convert
