// `whale eval`: a model on the held-out problems of a reasoning task (reason/task.h).
//
// For each of n problems (task.generate(seed, i, Split::Eval), i < n; task "all" takes 3n, n of
// each family) the prompt is the user message rendered with the model's chat template
// (add_generation_prompt; R1 ends "<｜Assistant｜><think>\n"), and the model writes
//   one greedy completion (temperature 0)  -> pass@1, format rate, mean length, mean reward;
//   k sampled completions at --temp        -> pass@k (k = 0 skips them).
// Completions are decoded without the eos and scored with Task::score. Per family:
//   pass@1       share of problems whose greedy completion is correct
//   pass@k       mean over problems of the unbiased estimator 1 - C(n-c, k) / C(n, k) from n = k
//                samples with c correct, i.e. the share of problems with any of the k correct
//   format       share of greedy completions with Score::formatted
//   mean length  greedy completion tokens (eos excluded), mean over problems
//   mean reward  Score::reward of the greedy completion (correct 1 + format 0.1), mean
// The completions come from a CompletionSource, so the counting is testable without a model.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/tokenizer.h"
#include "model/model.h"
#include "reason/task.h"
#include "run/chat.h"

namespace whale::reason {

// 1 - C(n-c, k) / C(n, k): the probability that k of n samples, c of them correct, drawn without
// replacement hold a correct one. Throws std::invalid_argument unless 0 <= c <= n and 1 <= k <= n.
double pass_at_k(int64_t n, int64_t c, int64_t k);

// A decoded completion (eos stripped) and its length in tokens (eos excluded).
struct EvalSample {
  std::string text;
  int64_t tokens = 0;
};

// One recorded greedy completion.
struct EvalExample {
  std::string prompt, completion, why;
  bool correct = false, formatted = false;
};

struct FamilyResult {
  std::string family;
  int64_t n = 0;
  int64_t correct = 0;                // greedy completions correct
  int64_t formatted = 0;              // greedy completions formatted
  double pass_k_sum = 0;              // sum over problems of pass@k
  double length_sum = 0;              // greedy completion tokens
  double reward_sum = 0;              // greedy rewards
  std::vector<EvalExample> examples;  // the first greedy completions
  std::vector<EvalExample> failures;  // the first wrong greedy completions

  double pass1() const { return n ? double(correct) / double(n) : 0.0; }
  double pass_k() const { return n ? pass_k_sum / double(n) : 0.0; }
  double format_rate() const { return n ? double(formatted) / double(n) : 0.0; }
  double mean_length() const { return n ? length_sum / double(n) : 0.0; }
  double mean_reward() const { return n ? reward_sum / double(n) : 0.0; }
};

// Scored problems per family, in the order the families first appear.
class EvalTally {
 public:
  // k: samples per problem for pass@k (0: none); examples: the first greedy completions kept
  // per family (and the first 4 x examples wrong ones, to read what the model gets wrong).
  explicit EvalTally(int64_t k, int64_t examples = 3) : k_(k), examples_(examples) {}
  // One problem: its greedy completion and its k sampled ones. Throws std::invalid_argument when
  // samples.size() != k.
  void add(const Task& task, const Problem& p, const EvalSample& greedy,
           std::span<const EvalSample> samples);
  const std::vector<FamilyResult>& families() const { return families_; }
  FamilyResult total() const;  // every family together ("all"; no examples)
  int64_t k() const { return k_; }

 private:
  int64_t k_, examples_;
  std::vector<FamilyResult> families_;
};

struct EvalOptions {
  std::string model_dir;
  std::string task;  // add_sub, mul, countdown or all
  int64_t n = 1000;  // problems (per family for "all")
  int64_t k = 8;     // sampled completions per problem (0: no pass@k)
  uint64_t seed = 1000;
  float temperature = 1.0f;
  int64_t max_tokens = 512;
  int64_t batch = 64;  // problems per sample_completions call
  std::string json_path;
  int threads = 0;  // 0: all cores
  bool progress = true;
};
// Throws std::invalid_argument for n < 1, k < 0, max_tokens < 1, batch < 1, temperature <= 0
// with k > 0, or a NaN temperature.
void check_eval_options(const EvalOptions& o);

// The prompts and the model behind completions: chat rendering, tokenizing, batched decoding.
class ModelCompleter {
 public:
  // Loads DIR's tokenizer and model. Throws std::invalid_argument (naming `what` and DIR) when
  // DIR has no config.json, no tokenizer.json or no chat template.
  ModelCompleter(const std::string& dir, const std::string& what);
  // The prompt string of a user message: the chat template with the generation prompt.
  std::string render(const std::string& user) const;
  // `group` completions of each prompt (prompt p's are p*group .. p*group+group-1), greedy when
  // temperature <= 0; seeds[p*group + g] seeds completion g of prompt p.
  std::vector<EvalSample> complete(const std::vector<std::string>& users, int64_t group,
                                   float temperature, int64_t max_tokens,
                                   std::span<const uint64_t> seeds) const;
  const Tokenizer& tokenizer() const { return *tok_; }

 private:
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<Model> model_;
  ChatStyle style_ = ChatStyle::R1;
};

// `group` completions per problem, greedy or sampled (as ModelCompleter::complete); `first` is
// the index of problems[0] in the evaluation (it seeds the samplers).
using CompletionSource = std::function<std::vector<EvalSample>(
    std::span<const Problem> problems, uint64_t first, int64_t group, bool greedy)>;

// The seed of sampled completion g of problem `index`.
uint64_t eval_seed(uint64_t seed, uint64_t index, int64_t g);

// The evaluation's problems: count of them from task.generate(seed, i, Split::Eval).
std::vector<Problem> eval_problems(const Task& task, uint64_t seed, int64_t count);

// Runs the problems through `source` in batches of o.batch and tallies them; progress on stderr
// when o.progress.
EvalTally evaluate(const Task& task, std::span<const Problem> problems,
                   const CompletionSource& source, const EvalOptions& o);

// The table printed by `whale eval` (a row per family, then "all" when there are several).
std::string eval_table(const EvalTally& t);
// The JSON of `--json`: the run parameters, wall time, per-family numbers, total, examples.
std::string eval_json(const EvalTally& t, const EvalOptions& o, double wall_s);

// `whale eval`: loads the model, evaluates, prints the table, writes --json. Returns 0.
int run_eval_command(const EvalOptions& o, const Task& task);

}  // namespace whale::reason
