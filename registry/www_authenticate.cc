// SPDX-License-Identifier: Apache-2.0
#include "registry/www_authenticate.h"

#include "registry/util.h"

namespace registry {
namespace {

constexpr std::size_t kMaxHeader = 8192;
constexpr std::size_t kMaxParams = 32;

bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
    return true;
  }
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':  // NOLINT
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  void skip_ows() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t')) {
      ++pos_;
    }
  }
  // Whitespace and empty list elements (",  ,").
  void skip_ows_commas() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == ',')) {
      ++pos_;
    }
  }
  [[nodiscard]] bool done() const { return pos_ >= s_.size(); }
  [[nodiscard]] char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  std::string_view token() {
    const std::size_t start = pos_;
    while (pos_ < s_.size() && is_tchar(s_[pos_])) {
      ++pos_;
    }
    return s_.substr(start, pos_ - start);
  }
  [[nodiscard]] std::size_t pos() const { return pos_; }
  void set_pos(std::size_t p) { pos_ = p; }

  base::Result<std::string> quoted() {
    ++pos_;  // opening quote
    std::string out;
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') {
        return out;
      }
      if (c == '\\') {
        if (pos_ >= s_.size()) {
          break;
        }
        const char e = s_[pos_++];
        if (static_cast<unsigned char>(e) < 0x20 && e != '\t') {
          return base::errorf(EINVAL, "WWW-Authenticate: control character in quoted string");
        }
        out.push_back(e);
        continue;
      }
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
        return base::errorf(EINVAL, "WWW-Authenticate: control character in quoted string");
      }
      out.push_back(c);
    }
    return base::errorf(EINVAL, "WWW-Authenticate: unterminated quoted string");
  }

 private:
  std::string_view s_;
  std::size_t pos_ = 0;
};

}  // namespace

base::Result<std::vector<Challenge>> parse_www_authenticate(std::string_view value) {
  if (value.size() > kMaxHeader) {
    return base::errorf(EINVAL, "WWW-Authenticate header too long ({} bytes, limit {})",
                        value.size(), kMaxHeader);
  }
  std::vector<Challenge> out;
  std::size_t nparams = 0;
  Parser p(value);
  p.skip_ows_commas();
  while (!p.done()) {
    const std::string_view scheme = p.token();
    if (scheme.empty()) {
      return base::errorf(EINVAL, "WWW-Authenticate: expected an auth scheme at offset {}",
                          p.pos());
    }
    Challenge ch;
    ch.scheme = internal::lower(scheme);
    if (!p.done() && p.peek() != ' ' && p.peek() != '\t' && p.peek() != ',') {
      return base::errorf(EINVAL, "WWW-Authenticate: unexpected '{}' after scheme '{}'", p.peek(),
                          scheme);
    }
    // Parameters until a token that is not followed by '=' (the next scheme).
    while (true) {
      p.skip_ows_commas();
      if (p.done()) {
        break;
      }
      const std::size_t mark = p.pos();
      const std::string_view name = p.token();
      if (name.empty()) {
        return base::errorf(EINVAL, "WWW-Authenticate: unexpected '{}' at offset {}", p.peek(),
                            p.pos());
      }
      p.skip_ows();
      if (p.peek() != '=') {
        p.set_pos(mark);  // the next challenge begins here
        break;
      }
      p.set_pos(p.pos() + 1);
      p.skip_ows();
      std::string val;
      if (p.peek() == '"') {
        CFN_ASSIGN_OR_RETURN(val, p.quoted());
      } else if (p.peek() == '=' || p.peek() == ',' || p.done()) {
        // token68 ("Negotiate abc==") or "key=": keep it whole as the token68 param.
        std::string t68(name);
        t68.push_back('=');
        while (p.peek() == '=') {
          t68.push_back('=');
          p.set_pos(p.pos() + 1);
        }
        if (t68.size() > 1 && t68.back() == '=' && p.peek() != ',' && !p.done()) {
          return base::errorf(EINVAL, "WWW-Authenticate: malformed token68");
        }
        if (!ch.params.empty() || !ch.params.emplace("token68", std::move(t68)).second) {
          return base::errorf(EINVAL, "WWW-Authenticate: empty value for '{}'", name);
        }
        if (++nparams > kMaxParams) {
          return base::errorf(EINVAL, "WWW-Authenticate: more than {} parameters", kMaxParams);
        }
        continue;
      } else {
        val = std::string(p.token());
        if (val.empty()) {
          return base::errorf(EINVAL, "WWW-Authenticate: bad value for '{}'", name);
        }
      }
      if (++nparams > kMaxParams) {
        return base::errorf(EINVAL, "WWW-Authenticate: more than {} parameters", kMaxParams);
      }
      if (!ch.params.emplace(internal::lower(name), std::move(val)).second) {
        return base::errorf(EINVAL, "WWW-Authenticate: parameter '{}' given twice",
                            internal::lower(name));
      }
      p.skip_ows();
      if (!p.done() && p.peek() != ',') {
        return base::errorf(EINVAL, "WWW-Authenticate: expected ',' after parameter '{}'", name);
      }
    }
    out.push_back(std::move(ch));
    p.skip_ows_commas();
  }
  if (out.empty()) {
    return base::errorf(EINVAL, "WWW-Authenticate: no challenge");
  }
  return out;
}

}  // namespace registry
