#include "run/perplexity.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace whale {

double PerplexityResult::ppl() const {
  return scored > 0 ? std::exp(nll_sum / double(scored)) : NAN;
}

double PerplexityResult::error() const {
  if (scored < 2) return NAN;
  const double mean = nll_sum / double(scored);
  const double var = nll2_sum / double(scored) - mean * mean;
  return var > 0 ? ppl() * std::sqrt(var / double(scored - 1)) : 0.0;
}

PerplexityResult perplexity(const Model& model, std::span<const int32_t> tokens, int64_t ctx,
                            int32_t bos, int64_t max_chunks,
                            const std::function<void(int64_t, const PerplexityResult&)>& on_chunk) {
  if (ctx < 4) throw std::invalid_argument("--ctx must be at least 4, got " + std::to_string(ctx));
  int64_t n_chunks = int64_t(tokens.size()) / ctx;
  if (n_chunks == 0)
    throw std::invalid_argument("the text has " + std::to_string(tokens.size()) +
                                " tokens, fewer than one chunk of --ctx " + std::to_string(ctx));
  if (max_chunks > 0) n_chunks = std::min(n_chunks, max_chunks);
  const int64_t V = model.config().vocab_size, first = ctx / 2;
  PerplexityResult r;
  std::vector<int32_t> chunk(static_cast<size_t>(ctx));
  for (int64_t c = 0; c < n_chunks; c++) {
    std::copy(tokens.begin() + c * ctx, tokens.begin() + (c + 1) * ctx, chunk.begin());
    if (bos >= 0) chunk[0] = bos;
    KVCache cache = model.new_cache(ctx);
    const std::vector<float> logits = model.forward(cache, chunk, /*all_logits=*/true);
    for (int64_t j = first; j < ctx - 1; j++) {
      const float* row = logits.data() + j * V;
      const double mx = *std::max_element(row, row + V);
      double sum = 0;
      for (int64_t v = 0; v < V; v++) sum += std::exp(double(row[v]) - mx);
      const double nll = std::log(sum) + mx - double(row[chunk[size_t(j + 1)]]);
      r.nll_sum += nll;
      r.nll2_sum += nll * nll;
      r.scored++;
    }
    r.chunks++;
    if (on_chunk) on_chunk(c, r);
  }
  return r;
}

}  // namespace whale
