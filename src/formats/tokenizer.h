// Byte-level BPE tokenizer loaded from a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`).
//
// Reproduces the reference tokenizer (transformers.js / @lenml/tokenizers, which follows HF
// `tokenizers`) for DeepSeek-V3/R1 and other byte-level BPE files:
//   1. Invalid UTF-8 in the input is replaced first, exactly like the WHATWG TextDecoder the JS
//      reference sees its strings through: each maximal invalid subpart becomes U+FFFD.
//   2. Added tokens (special or not, e.g. "<｜User｜>") are cut out of the raw text first (longest
//      match, left to right) and map straight to their ids; lstrip/rstrip trim the neighbours.
//   3. Every other section goes through the normalizer (only identity forms are supported), the
//      pre-tokenizer (Sequence of Split regexes and ByteLevel) and byte-level BPE (lowest merge
//      rank first, leftmost on ties), with a cache per pre-token word.
// Regexes are compiled with PCRE2 (UTF + UCP, JIT when available). They are written for
// JavaScript's engine, so \s \S \d \D \w \W are rewritten to their ECMAScript meaning (e.g. \s
// includes U+FEFF but not U+0085) before compiling; Unicode property tables are PCRE2's.
//
// Thread safety: all const methods may be called concurrently. Copies share the loaded tables.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace whale {

// Returns `bytes` with every maximal invalid UTF-8 subpart replaced by U+FFFD (WHATWG "decode").
std::string utf8_sanitize(std::string_view bytes);

// Incremental WHATWG UTF-8 decoder: valid UTF-8 passes through, each maximal invalid subpart
// becomes U+FFFD, and an incomplete sequence at the end of one feed() is completed by the next.
class Utf8Decoder {
 public:
  void feed(std::string_view bytes, std::string& out);
  void finish(std::string& out);  // an incomplete trailing sequence becomes U+FFFD; resets
  bool pending() const { return bytes_needed_ != 0; }

 private:
  void reset();
  uint32_t code_point_ = 0;
  int bytes_needed_ = 0, bytes_seen_ = 0;
  uint8_t lower_ = 0x80, upper_ = 0xBF;
};

class Tokenizer {
 public:
  // Loads `dir`/tokenizer.json (required) and `dir`/tokenizer_config.json (optional: without it
  // there is no bos/eos and no chat template). Throws std::runtime_error naming the file and the
  // problem (missing file, bad JSON, unsupported component, merges that do not fit the vocab...).
  // `dir` may also be a GGUF file (a path ending in .gguf): see from_gguf.
  static Tokenizer load(const std::string& dir);

  // The tokenizer of a GGUF file, from its tokenizer.ggml.* metadata (formats/gguf_tokenizer.cpp):
  // model "gpt2" (byte-level BPE) with the pre-tokenizer named by tokenizer.ggml.pre, the tokens
  // of type CONTROL as special added tokens and USER_DEFINED as plain added tokens, bos/eos and
  // tokenizer.chat_template. Throws naming the file and key.
  static Tokenizer from_gguf(const std::string& path);

  // From the parsed tokenizer.json and tokenizer_config.json (null: none); the origins name them
  // in errors.
  static Tokenizer from_json(const nlohmann::json& tokenizer, const std::string& origin,
                             const nlohmann::json& config, const std::string& config_origin);

  // Text to ids. Added-token strings in `text` (special or not) become their ids. With add_bos, the
  // bos id is put first (when the tokenizer has one); pass add_bos() for the file's default.
  std::vector<int32_t> encode(std::string_view text, bool add_bos = false) const;

  // Ids to text. Byte runs between added tokens are decoded as UTF-8 with U+FFFD replacement (like
  // the reference); added tokens give their content. skip_special drops tokens marked special (bos,
  // eos, pad, ...; "<｜User｜>" is not special in DeepSeek's file). Ids without a token are
  // skipped. Applies clean_up_tokenization_spaces when the config asks for it (DeepSeek's does
  // not).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // Raw bytes of one token (may be an incomplete UTF-8 sequence). Throws std::out_of_range for an
  // id without a token.
  std::string token_text(int32_t id) const;
  // Inverse of token_text: the id of a token given by its raw bytes or added-token content.
  std::optional<int32_t> token_id(std::string_view token) const;
  bool is_special(int32_t id) const;  // an added token with "special": true
  bool is_added(int32_t id) const;    // any added token

  int32_t bos_id() const;     // -1 when the config names none
  int32_t eos_id() const;     // -1 when the config names none
  bool add_bos() const;       // tokenizer_config.json "add_bos_token" (false when absent)
  size_t vocab_size() const;  // 1 + the largest token id (vocab and added tokens)
  const std::string& chat_template() const;  // "" when absent
  const std::string& bos_token() const;      // bos token text ("" when none)
  const std::string& eos_token() const;      // eos token text ("" when none)

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
  friend class StreamDecoder;
};

// Streaming detokenizer: feed generated ids one at a time and get back only complete UTF-8 text;
// bytes of a character split across tokens are held back until the character is complete.
// Concatenating every push() and the final flush() gives exactly decode(ids, skip_special) (minus
// clean_up_tokenization_spaces).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  // Emits what is held back (an incomplete sequence becomes U+FFFD) and resets.
  std::string flush();

 private:
  std::shared_ptr<const Tokenizer::Impl> impl_;
  bool skip_special_;
  Utf8Decoder utf8_;
};

}  // namespace whale
