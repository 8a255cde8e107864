// Training and evaluation examples of the reasoning tasks, and the `whale task` command.
//
// `whale task sample` writes one JSON object per line, per --format:
//   chat    {"messages": [{"role": "user", "content": PROMPT},
//                         {"role": "assistant", "reasoning_content": R, "content": C}]}
//           (the `whale sft` format)
//   text    {"text": "<｜User｜>" PROMPT "<｜Assistant｜><think>\n" R "\n</think>\n\n" C}
//           (for `whale data --format jsonl`, which adds bos/eos)
//   prompt  {"family": F, "prompt": PROMPT, "answer": A}   (for evaluation, whale distill)
//   plain   PROMPT alone, not JSON (for a shell: `make run` asks a fresh problem with it)
// Example i of the stream: with --other, out-of-domain iff splitmix64-hash(seed, i) / 2^64 <
// other_share; the task examples take the problem indices 0, 1, 2, ... in order (so they are the
// same problems with or without --other).
//
// Out-of-domain examples teach the model to decline what it cannot do: the user message is a
// sentence of ordinary text (a line of 3 to 30 words of the --other documents, which are read as
// `whale data` reads its inputs), the reasoning says it is not a problem, and the content is a
// fixed message with one example prompt per family (family "other", answer ""). A sentence is
// held out (eval) iff the FNV-1a 64-bit hash of "other:" + sentence % 8 == 0, like the problems.
//
// `whale task score` parses the problem back from the prompt (parse_problem) and prints the Score
// as JSON: {"correct", "formatted", "reward", "answer", "why"}.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "reason/task.h"

namespace whale::reason {

struct Example {
  std::string family;  // a task family, or "other"
  std::string prompt;  // the user message
  Trace trace;
  std::string answer;  // Problem::answer ("" for "other")
};

Example task_example(const Task& task, uint64_t seed, uint64_t index, Split split);
Example out_of_domain_example(std::string_view text);

enum class ExampleFormat { Chat, Text, Prompt, Plain };
// "chat" | "text" | "prompt" | "plain"; throws std::invalid_argument otherwise.
ExampleFormat parse_example_format(std::string_view name);
Split parse_split(std::string_view name);
// One JSONL line (no newline; plain: the prompt); invalid UTF-8 in the text is replaced by U+FFFD.
std::string example_json(const Example& e, ExampleFormat format);

// The lines of 3 to 30 words of the documents (trimmed; task prompts left out), in order.
std::vector<std::string> sentences_of(const std::vector<std::string>& documents);

struct SampleOptions {
  std::string task = "all";
  uint64_t n = 100;
  uint64_t seed = 0;
  std::string split = "train";
  std::string format = "chat";
  std::vector<std::string> other;  // text inputs for out-of-domain examples
  double other_share = 0.1;
  std::string out;  // "" -> stdout
};
// `whale task sample`. Returns 0; throws std::invalid_argument / std::runtime_error on bad input.
int run_task_sample(const SampleOptions& options);

struct ScoreOptions {
  std::string task = "all";
  std::string prompt, completion;
  RewardWeights weights;
};
// The Score as JSON (the form above).
std::string score_json(const Score& s);
// `whale task score`: prints score_json. Throws when the prompt is no problem of the task.
int run_task_score(const ScoreOptions& options);

}  // namespace whale::reason
