// Regular expressions written for JavaScript (the regexes of Hugging Face tokenizer.json files,
// whose reference implementation is JS), compiled with PCRE2 so they match what JS matches.
// Used by the tokenizer and by the BPE trainer's pre-tokenizer.
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace whale {

// Rewrites the escapes whose meaning differs between JavaScript and PCRE2+UCP:
// \s \S (JS: WhiteSpace+LineTerminator), \d \D \w \W (JS: ASCII only), \uXXXX (JS only).
std::string translate_ecma_regex(std::string_view pattern);

class Regex {
 public:
  struct CodeDeleter {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
  };
  struct MatchDataDeleter {
    void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
  };
  using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

  // `literal`: match the pattern text as is (Split {"String": ...}); else a JS regex. Throws
  // std::runtime_error naming the pattern when it does not compile.
  Regex(const std::string& pattern, bool literal);

  MatchData match_data() const {
    return MatchData(pcre2_match_data_create_from_pattern(code_.get(), nullptr));
  }

  // Calls f(begin, end) for every match in `s`, as JavaScript's String.matchAll does: after an
  // empty match the search resumes one code point later. `s` must be valid UTF-8.
  template <class F>
  void for_each_match(std::string_view s, pcre2_match_data* md, F&& f) const {
    size_t pos = 0;
    while (pos <= s.size()) {
      const int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) return;
      if (rc < 0) throw std::runtime_error("regex match failed: " + message(rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      f(ov[0], ov[1]);
      if (ov[1] > ov[0]) {
        pos = ov[1];
      } else if (ov[1] < s.size()) {
        pos = ov[1] + 1;  // past the next code point
        while (pos < s.size() && (static_cast<uint8_t>(s[pos]) & 0xC0) == 0x80) ++pos;
      } else {
        return;
      }
    }
  }

 private:
  static std::string message(int code);
  std::unique_ptr<pcre2_code, CodeDeleter> code_;
};

}  // namespace whale
