// SPDX-License-Identifier: Apache-2.0
#include "registry/range_read.h"

#include <algorithm>
#include <deque>
#include <vector>

#include "base/log.h"
#include "registry/util.h"

namespace registry::internal {
namespace {

// The body side of one Range GET of out.size() bytes at offset: a 206 starting at
// offset, or a 200 (the whole blob) whose bytes before offset are skipped as they
// stream. sink() points into this object, so it stays put (not copyable).
class RangeBody {
 public:
  RangeBody(const std::string& digest, std::uint64_t offset, base::MutableBytes out)
      : digest_(digest), offset_(offset), out_(out) {
    sink_.on_headers = [this](long status, const http::Headers& h) {
      return on_headers(status, h);
    };
    sink_.on_data = [this](base::Bytes data) { return on_data(data); };
  }
  RangeBody(const RangeBody&) = delete;
  RangeBody& operator=(const RangeBody&) = delete;

  http::Sink& sink() { return sink_; }
  std::string range_header() const {
    return fmt::format("Range: bytes={}-{}", offset_, offset_ + out_.size() - 1);
  }

  // Whether resp, the answer to the request that used sink(), filled out exactly.
  base::Status check(const http::Response& resp, std::string_view what) const {
    if (resp.status != 200 && resp.status != 206) {
      return status_error(resp, what);
    }
    if (got_ != out_.size()) {
      if (total_ && offset_ + out_.size() > *total_) {
        return base::errorf(ERANGE, "{}: past the end of the blob ({} bytes)", what, *total_);
      }
      if (resp.status == 200 && skip_ > 0) {
        return base::errorf(ERANGE, "{}: past the end of the blob", what);
      }
      return base::errorf(EBADMSG, "{}: short body ({} bytes)", what, got_);
    }
    return {};
  }

 private:
  base::Status on_headers(long status, const http::Headers& h) {
    got_ = 0;
    skip_ = 0;
    whole_blob_ = false;
    total_.reset();
    if (status == 206) {
      const auto cr = http::header(h, "content-range");
      const auto range = cr ? parse_content_range(*cr) : std::nullopt;
      if (!range) {
        return base::errorf(EBADMSG, "blob {}: 206 with a bad Content-Range '{}'", digest_,
                            cr.value_or(""));
      }
      if (range->first != offset_) {
        return base::errorf(EBADMSG, "blob {}: asked for bytes from {}, got {}", digest_, offset_,
                            range->first);
      }
      total_ = range->total;
    } else if (status == 200) {
      skip_ = offset_;  // a whole-blob answer: drop what comes before the range
      whole_blob_ = true;
    } else {
      return base::errorf(EBADMSG, "blob {}: HTTP {} to a Range request", digest_, status);
    }
    return {};
  }

  base::Result<bool> on_data(base::Bytes data) {
    if (skip_ > 0) {
      const std::uint64_t s = std::min<std::uint64_t>(skip_, data.size());
      skip_ -= s;
      data = data.subspan(static_cast<std::size_t>(s));
    }
    const std::size_t n = std::min(data.size(), out_.size() - got_);
    std::copy_n(data.begin(), n, out_.begin() + static_cast<std::ptrdiff_t>(got_));
    got_ += n;
    // A 200 streams the whole blob: stop once the range is in (the connection is
    // lost). A 206 ends by itself at its Content-Length: stopping it at its last
    // byte would close a connection that could be reused.
    return got_ < out_.size() || !whole_blob_;
  }

