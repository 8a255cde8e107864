// Perplexity of a text, by llama.cpp's method (llama-perplexity), so the two engines' numbers can
// be compared on the same file:
//   - the whole text is tokenized once (bos first when the tokenizer adds one);
//   - it is cut into floor(n_tokens / ctx) non-overlapping chunks of ctx tokens (the rest is
//     dropped); each chunk starts a fresh cache, its first token replaced by bos when the
//     tokenizer adds one;
//   - only the second half of each chunk is scored: the tokens at positions ctx/2 + 1 .. ctx - 1,
//     each predicted from all the chunk's tokens before it (ctx - 1 - ctx/2 tokens per chunk);
//   - PPL = exp(mean NLL), with the error estimate PPL * sqrt(var(NLL) / (N - 1)).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/model.h"

namespace whale {

struct PerplexityResult {
  int64_t chunks = 0, scored = 0;  // chunks evaluated, tokens scored
  double nll_sum = 0, nll2_sum = 0;
  double ppl() const;
  double error() const;  // the +/- of llama-perplexity
};

// `tokens`: the tokenized text; `bos`: the id put at each chunk's start (-1: none). `max_chunks`
// (0: all) limits the work; `on_chunk(i, running)` is called after each chunk. Throws
// std::invalid_argument when the text is shorter than one chunk or ctx < 4.
PerplexityResult perplexity(
    const Model& model, std::span<const int32_t> tokens, int64_t ctx, int32_t bos,
    int64_t max_chunks = 0,
    const std::function<void(int64_t, const PerplexityResult&)>& on_chunk = {});

}  // namespace whale
