#include "cli/commands.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "formats/gguf.h"
#include "formats/gguf_export.h"
#include "formats/tokenizer.h"
#include "kernels/cpu.h"
#include "model/model.h"
#include "reason/distill.h"
#include "reason/eval.h"
#include "reason/examples.h"
#include "reason/grpo_trainer.h"
#include "reason/task.h"
#include "run/chat.h"
#include "run/perplexity.h"
#include "run/session.h"
#include "run/think_display.h"
#include "serve/engine.h"
#include "serve/server.h"
#include "train/bpe_trainer.h"
#include "train/data.h"
#include "train/plot.h"
#include "train/sft.h"
#include "train/trainer.h"

namespace whale::cli {

using json = nlohmann::json;

namespace {

struct Common {
  std::string model_dir;
  int threads = 0;
  bool mmap = false, no_mmap = false;
  std::string kv_type = "f32";
  LoadMode load_mode() const {
    return mmap ? LoadMode::Mmap : no_mmap ? LoadMode::Ram : LoadMode::Auto;
  }
};

std::map<std::string, std::function<int()>> g_actions;
Common g;

// The bundled reasoning model (models/whale-r1-tiny/README.md), used when -m is not given.
constexpr const char* kBundledModel = "models/whale-r1-tiny";

// -m's default: $WHALE_MODEL, else the bundled model under the working directory, else under the
// source tree this binary was built from.
std::string default_model_dir() {
  if (const char* env = std::getenv("WHALE_MODEL"); env && *env) return env;
  const std::filesystem::path here = kBundledModel;
  if (std::filesystem::exists(here / "config.json")) return here.string();
  const std::filesystem::path src = std::filesystem::path(WHALE_SOURCE_DIR) / kBundledModel;
  if (std::filesystem::exists(src / "config.json")) return src.string();
  throw std::invalid_argument(std::string("no -m/--model given, and the bundled model ") +
                              kBundledModel + " is neither in the working directory nor in " +
                              src.string() + "; pass -m DIR (or set WHALE_MODEL)");
}

std::set<const CLI::App*> g_model_subcommands;  // those with add_model's -m

void add_model(CLI::App* sub) {
  g_model_subcommands.insert(sub);
  sub->add_option(
      "-m,--model", g.model_dir,
      std::string(
          "model directory (config.json, *.safetensors) or GGUF file (default: $WHALE_MODEL, "
          "else the bundled ") +
          kBundledModel + ")");
  auto* mm = sub->add_flag("--mmap", g.mmap,
                           "memory-map the weights (default: read into RAM on huge pages when "
                           "they take at most 60% of available memory)");
  sub->add_flag("--no-mmap", g.no_mmap, "always read the weights into RAM")->excludes(mm);
}
// --kv-type: the KV cache's storage type (model/kv_cache.h), for the commands that run the model.
void add_kv_type(CLI::App* sub) {
  sub->add_option("--kv-type", g.kv_type,
                  "KV cache storage: f32 (default), bf16 (half the bytes) or q8 (latent in Q8_0, "
                  "rope key in bf16: about 30% of f32)")
      ->check(CLI::IsMember({"f32", "bf16", "q8"}));
}
void apply_kv_type(Model& m) {
  m.set_kv_type(parse_kv_type(g.kv_type));
}
void add_threads(CLI::App* sub) {
  sub->add_option("-t,--threads", g.threads, "threads (default: all cores)");
}
void apply_threads() {
  if (g.threads > 0) set_num_threads(g.threads);
}

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used != item.size()) throw std::invalid_argument("not a token id: '" + item + "'");
    ids.push_back(int32_t(v));
  }
  return ids;
}

std::unique_ptr<Model> load_model() {
  Model::Options opt;
  opt.progress = isatty(STDERR_FILENO);
  opt.prefault = opt.progress;
  opt.load = g.load_mode();
  auto m = Model::load(g.model_dir, opt);
  apply_kv_type(*m);
  return m;
}

int argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; i++)
    if (v[i] > v[best]) best = i;
  return int(best);
}

// ------------------------------------------------------------------ info
std::string g_quant_type, g_quant_out;

std::string g_ppl_file;
int64_t g_ppl_ctx = 512, g_ppl_chunks = 0;
bool g_ppl_json = false;

int cmd_perplexity() {
  apply_threads();
  std::ifstream f(g_ppl_file, std::ios::binary);
  if (!f) throw std::runtime_error(g_ppl_file + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  Tokenizer tok = Tokenizer::load(g.model_dir);
  auto m = load_model();
  const std::vector<int32_t> ids = tok.encode(ss.str(), tok.add_bos());
  const int32_t bos = tok.add_bos() ? tok.bos_id() : -1;
  const auto t0 = std::chrono::steady_clock::now();
  const PerplexityResult r =
      perplexity(*m, ids, g_ppl_ctx, bos, g_ppl_chunks, [&](int64_t c, const PerplexityResult& p) {
        std::fprintf(stderr, "[%lld]%.4f,", (long long)c + 1, p.ppl());
        std::fflush(stderr);
      });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "\n");
  if (g_ppl_json) {
    json j = {{"model", g.model_dir}, {"file", g_ppl_file}, {"tokens", ids.size()},
              {"ctx", g_ppl_ctx},     {"chunks", r.chunks}, {"scored", r.scored},
              {"ppl", r.ppl()},       {"error", r.error()}, {"seconds", s}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf(
        "Final estimate: PPL = %.4f +/- %.5f (%lld chunks of %lld, %lld tokens scored, "
        "%.1f s)\n",
        r.ppl(), r.error(), (long long)r.chunks, (long long)g_ppl_ctx, (long long)r.scored, s);
  }
  return 0;
}

int cmd_quantize() {
  if (is_gguf_path(g.model_dir))
    throw std::invalid_argument("quantize reads a Hugging Face model directory, not a GGUF file");
  const QuantRecipe recipe = parse_quant_type(g_quant_type);
  const auto t0 = std::chrono::steady_clock::now();
  const QuantizeStats st = quantize_to_gguf(g.model_dir, recipe, g_quant_out);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr,
               "whale quantize: %s -> %s (%s): %lld tensors, %.1f MB of weights, %lld in F16 "
               "(rows not whole blocks), %.1f s\n",
               g.model_dir.c_str(), g_quant_out.c_str(), g_quant_type.c_str(),
               (long long)st.tensors, double(st.bytes) / 1e6, (long long)st.fallback, s);
  return 0;
}

