// SPDX-License-Identifier: Apache-2.0
#include "registry/push.h"

#include <algorithm>

#include "base/digest.h"
#include "base/log.h"
#include "registry/util.h"

namespace registry::internal {
namespace {

base::Result<std::string> next_location(const http::Response& r, std::string_view what) {
  const auto loc = http::header(r.headers, "location");
  if (!loc) {
    return base::errorf(EBADMSG, "{}: upload response without a Location", what);
  }
  auto abs = resolve_location(r.url, *loc);
  if (!abs) {
    return base::errorf(EBADMSG, "{}: bad upload Location: {}", what, abs.error().message);
  }
  return *abs;
}

}  // namespace

base::Result<std::optional<std::uint64_t>> Pusher::head_blob_at(const Endpoint& ep,
                                                                const Reference& repo,
                                                                const std::string& digest,
                                                                Scopes scopes) {
  http::Request req;
  req.method = "HEAD";
  req.url = repo_url(ep, repo.repository, "/blobs/" + digest);
  CFN_ASSIGN_OR_RETURN(http::Response resp, auth_.call(ep, req, std::move(scopes)));
  const std::string what = fmt::format("HEAD blob {} of {}", digest, repo.repository);
  if (resp.status == 404) {
    return std::optional<std::uint64_t>();
  }
  if (resp.status != 200) {
    return status_error(resp, what);
  }
  if (auto d = http::header(resp.headers, "docker-content-digest"); d && *d != digest) {
    return base::errorf(EBADMSG, "{}: registry answered for {}", what, *d);
  }
  const auto cl = http::header(resp.headers, "content-length");
  const auto size = cl ? parse_u64(*cl) : std::nullopt;
  if (!size) {
    return base::errorf(EBADMSG, "{}: no usable Content-Length", what);
  }
  return std::optional<std::uint64_t>(*size);
}

base::Status Pusher::push_blob(const Reference& repo, const std::string& digest, http::Body body,
                               std::uint64_t size, const PushOptions& options) {
  CFN_TRY(check_digest_arg(digest));
  CFN_ASSIGN_OR_RETURN(const Endpoint ep, endpoints_.origin(repo));
  Scopes scopes{scope_push(repo.repository)};
  if (!options.mount_from.empty() && options.mount_from != repo.repository) {
    scopes.insert(scope_pull(options.mount_from));
  }
  const std::string what = fmt::format("push blob {} to {}", digest, repo.to_string());
  CFN_ASSIGN_OR_RETURN(const auto have, head_blob_at(ep, repo, digest, scopes));
  if (have) {
    if (*have != size) {
      return base::errorf(EBADMSG, "{}: the registry has it with {} bytes, we have {}", what, *have,
                          size);
    }
    spdlog::debug("registry: {}: already there", what);
    return {};
  }
  http::Request start;
  start.method = "POST";
  start.url = repo_url(ep, repo.repository, "/blobs/uploads/");
  if (!options.mount_from.empty() && options.mount_from != repo.repository) {
    start.url += "?mount=" + url_escape(digest) + "&from=" + url_escape(options.mount_from);
  }
  CFN_ASSIGN_OR_RETURN(http::Response started, auth_.call(ep, start, scopes));
  if (started.status == 201) {
    spdlog::debug("registry: {}: mounted from {}", what, options.mount_from);
    return {};
  }
  if (started.status != 202) {
    return status_error(started, what + ": starting the upload");
  }
  CFN_ASSIGN_OR_RETURN(std::string location, next_location(started, what));

  if (options.chunk_size > 0) {
    for (std::uint64_t off = 0; off < size; off += options.chunk_size) {
      const std::uint64_t len = std::min(options.chunk_size, size - off);
      http::Request patch;
      patch.method = "PATCH";
      patch.url = location;
      patch.retry = false;
      patch.headers.push_back("Content-Type: application/octet-stream");
      patch.headers.push_back(fmt::format("Content-Range: {}-{}", off, off + len - 1));
      http::Body part = body;
      if (part.fd >= 0) {
        part.offset = off;
        part.size = len;
      } else {
        part.mem = body.mem.subspan(static_cast<std::size_t>(off), static_cast<std::size_t>(len));
      }
      patch.body = part;
      CFN_ASSIGN_OR_RETURN(http::Response r, auth_.call(ep, patch, scopes));
      if (r.status != 202 && r.status != 204) {
        return status_error(r, fmt::format("{}: chunk at {}", what, off));
      }
      CFN_ASSIGN_OR_RETURN(location, next_location(r, what));
    }
    body = http::Body{};  // the final PUT carries no bytes
  }
  http::Request put;
  put.method = "PUT";
  put.url = with_query(location, "digest=" + url_escape(digest));
  put.headers.push_back("Content-Type: application/octet-stream");
  put.body = body;
  CFN_ASSIGN_OR_RETURN(http::Response done, auth_.call(ep, put, scopes));
  if (done.status != 201 && done.status != 204 && done.status != 200) {
    return status_error(done, what + ": committing the upload");
  }
  if (auto d = http::header(done.headers, "docker-content-digest"); d && *d != digest) {
    return base::errorf(EBADMSG, "{}: registry stored it as {}", what, *d);
  }
  return {};
}

base::Result<std::string> Pusher::push_manifest(const Reference& ref, std::string_view media_type,
                                                base::Bytes body) {
  const std::string ours = base::oci_digest(base::sha256(body));
  if (!ref.digest.empty() && ref.digest != ours) {
    return base::errorf(EINVAL, "push manifest {}: body digest is {}", ref.to_string(), ours);
  }
  if (media_type.empty() || media_type.size() > 256 ||
      media_type.find_first_of("\r\n") != std::string_view::npos) {
    return base::errorf(EINVAL, "push manifest {}: bad media type", ref.to_string());
  }
  CFN_ASSIGN_OR_RETURN(const Endpoint ep, endpoints_.origin(ref));
  http::Request req;
  req.method = "PUT";
  req.url = repo_url(ep, ref.repository, "/manifests/" + ref.manifest_ref());
  req.headers.push_back("Content-Type: " + std::string(media_type));
  req.body = http::Body{body, -1, 0, 0};
  CFN_ASSIGN_OR_RETURN(http::Response resp, auth_.call(ep, req, {scope_push(ref.repository)}));
  const std::string what = fmt::format("push manifest {}", ref.to_string());
  if (resp.status != 201 && resp.status != 200) {
    return status_error(resp, what);
  }
  if (auto d = http::header(resp.headers, "docker-content-digest"); d && *d != ours) {
    return base::errorf(EBADMSG, "{}: registry says digest {}, ours is {}", what, *d, ours);
  }
  return ours;
}

}  // namespace registry::internal
