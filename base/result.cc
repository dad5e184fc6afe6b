// SPDX-License-Identifier: Apache-2.0
#include "base/result.h"

#include <cstring>

namespace base {

std::string Error::to_string() const {
  return fmt::format("{} ({})", message, std::strerror(code));
}

Error Error::wrap(std::string_view context) const& {
  return Error{code, fmt::format("{}: {}", context, message)};
}

Error Error::wrap(std::string_view context) && {
  message = fmt::format("{}: {}", context, message);
  return std::move(*this);
}

Unexpected errno_error(std::string_view what) {
  return errno_error(errno, what);
}

Unexpected errno_error(int err, std::string_view what) {
  return Unexpected(Error{err, fmt::format("{}: {}", what, std::strerror(err))});
}

}  // namespace base