int cmd_info() {
  Model::Options opt;
  opt.load = g.load_mode();
  auto m = Model::load(g.model_dir, opt);
  apply_kv_type(*m);
  const ModelConfig& c = m->config();
  const ModelStats s = m->stats();
  const size_t kv = KVCache::bytes_per_token(c);
  // A plain multi-head cache holds K (qk_head_dim) and V (v_head_dim) for every head (GQA
  // models: head_dim each, for every query head).
  const int64_t kv_per_head = c.is_mla() ? c.qk_head_dim() + c.v_head_dim : 2 * c.head_dim;
  const size_t mha =
      size_t(c.num_hidden_layers * c.num_attention_heads * kv_per_head) * sizeof(float);
  json j = {
      {"architecture", c.arch_name()},
      {"params", s.params},
      {"active_params_per_token", s.active_params},
      {"mtp_params", s.mtp_params},
      {"layers", c.num_hidden_layers},
      {"moe_layers",
       [&] {
         int n = 0;
         for (int64_t i = 0; i < c.num_hidden_layers; i++) n += c.is_moe_layer(i);
         return n;
       }()},
      {"file_bytes", m->checkpoint().total_bytes()},
      {"decode_weight_bytes_per_token", s.weight_bytes},
      {"kv_type", kv_type_name(m->kv_type())},
      {"kv_cache_bytes_per_token", KVCache::bytes_per_token(c, m->kv_type())},
      {"kv_cache_bytes_per_token_f32", kv},
      {"kv_cache_bytes_per_token_bf16", kv / 2},
      {"mha_kv_cache_bytes_per_token_f32", mha},
      {"mha_kv_cache_bytes_per_token_bf16", mha / 2},
      {"kv_cache_compression", double(mha) / double(kv)},
      {"cpu", cpu_description()},
  };
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

// ------------------------------------------------------------------ logits
std::string g_tokens, g_out;
bool g_all = false;
std::string g_mode = "auto";

AttnMode parse_mode(const std::string& s) {
  if (s == "auto") return AttnMode::Auto;
  if (s == "naive") return AttnMode::Naive;
  if (s == "absorbed") return AttnMode::Absorbed;
  throw std::invalid_argument("--attn must be auto, naive or absorbed");
}

int cmd_logits() {
  apply_threads();
  auto m = load_model();
  const auto ids = parse_ids(g_tokens);
  if (ids.empty()) throw std::invalid_argument("--tokens is empty");
  KVCache cache = m->new_cache(int64_t(ids.size()));
  const auto logits = m->forward(cache, ids, g_all, parse_mode(g_mode));
  const int64_t V = m->config().vocab_size, rows = int64_t(logits.size()) / V;
  if (!g_out.empty()) {
    std::ofstream f(g_out, std::ios::binary);
    if (!f) throw std::runtime_error(g_out + ": cannot write");
    f.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * 4));
    if (!f) throw std::runtime_error(g_out + ": write failed");
    std::fprintf(stderr, "wrote %lld x %lld float32 to %s\n", (long long)rows, (long long)V,
                 g_out.c_str());
  } else {
    json j = json::array();
    for (int64_t r = 0; r < rows; r++)
      j.push_back(std::vector<float>(logits.begin() + r * V, logits.begin() + (r + 1) * V));
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

// ------------------------------------------------------------------ generate (ids in, ids out)
int g_n = 16;
bool g_greedy = true, g_print_ids = true;

int cmd_generate() {
  apply_threads();
  auto m = load_model();
  const auto ids = parse_ids(g_tokens);
  if (ids.empty()) throw std::invalid_argument("--tokens is empty");
  KVCache cache = m->new_cache(int64_t(ids.size()) + g_n);
  const int64_t V = m->config().vocab_size;
  std::vector<int32_t> out;
  auto logits = m->forward(cache, ids, false, parse_mode(g_mode));
  for (int i = 0; i < g_n; i++) {
    const int32_t next = argmax(logits.data(), V);
    out.push_back(next);
    if (i + 1 < g_n) logits = m->forward(cache, std::span<const int32_t>(&next, 1), false);
  }
  std::printf("%s\n", json(out).dump().c_str());
  return 0;
}

// ------------------------------------------------------------------ bench
int g_bench_p = 512, g_bench_n = 128, g_bench_rounds = 1;
std::vector<int64_t> g_bench_batch{1};

struct BenchRun {
  double prefill_tok_s, decode_tok_s;
};

// --spec mtp: one sequence through a Session (run's decoding loop), greedy, no eos stop: the
// decode figure is generated tokens / decode time, with the drafts' acceptance.
std::string g_bench_spec = "none";
int64_t g_bench_drafted = 0, g_bench_accepted = 0;

BenchRun bench_spec(const Model& m, const Tokenizer& tok) {
  const ModelConfig& c = m.config();
  std::vector<int32_t> prompt(static_cast<size_t>(g_bench_p));
  for (int i = 0; i < g_bench_p; i++) prompt[size_t(i)] = int32_t((i * 7919 + 13) % c.vocab_size);
  Session session(m, g_bench_p + g_bench_n + 2);
  GenerateOptions opt;
  opt.max_tokens = g_bench_n;
  opt.stop_at_eos = false;
  opt.spec_mtp = g_bench_spec == "mtp";
  const GenerateResult r = session.generate(prompt, tok, opt);
  g_bench_drafted = r.drafted;
  g_bench_accepted = r.accepted;
  return {double(g_bench_p) / r.prefill_seconds, double(r.ids.size()) / r.decode_seconds};
}

// B sequences (different prompts) prefilled together, then decoded together, one token each per
// forward pass, as the server's continuous batching does.
BenchRun bench_once(const Model& m, int64_t B) {
  const ModelConfig& c = m.config();
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(B),
                                            std::vector<int32_t>(static_cast<size_t>(g_bench_p)));
  for (int64_t b = 0; b < B; b++)
    for (int i = 0; i < g_bench_p; i++)
      prompts[size_t(b)][size_t(i)] = int32_t((i * 7919 + 13 + b * 104729) % c.vocab_size);
  std::vector<KVCache> caches;
  for (int64_t b = 0; b < B; b++) caches.push_back(m.new_cache(g_bench_p + g_bench_n + 1));
  std::vector<SeqInput> batch;
  for (int64_t b = 0; b < B; b++) batch.push_back({&caches[size_t(b)], prompts[size_t(b)], false});
  using clk = std::chrono::steady_clock;
  auto t0 = clk::now();
  auto logits = m.forward(batch);
  auto t1 = clk::now();
  std::vector<int32_t> next(static_cast<size_t>(B));
  for (int i = 0; i < g_bench_n; i++) {
    for (int64_t b = 0; b < B; b++) {
      next[size_t(b)] = argmax(logits.data() + b * c.vocab_size, c.vocab_size);
      batch[size_t(b)].tokens = std::span<const int32_t>(&next[size_t(b)], 1);
    }
    logits = m.forward(batch);
  }
  auto t2 = clk::now();
  const double pp = std::chrono::duration<double>(t1 - t0).count();
  const double tg = std::chrono::duration<double>(t2 - t1).count();
  return {double(B * g_bench_p) / pp, double(B * g_bench_n) / tg};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// One JSON line per run; with several batch sizes or rounds (run interleaved, so that a noisy
// machine slows them alike) a last line with each batch size's median decode tok/s and its
// ratio to the first batch size's.
int cmd_bench() {
  apply_threads();
  auto m =
      Model::load(g.model_dir, Model::Options{isatty(STDERR_FILENO) != 0, true, g.load_mode()});
  apply_kv_type(*m);
  const ModelStats s = m->stats();
  std::optional<Tokenizer> tok;
  if (g_bench_spec == "mtp") {
    if (!m->has_mtp())
      throw std::invalid_argument("--spec mtp: " + g.model_dir + " has no MTP module");
    if (g_bench_batch.size() != 1 || g_bench_batch[0] != 1)
      throw std::invalid_argument("--spec mtp: one sequence only (--batch 1)");
    tok.emplace(Tokenizer::load(g.model_dir));
  }
  std::vector<std::vector<double>> decode(g_bench_batch.size());
  for (int r = 0; r < g_bench_rounds; r++)
    for (size_t k = 0; k < g_bench_batch.size(); k++) {
      const int64_t B = g_bench_batch[k];
      const BenchRun run = tok ? bench_spec(*m, *tok) : bench_once(*m, B);
      decode[k].push_back(run.decode_tok_s);
      json j = {{"model", g.model_dir},
                {"params", s.params},
                {"active_params", s.active_params},
                {"threads", num_threads()},
                {"isa", cpu_description()},
                {"prompt_tokens", g_bench_p},
                {"gen_tokens", g_bench_n},
                {"batch", B},
                {"round", r + 1},
                {"weights", m->checkpoint().load_mode() == LoadMode::Ram ? "ram" : "mmap"},
                {"prefill_tok_s", run.prefill_tok_s},
                {"decode_tok_s", run.decode_tok_s},
                {"spec", g_bench_spec},
                // weight bytes one token reads x tokens/s: meaningful for one sequence only
                {"decode_weight_gb_s",
                 B == 1 ? json(run.decode_tok_s * double(s.weight_bytes) / 1e9) : json()}};
      if (tok) {
        j["drafted"] = g_bench_drafted;
        j["accepted"] = g_bench_accepted;
      }
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
    }
  if (g_bench_batch.size() > 1 || g_bench_rounds > 1) {
    json sum = json::array();
    const double base = median(decode[0]);
    for (size_t k = 0; k < g_bench_batch.size(); k++) {
      const double med = median(decode[k]);
      sum.push_back({{"batch", g_bench_batch[k]},
                     {"decode_tok_s_median", med},
                     {"decode_tok_s_min", *std::min_element(decode[k].begin(), decode[k].end())},
                     {"decode_tok_s_max", *std::max_element(decode[k].begin(), decode[k].end())},
                     {"vs_first", med / base}});
    }
    std::printf("%s\n", json({{"summary", sum}, {"rounds", g_bench_rounds}}).dump().c_str());
  }
  return 0;
}

// ------------------------------------------------------------------ tokenize / detokenize
std::string g_text, g_ids;
bool g_bos = false;

int cmd_tokenize() {
  Tokenizer tok = Tokenizer::load(g.model_dir);
  std::printf("%s\n", json(tok.encode(g_text, g_bos)).dump().c_str());
  return 0;
}

int cmd_detokenize() {
  Tokenizer tok = Tokenizer::load(g.model_dir);
  const auto ids = parse_ids(g_ids);
  for (int32_t id : ids)
    if (id < 0 || size_t(id) >= tok.vocab_size())
      throw std::out_of_range("token id " + std::to_string(id) + " outside the vocabulary");
  std::printf("%s", tok.decode(ids).c_str());
  if (isatty(STDOUT_FILENO)) std::printf("\n");
  return 0;
}

// ------------------------------------------------------------------ run / chat
std::string g_prompt, g_system;
GenerateOptions g_gen;
bool g_chat_template = false, g_no_stats = false, g_hide_thinking = false, g_thinking = false;
int64_t g_ctx = 4096;
std::string g_spec = "none";

void add_sampling(CLI::App* s) {
  s->add_option("-n,--max-tokens", g_gen.max_tokens, "tokens to generate at most");
  s->add_option("--temp", g_gen.sampling.temperature, "temperature (0: greedy)");
  s->add_option("--top-k", g_gen.sampling.top_k, "keep the k most likely tokens (0: off)");
  s->add_option("--top-p", g_gen.sampling.top_p, "nucleus sampling mass (1: off)");
  s->add_option("--min-p", g_gen.sampling.min_p, "drop tokens below min-p x the top probability");
  s->add_option("--seed", g_gen.sampling.seed, "random seed (same seed, same output)");
  s->add_option("--stop", g_gen.stop, "stop string (repeatable)");
  s->add_option("--ctx", g_ctx, "context length (tokens)");
  s->add_option("--spec", g_spec,
                "speculative decoding: mtp (the checkpoint's MTP module drafts one token ahead; "
                "same output) or none")
      ->check(CLI::IsMember({"none", "mtp"}));
}

// --spec mtp on a model without an MTP module is an error, not a silent no-op.
void apply_spec(const Model& m) {
  g_gen.spec_mtp = g_spec == "mtp";
  if (g_gen.spec_mtp && !m.has_mtp())
    throw std::invalid_argument("--spec mtp: " + g.model_dir +
                                " has no MTP module (num_nextn_predict_layers = " +
                                std::to_string(m.config().num_nextn_predict_layers) +
                                "; GGUF files drop it, as llama.cpp's converter does)");
}

void print_stats(const GenerateResult& r) {
  if (g_no_stats) return;
  std::fprintf(
      stderr,
      "\n[prompt %lld tokens (%lld cached) %.1f tok/s | generated %zu tokens %.1f tok/s | "
      "%s]\n",
      (long long)r.prompt_tokens, (long long)r.cached_tokens,
      r.prefill_seconds > 0 ? double(r.prompt_tokens - r.cached_tokens) / r.prefill_seconds : 0.0,
      r.ids.size(), r.decode_seconds > 0 ? double(r.ids.size()) / r.decode_seconds : 0.0,
      r.finish_reason.c_str());
  if (r.drafted > 0)
    std::fprintf(stderr, "[MTP drafts accepted %lld of %lld (%.0f%%)]\n", (long long)r.accepted,
                 (long long)r.drafted, 100.0 * double(r.accepted) / double(r.drafted));
}

bool print_piece(std::string_view s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
  return true;
}

// Whether a reply starts with reasoning: R1 always, V3.1 with --thinking.
bool replies_think(ChatStyle style) {
  return style == ChatStyle::R1 || (style == ChatStyle::V31 && g_thinking);
}

// How a reasoning reply is printed: the reasoning dimmed on a terminal, hidden with
// --hide-thinking, raw text otherwise (pipes and scripts see what the model wrote).
ThinkDisplay reply_display(ChatStyle style) {
  ThinkDisplay::Mode mode = ThinkDisplay::Mode::Raw;
  const bool think = replies_think(style);
  if (think) {
    if (g_hide_thinking)
      mode = ThinkDisplay::Mode::Hidden;
    else if (isatty(STDOUT_FILENO))
      mode = ThinkDisplay::Mode::Styled;
  }
  return ThinkDisplay(mode, think, [](std::string_view s) { print_piece(s); });
}

int cmd_run() {
  apply_threads();
  Tokenizer tok = Tokenizer::load(g.model_dir);
  auto m = load_model();
  apply_spec(*m);
  std::vector<int32_t> prompt;
  ThinkDisplay display(ThinkDisplay::Mode::Raw, false, [](std::string_view s) { print_piece(s); });
  if (g_chat_template) {
    std::vector<ChatMessage> msgs;
    if (!g_system.empty()) msgs.push_back({"system", g_system, ""});
    msgs.push_back({"user", g_prompt, ""});
    const ChatStyle style = detect_chat_style(tok.chat_template());
    prompt = tok.encode(render_chat(msgs, style, tok.bos_token(), true, "", g_thinking));
    display = reply_display(style);
  } else {
    prompt = tok.encode(g_prompt, tok.add_bos());
    std::printf("%s", g_prompt.c_str());
  }
  Session session(*m, std::min<int64_t>(g_ctx, m->config().max_position_embeddings));
  GenerateResult r = session.generate(prompt, tok, g_gen, [&](std::string_view s) {
    display.feed(s);
    return true;
  });
  display.finish();
  std::printf("\n");
  print_stats(r);
  return 0;
}

int cmd_chat() {
  apply_threads();
  Tokenizer tok = Tokenizer::load(g.model_dir);
  auto m = load_model();
  apply_spec(*m);
  const ChatStyle style = detect_chat_style(tok.chat_template());
  Session session(*m, std::min<int64_t>(g_ctx, m->config().max_position_embeddings));
  std::vector<ChatMessage> msgs;
  if (!g_system.empty()) msgs.push_back({"system", g_system, ""});
  const bool tty = isatty(STDIN_FILENO);
  if (tty)
    std::fprintf(stderr,
                 "whale chat (%s format%s): type a message, Enter to send, Ctrl-D to quit, /new "
                 "to reset.\n",
                 chat_style_name(style), style == ChatStyle::V31 && g_thinking ? ", thinking" : "");
  std::string line;
  while (true) {
    if (tty) {
      std::printf("\n> ");
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    if (line == "/new") {
      msgs.resize(g_system.empty() ? 0 : 1);
      continue;
    }
    msgs.push_back({"user", line, ""});
    const auto prompt = tok.encode(render_chat(msgs, style, tok.bos_token(), true, "", g_thinking));
    ThinkDisplay display = reply_display(style);
    GenerateResult r = session.generate(prompt, tok, g_gen, [&](std::string_view s) {
      display.feed(s);
      return true;
    });
    display.finish();
    std::printf("\n");
    std::fflush(stdout);
    ChatMessage reply{"assistant", r.text, ""};
    if (replies_think(style)) {
      ReasoningSplit sp = split_reasoning(r.text);
      reply.content = sp.content;
      reply.reasoning_content = sp.reasoning;
    }
    msgs.push_back(reply);
    print_stats(r);
  }
  if (tty) std::printf("\n");
  return 0;
}

}  // namespace

// ------------------------------------------------------------------ serve
serve::EngineOptions g_engine;
serve::ServerOptions g_server;
int64_t g_serve_ctx = 4096;
size_t g_cache_mb = 256;
double g_cache_disk_gb = 4;

// Names the model for the disk cache: its files (names, sizes, modification times) and the KV
// type, so that entries of another model or KV type are foreign.
uint64_t model_cache_key(const std::string& model, const std::string& kv_type) {
  namespace fs = std::filesystem;
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const std::string& v) {
    for (unsigned char c : v) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xFF) * 1099511628211ull;
  };
  std::vector<fs::path> files;
  if (fs::is_directory(model)) {
    for (const auto& e : fs::directory_iterator(model))
      if (e.is_regular_file()) files.push_back(e.path());
  } else {
    files.push_back(model);
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    const std::string ext = f.extension().string();
    if (ext != ".safetensors" && ext != ".json" && ext != ".gguf") continue;
    std::error_code ec;
    mix(f.filename().string());
    mix(std::to_string(fs::file_size(f, ec)));
    mix(std::to_string(fs::last_write_time(f, ec).time_since_epoch().count()));
  }
  mix(kv_type);
  return h;
}

