// SPDX-License-Identifier: Apache-2.0
// A bind request checked against what this daemon runs: every error a client can cause
// is found here, before anything is downloaded or mounted.
#pragma once

#include <optional>
#include <string>

#include "base/result.h"
#include "control/api.h"
#include "daemon/config.h"
#include "registry/reference.h"

namespace cfnd {

// What the daemon offers binds.
struct BindOffer {
  Frontend default_frontend = Frontend::kFuse;  // never kAuto
  bool cachefiles = false;
  bool fanotify = false;
  RegistryOptions registry;  // the defaults a bind's overrides apply to
};

struct BindPlan {
  std::string mountpoint;  // real path of a directory
  Frontend frontend = Frontend::kFuse;
  // A registry image: ref and the options it binds with. A local one: bootstrap (as
  // given) and blob_dir (real path of a directory).
  std::optional<registry::Reference> ref;
  RegistryOptions registry;
  std::string bootstrap;
  std::string blob_dir;
  std::string fsid;  // kCachefiles; empty: from the bootstrap
  std::string domain_id;
};

// Errors: EINVAL (an unknown front end, fsid/domain_id without cachefiles, a bad
// reference, bad registry options), EOPNOTSUPP (a front end this daemon does not run),
// the errno of a mount point or blob dir that is missing, ENOTDIR when not a directory.
[[nodiscard]] base::Result<BindPlan> plan_bind(const control::BindRequest& req,
                                               const BindOffer& offer);

// A prefetch request (control::PrefetchRequest): the image's reference, the registry
// options over the daemon's defaults, and its local bootstrap.
struct PrefetchPlan {
  registry::Reference ref;
  RegistryOptions registry;
  std::string bootstrap;  // an absolute path of a regular file
};

// Errors: EINVAL (a bad reference, bad registry options, a bootstrap that is not an
// absolute path of a regular file).
[[nodiscard]] base::Result<PrefetchPlan> plan_prefetch(const control::PrefetchRequest& req,
                                                       const RegistryOptions& defaults);

// realpath(p), which must be a directory. Errors: realpath's errno, ENOTDIR.
[[nodiscard]] base::Result<std::string> real_dir(const std::string& p, const char* what);

}  // namespace cfnd
