// Rollouts for reinforcement learning: G sampled completions for each of P prompts, from the
// inference model (whale::Model), all P*G sequences decoded together.
//
//   1. the P prompts are prefilled in one batched forward pass, each into its own KV cache;
//   2. each prompt's cache is copied to its G completions, and completion i draws its first token
//      from the prompt's last logits with its own Sampler (seeds[i]);
//   3. every step, one batched forward pass over the completions still running (one new token
//      each), then one sampled token per completion; a completion stops at eos (kept as its last
//      token: the policy learns to end), at max_tokens, or when its context is full.
// Deterministic: the same model, prompts, options, seeds and thread count give the same tokens.
//
// The policy being trained changes every step, so the caller rebuilds the Model from the current
// weights before each rollout (inference_model below).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"
#include "train/model_train.h"

namespace whale::reason {

struct RolloutOptions {
  int64_t group = 4;         // G: completions per prompt
  int64_t max_tokens = 256;  // per completion, eos included
  float temperature = 1.0f;
  float top_p = 1.0f;  // >= 1: off
};

struct Completion {
  std::vector<int32_t> ids;  // the sampled tokens, the eos last when it was sampled
  bool eos = false;          // ended by eos (else by max_tokens or the context)
};

// Completions [P*G] (prompt p's are p*G .. p*G+G-1); seeds [P*G], one per completion; eos may be
// -1 (none). Throws std::invalid_argument for an empty prompt, a prompt that leaves no room in the
// model's context (max_position_embeddings), group < 1, max_tokens < 1, or a seeds size other
// than P*G.
std::vector<Completion> sample_completions(const Model& model,
                                           std::span<const std::vector<int32_t>> prompts,
                                           std::span<const uint64_t> seeds,
                                           const RolloutOptions& options, int32_t eos);

// The inference model with a TrainModel's current weights: written as F32 safetensors (the main
// model's tensors: no MTP module, which inference does not run) with its config.json into `dir`,
// then loaded into RAM. Rewrites the files on every call; `dir` is created when missing.
std::unique_ptr<Model> inference_model(const train::TrainModel& policy,
                                       const std::string& config_json, const std::string& dir);

}  // namespace whale::reason
