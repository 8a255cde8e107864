// `whale distill`: rejection sampling from a teacher model into SFT data (R1's 600k reasoning
// samples, at small scale).
//
// For each prompt (problems of a task's training split, or the lines of a prompts file):
//   1. the teacher writes `samples` completions (the prompt rendered with the teacher's chat
//      template; all prompts of a batch and their samples decoded together, KV cache, sampling
//      at --temp);
//   2. each completion is scored by the task's verifier (reason/verify.h); only those both correct
//      and well formatted are accepted;
//   3. up to `keep` distinct accepted completions per prompt become SFT examples:
//        {"messages": [{"role": "user", "content": PROMPT},
//                      {"role": "assistant", "reasoning_content": R, "content": C}]}
//      with R and C the completion split at its "</think>" (split_reasoning), which `whale sft`
//      renders back into the same R1 text.
// The output file is written atomically at the end: an error (bad prompts file, teacher without a
// chat template, a student tokenizer that differs) leaves an existing OUT untouched.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "reason/task.h"

namespace whale::reason {

struct DistillOptions {
  std::string teacher_dir;
  std::string task = "all";  // the verifier (and, without prompts_path, the problem generator)
  std::string prompts_path;  // JSONL, one {"prompt": "..."} per line (`whale task sample
                             // --format prompt` writes them); empty: the task's problems
  std::string student_dir;   // when set, its tokenizer must equal the teacher's
  std::string out_path;      // the SFT JSONL
  int64_t n = 1000;          // prompts (0 with a prompts file: every line)
  int64_t samples = 4;       // completions per prompt
  int64_t keep = 1;          // accepted completions kept per prompt at most
  float temperature = 0.7f;
  int64_t max_tokens = 512;
  int64_t batch = 32;  // prompts per batched decode
  uint64_t seed = 1;   // problems and samplers
  int threads = 0;
  bool progress = true;
};

// Throws std::invalid_argument for n < 0 (or n == 0 without a prompts file), samples < 1,
// keep < 1, max_tokens < 1, batch < 1, temperature <= 0 or NaN, or no output path.
void check_distill_options(const DistillOptions& o);

// The prompts file's problems: one JSON object per non-empty line with a "prompt" string that
// states a problem of the tasks (parse_problem) of `task` ("all": any family). At most n of them
// (0: all). Throws std::invalid_argument naming FILE:LINE and the problem otherwise.
std::vector<Problem> read_distill_prompts(const std::string& path, const std::string& task,
                                          int64_t n);

// Throws std::invalid_argument naming both directories and the first difference when the two
// tokenizer.json files define different vocabularies, merges or added tokens.
void check_same_tokenizer(const std::string& teacher_dir, const std::string& student_dir);

// One SFT line (no newline) for an accepted completion of `prompt`.
std::string distill_example_json(const std::string& prompt, const std::string& completion);

struct DistillStats {
  struct Family {
    std::string family;
    int64_t prompts = 0, samples = 0, correct = 0, accepted = 0, kept = 0;
  };
  std::vector<Family> families;  // in the order they first appear
  Family total() const;
};

int run_distill_command(const DistillOptions& o, const Task& task);

}  // namespace whale::reason
