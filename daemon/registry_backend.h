// SPDX-License-Identifier: Apache-2.0
// The registry backend: blob bytes by HTTP Range GETs from the image's repository,
// through one shared registry::Client (connections, tokens and mirrors are its).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "daemon/backend.h"
#include "daemon/early_ranges.h"
#include "registry/client.h"
#include "registry/reference.h"

namespace cfnd {

// Blob id <id> is the blob "sha256:<id>" of ref's repository (host + repository), or the
// layer renamed maps it to (renamed_blob_layers of the manifest). When sha256:<id> is not
// found (ENOENT) and the manifest was not read yet, ref (tag or digest) is resolved once
// and a data layer annotated containerd.io/snapshot/nydus-blob-digest sha256:<id> serves
// the read. client is shared with every other backend of the program. The
// reads of one Backend::read call run in parallel (up to the client's max_parallel).
// Errors are the client's (ENOENT, EACCES, EBADMSG, ETIMEDOUT, ECONNRESET, EIO,
// ERANGE); EINVAL for a blob id that is not 64 lower-case hex digits.
// early: ranges fetched before the backend was made (an eStargz image's prioritized
// files, pull_bootstrap): a read starting inside one is served from it as far as it
// reaches, the rest from the registry; a refetch never is. It must use client (it is
// destroyed with the backend, before client).
[[nodiscard]] std::unique_ptr<Backend> make_registry_backend(
    std::shared_ptr<registry::Client> client, registry::Reference ref,
    std::map<std::string, std::string> renamed = {}, std::shared_ptr<EarlyRanges> early = nullptr);

}  // namespace cfnd
