// A generation session: one sequence's KV cache plus the token ids it holds, and the loop that
// turns a prompt into streamed text.
//
// A new prompt reuses the cache for its longest common prefix with what the cache already holds
// (the previous turns of a chat, a shared system prompt), so only the new tokens are prefilled.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tokenizer.h"
#include "model/model.h"
#include "run/sampler.h"

namespace whale {

struct GenerateOptions {
  SamplingParams sampling;
  int max_tokens = 256;
  std::vector<std::string> stop;  // stop strings (not included in the output)
  bool stop_at_eos = true;
};

struct GenerateResult {
  std::vector<int32_t> ids;   // generated ids
  std::string text;           // generated text (up to a stop string)
  std::string finish_reason;  // "stop" (eos or stop string), "length", or "cancelled"
  int64_t prompt_tokens = 0, cached_tokens = 0;  // cached: prefix reused from the cache
  double prefill_seconds = 0, decode_seconds = 0;
};

class Session {
 public:
  Session(const Model& model, int64_t max_len = 0);

  // Generates a continuation of `prompt`. `on_text` receives each piece of text as soon as it is
  // final (complete UTF-8, not part of a possible stop string); returning false cancels.
  GenerateResult generate(std::span<const int32_t> prompt, const Tokenizer& tok,
                          const GenerateOptions& opt,
                          const std::function<bool(std::string_view)>& on_text = {});

  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t max_len() const { return cache_.max_len(); }

 private:
  // Brings the cache to `prompt[0..n-1]` and returns the logits after its last token.
  std::vector<float> prefill(std::span<const int32_t> prompt, GenerateResult& r);

  const Model& model_;
  KVCache cache_;
  std::vector<int32_t> tokens_;  // ids whose keys/values are in cache_
};

}  // namespace whale
