// Reasoning tasks: the plug-in point of the R1 recipe (SFT data, rejection sampling, GRPO, eval).
//
// A task is a problem generator, the prompt (the user message alone), an exact verifier with
// rule-based rewards, and a teacher that writes a worked solution (the synthetic reasoning trace
// the bundled model is trained on). The model answers R1-style: its reasoning inside
// <think>...</think> (the generation prompt already opened the block with "<think>\n"), then the
// final answer in the content as \boxed{...}.
//
// Families (the prompts are exactly these forms):
//   add_sub    "What is {a} + {b}?" / "What is {a} - {b}?", a, b in 0..9999 (1 to 4 digits);
//              results may be negative.
//   mul        "What is {a} * {b}?", 2-digit x 2-digit or 3-digit x 1-digit, either order.
//   countdown  "Using the numbers {x}, {y}, {z}, make {t}.", x, y, z in 1..25, t in 1..100
//              reachable with + - * / and parentheses using each number exactly once.
//
// Held-out split: every problem has a canonical key (its family and numbers); a problem is
// held out iff a hash of its key falls in the eval share (1/8). Training data comes only from
// the rest and evaluation only from the held-out share, whatever the seeds: no overlap, ever.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace whale::reason {

enum class Split { Train, Eval };

struct Problem {
  std::string family;            // "add_sub", "mul", "countdown"
  std::string prompt;            // the user message
  std::vector<int64_t> numbers;  // add_sub/mul: {a, b}; countdown: {x, y, z, t}
  char op = 0;                   // add_sub/mul: '+', '-' or '*'; countdown: 0
  std::string answer;            // one correct final answer (countdown: one valid expression)
};

// Rewards: reward = correct_weight * correct + format_weight * formatted.
struct RewardWeights {
  double correct = 1.0;
  double format = 0.1;
};

struct Score {
  bool correct = false;    // exactly one \boxed{...} after </think>, and its content is right
  bool formatted = false;  // one well-formed think block closed by a single </think>, exactly
                           // one \boxed{...} after it, and the completion ends there (eos)
  double reward = 0;
  std::string answer;  // the boxed text after </think> (the last when several; "" when none)
  std::string why;     // why it is not correct/formatted ("" when both hold)
};

// A worked solution: what the teacher writes in the think block, and the final content.
struct Trace {
  std::string reasoning;  // no leading/trailing whitespace
  std::string content;    // "The answer is \boxed{...}."
};

class Task {
 public:
  virtual ~Task() = default;
  virtual std::string name() const = 0;
  // Problem `index` of the stream seeded by `seed`, drawn from `split` only. Deterministic.
  virtual Problem generate(uint64_t seed, uint64_t index, Split split) const = 0;
  // Scores a completion: the text the model generated after the generation prompt (which ends
  // "<think>\n"), eos excluded. Never throws, whatever the text. The exact rules: verify.h.
  virtual Score score(const Problem& p, std::string_view completion,
                      const RewardWeights& w = {}) const = 0;
  // The teacher's worked solution.
  virtual Trace trace(const Problem& p) const = 0;
};

// "add_sub", "mul", "countdown", or "all" (the three families in turn: index % 3).
// Throws std::invalid_argument naming the task and listing the known ones.
std::unique_ptr<Task> make_task(std::string_view name);
std::vector<std::string> task_names();

// ---- problems by their numbers (tasks.cpp; the generators, parse_problem and the tests use them)
//
// Generators: problem `index` of (seed, split) is drawn from a splitmix64 stream keyed by (seed,
// family, index, split, attempt); attempts go on until the problem falls in `split`. Uniform draws
// take the high 64 bits of draw * n (no std:: distributions: they differ across platforms).
//   add_sub    op '+' or '-' (one draw), then a and b: a digit count 1..4, then a number with
//              that many digits (1 digit: 0..9).
//   mul        2-digit x 2-digit or 3-digit x 1-digit (1 digit: 0..9), one draw; the second kind
//              swaps the operands on another draw.
//   countdown  x, y, z in 1..25, then t among the targets 1..100 they reach (drawn again when
//   none).
// The key: "add_sub:4721+385", "mul:47*38", "countdown:7,5,3->32"; held out (Eval) iff its FNV-1a
// 64-bit hash % 8 == 0. Operand order matters: 47*38 and 38*47 are two problems.

// The problems with these numbers, their prompts and the teacher's answers. add_sub and mul take
// any non-negative operands; countdown gives nullopt when the teacher finds no solution.
Problem add_sub_problem(int64_t a, char op, int64_t b);
Problem mul_problem(int64_t a, int64_t b);
std::optional<Problem> countdown_problem(int64_t x, int64_t y, int64_t z, int64_t t);
std::string problem_key(const Problem& p);
Split problem_split(const Problem& p);
// The problem a prompt states: exactly one of the three forms above with its family's ranges
// (numbers written plainly: no sign, no leading zero), a countdown target the teacher reaches;
// nullopt for anything else.
std::optional<Problem> parse_problem(std::string_view prompt);
// The targets 1..100 that x, y, z reach with + - * / and parentheses, each number once, rational
// intermediates allowed (sorted). Cached for 1..25.
std::vector<int> reachable_targets(int64_t x, int64_t y, int64_t z);

}  // namespace whale::reason
