#include "run/session.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace whale {

using clk = std::chrono::steady_clock;

Session::Session(const Model& model, int64_t max_len)
    : model_(model), cache_(model.new_cache(max_len)) {}

std::vector<float> Session::prefill(std::span<const int32_t> prompt, GenerateResult& r, bool spec) {
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
  if (spec) {
    // MTP position i needs h_i and token i + 1, so positions up to common - 2 stay valid; the
    // main model reruns from the first position whose hidden state is not at hand.
    if (!mtp_cache_) mtp_cache_ = std::make_unique<KVCache>(model_.new_mtp_cache(cache_.max_len()));
    common = std::min<size_t>(common > 0 ? common - 1 : 0, size_t(mtp_cache_->len()));
    mtp_cache_->set_len(int64_t(common));
  }
  cache_.set_len(int64_t(common));
  tokens_.resize(common);
  r.prompt_tokens = int64_t(prompt.size());
  r.cached_tokens = int64_t(common);

  auto t0 = clk::now();
  std::vector<float> hidden;
  const SeqInput in{&cache_, prompt.subspan(common), false, spec ? &hidden : nullptr};
  auto logits = model_.forward(std::span<const SeqInput>(&in, 1));
  tokens_.insert(tokens_.end(), prompt.begin() + int64_t(common), prompt.end());
  if (spec) {
    const int64_t D = model_.config().hidden_size, n = int64_t(prompt.size() - common);
    if (n > 1)  // positions common .. P-2, each with the prompt token after it
      model_.mtp_forward(*mtp_cache_, hidden.data(), prompt.subspan(common + 1, size_t(n - 1)));
    pend_h_.assign(hidden.end() - D, hidden.end());
  }
  r.prefill_seconds = std::chrono::duration<double>(clk::now() - t0).count();
  return logits;
}

GenerateResult Session::generate(std::span<const int32_t> prompt, const Tokenizer& tok,
                                 const GenerateOptions& opt,
                                 const std::function<bool(std::string_view)>& on_text) {
  GenerateResult r;
  const bool spec = opt.spec_mtp && model_.has_mtp();
  auto logits = prefill(prompt, r, spec);
  Sampler sampler(opt.sampling);
  StreamDecoder detok(tok, /*skip_special=*/true);
  StopMatcher stops(opt.stop);
  eos_ = tok.eos_id();
  r.finish_reason = "length";

  const EmitFn emit = [&](const std::string& s) {
    r.text += s;
    return s.empty() || !on_text || on_text(s);
  };
  auto t0 = clk::now();
  if (opt.max_tokens > 0) {
    if (spec)
      decode_speculative(logits, sampler, detok, stops, opt, r, emit);
    else
      decode_plain(logits, sampler, detok, stops, opt, r, emit);
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

// Takes `next` as the next generated token. Returns false when the generation ends: eos, a stop
// string, a cancelled stream, or max_tokens reached (the last token need not be run).
bool Session::take(int32_t next, const GenerateOptions& opt, StreamDecoder& detok,
                   StopMatcher& stops, GenerateResult& r, const EmitFn& emit) {
  if (opt.stop_at_eos && next == eos_) {
    r.finish_reason = "stop";
    return false;
  }
  r.ids.push_back(next);
  StopMatcher::Result s = stops.push(detok.push(next));
  if (!emit(s.emit)) {
    r.finish_reason = "cancelled";
    return false;
  }
  if (s.stopped) {
    r.finish_reason = "stop";
    return false;
  }
  return int64_t(r.ids.size()) < int64_t(opt.max_tokens);
}

void Session::decode_plain(std::vector<float>& logits, Sampler& sampler, StreamDecoder& detok,
                           StopMatcher& stops, const GenerateOptions& opt, GenerateResult& r,
                           const EmitFn& emit) {
  while (true) {
    const int32_t next = sampler.sample(logits, r.ids);
    if (!take(next, opt, detok, stops, r, emit)) return;
    if (cache_.len() + 1 >= cache_.max_len()) return;  // context full: finish as "length"
    logits = model_.forward(cache_, std::span<const int32_t>(&next, 1), false);
    tokens_.push_back(next);
  }
}

// At the top of the loop `next` is taken but not yet in the cache; pend_h_ holds the hidden
// states of positions [MTP cache len, cache len) and pend_t the tokens after all of them but the
// last (whose next token is `next`).
void Session::decode_speculative(std::vector<float>& logits, Sampler& sampler, StreamDecoder& detok,
                                 StopMatcher& stops, const GenerateOptions& opt, GenerateResult& r,
                                 const EmitFn& emit) {
  const int64_t D = model_.config().hidden_size, V = model_.config().vocab_size;
  std::vector<int32_t> pend_t;
  std::vector<float> hidden;
  int32_t next = sampler.sample(logits, r.ids);
  if (!take(next, opt, detok, stops, r, emit)) return;
  while (cache_.len() + 1 < cache_.max_len()) {  // else the context is full: "length"
    // The draft: the MTP module on the pending positions predicts the token after `next`.
    pend_t.push_back(next);
    const std::vector<float> dl = model_.mtp_forward(*mtp_cache_, pend_h_.data(), pend_t);
    const int32_t draft = int32_t(std::max_element(dl.begin(), dl.end()) - dl.begin());
    // One pass over [next, draft]: row 0 gives the token after next, row 1 the one after the
    // draft, used only if the sampler picks the draft.
    const bool room = cache_.len() + 2 < cache_.max_len();
    const int32_t pair[2] = {next, draft};
    const SeqInput in{&cache_, std::span<const int32_t>(pair, room ? 2 : 1), true, &hidden};
    const std::vector<float> out = model_.forward(std::span<const SeqInput>(&in, 1));
    tokens_.push_back(next);
    const int32_t chosen = sampler.sample(std::span<const float>(out.data(), size_t(V)), r.ids);
    if (room) r.drafted++;
    if (room && chosen == draft) {
      r.accepted++;
      tokens_.push_back(draft);
      pend_h_ = hidden;
      pend_t.assign(1, draft);
      if (!take(draft, opt, detok, stops, r, emit)) return;
      next = sampler.sample(std::span<const float>(out.data() + V, size_t(V)), r.ids);
    } else {
      if (room) cache_.set_len(cache_.len() - 1);  // drop the rejected draft
      pend_h_.assign(hidden.begin(), hidden.begin() + D);
      pend_t.clear();
      next = chosen;
    }
    if (!take(next, opt, detok, stops, r, emit)) return;
  }
}

}  // namespace whale
