#include "reason/eval.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "kernels/cpu.h"
#include "reason/rollout.h"
#include "train/data.h"

namespace whale::reason {

namespace fs = std::filesystem;
using json = nlohmann::json;

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  if (c < 0 || c > n || k < 1 || k > n)
    throw std::invalid_argument("pass_at_k: need 0 <= c <= n and 1 <= k <= n (n " +
                                std::to_string(n) + ", c " + std::to_string(c) + ", k " +
                                std::to_string(k) + ")");
  if (n - c < k) return 1.0;
  // C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i)
  double miss = 1.0;
  for (int64_t i = n - c + 1; i <= n; i++) miss *= 1.0 - double(k) / double(i);
  return 1.0 - miss;
}

void EvalTally::add(const Task& task, const Problem& p, const EvalSample& greedy,
                    std::span<const EvalSample> samples) {
  if (int64_t(samples.size()) != k_)
    throw std::invalid_argument("EvalTally::add: " + std::to_string(samples.size()) +
                                " samples, expected k = " + std::to_string(k_));
  FamilyResult* f = nullptr;
  for (FamilyResult& r : families_)
    if (r.family == p.family) f = &r;
  if (!f) {
    families_.push_back({});
    f = &families_.back();
    f->family = p.family;
  }
  const Score s = task.score(p, greedy.text);
  f->n++;
  f->correct += s.correct;
  f->formatted += s.formatted;
  f->length_sum += double(greedy.tokens);
  f->reward_sum += s.reward;
  if (k_ > 0) {
    int64_t c = 0;
    for (const EvalSample& x : samples) c += task.score(p, x.text).correct;
    f->pass_k_sum += pass_at_k(k_, c, k_);
  }
  if (int64_t(f->examples.size()) < examples_)
    f->examples.push_back({p.prompt, greedy.text, s.why, s.correct, s.formatted});
  if (!s.correct && int64_t(f->failures.size()) < 4 * examples_)
    f->failures.push_back({p.prompt, greedy.text, s.why, s.correct, s.formatted});
}

FamilyResult EvalTally::total() const {
  FamilyResult t;
  t.family = "all";
  for (const FamilyResult& f : families_) {
    t.n += f.n;
    t.correct += f.correct;
    t.formatted += f.formatted;
    t.pass_k_sum += f.pass_k_sum;
    t.length_sum += f.length_sum;
    t.reward_sum += f.reward_sum;
  }
  return t;
}

void check_eval_options(const EvalOptions& o) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("whale eval: " + what); };
  if (o.n < 1) bad("--n must be at least 1");
  if (o.k < 0) bad("--k must be 0 (no pass@k) or more");
  if (o.max_tokens < 1) bad("--max-tokens must be at least 1");
  if (o.batch < 1) bad("--batch must be at least 1");
  if (std::isnan(o.temperature) || (o.k > 0 && o.temperature <= 0))
    bad("--temp must be above 0 for pass@k (or --k 0)");
}

// ------------------------------------------------------------------ the model

ModelCompleter::ModelCompleter(const std::string& dir, const std::string& what) {
  if (!fs::exists(fs::path(dir) / "config.json"))
    throw std::invalid_argument(what + " " + dir +
                                ": no config.json (a model directory is needed)");
  if (!fs::exists(fs::path(dir) / "tokenizer.json"))
    throw std::invalid_argument(what + " " + dir +
                                ": no tokenizer.json (the prompts and completions need it)");
  tok_ = std::make_unique<Tokenizer>(Tokenizer::load(dir));
  if (tok_->chat_template().empty())
    throw std::invalid_argument(what + " " + dir +
                                ": the tokenizer has no chat template (tokenizer_config.json "
                                "chat_template); the prompts are chat messages");
  style_ = detect_chat_style(tok_->chat_template());
  model_ = Model::load(dir);
}

std::string ModelCompleter::render(const std::string& user) const {
  return render_chat({{"user", user, ""}}, style_, tok_->bos_token(), true);
}

std::vector<EvalSample> ModelCompleter::complete(const std::vector<std::string>& users,
                                                 int64_t group, float temperature,
                                                 int64_t max_tokens,
                                                 std::span<const uint64_t> seeds) const {
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& u : users) prompts.push_back(tok_->encode(render(u)));
  RolloutOptions ro;
  ro.group = group;
  ro.max_tokens = max_tokens;
  ro.temperature = temperature;
  const std::vector<Completion> cs =
      sample_completions(*model_, prompts, seeds, ro, tok_->eos_id());
  std::vector<EvalSample> out;
  for (const Completion& c : cs) {
    const size_t n = c.ids.size() - (c.eos ? 1 : 0);
    out.push_back({tok_->decode(std::span<const int32_t>(c.ids.data(), n), /*skip_special=*/true),
                   int64_t(n)});
  }
  return out;
}

// ------------------------------------------------------------------ the evaluation

uint64_t eval_seed(uint64_t seed, uint64_t index, int64_t g) {
  return splitmix64(splitmix64(splitmix64(seed ^ 0x6576616Cull) + index) + uint64_t(g));
}

std::vector<Problem> eval_problems(const Task& task, uint64_t seed, int64_t count) {
  std::vector<Problem> ps;
  for (int64_t i = 0; i < count; i++) ps.push_back(task.generate(seed, uint64_t(i), Split::Eval));
  return ps;
}

