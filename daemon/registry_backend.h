// SPDX-License-Identifier: Apache-2.0
// The registry backend: blob bytes by HTTP Range GETs from the image's repository,
// through one shared registry::Client (connections, tokens and mirrors are its).
#pragma once

#include <memory>

#include "daemon/backend.h"
#include "registry/client.h"
#include "registry/reference.h"

namespace cfnd {

// Blob id <id> is the blob "sha256:<id>" of repo (host + repository; tag and digest
// are ignored). client is shared with every other backend of the program. The
// reads of one Backend::read call run in parallel (up to the client's max_parallel).
// Errors are the client's (ENOENT, EACCES, EBADMSG, ETIMEDOUT, ECONNRESET, EIO,
// ERANGE); EINVAL for a blob id that is not 64 lower-case hex digits.
[[nodiscard]] std::unique_ptr<Backend> make_registry_backend(
    std::shared_ptr<registry::Client> client, registry::Reference repo);

}  // namespace cfnd