// Raises the soft limit on open files towards `want` (at most the hard limit): every client
// connection the server holds is a descriptor, and the default soft limit is often 1024.
void raise_fd_limit(size_t want) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return;
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? want : std::min<rlim_t>(want, rl.rlim_max);
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
    std::fprintf(stderr,
                 "whale serve: only %llu file descriptors (ulimit -n); fewer connections than "
                 "--max-connections may be held\n",
                 (unsigned long long)rl.rlim_cur);
}

int cmd_serve() {
  // SIGINT/SIGTERM are taken by a watcher thread (blocked everywhere else), which stops the server.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that went away must not kill the server
  raise_fd_limit(size_t(g_server.max_connections) * 2 + 256);

  apply_threads();
  Tokenizer tok = Tokenizer::load(g.model_dir);
  auto m = load_model();
  g_engine.ctx = std::min<int64_t>(g_serve_ctx, m->config().max_position_embeddings);
  g_engine.cache_bytes = g_cache_mb << 20;
  if (!g_engine.cache_dir.empty()) {
    g_engine.cache_disk_bytes = uint64_t(g_cache_disk_gb * double(1ull << 30));
    g_engine.cache_key = model_cache_key(g.model_dir, kv_type_name(m->kv_type()));
  }
  apply_spec(*m);
  g_engine.spec_mtp = g_gen.spec_mtp;
  if (g_server.model_id.empty()) {
    std::string d = g.model_dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    g_server.model_id = d.substr(d.rfind('/') + 1);
  }
  serve::Engine engine(*m, tok, g_engine);
  serve::Server server(engine, tok, g_server);
  const int port = server.bind();
  std::thread watcher([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    std::fprintf(stderr, "whale serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    server.stop();
  });
  std::fprintf(stderr,
               "whale serve: model %s, %d slots x %lld tokens, %s chat format%s\n"
               "whale serve: listening on http://%s:%d\n",
               g_server.model_id.c_str(), g_engine.parallel, (long long)g_engine.ctx,
               chat_style_name(detect_chat_style(tok.chat_template())),
               g_engine.spec_mtp ? ", MTP speculative decoding" : "", g_server.host.c_str(), port);
  server.listen();
  engine.stop();
  pthread_kill(watcher.native_handle(), SIGTERM);  // wakes the watcher if the server stopped itself
  watcher.join();
  return 0;
}

// ------------------------------------------------------------------ data
DataOptions g_data;
std::string g_data_format = "auto";
bool g_data_no_progress = false;

int cmd_data() {
  g_data.format = parse_input_format(g_data_format);
  g_data.progress = !g_data_no_progress;
  return run_data_command(g_data);
}

// ------------------------------------------------------------------ tokenizer train
BpeTrainOptions g_bpe;
std::string g_bpe_format = "auto";
bool g_bpe_no_progress = false;
CLI::App* g_tokenizer_train = nullptr;

int cmd_tokenizer() {
  if (!g_tokenizer_train || !g_tokenizer_train->parsed())
    throw std::invalid_argument("whale tokenizer: give a subcommand (train)");
  g_bpe.format = parse_input_format(g_bpe_format);
  g_bpe.progress = !g_bpe_no_progress;
  return run_tokenizer_train(g_bpe);
}

// ------------------------------------------------------------------ train
train::TrainOptions g_train;
bool g_train_no_progress = false;

int cmd_train() {
  g_train.progress = !g_train_no_progress;
  return train::run_train_command(g_train);
}

// ------------------------------------------------------------------ plot
std::string g_plot_log, g_plot_out;

int cmd_plot() {
  return train::run_plot_command(g_plot_log, g_plot_out);
}

// The options of the training loop, shared by `whale train` and `whale sft`.
void add_loop_options(CLI::App* s, train::TrainOptions& o, bool& no_progress) {
  s->add_option("--out", o.out_dir, "output: OUT/model (checkpoint), OUT/log.jsonl, OUT/loss.png")
      ->required();
  s->add_option("--batch", o.batch, "sequences per step (all processes together)");
  s->add_option("--seq", o.seq, "tokens per sequence");
  s->add_option("--grad-accum", o.grad_accum, "micro-batches per step in each process");
  s->add_option("--min-lr", o.min_lr, "final learning rate (default lr/10)");
  s->add_option("--schedule", o.schedule, "cosine, wsd or constant (after the warm-up)");
  s->add_option("--wsd-decay", o.wsd_decay, "WSD: share of the steps spent decaying");
  s->add_option("--beta1", o.beta1, "AdamW beta1");
  s->add_option("--beta2", o.beta2, "AdamW beta2");
  s->add_option("--eps", o.eps, "AdamW epsilon");
  s->add_option("--clip", o.clip, "gradient global-norm clip (0: off)");
  s->add_option("--mtp-lambda", o.mtp_lambda, "weight of the multi-token-prediction loss");
  s->add_option("--balance-alpha", o.balance_alpha, "sequence-wise balance loss weight");
  s->add_option("--bias-gamma", o.bias_gamma, "aux-loss-free bias update speed");
  s->add_option("--threads", o.threads, "threads per process (default: all cores)");
  s->add_option("--eval-every", o.eval_every, "steps between validation losses (0: never)");
  s->add_option("--eval-batches", o.eval_batches, "validation rows = this x batch (at most)");
  s->add_option("--save-every", o.save_every, "steps between checkpoints (and at the end)");
  s->add_flag("--resume", o.resume, "continue the checkpoint in OUT/model exactly");
  s->add_option("--until", o.until, "stop after this step, with a checkpoint (resume later)");
  s->add_flag("--bf16", o.bf16, "BF16 compute with FP32 master weights");
  s->add_flag("--no-progress", no_progress, "no progress line");
  s->add_option("--fault-nan-step", o.fault_nan_step, "testing: make step N's loss NaN")->group("");
}

// ------------------------------------------------------------------ sft
train::SftOptions g_sft;
bool g_sft_no_pack = false, g_sft_no_progress = false;

int cmd_sft() {
  g_sft.pack = !g_sft_no_pack;
  g_sft.train.progress = !g_sft_no_progress;
  return train::run_sft_command(g_sft);
}

void register_sft(CLI::App& app) {
  auto& o = g_sft;
  auto* s = app.add_subcommand(
      "sft", "supervised fine-tuning on chat data (JSONL messages, DeepSeek-R1/V3 chat format)");
  s->add_option("--init", o.init_dir,
                "model to fine-tune: a whale checkpoint or a Hugging Face DeepSeek-V3 directory "
                "(F32/BF16 safetensors, tokenizer files with a chat template)");
  s->add_option("--data", o.data,
                "chat JSONL files or directories of *.jsonl: one {\"messages\": [...]} a line")
      ->required();
  s->add_option("--val", o.val_file, "validation conversations (default: --val-fraction)");
  s->add_option("--val-fraction", o.val_fraction, "share of the conversations held out (0..1)");
  s->add_option("--steps", o.train.steps, "optimiser steps in total (or --epochs)");
  s->add_option("--epochs", o.epochs, "passes over the data (default 1 when no --steps)");
  s->add_option("--lr", o.train.lr, "peak learning rate (default 1e-4)");
  s->add_option("--warmup", o.train.warmup, "warm-up steps (default 3% of the steps)");
  s->add_option("--weight-decay", o.train.weight_decay, "AdamW decoupled weight decay (default 0)");
  s->add_option("--seed", o.train.seed, "seed of the validation split and the row order");
  s->add_option("--tokenizer", o.train.tokenizer_dir,
                "tokenizer dir (chat template; copied into checkpoints); default: --init's");
  s->add_flag("--no-pack", g_sft_no_pack, "one conversation per row (default: packed greedily)");
  s->add_flag("--truncate", o.truncate,
              "cut conversations longer than --seq + 1 tokens (default: an error)");
  add_loop_options(s, o.train, g_sft_no_progress);
  g_actions["sft"] = cmd_sft;
}

// A reasoning task for `whale CMD --task NAME`, an unknown name an error naming the command.
std::unique_ptr<reason::Task> reason_task(const std::string& cmd, const std::string& name) {
  try {
    return reason::make_task(name);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("whale " + cmd + ": " + e.what());
  }
}

// ------------------------------------------------------------------ grpo
reason::GrpoOptions g_grpo;
std::string g_grpo_task;
float g_grpo_eps = 0.2f, g_grpo_eps_low = NAN, g_grpo_eps_high = NAN;
bool g_grpo_no_progress = false;

int cmd_grpo() {
  g_grpo.eps_low = std::isnan(g_grpo_eps_low) ? g_grpo_eps : g_grpo_eps_low;
  g_grpo.eps_high = std::isnan(g_grpo_eps_high) ? g_grpo_eps : g_grpo_eps_high;
  g_grpo.progress = !g_grpo_no_progress;
  reason::check_grpo_options(g_grpo);
  const std::unique_ptr<reason::Task> task = reason_task("grpo", g_grpo_task);
  return reason::run_grpo_command(g_grpo, *task);
}

void register_grpo(CLI::App& app) {
  auto& o = g_grpo;
  auto* s = app.add_subcommand("grpo", "reinforcement learning on a reasoning task (GRPO)");
  s->add_option("--init", o.init_dir, "model directory to start from (and the KL reference)");
  std::string names;
  for (const std::string& n : reason::task_names()) names += (names.empty() ? "" : ", ") + n;
  s->add_option("--task", g_grpo_task, "the task whose rewards are maximised: " + names)
      ->required();
  s->add_option("--out", o.out_dir, "output: OUT/model (checkpoint), OUT/log.jsonl, OUT/reward.png")
      ->required();
  s->add_option("--steps", o.steps, "steps in total (each: rollouts, then training)")->required();
  s->add_option("--prompts", o.prompts, "prompts per step (all processes together)");
  s->add_option("--group", o.group, "completions sampled per prompt (>= 2)");
  s->add_option("--eps", g_grpo_eps, "ratio clip: [1 - eps, 1 + eps]");
  s->add_option("--eps-low", g_grpo_eps_low, "lower clip (default --eps)");
  s->add_option("--eps-high", g_grpo_eps_high, "upper clip (default --eps; DAPO: 0.28)");
  s->add_option("--beta", o.beta, "KL penalty towards the --init model (0: no reference)");
  s->add_option("--adv", o.adv, "advantages: std ((r - mean) / std) or mean (r - mean)");
  s->add_option("--inner-steps", o.inner_steps, "optimiser steps on each step's rollouts");
  s->add_option("--micro-batch", o.micro_batch, "sequences per forward/backward (0: all)");
  s->add_option("--lr", o.lr, "learning rate (constant)");
  s->add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay");
  s->add_option("--clip", o.clip, "gradient global-norm clip (0: off)");
  s->add_option("--temp", o.temperature, "sampling temperature of the rollouts");
  s->add_option("--top-p", o.top_p, "nucleus sampling mass of the rollouts (1: off)");
  s->add_option("--max-tokens", o.max_tokens, "tokens per completion at most (eos included)");
  s->add_option("--seed", o.seed, "seed of the problems and the samplers");
  s->add_option("--threads", o.threads, "threads per process (default: all cores)");
  s->add_option("--save-every", o.save_every, "steps between checkpoints (and at the end)");
  s->add_flag("--resume", o.resume, "continue the checkpoint in OUT/model exactly");
  s->add_option("--until", o.until, "stop after this step, with a checkpoint (resume later)");
  s->add_flag("--no-progress", g_grpo_no_progress, "no progress line");
  s->add_option("--fault-nan-step", o.fault_nan_step, "testing: make step N's loss NaN")->group("");
  g_actions["grpo"] = cmd_grpo;
}

// ------------------------------------------------------------------ eval
reason::EvalOptions g_eval;
bool g_eval_no_progress = false;

int cmd_eval() {
  g_eval.progress = !g_eval_no_progress;
  reason::check_eval_options(g_eval);
  const std::unique_ptr<reason::Task> task = reason_task("eval", g_eval.task);
  return reason::run_eval_command(g_eval, *task);
}

void register_eval(CLI::App& app) {
  auto& o = g_eval;
  auto* s = app.add_subcommand(
      "eval", "evaluate a model on the held-out problems of a reasoning task (pass@1, pass@k)");
  s->add_option("--model", o.model_dir, "model directory (tokenizer with a chat template)")
      ->required();
  s->add_option("--task", o.task, "add_sub, mul, countdown or all (the three, --n each)")
      ->required();
  s->add_option("--n", o.n, "problems (per family for all)");
  s->add_option("--k", o.k, "sampled completions per problem for pass@k (0: skip)");
  s->add_option("--seed", o.seed, "seed of the problems and the samplers");
  s->add_option("--temp", o.temperature, "temperature of the pass@k samples");
  s->add_option("--max-tokens", o.max_tokens, "tokens per completion at most (eos included)");
  s->add_option("--batch", o.batch, "problems decoded together");
  s->add_option("--json", o.json_path, "also write the numbers, parameters and examples here");
  s->add_option("--threads", o.threads, "threads (default: all cores)");
  s->add_flag("--no-progress", g_eval_no_progress, "no progress lines");
  g_actions["eval"] = cmd_eval;
}

// ------------------------------------------------------------------ distill
reason::DistillOptions g_distill;
bool g_distill_no_progress = false;

int cmd_distill() {
  g_distill.progress = !g_distill_no_progress;
  reason::check_distill_options(g_distill);
  const std::unique_ptr<reason::Task> task = reason_task("distill", g_distill.task);
  return reason::run_distill_command(g_distill, *task);
}

void register_distill(CLI::App& app) {
  auto& o = g_distill;
  auto* s = app.add_subcommand(
      "distill", "rejection sampling: a teacher's verified reasoning traces as SFT data (JSONL)");
  s->add_option("--teacher", o.teacher_dir, "model directory that writes the traces")->required();
  s->add_option("--task", o.task,
                "add_sub, mul, countdown or all: the verifier, and the problems without --prompts");
  s->add_option("--prompts", o.prompts_path,
                "JSONL of {\"prompt\": ...} lines (whale task sample --format prompt)");
  s->add_option("--student", o.student_dir,
                "model directory whose tokenizer must be the teacher's");
  s->add_option("--out", o.out_path, "SFT JSONL to write (for whale sft)")->required();
  s->add_option("--n", o.n, "prompts (with --prompts, 0: every line)");
  s->add_option("--samples", o.samples, "completions sampled per prompt");
  s->add_option("--keep", o.keep, "verified completions kept per prompt at most");
  s->add_option("--temp", o.temperature, "sampling temperature");
  s->add_option("--max-tokens", o.max_tokens, "tokens per completion at most (eos included)");
  s->add_option("--batch", o.batch, "prompts decoded together");
  s->add_option("--seed", o.seed, "seed of the problems and the samplers");
  s->add_option("--threads", o.threads, "threads (default: all cores)");
  s->add_flag("--no-progress", g_distill_no_progress, "no progress lines");
  g_actions["distill"] = cmd_distill;
}

void register_train(CLI::App& app) {
  auto& o = g_train;
  {
    auto* s = app.add_subcommand("train", "pretrain a DeepSeek-V3-architecture model from scratch");
    s->add_option("--config", o.config_path, "Hugging Face config.json of the model to initialise");
    s->add_option("--data", o.data_dir, "token shards from `whale data`")->required();
    s->add_option("--steps", o.steps, "optimiser steps in total")->required();
    s->add_option("--lr", o.lr, "peak learning rate");
    s->add_option("--warmup", o.warmup, "warm-up steps (default min(100, steps/10))");
    s->add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay");
    s->add_option("--init-std", o.init_std, "initialisation std (V3: 0.006)");
    s->add_option("--seed", o.seed, "seed of the initialisation and the data order");
    s->add_option("--tokenizer", o.tokenizer_dir, "tokenizer dir copied into checkpoints");
    add_loop_options(s, o, g_train_no_progress);
    g_actions["train"] = cmd_train;
  }
  {
    auto* s = app.add_subcommand("plot", "draw a training log (log.jsonl) as a PNG");
    s->add_option("log", g_plot_log, "the log.jsonl of a `whale train` run")->required();
    s->add_option("-o,--out", g_plot_out, "PNG to write (default: beside the log, loss.png)");
    g_actions["plot"] = cmd_plot;
  }
}

// ------------------------------------------------------------------ task
reason::SampleOptions g_task_sample;
reason::ScoreOptions g_task_score;
CLI::App *g_task_sample_cmd = nullptr, *g_task_score_cmd = nullptr;

int cmd_task() {
  if (g_task_sample_cmd->parsed()) return reason::run_task_sample(g_task_sample);
  if (g_task_score_cmd->parsed()) return reason::run_task_score(g_task_score);
  throw std::invalid_argument("whale task: give a subcommand (sample, score)");
}

void register_task(CLI::App& app) {
  std::string names;
  for (const auto& n : reason::task_names()) names += (names.empty() ? "" : ", ") + n;
  auto* t = app.add_subcommand("task", "reasoning tasks: sample training data, score completions");
  {
    auto& o = g_task_sample;
    auto* s = t->add_subcommand("sample", "write task examples as JSONL (chat, text or prompts)");
    g_task_sample_cmd = s;
    s->add_option("--task", o.task, "task: " + names)->required();
    s->add_option("--n", o.n, "examples to write");
    s->add_option("--seed", o.seed, "seed of the problem stream");
    s->add_option("--split", o.split, "train or eval (the held-out problems)");
    s->add_option(
        "--format", o.format,
        "chat (whale sft), text (whale data), prompt (eval, distill), plain (the prompt)");
    auto* other = s->add_option(
        "--other", o.other, "text inputs (as whale data reads them) for out-of-domain examples");
    s->add_option("--other-share", o.other_share, "share of out-of-domain examples (default 0.1)")
        ->needs(other);
    s->add_option("--out", o.out, "JSONL file to write (default: stdout)");
  }
  {
    auto& o = g_task_score;
    auto* s = t->add_subcommand("score", "score a completion of a task prompt (JSON)");
    g_task_score_cmd = s;
    s->add_option("--task", o.task, "task: " + names)->required();
    s->add_option("--prompt", o.prompt, "the problem's prompt (the user message)")->required();
    s->add_option("--completion", o.completion, "the text generated after \"<think>\\n\"")
        ->required();
  }
  g_actions["task"] = cmd_task;
}

void register_commands(CLI::App& app) {
  register_train(app);
  register_sft(app);
  register_distill(app);
  register_grpo(app);
  register_eval(app);
  register_task(app);
  {
    auto* t = app.add_subcommand("tokenizer", "tokenizer tools");
    auto* s = t->add_subcommand("train", "train a byte-level BPE tokenizer (DeepSeek-V3 format)");
    g_tokenizer_train = s;
    s->add_option("--input", g_bpe.inputs, "text / JSONL file, directory, or the Brown corpus")
        ->required();
    s->add_option("--vocab", g_bpe.vocab_size, "vocabulary size (bytes + merges + specials)")
        ->required();
    s->add_option("--out", g_bpe.out_dir, "output directory (tokenizer.json + config)")->required();
    s->add_option("--format", g_bpe_format, "auto, text, jsonl or brown");
    s->add_option("--text-field", g_bpe.text_field, "JSONL field holding the text");
    s->add_option("--min-frequency", g_bpe.min_frequency, "never merge rarer pairs");
    s->add_option("--template", g_bpe.template_dir,
                  "DeepSeek tokenizer dir to take the pre-tokenizer and chat template from");
    s->add_option("--threads", g_bpe.threads, "pre-tokenization threads (0: all cores)");
    s->add_flag("--no-progress", g_bpe_no_progress, "no progress bar");
    g_actions["tokenizer"] = cmd_tokenizer;
  }
  {
    auto* s = app.add_subcommand("data", "turn text into token shards for training");
    s->add_option("--input", g_data.inputs, "text / JSONL file, directory, or the Brown corpus")
        ->required();
    s->add_option("--tokenizer", g_data.tokenizer_dir, "directory with tokenizer.json")->required();
    s->add_option("--out", g_data.out_dir, "output directory (shards + meta.json)")->required();
    s->add_option("--val-fraction", g_data.val_fraction, "share of documents held out (0..1)");
    s->add_option("--seed", g_data.seed, "seed of the train/validation split");
    s->add_option("--format", g_data_format, "auto, text, jsonl or brown");
    s->add_option("--text-field", g_data.text_field, "JSONL field holding the text");
    s->add_option("--shard-tokens", g_data.shard_tokens, "tokens per shard file");
    s->add_option("--threads", g_data.threads, "tokenizer threads (0: all cores)");
    s->add_flag("--no-progress", g_data_no_progress, "no progress bar");
    g_actions["data"] = cmd_data;
  }
  {
    auto* s = app.add_subcommand("serve", "OpenAI-compatible HTTP server and chat page");
    add_model(s);
    add_kv_type(s);
    add_threads(s);
    s->add_option("--host", g_server.host,
                  "address to listen on (default 127.0.0.1; 0.0.0.0 serves every interface)");
    s->add_option("--port", g_server.port, "port (0: any free port)");
    s->add_option("--api-key", g_server.api_key, "require 'Authorization: Bearer KEY' on /v1/");
    s->add_option("--parallel", g_engine.parallel, "sequences decoded together (slots)")
        ->check(CLI::Range(1, 256));
    s->add_option("--ctx", g_serve_ctx, "context per slot, tokens (prompt + completion)")
        ->check(CLI::Range(int64_t(2), int64_t(1) << 24));
    s->add_option("--cache-mb", g_cache_mb, "prompt cache size in MiB (LRU)");
    s->add_option("--cache-dir", g_engine.cache_dir,
                  "keep prompt prefixes and their KV in this directory, across restarts");
    s->add_option("--cache-disk-gb", g_cache_disk_gb, "size of the --cache-dir cache in GiB (LRU)")
        ->check(CLI::Range(0.0, 1e6));
    s->add_option("--queue", g_engine.max_queue, "waiting requests before 503")
        ->check(CLI::Range(1, 1 << 20));
    s->add_option("--batch", g_engine.prefill_chunk, "prompt tokens per forward pass")
        ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
    s->add_option("--max-body", g_server.max_body, "largest request body in bytes (else 413)");
    s->add_option("--max-tokens", g_server.default_max_tokens,
                  "completion tokens when a request gives no max_tokens")
        ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
    s->add_option("--http-threads", g_server.http_threads, "HTTP worker threads")
        ->check(CLI::Range(1, 4096));
    s->add_option("--max-connections", g_server.max_connections,
                  "client connections held at once; the next ones get 503")
        ->check(CLI::Range(1, 1 << 20));
    s->add_option("--header-timeout", g_server.header_timeout_s,
                  "seconds for a request's head to arrive (else 408)")
        ->check(CLI::Range(0.01, 3600.0));
    s->add_option("--body-timeout", g_server.body_timeout_s,
                  "seconds for a request's body to arrive after its head (else 408)")
        ->check(CLI::Range(0.01, 3600.0));
    s->add_option("--idle-timeout", g_server.idle_timeout_s,
                  "seconds a kept-alive connection may wait for its next request")
        ->check(CLI::Range(0.01, 3600.0));
    s->add_option("--model-id", g_server.model_id, "model name in /v1/models (default: dir name)");
    s->add_flag("--thinking", g_server.thinking,
                "V3.1 models: thinking mode unless a request turns it off (see README)");
    s->add_option("--spec", g_spec,
                  "speculative decoding in every slot: mtp (the checkpoint's MTP module drafts "
                  "one token ahead; same output) or none")
        ->check(CLI::IsMember({"none", "mtp"}));
    g_actions["serve"] = cmd_serve;
  }
  {
    auto* s = app.add_subcommand("run", "generate text from a prompt, streamed");
    add_model(s);
    add_kv_type(s);
    add_threads(s);
    add_sampling(s);
    s->add_option("-p,--prompt", g_prompt, "prompt text")->required();
    s->add_flag("--chat", g_chat_template, "wrap the prompt as a user turn of the chat template");
    s->add_option("--system", g_system, "system prompt (with --chat)");
    s->add_flag("--no-stats", g_no_stats, "do not print speed figures to stderr");
    s->add_flag("--hide-thinking", g_hide_thinking,
                "R1 models: print only the answer, not the reasoning");
    s->add_flag("--thinking", g_thinking, "V3.1 models: thinking mode (off by default)");
    g_actions["run"] = cmd_run;
  }
  {
    auto* s = app.add_subcommand("chat", "interactive multi-turn chat (Ctrl-D exits)");
    add_model(s);
    add_kv_type(s);
    add_threads(s);
    add_sampling(s);
    s->add_option("--system", g_system, "system prompt");
    s->add_flag("--no-stats", g_no_stats, "do not print speed figures to stderr");
    s->add_flag("--hide-thinking", g_hide_thinking,
                "R1 models: print only the answer, not the reasoning");
    s->add_flag("--thinking", g_thinking, "V3.1 models: thinking mode (off by default)");
    g_actions["chat"] = cmd_chat;
  }
  {
    auto* s =
        app.add_subcommand("tokenize", "token ids of a text, as JSON (needs only tokenizer files)");
    add_model(s);
    s->add_option("--text", g_text, "text to encode")->required();
    s->add_flag("--bos", g_bos, "prepend the bos token");
    g_actions["tokenize"] = cmd_tokenize;
  }
  {
    auto* s = app.add_subcommand("detokenize", "text of comma-separated token ids");
    add_model(s);
    s->add_option("--ids", g_ids, "comma-separated ids")->required();
    g_actions["detokenize"] = cmd_detokenize;
  }
  {
    auto* s = app.add_subcommand(
        "quantize", "write a Hugging Face model as a llama.cpp GGUF file (deepseek2), quantized");
    add_model(s);
    s->add_option(
         "--type", g_quant_type,
         "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q4_k_m or q5_k_m")
        ->required();
    s->add_option("--out", g_quant_out, "output GGUF file")->required();
    g_actions["quantize"] = cmd_quantize;
  }
  {
    auto* s =
        app.add_subcommand("perplexity", "perplexity of a text file, by llama-perplexity's method");
    add_model(s);
    add_kv_type(s);
    add_threads(s);
    s->add_option("-f,--file", g_ppl_file, "text file")->required();
    s->add_option("--ctx", g_ppl_ctx, "tokens per chunk (the second half of each is scored)");
    s->add_option("--chunks", g_ppl_chunks, "chunks at most (0: all)");
    s->add_flag("--json", g_ppl_json, "one JSON line instead of the text summary");
    g_actions["perplexity"] = cmd_perplexity;
  }
  {
    auto* s = app.add_subcommand("info", "print parameter counts and KV-cache size");
    add_model(s);
    add_kv_type(s);
    g_actions["info"] = cmd_info;
  }
  {
    auto* s = app.add_subcommand("logits", "logits of a token sequence from an empty cache");
    add_model(s);
    add_kv_type(s);
    add_threads(s);
    s->add_option("--tokens", g_tokens, "comma-separated token ids (no bos added)")->required();
    s->add_flag("--all", g_all, "every position (default: last only)");
    s->add_option("--out", g_out,
                  "write float32 little-endian rows here (default: JSON to stdout)");
    s->add_option("--attn", g_mode, "attention form: auto, naive, absorbed");
    g_actions["logits"] = cmd_logits;
  }
  {
    auto* s = app.add_subcommand("generate", "greedy continuation ids, one token at a time");
    add_model(s);
    add_kv_type(s);
    add_threads(s);
    s->add_option("--tokens", g_tokens, "comma-separated prompt ids")->required();
    s->add_option("-n", g_n, "number of ids to generate (no stop at eos)");
    s->add_flag("--greedy", g_greedy, "argmax decoding (the only mode here)");
    s->add_flag("--print-ids", g_print_ids, "print the ids as a JSON list (default)");
    s->add_option("--attn", g_mode, "attention form for the prompt: auto, naive, absorbed");
    g_actions["generate"] = cmd_generate;
  }
  {
    auto* s = app.add_subcommand("bench", "prefill and decode tokens/s");
    add_model(s);
    add_kv_type(s);
    add_threads(s);
    s->add_option("-p", g_bench_p, "prompt tokens");
    s->add_option("-n", g_bench_n, "generated tokens");
    s->add_option("--batch", g_bench_batch,
                  "sequences decoded together (aggregate tok/s); a list (1,8) runs each")
        ->delimiter(',')
        ->check(CLI::Range(1, 256));
    s->add_option("--rounds", g_bench_rounds, "repeat the batch sizes, interleaved; medians")
        ->check(CLI::Range(1, 100));
    s->add_option("--spec", g_bench_spec,
                  "mtp: decode through run's loop with MTP speculative decoding (greedy, "
                  "one sequence); reports the drafts' acceptance")
        ->check(CLI::IsMember({"none", "mtp"}));
    g_actions["bench"] = cmd_bench;
  }
}

int run_selected(CLI::App& app) {
  for (auto* sub : app.get_subcommands()) {
    auto it = g_actions.find(sub->get_name());
    if (it == g_actions.end()) continue;
    if (g.model_dir.empty() && g_model_subcommands.count(sub)) g.model_dir = default_model_dir();
    return it->second();
  }
  return 1;
}

}  // namespace whale::cli