EvalTally evaluate(const Task& task, std::span<const Problem> problems,
                   const CompletionSource& source, const EvalOptions& o) {
  EvalTally tally(o.k);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t first = 0; first < problems.size(); first += size_t(o.batch)) {
    const size_t m = std::min(size_t(o.batch), problems.size() - first);
    const std::span<const Problem> batch = problems.subspan(first, m);
    const std::vector<EvalSample> greedy = source(batch, first, 1, true);
    std::vector<EvalSample> sampled;
    if (o.k > 0) sampled = source(batch, first, o.k, false);
    if (greedy.size() != m || sampled.size() != m * size_t(o.k))
      throw std::runtime_error("whale eval: the completion source returned " +
                               std::to_string(greedy.size() + sampled.size()) +
                               " completions for " + std::to_string(m) + " problems");
    for (size_t i = 0; i < m; i++)
      tally.add(task, batch[i], greedy[i],
                std::span<const EvalSample>(sampled).subspan(i * size_t(o.k), size_t(o.k)));
    if (o.progress) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const FamilyResult t = tally.total();
      std::fprintf(stderr, "eval: %zu/%zu problems  pass@1 %.3f  %.1fs\n", first + m,
                   problems.size(), t.pass1(), s);
    }
  }
  return tally;
}

std::string eval_table(const EvalTally& t) {
  std::string out;
  char line[256];
  const std::string pk = "pass@" + std::to_string(t.k());
  std::snprintf(line, sizeof line, "%-10s %6s %7s %7s %7s %11s\n", "family", "n", "pass@1",
                pk.c_str(), "format", "mean length");
  out += line;
  auto row = [&](const FamilyResult& f) {
    char pass_k[32] = "-";
    if (t.k() > 0) std::snprintf(pass_k, sizeof pass_k, "%.3f", f.pass_k());
    std::snprintf(line, sizeof line, "%-10s %6lld %7.3f %7s %7.3f %11.1f\n", f.family.c_str(),
                  (long long)f.n, f.pass1(), pass_k, f.format_rate(), f.mean_length());
    out += line;
  };
  for (const FamilyResult& f : t.families()) row(f);
  if (t.families().size() > 1) row(t.total());
  return out;
}

namespace {

json family_json(const FamilyResult& f, int64_t k) {
  json j = {{"family", f.family},
            {"n", f.n},
            {"pass@1", f.pass1()},
            {"format", f.format_rate()},
            {"mean_length", f.mean_length()},
            {"mean_reward", f.mean_reward()}};
  j["pass@k"] = k > 0 ? json(f.pass_k()) : json(nullptr);
  return j;
}

}  // namespace

std::string eval_json(const EvalTally& t, const EvalOptions& o, double wall_s) {
  json families = json::array(), examples = json::array(), failures = json::array();
  auto example = [](const std::string& family, const EvalExample& e) {
    return json{{"family", family},     {"prompt", e.prompt},       {"completion", e.completion},
                {"correct", e.correct}, {"formatted", e.formatted}, {"why", e.why}};
  };
  for (const FamilyResult& f : t.families()) {
    families.push_back(family_json(f, t.k()));
    for (const EvalExample& e : f.examples) examples.push_back(example(f.family, e));
    for (const EvalExample& e : f.failures) failures.push_back(example(f.family, e));
  }
  json j = {{"model", o.model_dir},
            {"task", o.task},
            {"n", o.n},
            {"k", o.k},
            {"seed", o.seed},
            {"temperature", o.temperature},
            {"max_tokens", o.max_tokens},
            {"batch", o.batch},
            {"threads", num_threads()},
            {"split", "eval"},
            {"wall_s", wall_s},
            {"families", families},
            {"total", family_json(t.total(), t.k())},
            {"examples", examples},
            {"failures", failures}};
  return j.dump(2) + "\n";
}

int run_eval_command(const EvalOptions& o, const Task& task) {
  check_eval_options(o);
  const auto t0 = std::chrono::steady_clock::now();
  if (o.threads > 0) set_num_threads(o.threads);
  const ModelCompleter model(o.model_dir, "whale eval: --model");
  const int64_t count = o.task == "all" ? 3 * o.n : o.n;
  const std::vector<Problem> problems = eval_problems(task, o.seed, count);
  if (o.progress)
    std::fprintf(stderr, "eval: %s, %lld problems (held-out split), k %lld, %d threads\n",
                 o.task.c_str(), (long long)count, (long long)o.k, num_threads());
  CompletionSource source = [&](std::span<const Problem> ps, uint64_t first, int64_t group,
                                bool greedy) {
    std::vector<std::string> users;
    std::vector<uint64_t> seeds;
    for (size_t i = 0; i < ps.size(); i++) {
      users.push_back(ps[i].prompt);
      for (int64_t g = 0; g < group; g++) seeds.push_back(eval_seed(o.seed, first + i, g));
    }
    return model.complete(users, group, greedy ? 0.0f : o.temperature, o.max_tokens, seeds);
  };
  const EvalTally tally = evaluate(task, problems, source, o);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << eval_table(tally) << std::flush;
  if (!o.json_path.empty()) {
    const std::string text = eval_json(tally, o, wall);
    write_file_atomically(o.json_path, [&](std::ofstream& f) { f << text; });
  }
  if (o.progress) std::fprintf(stderr, "eval: done in %.1fs\n", wall);
  return 0;
}

}  // namespace whale::reason
