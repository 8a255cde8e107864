#include "run/session.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "run/stop.h"

namespace whale {

using clk = std::chrono::steady_clock;

Session::Session(const Model& model, int64_t max_len)
    : model_(model), cache_(model.new_cache(max_len)) {}

std::vector<float> Session::prefill(std::span<const int32_t> prompt, GenerateResult& r) {
  if (prompt.empty()) throw std::invalid_argument("empty prompt");
  if (int64_t(prompt.size()) >= cache_.max_len())
    throw std::length_error("prompt of " + std::to_string(prompt.size()) +
                            " tokens does not fit the context of " +
                            std::to_string(cache_.max_len()));
  // Longest common prefix with the cache; keep at least one token to run.
  size_t common = 0;
  while (common < tokens_.size() && common < prompt.size() && tokens_[common] == prompt[common])
    common++;
  if (common == prompt.size()) common--;
  cache_.set_len(int64_t(common));
  tokens_.resize(common);
  r.prompt_tokens = int64_t(prompt.size());
  r.cached_tokens = int64_t(common);

  auto t0 = clk::now();
  auto logits = model_.forward(cache_, prompt.subspan(common), false);
  tokens_.insert(tokens_.end(), prompt.begin() + common, prompt.end());
  r.prefill_seconds = std::chrono::duration<double>(clk::now() - t0).count();
  return logits;
}

GenerateResult Session::generate(std::span<const int32_t> prompt, const Tokenizer& tok,
                                 const GenerateOptions& opt,
                                 const std::function<bool(std::string_view)>& on_text) {
  GenerateResult r;
  auto logits = prefill(prompt, r);
  Sampler sampler(opt.sampling);
  StreamDecoder detok(tok, /*skip_special=*/true);
  StopMatcher stops(opt.stop);
  const int32_t eos = tok.eos_id();
  r.finish_reason = "length";

  auto emit = [&](const std::string& s) {
    r.text += s;
    return s.empty() || !on_text || on_text(s);
  };
  auto t0 = clk::now();
  for (int i = 0; i < opt.max_tokens; i++) {
    const int32_t next = sampler.sample(logits, r.ids);
    if (opt.stop_at_eos && next == eos) {
      r.finish_reason = "stop";
      break;
    }
    r.ids.push_back(next);
    StopMatcher::Result s = stops.push(detok.push(next));
    if (!emit(s.emit)) {
      r.finish_reason = "cancelled";
      break;
    }
    if (s.stopped) {
      r.finish_reason = "stop";
      break;
    }
    if (i + 1 == opt.max_tokens) break;               // no need to run the last token
    if (cache_.len() + 1 >= cache_.max_len()) break;  // context full: finish as "length"
    logits = model_.forward(cache_, std::span<const int32_t>(&next, 1), false);
    tokens_.push_back(next);
  }
  if (r.finish_reason != "cancelled" && !stops.stopped()) {
    StopMatcher::Result s = stops.push(detok.flush());
    emit(s.emit);
    if (s.stopped)
      r.finish_reason = "stop";
    else
      emit(stops.flush());
  }
  r.decode_seconds = std::chrono::duration<double>(clk::now() - t0).count();
  return r;
}

}  // namespace whale
