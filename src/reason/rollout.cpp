#include "reason/rollout.h"

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "run/sampler.h"

namespace whale::reason {

namespace fs = std::filesystem;

namespace {

// One completion being decoded: its cache (a copy of its prompt's), sampler and tokens.
struct Running {
  KVCache cache;
  Sampler sampler;
  Completion* out;
  int32_t last = 0;  // the token to feed next
};

// Samples the next token of `r` from `logits`; false when the completion is finished.
bool advance(Running& r, std::span<const float> logits, const RolloutOptions& o, int32_t eos) {
  const int32_t next = r.sampler.sample(logits);
  r.out->ids.push_back(next);
  r.last = next;
  if (next == eos) {
    r.out->eos = true;
    return false;
  }
  // The next forward appends one position to the cache.
  return int64_t(r.out->ids.size()) < o.max_tokens && r.cache.len() + 1 < r.cache.max_len();
}

}  // namespace

std::vector<Completion> sample_completions(const Model& model,
                                           std::span<const std::vector<int32_t>> prompts,
                                           std::span<const uint64_t> seeds, const RolloutOptions& o,
                                           int32_t eos) {
  const int64_t P = int64_t(prompts.size()), G = o.group;
  const int64_t V = model.config().vocab_size, ctx = model.config().max_position_embeddings;
  if (G < 1) throw std::invalid_argument("rollout: group must be >= 1");
  if (o.max_tokens < 1) throw std::invalid_argument("rollout: max_tokens must be >= 1");
  if (int64_t(seeds.size()) != P * G)
    throw std::invalid_argument("rollout: " + std::to_string(seeds.size()) + " seeds for " +
                                std::to_string(P * G) + " completions");
  for (const std::vector<int32_t>& p : prompts)
    if (p.empty() || int64_t(p.size()) >= ctx)
      throw std::invalid_argument("rollout: a prompt of " + std::to_string(p.size()) +
                                  " tokens (the model's context is " + std::to_string(ctx) +
                                  ", and a prompt needs at least one token)");

  // 1. All prompts in one forward pass.
  std::vector<KVCache> prompt_caches;
  for (const std::vector<int32_t>& p : prompts)
    prompt_caches.push_back(model.new_cache(std::min(ctx, int64_t(p.size()) + o.max_tokens)));
  std::vector<SeqInput> batch;
  for (int64_t p = 0; p < P; p++) batch.push_back({&prompt_caches[size_t(p)], prompts[size_t(p)]});
  std::vector<float> logits = P > 0 ? model.forward(batch) : std::vector<float>{};

  // 2. G copies of each, and their first tokens.
  std::vector<Completion> out(size_t(P * G));
  std::vector<Running> running;
  for (int64_t i = 0; i < P * G; i++) {
    SamplingParams sp;
    sp.temperature = o.temperature;
    sp.top_p = o.top_p;
    sp.seed = seeds[size_t(i)];
    Running r{prompt_caches[size_t(i / G)], Sampler(sp), &out[size_t(i)]};
    const std::span<const float> row(logits.data() + (i / G) * V, size_t(V));
    if (advance(r, row, o, eos)) running.push_back(std::move(r));
  }

  // 3. Decode the running completions together.
  while (!running.empty()) {
    batch.clear();
    for (Running& r : running) batch.push_back({&r.cache, std::span<const int32_t>(&r.last, 1)});
    logits = model.forward(batch);
    std::vector<Running> still;
    for (size_t k = 0; k < running.size(); k++) {
      const std::span<const float> row(logits.data() + int64_t(k) * V, size_t(V));
      if (advance(running[k], row, o, eos)) still.push_back(std::move(running[k]));
    }
    running = std::move(still);
  }
  return out;
}

std::unique_ptr<Model> inference_model(const train::TrainModel& policy,
                                       const std::string& config_json, const std::string& dir) {
  fs::create_directories(dir);
  const fs::path config = fs::path(dir) / "config.json";
  if (!fs::exists(config)) {
    const fs::path tmp = fs::path(dir) / "config.json.tmp";
    std::ofstream(tmp) << config_json;
    fs::rename(tmp, config);
  }
  // The main model only: the MTP module is model.layers.{num_hidden_layers}.*.
  const std::string mtp = "model.layers." + std::to_string(policy.config().num_hidden_layers) + ".";
  std::vector<SafetensorsEntry> e;
  for (const train::ParamTensor& p : policy.params())
    if (p.name.rfind(mtp, 0) != 0) e.push_back({p.name, DType::F32, p.shape, nullptr, p.data});
  for (const train::BufferTensor& b : policy.buffers())
    if (b.name.rfind(mtp, 0) != 0) e.push_back({b.name, DType::F32, b.shape, nullptr, b.data});
  write_safetensors((fs::path(dir) / "model.safetensors").string(), e);
  Model::Options opt;
  opt.load = LoadMode::Ram;
  return Model::load(dir, opt);
}

}  // namespace whale::reason
