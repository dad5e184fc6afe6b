// SPDX-License-Identifier: Apache-2.0
// The OCI descriptor parser, for callers that already hold parsed JSON (an OCI image
// layout's index.json and manifests in nydus-convert). The one parser of
// descriptors: parse_manifest uses it for config, layers and index entries.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "base/result.h"
#include "registry/manifest.h"

namespace registry {

// mediaType, digest (sha256 only) and size are required (a missing or negative size
// is an error, never 0); annotations, urls and platform are checked when present,
// and a null member counts as absent. EINVAL naming where and the field.
[[nodiscard]] base::Result<Descriptor> parse_descriptor(const nlohmann::json& j,
                                                        std::string_view where);

}  // namespace registry
