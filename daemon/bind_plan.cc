// SPDX-License-Identifier: Apache-2.0
#include "daemon/bind_plan.h"

#include <sys/stat.h>

#include <cstdlib>

#include "base/json_fields.h"

namespace cfnd {

base::Result<std::string> real_dir(const std::string& p, const char* what) {
  char* real = ::realpath(p.c_str(), nullptr);
  if (real == nullptr) {
    return base::errno_error(fmt::format("{} {}", what, p));
  }
  std::string r = real;
  std::free(real);  // NOLINT(cppcoreguidelines-no-malloc): realpath(3) mallocs
  if (!base::valid_utf8(r)) {
    // It would be listed, answered and recorded in the state file, all JSON (UTF-8).
    return base::errorf(EINVAL, "{} {} is not valid UTF-8 (resolved: {})", what, p, r);
  }
  struct stat st {};
  if (::stat(r.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return base::errorf(ENOTDIR, "{} {} is not a directory", what, p);
  }
  return r;
}

namespace {

// The image's bootstrap, already local (the snapshotter's unpacked bootstrap layer).
base::Status check_local_bootstrap(const std::string& path) {
  struct stat st {};
  if (path.empty() || path.front() != '/' || ::stat(path.c_str(), &st) != 0 ||
      !S_ISREG(st.st_mode)) {
    return base::errorf(EINVAL, "bootstrap {} is not an absolute path of a regular file", path);
  }
  return {};
}

base::Result<registry::Reference> parse_reference(const std::string& text) {
  auto r = registry::Reference::parse(text);
  if (!r) {
    return base::Unexpected(r.error().wrap("reference '" + text + "'"));
  }
  return r;
}

base::Result<RegistryOptions> with_overrides(const std::optional<control::RegistryOverrides>& o,
                                             const RegistryOptions& defaults) {
  if (!o) {
    return defaults;
  }
  CFN_ASSIGN_OR_RETURN(const std::string text, control::to_json(*o));
  return parse_registry_options(text, defaults);
}

}  // namespace

base::Result<PrefetchPlan> plan_prefetch(const control::PrefetchRequest& req,
                                         const RegistryOptions& defaults) {
  CFN_ASSIGN_OR_RETURN(auto ref, parse_reference(req.reference));
  CFN_ASSIGN_OR_RETURN(auto ropts, with_overrides(req.registry, defaults));
  CFN_TRY(check_local_bootstrap(req.bootstrap));
  return PrefetchPlan{std::move(ref), std::move(ropts), req.bootstrap};
}

base::Result<BindPlan> plan_bind(const control::BindRequest& req, const BindOffer& offer) {
  BindPlan p;
  p.frontend = offer.default_frontend;
  if (!req.frontend.empty()) {
    CFN_ASSIGN_OR_RETURN(p.frontend, parse_frontend(req.frontend));
    if (p.frontend == Frontend::kAuto) {
      p.frontend = offer.default_frontend;
    }
  }
  if (p.frontend == Frontend::kCachefiles && !offer.cachefiles) {
    return base::make_error(EOPNOTSUPP,
                            "the daemon runs without the cachefiles front end (start it "
                            "with --frontend cachefiles)");
  }
  if ((!req.fsid.empty() || !req.domain_id.empty()) && p.frontend != Frontend::kCachefiles) {
    return base::make_error(EINVAL, "\"fsid\" and \"domain_id\" go with the cachefiles front end");
  }
  if (p.frontend == Frontend::kFanotify && !offer.fanotify) {
    return base::make_error(EOPNOTSUPP, "this kernel or cache dir has no fanotify pre-content");
  }
  p.fsid = req.fsid;
  p.domain_id = req.domain_id;
  p.registry = offer.registry;
  if (!req.reference.empty()) {
    CFN_ASSIGN_OR_RETURN(p.ref, parse_reference(req.reference));
    CFN_ASSIGN_OR_RETURN(p.registry, with_overrides(req.registry, p.registry));
  }
  CFN_ASSIGN_OR_RETURN(p.mountpoint, real_dir(req.mountpoint, "mountpoint"));
  if (p.ref && !req.bootstrap.empty()) {
    CFN_TRY(check_local_bootstrap(req.bootstrap));
    p.bootstrap = req.bootstrap;
  }
  if (!p.ref) {
    p.bootstrap = req.bootstrap;
    CFN_ASSIGN_OR_RETURN(p.blob_dir, real_dir(req.blob_dir, "blob dir"));
  }
  return p;
}

}  // namespace cfnd
