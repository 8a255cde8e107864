// A generation session: one sequence's KV cache plus the token ids it holds, and the loop that
// turns a prompt into streamed text.
//
// A new prompt reuses the cache for its longest common prefix with what the cache already holds
// (the previous turns of a chat, a shared system prompt), so only the new tokens are prefilled.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tokenizer.h"
#include "model/model.h"
#include "run/sampler.h"
#include "run/stop.h"

namespace whale {

struct GenerateOptions {
  SamplingParams sampling;
  int max_tokens = 256;
  std::vector<std::string> stop;  // stop strings (not included in the output)
  bool stop_at_eos = true;
  // Speculative decoding with the model's MTP module (DeepSeek-V3 section 2.2 / 5.4.3): the
  // module drafts the token after next, and one forward pass of the main model over [next, draft]
  // both checks the draft and, when the sampler picks it, yields the token after it. Every token
  // is still chosen by the sampler from the main model's logits, so the output is the one without
  // speculation (greedy or seeded). Ignored when the model has no MTP module.
  bool spec_mtp = false;
};

struct GenerateResult {
  std::vector<int32_t> ids;   // generated ids
  std::string text;           // generated text (up to a stop string)
  std::string finish_reason;  // "stop" (eos or stop string), "length", or "cancelled"
  int64_t prompt_tokens = 0, cached_tokens = 0;  // cached: prefix reused from the cache
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t drafted = 0, accepted = 0;  // speculative decoding: drafts checked, drafts taken
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
  using EmitFn = std::function<bool(const std::string&)>;
  // Brings the cache to `prompt[0..n-1]` and returns the logits after its last token. With
  // `spec`, also brings the MTP cache to all positions but the last and leaves that position's
  // hidden state in pend_h_.
  std::vector<float> prefill(std::span<const int32_t> prompt, GenerateResult& r, bool spec);
  bool take(int32_t next, const GenerateOptions& opt, StreamDecoder& detok, StopMatcher& stops,
            GenerateResult& r, const EmitFn& emit);
  void decode_plain(std::vector<float>& logits, Sampler& sampler, StreamDecoder& detok,
                    StopMatcher& stops, const GenerateOptions& opt, GenerateResult& r,
                    const EmitFn& emit);
  void decode_speculative(std::vector<float>& logits, Sampler& sampler, StreamDecoder& detok,
                          StopMatcher& stops, const GenerateOptions& opt, GenerateResult& r,
                          const EmitFn& emit);

  const Model& model_;
  KVCache cache_;
  std::vector<int32_t> tokens_;  // ids whose keys/values are in cache_
  int32_t eos_ = -1;
  // Speculative decoding: the MTP module's cache holds positions [0, mtp_cache_.len()); pend_h_
  // the main model's hidden states of positions [mtp_cache_.len(), cache_.len()), not yet run
  // through the module (their next tokens were not known yet).
  std::unique_ptr<KVCache> mtp_cache_;
  std::vector<float> pend_h_;
};

}  // namespace whale
