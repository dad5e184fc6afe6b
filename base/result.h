// SPDX-License-Identifier: Apache-2.0
// Result<T>: a value or an Error (positive errno + context). Aliased once so the
// move to std::expected is a one-line change.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/core.h>
#include <tl/expected.hpp>

namespace base {

struct Error {
  int code = EIO;       // positive errno
  std::string message;  // what failed, with enough context to act on

  [[nodiscard]] std::string to_string() const;
  // Prefix more context: "reading blob x: <message>".
  [[nodiscard]] Error wrap(std::string_view context) const&;
  [[nodiscard]] Error wrap(std::string_view context) &&;
};

template <typename T>
using Result = tl::expected<T, Error>;
using Status = Result<void>;
using Unexpected = tl::unexpected<Error>;

[[nodiscard]] inline Unexpected make_error(int code, std::string message) {
  return Unexpected(Error{code, std::move(message)});
}

template <typename... Args>
[[nodiscard]] Unexpected errorf(int code, fmt::format_string<Args...> f, Args&&... args) {
  return Unexpected(Error{code, fmt::format(f, std::forward<Args>(args)...)});
}

// An error built from the current errno: "open /x: No such file or directory".
[[nodiscard]] Unexpected errno_error(std::string_view what);
[[nodiscard]] Unexpected errno_error(int err, std::string_view what);

}  // namespace base

// Propagate an error from an expression returning Result<...>; evaluates to nothing.
#define CFN_TRY(expr)                                           \
  do {                                                          \
    auto cfn_try_r_ = (expr);                                   \
    if (!cfn_try_r_) {                                          \
      return ::base::Unexpected(std::move(cfn_try_r_).error()); \
    }                                                           \
  } while (0)

#define CFN_CONCAT_INNER_(a, b) a##b
#define CFN_CONCAT_(a, b) CFN_CONCAT_INNER_(a, b)
// CFN_ASSIGN_OR_RETURN(auto x, expr): declare x from a Result or return its error.
#define CFN_ASSIGN_OR_RETURN(decl, expr) \
  CFN_ASSIGN_OR_RETURN_IMPL_(CFN_CONCAT_(cfn_r_, __LINE__), decl, expr)
#define CFN_ASSIGN_OR_RETURN_IMPL_(tmp, decl, expr)    \
  auto tmp = (expr);                                   \
  if (!tmp) {                                          \
    return ::base::Unexpected(std::move(tmp).error()); \
  }                                                    \
  decl = std::move(*tmp)
