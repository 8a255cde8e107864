#include "formats/ecma_regex.h"

#include <algorithm>
#include <cctype>

namespace whale {
namespace {

// ECMAScript WhiteSpace + LineTerminator: what JS's \s means.
constexpr const char* kEcmaSpaceClass =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}\\x{FEFF}";

}  // namespace

std::string translate_ecma_regex(std::string_view p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c != '\\' || i + 1 == p.size()) {
      if (c == '[' && !in_class)
        in_class = true;
      else if (c == ']' && in_class)
        in_class = false;
      out += c;
      continue;
    }
    const char e = p[++i];
    auto cls = [&](const char* body, bool negate) {
      if (in_class && !negate)
        out += body;
      else if (!in_class)
        out += std::string(negate ? "[^" : "[") + body + "]";
      else
        out += std::string("\\") + e;  // a negated class inside a class: keep PCRE2's meaning
    };
    switch (e) {
      case 's':
        cls(kEcmaSpaceClass, false);
        break;
      case 'S':
        cls(kEcmaSpaceClass, true);
        break;
      case 'd':
        cls("0-9", false);
        break;
      case 'D':
        cls("0-9", true);
        break;
      case 'w':
        cls("A-Za-z0-9_", false);
        break;
      case 'W':
        cls("A-Za-z0-9_", true);
        break;
      case 'u':
        if (i + 4 < p.size() && std::all_of(p.begin() + i + 1, p.begin() + i + 5, [](char h) {
              return std::isxdigit(static_cast<unsigned char>(h)) != 0;
            })) {
          out += "\\x{" + std::string(p.substr(i + 1, 4)) + "}";
          i += 4;
        } else {
          out += "\\u";
        }
        break;
      default:
        out += '\\';
        out += e;
    }
  }
  return out;
}

Regex::Regex(const std::string& pattern, bool literal) {
  const std::string src = literal ? pattern : translate_ecma_regex(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(src.data()), src.size(), options, &err,
                            &offset, nullptr));
  if (!code_)
    throw std::runtime_error("regex '" + pattern + "' does not compile at offset " +
                             std::to_string(offset) + ": " + message(err));
  pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);  // falls back to the interpreter
}

std::string Regex::message(int code) {
  PCRE2_UCHAR msg[256];
  pcre2_get_error_message(code, msg, sizeof msg);
  return reinterpret_cast<char*>(msg);
}

}  // namespace whale