  const std::string& digest_;
  std::uint64_t offset_;
  base::MutableBytes out_;
  http::Sink sink_;
  std::uint64_t skip_ = 0;
  std::size_t got_ = 0;
  bool whole_blob_ = false;
  std::optional<std::uint64_t> total_;
};

std::string range_what(const Reference& repo, const std::string& digest, std::uint64_t offset,
                       std::size_t size) {
  return fmt::format("blob {} of {}, {} bytes at {}", digest, repo.repository, size, offset);
}

}  // namespace

// read_blob_range without the digest check; source as in read_range_from.
base::Status RangeReader::read_one(const Reference& repo, const std::string& digest, RangeRead& r,
                                   BlobSource* source) {
  if (r.out.empty()) {
    return {};
  }
  if (r.offset > UINT64_MAX - r.out.size()) {
    return base::errorf(EINVAL, "range at {} of {} bytes overflows", r.offset, r.out.size());
  }
  BlobSource found;
  if (source == nullptr) {
    source = &found;
  }
  CFN_TRY(endpoints_.pull<bool>(
      repo,
      [&](const Endpoint& ep) -> base::Result<bool> {
        return read_range_from(ep, repo, digest, r, source);
      },
      r.avoid_endpoint));
  r.endpoint = source->ep.base;
  return {};
}

// One Range GET from ep. A success also says in source where the read went in the end
// (the URL after redirects, the Authorization sent there).
base::Result<bool> RangeReader::read_range_from(const Endpoint& ep, const Reference& repo,
                                                const std::string& digest, const RangeRead& r,
                                                BlobSource* source) {
  RangeBody body(digest, r.offset, r.out);
  http::Request req;
  req.url = repo_url(ep, repo.repository, "/blobs/" + digest);
  req.headers.push_back(body.range_header());
  add_no_cache(req, r.no_cache);
  req.sink = &body.sink();
  CFN_ASSIGN_OR_RETURN(http::Response resp, auth_.call(ep, req, {scope_pull(repo.repository)}));
  CFN_TRY(body.check(resp, range_what(repo, digest, r.offset, r.out.size())));
  // call() left in req what went with the last hop: a redirect to another host
  // cleared the Authorization.
  *source = BlobSource{ep, resp.url, req.authorization};
  return true;
}

void RangeReader::read_many(const Reference& repo, const std::string& digest,
                            std::span<RangeRead> reads) {
  std::vector<RangeRead*> todo;  // the reads that need a request, in order
  for (RangeRead& r : reads) {
    if (r.out.empty() || r.offset > UINT64_MAX - r.out.size()) {
      r.result = read_one(repo, digest, r, nullptr);  // done or EINVAL
    } else {
      todo.push_back(&r);
    }
  }
  // One read alone first: it settles auth (a token), the endpoint (a mirror or
  // the origin) and the blob's URL after redirects, so the others neither race
  // through the 401 dance nor each follow the redirect. A read that fails only
  // for its own range (past the end) hands that job to the next.
  std::optional<BlobSource> source;
  std::size_t first = 0;
  while (first < todo.size() && !source) {
    RangeRead& r = *todo[first++];
    BlobSource found;
    r.result = read_one(repo, digest, r, &found);
    if (r.result) {
      source = std::move(found);
    } else if (r.result.error().code != ERANGE) {
      break;
    }
  }
  const std::span<RangeRead*> rest = std::span(todo).subspan(first);
  if (rest.empty()) {
    return;
  }
  if (!source) {
    // The lone read failed for good (after its retries, on every endpoint): the
    // rest would meet the same and spend the same time again, so a stalled
    // registry failed a fill only after twice (retries + 1) x stall_timeout. They
    // fail now: a read_blob_ranges call takes at most one read's retries.
    const base::Error& e = todo[first - 1]->result.error();
    for (RangeRead* r : rest) {
      r->result = base::Unexpected(base::Error{e.code, "not tried after: " + e.message});
    }
    return;
  }
  // The rest on one multi handle: up to max_parallel connections to the host
  // (HTTP/2 streams where offered), each range with its own retries.
  std::deque<RangeBody> bodies;
  std::vector<http::Request> reqs(rest.size());
  std::vector<http::Request*> ptrs;
  for (std::size_t i = 0; i < rest.size(); ++i) {
    RangeBody& body = bodies.emplace_back(digest, rest[i]->offset, rest[i]->out);
    http::Request& q = reqs[i];
    q.url = source->url;
    q.authorization = source->authorization;
    q.headers = source->ep.headers;
    q.headers.push_back(body.range_header());
    add_no_cache(q, rest[i]->no_cache);
    q.sink = &body.sink();
    q.retry = !source->ep.mirror;  // as in call(): the next endpoint is a mirror's retry
    ptrs.push_back(&q);
  }
  std::vector<base::Result<http::Response>> results =
      http_.perform_many(ptrs, config_.max_parallel);

  std::vector<RangeRead*> redo;
  bool mirror_failed = false;
  for (std::size_t i = 0; i < rest.size(); ++i) {
    RangeRead& r = *rest[i];
    if (results[i] && (results[i]->status == 401 || results[i]->status == 403)) {
      // A token that expired meanwhile, or a pre-signed URL that did: the full
      // path (auth dance, a fresh redirect) for this one.
      redo.push_back(&r);
      continue;
    }
    r.result = results[i]
                   ? bodies[i].check(*results[i], range_what(repo, digest, r.offset, r.out.size()))
                   : base::Status(base::Unexpected(results[i].error()));
    if (r.result) {
      r.endpoint = source->ep.base;
    }
    if (source->ep.mirror && !r.result &&
        classify_mirror_failure(r.result.error()) == MirrorFailure::kDown) {
      // As Endpoints::pull does: the mirror is skipped for a while, the read goes
      // elsewhere.
      mirror_failed = true;
      redo.push_back(&r);
    }
  }
  if (mirror_failed) {
    endpoints_.mark_down(source->ep, "range reads");
  }
  for (RangeRead* r : redo) {
    r->result = read_one(repo, digest, *r, nullptr);
  }
}

}  // namespace registry::internal
