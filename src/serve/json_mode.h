// JSON mode (`response_format: {"type": "json_object"}`): constrains generation so the output is
// one JSON object (RFC 8259), optionally surrounded by whitespace.
//
// JsonState is a byte-level push-down automaton that accepts exactly the prefixes of such texts.
// It is a small fixed-size value (copying it is cheap), so a token can be tried by copying the
// state and pushing the token's bytes. JsonTokenFilter precomputes every token's bytes and, given
// a state, masks the logits of tokens that would leave the valid prefixes.
//
// Limits (a text beyond them is rejected as if invalid): nesting depth kMaxDepth; a run of more
// than kMaxWhitespace consecutive whitespace bytes outside strings (keeps a model from padding
// forever). Strings must be valid UTF-8 and their escapes valid JSON escapes; control characters
// below 0x20 are rejected inside strings; numbers follow the JSON grammar (no leading zeros, no
// "+", no NaN/Infinity).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tokenizer.h"

namespace whale::serve {

class SchemaState;

class JsonState {
 public:
  static constexpr int kMaxDepth = 64;
  static constexpr int kMaxWhitespace = 16;

  // Pushes one byte; returns false (and leaves the state unusable) if the text would no longer be
  // a valid prefix.
  bool push(uint8_t byte);
  bool push(std::string_view bytes);  // all bytes, stops at the first invalid one
  // The top-level object is closed: the text is a complete JSON object (trailing whitespace may
  // still follow, within the limit).
  bool complete() const;

 private:
  // Where the scanner is. Outside strings the mode says what may come next; inside strings and
  // numbers it is the lexer's position.
  enum class Mode : uint8_t {
    kStart,       // before the top-level '{'
    kObjFirst,    // after '{': a key or '}'
    kObjKey,      // after ',' in an object: a key
    kColon,       // after a key: ':'
    kValue,       // after ':' or after ',' in an array: a value
    kArrFirst,    // after '[': a value or ']'
    kAfterValue,  // after a value inside a container: ',' or the matching closer
    kDone,        // the top-level object is closed: only whitespace
    kString,      // inside a string (aux_: unused)
    kEscape,      // after '\' in a string
    kHex,         // inside \uXXXX (aux_: hex digits seen)
    kLowSlash,    // after a high-surrogate escape: its low half must follow, '\' ...
    kLowU,        // ... then 'u'
    kUtf8,        // inside a multi-byte UTF-8 character (aux_: continuation bytes left)
    kTrue,        // inside a literal (aux_: characters matched so far)
    kFalse,
    kNull,
    kMinus,      // "-"
    kZero,       // "-?0"
    kInt,        // "-?[1-9][0-9]*"
    kDot,        // an integer part, then "."
    kFrac,       // ... "." [0-9]+
    kExp,        // ... "e" or "E"
    kExpSign,    // ... "e" [+-]
    kExpDigits,  // ... "e" [+-]? [0-9]+
    kFailed,
  };
  // flags_ bits.
  static constexpr uint8_t kInKey = 1;      // the current string is an object key
  static constexpr uint8_t kLowHalf = 2;    // the \u escape being read must be a low surrogate
  static constexpr uint8_t kMaybeHigh = 4;  // this \u escape started with 'D'
  static constexpr uint8_t kHigh = 8;       // this \u escape is a high surrogate

  friend class JsonTokenFilter;  // reads mode_ for its fast path inside strings

  bool push_structural(uint8_t byte);  // modes outside strings, numbers and literals
  bool start_value(uint8_t byte);      // first byte of a value
  void end_value() { mode_ = depth_ == 0 ? Mode::kDone : Mode::kAfterValue; }
  bool open(bool object);
  bool close(bool object);
  bool fail() {
    mode_ = Mode::kFailed;
    return false;
  }

  uint64_t stack_ = 0;  // bit d: the container at depth d+1 is an object (1) or an array (0)
  uint8_t depth_ = 0;   // open containers
  Mode mode_ = Mode::kStart;
  uint8_t ws_run_ = 0;             // consecutive whitespace bytes outside strings
  uint8_t aux_ = 0;                // per-mode counter (see Mode)
  uint8_t lo_ = 0x80, hi_ = 0xBF;  // kUtf8: the range of the next continuation byte
  uint8_t flags_ = 0;
  static_assert(kMaxDepth <= 64, "the container stack is one 64-bit word");
};

// Immutable once built: mask() and allowed() may be called concurrently.
class JsonTokenFilter {
 public:
  // `eos_id`: the end-of-sequence token (-1: none), allowed only when the state is complete; an id
  // outside the vocabulary is std::invalid_argument. Special and added tokens other than eos are
  // never allowed; ids without a token and empty tokens are never allowed.
  //
  // Guarantee: in every state reachable through allowed tokens, at least one token is allowed
  // (eos once complete). It rests on single-byte tokens: every incomplete state accepts one of the
  // bytes JSON uses outside string contents (structural characters, digits, "-+.eE", the letters
  // of true/false/null), the escape letters and hex digits, or the UTF-8 continuation bytes
  // 0x80-0xBF. The constructor throws std::runtime_error naming the byte when the vocabulary has
  // no plain (not added) single-byte token for one of them; byte-level BPE vocabularies such as
  // DeepSeek-V3's have all 256.
  JsonTokenFilter(const Tokenizer& tok, int32_t eos_id);

  // Sets logits[id] = -inf for every id that cannot follow `state`; allowed logits are left as
  // they are. logits.size() may exceed the tokenizer's vocabulary (extra model rows): those ids are
  // masked too; a logits span smaller than the vocabulary is std::invalid_argument. Returns the
  // number of ids left allowed.
  size_t mask(const JsonState& state, std::span<float> logits) const;
  // The same for a JSON-schema state (serve/json_schema.h): the tokens that keep the text a prefix
  // of a value valid for the schema.
  size_t mask(const SchemaState& state, std::span<float> logits) const;

  // Whether token `id` may follow `state` (same rule as mask).
  bool allowed(const JsonState& state, int32_t id) const;

 private:
  // The candidate tokens (not added/special, not eos, non-empty), sorted by their bytes, so that
  // mask() walks them like a trie: the automaton states for the prefix a token shares with the
  // previous one are reused, and once a prefix is rejected every following token with that prefix
  // is rejected without looking at its bytes.
  //
  // Inside a string nearly every token is allowed, so the walk would push most of the vocabulary's
  // bytes. There each token's leading run of plain string content (printable ASCII other than '"'
  // and '\\', and whole valid UTF-8 characters), which leaves the state as it was, is skipped
  // without pushing: usually the whole token.
  struct Entry {
    uint32_t offset;  // into bytes_
    uint32_t size;
    uint32_t lcp;    // bytes in common with the previous entry
    uint32_t plain;  // length of the leading plain string content
    int32_t id;
  };
  template <class State>
  size_t mask_any(const State& state, std::span<float> logits) const;
  template <class State>
  size_t mask_in_string(const State& state, std::span<float> logits) const;
  template <class State>
  size_t mask_walk(const State& state, std::span<float> logits) const;
  static bool in_plain_string(const JsonState& state);
  static bool in_plain_string(const SchemaState& state);

  std::string bytes_;
  std::vector<Entry> entries_;
  std::vector<int32_t> entry_of_id_;  // id -> index into entries_, -1 when never a candidate
  std::vector<int32_t> never_;        // ids below vocab_size_ that are not candidates (eos aside)
  size_t vocab_size_ = 0;
  size_t max_token_size_ = 0;
  int32_t eos_id_ = -1;
};

}  // namespace whale::serve
