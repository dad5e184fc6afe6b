// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/filter.h"

#include <cerrno>
#include <cstdint>

#include <fmt/format.h>
#include <re2/re2.h>

namespace snapshotter {
namespace {

// Rune values below zero are tokens, as in the grammar's scanner.
constexpr int32_t kEof = -1;
constexpr int32_t kIllegal = -2;
constexpr int32_t kRuneError = 0xFFFD;

enum class Tok { kEof, kQuoted, kValue, kField, kSeparator, kOperator, kIllegal, kOther };

// Decode one UTF-8 rune at s[pos]: (rune, width). Invalid bytes give (kRuneError, 1), as
// Go's utf8.DecodeRuneInString does (overlong forms, surrogates and > U+10FFFF included).
std::pair<int32_t, size_t> decode_rune(std::string_view s, size_t pos) {
  auto b = [&](size_t i) { return static_cast<uint8_t>(s[pos + i]); };
  size_t left = s.size() - pos;
  uint8_t c0 = b(0);
  if (c0 < 0x80) {
    return {c0, 1};
  }
  auto cont = [&](size_t i) { return i < left && (b(i) & 0xC0) == 0x80; };
  if (c0 >= 0xC2 && c0 <= 0xDF && cont(1)) {
    return {((c0 & 0x1F) << 6) | (b(1) & 0x3F), 2};
  }
  if (c0 >= 0xE0 && c0 <= 0xEF && cont(1) && cont(2)) {
    int32_t r = ((c0 & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    if (r >= 0x800 && (r < 0xD800 || r > 0xDFFF)) {
      return {r, 3};
    }
    return {kRuneError, 1};
  }
  if (c0 >= 0xF0 && c0 <= 0xF4 && cont(1) && cont(2) && cont(3)) {
    int32_t r = ((c0 & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    if (r >= 0x10000 && r <= 0x10FFFF) {
      return {r, 4};
    }
  }
  return {kRuneError, 1};
}

void append_utf8(std::string& out, int32_t r) {
  if (r < 0 || r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF)) {
    r = kRuneError;
  }
  if (r < 0x80) {
    out.push_back(static_cast<char>(r));
  } else if (r < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (r >> 6)));
    out.push_back(static_cast<char>(0x80 | (r & 0x3F)));
  } else if (r < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (r >> 12)));
    out.push_back(static_cast<char>(0x80 | ((r >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (r & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (r >> 18)));
    out.push_back(static_cast<char>(0x80 | ((r >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((r >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (r & 0x3F)));
  }
}

bool is_space(int32_t r) {
  switch (r) {
    case '\t':
    case '\n':
    case '\v':
    case '\f':
    case '\r':
    case ' ':
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return r >= 0x2000 && r <= 0x200A;
  }
}
bool is_field_rune(int32_t r) {
  return r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9');
}
bool is_operator_rune(int32_t r) {
  return r == '=' || r == '!' || r == '~';
}
bool is_quote_rune(int32_t r) {
  return r == '/' || r == '|' || r == '"';
}
bool is_separator_rune(int32_t r) {
  return r == ',' || r == '.';
}
// Printable, not a space, not ','. Control characters (C0, DEL, C1) are the only
// non-graphic runes told apart here.
bool is_value_rune(int32_t r) {
  return r != ',' && !is_space(r) && r >= 0x20 && !(r >= 0x7F && r <= 0x9F);
}
int digit_val(int32_t r) {
  if (r >= '0' && r <= '9') {
    return r - '0';
  }
  if (r >= 'a' && r <= 'f') {
    return r - 'a' + 10;
  }
  if (r >= 'A' && r <= 'F') {
    return r - 'A' + 10;
  }
  return 16;
}

class Scanner {
 public:
  explicit Scanner(std::string_view input) : input_(input) {}

  int32_t next() {
    pos_ = ppos_;
    if (ppos_ >= input_.size()) {
      return kEof;
    }
    auto [r, w] = decode_rune(input_, ppos_);
    ppos_ += w;
    if (r == kRuneError) {
      error("rune error");
      return kIllegal;
    }
    if (r == 0) {
      error("unexpected null");
      return kIllegal;
    }
    return r;
  }

  int32_t peek() {
    size_t pos = pos_;
    size_t ppos = ppos_;
    int32_t ch = next();
    pos_ = pos;
    ppos_ = ppos;
    return ch;
  }

  struct Token {
    size_t pos;
    Tok tok;
    std::string_view text;
    int32_t ch;  // the rune for Tok::kOther
  };

  Token scan() {
    int32_t ch = next();
    size_t pos = pos_;
    while (ch >= 0 && is_space(ch)) {
      ch = next();
      pos = pos_;
    }
    if (ch == kEof) {
      return {pos, Tok::kEof, {}, ch};
    }
    if (ch == kIllegal) {
      return {pos, Tok::kIllegal, {}, ch};
    }
    if (is_quote_rune(ch)) {
      bool ok = scan_quoted(ch);
      return {pos, ok ? Tok::kQuoted : Tok::kIllegal, input_.substr(pos, ppos_ - pos), ch};
    }
    if (is_separator_rune(ch)) {
      value_ = false;
      return {pos, Tok::kSeparator, input_.substr(pos, ppos_ - pos), ch};
    }
    if (is_operator_rune(ch)) {
      while (is_operator_rune(peek())) {
        next();
      }
      value_ = true;
      return {pos, Tok::kOperator, input_.substr(pos, ppos_ - pos), ch};
    }
    if (value_) {
      while (is_value_rune(peek())) {
        next();
      }
      value_ = false;
      return {pos, Tok::kValue, input_.substr(pos, ppos_ - pos), ch};
    }
    if (is_field_rune(ch)) {
      while (is_field_rune(peek())) {
        next();
      }
      return {pos, Tok::kField, input_.substr(pos, ppos_ - pos), ch};
    }
    return {pos_, Tok::kOther, {}, ch};
  }

  [[nodiscard]] const std::string& err() const { return err_; }
  [[nodiscard]] size_t ppos() const { return ppos_; }

 private:
  bool scan_quoted(int32_t quote) {
    bool illegal = false;
    int32_t ch = next();
    while (ch != quote) {
      if (ch == '\n' || ch < 0) {
        error("quoted literal not terminated");
        return false;
      }
      if (ch == '\\') {
        bool legal = false;
        ch = scan_escape(quote, &legal);
        if (!legal) {
          illegal = true;
        }
      } else {
        ch = next();
      }
    }
    return !illegal;
  }

  int32_t scan_escape(int32_t quote, bool* legal) {
    int32_t ch = next();
    switch (ch) {
      case 'a':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
      case 'v':
      case '\\':
        *legal = true;
        return next();
      case 'x':
        return scan_digits(next(), 16, 2, legal);
      case 'u':
        return scan_digits(next(), 16, 4, legal);
      case 'U':
        return scan_digits(next(), 16, 8, legal);
      default:
        if (ch == quote) {
          *legal = true;
          return next();
        }
        if (ch >= '0' && ch <= '7') {
          return scan_digits(ch, 8, 3, legal);
        }
        error("illegal escape sequence");
        *legal = false;
        return ch;
    }
  }

  int32_t scan_digits(int32_t ch, int base, int n, bool* legal) {
    while (n > 0 && digit_val(ch) < base) {
      ch = next();
      --n;
    }
    if (n > 0) {
      error("illegal numeric escape sequence");
      *legal = false;
      return ch;
    }
    *legal = true;
    return ch;
  }

  void error(const char* msg) {
    if (err_.empty()) {
      err_ = msg;
    }
  }

  std::string_view input_;
  size_t pos_ = 0;
  size_t ppos_ = 0;
  bool value_ = false;
  std::string err_;
};

// Go-style unquoting of s (quotes included), with '/' and '|' allowed as quote characters
// that behave like '"'. nullopt on a syntax error.
std::optional<std::string> unquote(std::string_view s) {
  if (s.size() < 2) {
    return std::nullopt;
  }
  char quote = s.front();
  if (quote != s.back()) {
    return std::nullopt;
  }
  s = s.substr(1, s.size() - 2);
  if (quote != '"' && quote != '/' && quote != '|') {
    return std::nullopt;
  }
  if (s.find('\n') != std::string_view::npos) {
    return std::nullopt;
  }
  if (s.find('\\') == std::string_view::npos && s.find(quote) == std::string_view::npos) {
    return std::string(s);
  }
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == quote) {
      return std::nullopt;
    }
    if (static_cast<uint8_t>(c) >= 0x80) {
      // The scanner let only valid UTF-8 through; copy the rune's bytes.
      auto [r, w] = decode_rune(s, i);
      (void)r;
      out.append(s.substr(i, w));
      i += w;
      continue;
    }
    if (c != '\\') {
      out.push_back(c);
      ++i;
      continue;
    }
    if (i + 1 >= s.size()) {
      return std::nullopt;
    }
    char e = s[i + 1];
    i += 2;
    switch (e) {
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case '\\':
        out.push_back('\\');
        break;
      case 'x':
      case 'u':
      case 'U': {
        size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        if (s.size() - i < n) {
          return std::nullopt;
        }
        uint32_t v = 0;
        for (size_t j = 0; j < n; ++j) {
          int d = digit_val(static_cast<uint8_t>(s[i + j]));
          if (d >= 16) {
            return std::nullopt;
          }
          v = (v << 4) | static_cast<uint32_t>(d);
        }
        i += n;
        if (e == 'x') {
          out.push_back(static_cast<char>(v));
          break;
        }
        if (v > 0x10FFFF) {
          return std::nullopt;
        }
        append_utf8(out, static_cast<int32_t>(v));
        break;
      }
      case '0':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7': {
        uint32_t v = static_cast<uint32_t>(e - '0');
        if (s.size() - i < 2) {
          return std::nullopt;
        }
        for (size_t j = 0; j < 2; ++j) {
          int d = s[i + j] - '0';
          if (d < 0 || d > 7) {
            return std::nullopt;
          }
          v = (v << 3) | static_cast<uint32_t>(d);
        }
        i += 2;
        if (v > 255) {
          return std::nullopt;
        }
        out.push_back(static_cast<char>(v));
        break;
      }
      case '\'':
      case '"':
      case '|':
      case '/':
        if (e != quote) {
          return std::nullopt;
        }
        out.push_back(e);
        break;
      default:
        return std::nullopt;
    }
  }
  return out;
}

class Parser {
 public:
  explicit Parser(std::string_view input) : input_(input), scanner_(input) {}

  base::Result<std::vector<Filter::Selector>> selectors() {
    std::vector<Filter::Selector> all;
    CFN_ASSIGN_OR_RETURN(auto first, selector());
    all.push_back(std::move(first));
    for (;;) {
      int32_t ch = scanner_.peek();
      if (ch == ',') {
        auto t = scanner_.scan();
        if (t.tok != Tok::kSeparator) {
          return error(t.pos, "expected a separator");
        }
        CFN_ASSIGN_OR_RETURN(auto s, selector());
        all.push_back(std::move(s));
      } else if (ch == kEof) {
        return all;
      } else {
        return error(scanner_.ppos(), "unexpected input");
      }
    }
  }

 private:
  base::Result<Filter::Selector> selector() {
    Filter::Selector sel;
    CFN_ASSIGN_OR_RETURN(sel.fieldpath, fieldpath());
    int32_t ch = scanner_.peek();
    if (ch == ',' || ch == kEof) {
      sel.op = Filter::Op::kPresent;
      return sel;
    }
    auto t = scanner_.scan();
    if (t.tok == Tok::kOperator) {
      if (t.text == "==") {
        sel.op = Filter::Op::kEqual;
      } else if (t.text == "!=") {
        sel.op = Filter::Op::kNotEqual;
      } else if (t.text == "~=") {
        sel.op = Filter::Op::kMatches;
      } else {
        return error(t.pos, fmt::format("unsupported operator \"{}\"", t.text));
      }
    } else if (t.tok == Tok::kIllegal) {
      return error(t.pos, scanner_.err());
    } else {
      return error(t.pos, R"(expected an operator ("=="|"!="|"~="))");
    }
    auto v = scanner_.scan();
    switch (v.tok) {
      case Tok::kValue:
      case Tok::kField:
        sel.value = std::string(v.text);
        break;
      case Tok::kQuoted: {
        CFN_ASSIGN_OR_RETURN(sel.value, unquote_at(v.pos, v.text, sel.op == Filter::Op::kMatches));
        break;
      }
      case Tok::kIllegal:
        return error(v.pos, scanner_.err());
      default:
        return error(v.pos, "expected value or quoted");
    }
    if (sel.op == Filter::Op::kMatches) {
      auto re = std::make_shared<re2::RE2>(sel.value, re2::RE2::Quiet);
      if (!re->ok()) {
        return error(v.pos, fmt::format("bad regular expression: {}", re->error()));
      }
      sel.re = std::move(re);
    }
    return sel;
  }

  base::Result<std::vector<std::string>> fieldpath() {
    std::vector<std::string> fp;
    CFN_ASSIGN_OR_RETURN(auto f, field());
    fp.push_back(std::move(f));
    while (scanner_.peek() == '.') {
      auto t = scanner_.scan();
      if (t.tok != Tok::kSeparator) {
        return error(t.pos, "expected a field separator (`.`)");
      }
      CFN_ASSIGN_OR_RETURN(auto g, field());
      fp.push_back(std::move(g));
    }
    return fp;
  }

  base::Result<std::string> field() {
    auto t = scanner_.scan();
    switch (t.tok) {
      case Tok::kField:
        return std::string(t.text);
      case Tok::kQuoted:
        return unquote_at(t.pos, t.text, false);
      case Tok::kIllegal:
        return error(t.pos, scanner_.err());
      default:
        return error(t.pos, "expected field or quoted");
    }
  }

  base::Result<std::string> unquote_at(size_t pos, std::string_view s, bool allow_alt) {
    if (!allow_alt && s.front() != '"') {
      return error(pos, "invalid quote encountered");
    }
    auto u = unquote(s);
    if (!u) {
      return error(pos, "unquoting failed: quote syntax error");
    }
    return std::move(*u);
  }

  base::Unexpected error(size_t pos, std::string_view msg) {
    if (pos < input_.size()) {
      return base::errorf(EINVAL, "filters: parse error: [{} >|{}|< {}]: {}", input_.substr(0, pos),
                          input_.substr(pos, 1), input_.substr(pos + 1), msg);
    }
    return base::errorf(EINVAL, "filters: parse error: [{}]: {}", input_, msg);
  }

  std::string_view input_;
  Scanner scanner_;
};

bool match_selector(const Filter::Selector& s, const FieldLookup& lookup) {
  auto v = lookup(s.fieldpath);
  switch (s.op) {
    case Filter::Op::kPresent:
      return v.has_value();
    case Filter::Op::kEqual:
      return v.has_value() && *v == s.value;
    case Filter::Op::kNotEqual:
      return v.value_or(std::string_view()) != s.value;
    case Filter::Op::kMatches: {
      std::string_view text = v.value_or(std::string_view());
      return re2::RE2::PartialMatch(re2::StringPiece(text.data(), text.size()), *s.re);
    }
  }
  return false;
}

}  // namespace

base::Result<Filter> Filter::parse(std::string_view filter) {
  Filter f;
  if (filter.empty()) {
    return f;
  }
  Parser p(filter);
  CFN_ASSIGN_OR_RETURN(auto sels, p.selectors());
  f.any_.push_back(std::move(sels));
  return f;
}

base::Result<Filter> Filter::parse_all(std::span<const std::string> filters) {
  Filter all;
  for (const auto& s : filters) {
    CFN_ASSIGN_OR_RETURN(auto f, parse(s));
    if (f.any_.empty()) {
      // "" matches everything, so the whole list does.
      return Filter{};
    }
    all.any_.push_back(std::move(f.any_.front()));
  }
  return all;
}

bool Filter::match(const FieldLookup& lookup) const {
  if (any_.empty()) {
    return true;
  }
  for (const auto& sels : any_) {
    bool ok = true;
    for (const auto& s : sels) {
      if (!match_selector(s, lookup)) {
        ok = false;
        break;
      }
    }
    if (ok) {
      return true;
    }
  }
  return false;
}

}  // namespace snapshotter
