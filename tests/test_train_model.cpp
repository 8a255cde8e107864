// The whole training model (train/model_train.h): every gradient against central finite
// differences, the main logits against the inference whale::Model on the same weights, the loss
// parts, gradients and expert counts against the independent PyTorch reference's fixture
// (tests/fixtures/train_model, scripts/gen_train_fixture.py), gradient accumulation,
// reproducibility across runs and thread counts, initialisation, and the errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "grad_check.h"
#include "kernels/cpu.h"
#include "model/config.h"
#include "model/model.h"
#include "train/model_train.h"
#include "train/ops.h"

namespace whale::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Vec = std::vector<float>;

// Small, but with everything: a dense layer, an MoE layer with group-limited noaux_tc routing and
// a shared expert, q/kv compression, YaRN (attn_factor and softmax scale != 1), and an MoE MTP
// block.
const char* kTinyConfig = R"({
  "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
  "vocab_size": 37, "hidden_size": 16, "intermediate_size": 24, "moe_intermediate_size": 8,
  "num_hidden_layers": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1,
  "num_attention_heads": 2, "num_key_value_heads": 2, "q_lora_rank": 8, "kv_lora_rank": 6,
  "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4,
  "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2,
  "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
  "norm_topk_prob": true, "routed_scaling_factor": 2.5, "rms_norm_eps": 1e-6,
  "rope_theta": 100.0, "max_position_embeddings": 32,
  "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 8,
                   "beta_fast": 4, "beta_slow": 1, "mscale": 1, "mscale_all_dim": 0.5},
  "tie_word_embeddings": false, "num_nextn_predict_layers": 1, "hidden_act": "silu"
})";

ModelConfig tiny_config() {
  return ModelConfig::from_json_text(kTinyConfig, "tiny config");
}

// V3 initialisation with a larger std, norm weights 1 + noise, and nonzero routing biases, so that
// every term of the loss is far from trivial.
void randomise(TrainModel& m, uint64_t seed, float std = 0.3f) {
  m.init(seed, std);
  std::mt19937 rng{uint32_t(seed)};
  std::normal_distribution<float> noise(0.0f, 0.1f);
  for (const ParamTensor& p : m.params())
    if (p.shape.size() == 1)
      for (int64_t i = 0; i < p.numel; i++) p.data[i] += noise(rng);
  std::uniform_real_distribution<float> bias(-0.2f, 0.2f);
  for (const BufferTensor& b : m.buffers())
    for (int64_t i = 0; i < b.numel; i++) b.data[i] = bias(rng);
}

struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> inputs, targets;
};

// B windows of a random token stream, targets shifted by one, one target ignored.
Batch random_batch(int64_t V, int64_t B, int64_t T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(V - 1));
  Batch b{B, T, {}, {}};
  for (int64_t s = 0; s < B; s++) {
    std::vector<int32_t> seq(size_t(T + 1));
    for (int32_t& t : seq) t = tok(rng);
    b.inputs.insert(b.inputs.end(), seq.begin(), seq.end() - 1);
    b.targets.insert(b.targets.end(), seq.begin() + 1, seq.end());
  }
  b.targets[size_t(T / 2)] = kIgnoreIndex;
  return b;
}

std::vector<Vec> grads(const TrainModel& m) {
  std::vector<Vec> g;
  for (const ParamTensor& p : m.params()) g.emplace_back(p.grad, p.grad + p.numel);
  return g;
}

std::vector<std::vector<int32_t>> routing(const TrainModel& m) {
  std::vector<std::vector<int32_t>> r;
  for (size_t i = 0; i < m.buffers().size(); i++) {
    const std::span<const int32_t> ids = m.routed_experts(i);
    r.emplace_back(ids.begin(), ids.end());
  }
  return r;
}

// Sets whale's thread count (train/ops.h: it governs the ops and OpenBLAS) for a scope.
struct ThreadCount {
  explicit ThreadCount(int n) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(0); }  // the default again
};

// ---------------------------------------------------------------- 1. finite differences

// For a sample of entries of every tensor (the two largest gradients and two random ones), the
// analytic gradient of the total loss against central differences of forward(). Every
// perturbation must keep every token's expert selection (else the loss is not differentiable
// there): the test fails if one flips one.
TEST(TrainModel, EveryGradientMatchesFiniteDifferences) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{0.3f, 0.1f});
  // Seeds for which no perturbation below flips a selection (about half of them do, and the
  // test says so).
  randomise(m, 11);
  const Batch b = random_batch(c.vocab_size, 2, 6, 5);
  const ThreadCount one(1);  // a tiny model: faster without the thread team

  m.zero_grad();
  const StepLosses base = m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 1.0f);
  ASSERT_GT(base.mtp, 0.0);
  ASSERT_GT(base.balance, 0.01);  // large enough that its gradient shows in the router's
  const std::vector<Vec> g = grads(m);
  const auto selection = routing(m);

  std::mt19937 rng(3);
  int flips = 0;
  size_t checked = 0;
  for (size_t t = 0; t < m.params().size(); t++) {
    const ParamTensor& p = m.params()[t];
    // The entries: the two largest |gradient|s, then two random ones.
    std::vector<int64_t> idx(size_t(p.numel));
    for (int64_t i = 0; i < p.numel; i++) idx[size_t(i)] = i;
    std::partial_sort(idx.begin(), idx.begin() + 2, idx.end(), [&](int64_t a, int64_t z) {
      return std::fabs(g[t][size_t(a)]) > std::fabs(g[t][size_t(z)]);
    });
    idx.resize(2);
    std::uniform_int_distribution<int64_t> any(0, p.numel - 1);
    for (int k = 0; k < 2; k++) {
      const int64_t i = any(rng);
      if (std::find(idx.begin(), idx.end(), i) == idx.end()) idx.push_back(i);
    }

    std::vector<float> x(idx.size()), gx(idx.size());
    for (size_t j = 0; j < idx.size(); j++) {
      x[j] = p.data[idx[j]];
      gx[j] = g[t][size_t(idx[j])];
    }
    auto loss = [&]() {
      for (size_t j = 0; j < idx.size(); j++) p.data[idx[j]] = x[j];
      const double l = m.forward(b.inputs.data(), b.targets.data(), b.B, b.T).loss;
      flips += routing(m) != selection;
      return l;
    };
    const float largest = std::fabs(gx[0]);
    if (largest == 0.0f) {
      // An expert no token selected: the loss really does not depend on it.
      for (size_t j = 0; j < idx.size(); j++) {
        const float saved = x[j];
        x[j] = saved + 1e-2f;
        const double lp = loss();
        x[j] = saved - 1e-2f;
        const double lm = loss();
        x[j] = saved;
        EXPECT_EQ(lp, lm) << p.name << "[" << idx[j] << "]";
      }
    } else {
      // The loss carries float32 rounding noise of ~1e-7: small gradients need a larger step
      // for their difference to stand out; large ones (many tokens) a small one, so that no
      // token's routing flips.
      const float h = std::clamp(3e-4f / largest, 2e-3f, 5e-2f);
      ::whale::testing::expect_grad_matches(x, gx, loss, p.name, h);
      checked++;
    }
    loss();  // restore
  }
  EXPECT_EQ(flips, 0) << "perturbations changed an expert selection: pick another seed or h";
  EXPECT_GT(checked, m.params().size() * 3 / 4);
  std::printf("[ fd       ] %zu of %zu tensors checked, the others have no gradient\n", checked,
              m.params().size());
  // Restored exactly.
  EXPECT_EQ(m.forward(b.inputs.data(), b.targets.data(), b.B, b.T).loss, base.loss);
}

// ---------------------------------------------------------------- 2. the inference model

struct TempDir {
  TempDir() {
    path = fs::temp_directory_path() /
           ("whale-train-model-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path path;
  static inline int counter = 0;
};

// The model's tensors as a Hugging Face checkpoint directory, written with the C++ writer.
void save_checkpoint(const TrainModel& m, const fs::path& dir) {
  std::vector<SafetensorsEntry> e;
  for (const ParamTensor& p : m.params())
    e.push_back({p.name, DType::F32, p.shape, nullptr, p.data});
  for (const BufferTensor& b : m.buffers())
    e.push_back({b.name, DType::F32, b.shape, nullptr, b.data});
  write_safetensors((dir / "model.safetensors").string(), e);
  std::ofstream(dir / "config.json") << kTinyConfig;
}

TEST(TrainModel, MainLogitsEqualTheInferenceModel) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{});
  randomise(m, 21, 0.2f);
  const Batch b = random_batch(c.vocab_size, 2, 9, 8);
  Vec logits(size_t(b.B * b.T * c.vocab_size));
  m.forward_logits(b.inputs.data(), b.B, b.T, logits.data());

  TempDir tmp;
  save_checkpoint(m, tmp.path);
  const std::unique_ptr<Model> ref = Model::load(tmp.path.string());
  double worst = 0.0, largest = 0.0;
  for (int64_t s = 0; s < b.B; s++) {
    KVCache cache = ref->new_cache();
    const std::span<const int32_t> toks(b.inputs.data() + s * b.T, size_t(b.T));
    const std::vector<float> want = ref->forward(cache, toks, true);
    ASSERT_EQ(want.size(), size_t(b.T * c.vocab_size));
    for (size_t i = 0; i < want.size(); i++) {
      worst = std::max(
          worst, std::fabs(double(want[i]) - logits[size_t(s * b.T) * size_t(c.vocab_size) + i]));
      largest = std::max(largest, std::fabs(double(want[i])));
    }
  }
  ASSERT_GT(largest, 0.5);
  EXPECT_LT(worst / largest, 1e-5) << "max |diff| " << worst << " of max |logit| " << largest;
}

// ---------------------------------------------------------------- 3. the PyTorch fixture

const std::string kFixtureDir = std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/train_model";

// The F32 / I32 values of a tensor, checked for dtype and shape.
template <typename T>
std::vector<T> read_tensor(const SafetensorsFile& f, const std::string& name, DType dtype,
                           const std::vector<int64_t>& shape) {
  for (const TensorView& t : f.tensors()) {
    if (t.name != name) continue;
    EXPECT_EQ(t.dtype, dtype) << name;
    EXPECT_EQ(t.shape, shape) << name;
    if (t.dtype != dtype || t.shape != shape) return {};
    std::vector<T> v(size_t(t.numel()));
    std::memcpy(v.data(), t.data, t.nbytes);
    return v;
  }
  ADD_FAILURE() << f.file().path() << " has no tensor " << name;
  return {};
}

TEST(TrainModel, LossesGradientsAndRoutingMatchThePyTorchReference) {
  for (const char* f : {"config.json", "model.safetensors", "batch.safetensors", "expected.json"})
    ASSERT_TRUE(fs::exists(kFixtureDir + "/" + f))
        << kFixtureDir << "/" << f
        << " is missing: generate it with /usr/bin/python3 scripts/gen_train_fixture.py";
  const ModelConfig c = ModelConfig::load(kFixtureDir);
  json expected;
  std::ifstream(kFixtureDir + "/expected.json") >> expected;
  TrainModel m(c, LossConfig{expected.at("mtp_lambda").get<float>(),
                             expected.at("balance_alpha").get<float>()});

  const SafetensorsFile weights(kFixtureDir + "/model.safetensors");
  for (const ParamTensor& p : m.params()) {
    const Vec v = read_tensor<float>(weights, p.name, DType::F32, p.shape);
    ASSERT_EQ(v.size(), size_t(p.numel)) << p.name;
    std::copy(v.begin(), v.end(), p.data);
  }
  for (const BufferTensor& b : m.buffers()) {
    const Vec v = read_tensor<float>(weights, b.name, DType::F32, b.shape);
    ASSERT_EQ(v.size(), size_t(b.numel)) << b.name;
    std::copy(v.begin(), v.end(), b.data);
  }
  // The MTP module's copies of the shared embedding and head.
  const std::string mtp = "model.layers." + std::to_string(c.num_hidden_layers) + ".";
  const std::vector<int64_t> vc{c.vocab_size, c.hidden_size};
  EXPECT_EQ(read_tensor<float>(weights, mtp + "embed_tokens.weight", DType::F32, vc),
            read_tensor<float>(weights, "model.embed_tokens.weight", DType::F32, vc));
  EXPECT_EQ(read_tensor<float>(weights, mtp + "shared_head.head.weight", DType::F32, vc),
            read_tensor<float>(weights, "lm_head.weight", DType::F32, vc));

  const SafetensorsFile batch(kFixtureDir + "/batch.safetensors");
  const TensorView* in = nullptr;
  for (const TensorView& t : batch.tensors())
    if (t.name == "inputs") in = &t;
  ASSERT_TRUE(in != nullptr && in->shape.size() == 2) << "batch.safetensors: inputs [B][T]";
  const int64_t B = in->shape[0], T = in->shape[1];
  const auto inputs = read_tensor<int32_t>(batch, "inputs", DType::I32, {B, T});
  const auto targets = read_tensor<int32_t>(batch, "targets", DType::I32, {B, T});
  ASSERT_EQ(inputs.size(), size_t(B * T));
  ASSERT_EQ(targets.size(), size_t(B * T));

  m.zero_grad();
  const StepLosses l = m.forward_backward(inputs.data(), targets.data(), B, T, 1.0f);
  auto near = [](double got, double want) {
    return std::fabs(got - want) <= 1e-4 * std::fabs(want) + 1e-7;
  };
  EXPECT_PRED2(near, l.loss, expected.at("loss").get<double>());
  EXPECT_PRED2(near, l.main, expected.at("main").get<double>());
  EXPECT_PRED2(near, l.mtp, expected.at("mtp").get<double>());
  EXPECT_PRED2(near, l.balance, expected.at("balance").get<double>());
  EXPECT_EQ(l.tokens, expected.at("tokens").get<int64_t>());
  EXPECT_EQ(m.expert_counts(),
            expected.at("expert_counts").get<std::vector<std::vector<int64_t>>>());
  // Each token's selection, as a set (the order of the K slots is immaterial).
  const auto want_ids =
      expected.at("routed_experts").get<std::vector<std::vector<std::vector<int32_t>>>>();
  ASSERT_EQ(want_ids.size(), m.buffers().size());
  for (size_t layer = 0; layer < want_ids.size(); layer++) {
    const std::span<const int32_t> ids = m.routed_experts(layer);
    const size_t K = size_t(c.num_experts_per_tok);
    ASSERT_EQ(want_ids[layer].size() * K, ids.size()) << "MoE layer " << layer;
    for (size_t n = 0; n < want_ids[layer].size(); n++) {
      std::vector<int32_t> got(ids.begin() + long(n * K), ids.begin() + long((n + 1) * K));
      std::vector<int32_t> want = want_ids[layer][n];
      std::sort(got.begin(), got.end());
      std::sort(want.begin(), want.end());
      EXPECT_EQ(got, want) << "MoE layer " << layer << ", token " << n;
    }
  }

  double worst = 0.0;
  std::string worst_name;
  for (const ParamTensor& p : m.params()) {
    const Vec want = read_tensor<float>(batch, "grad." + p.name, DType::F32, p.shape);
    ASSERT_EQ(want.size(), size_t(p.numel)) << p.name;
    double diff = 0.0, ref = 0.0;
    for (int64_t i = 0; i < p.numel; i++) {
      diff = std::max(diff, std::fabs(double(p.grad[i]) - want[size_t(i)]));
      ref = std::max(ref, std::fabs(double(want[size_t(i)])));
    }
    if (ref == 0.0) {
      EXPECT_EQ(diff, 0.0) << p.name;  // an expert nothing was routed to
      continue;
    }
    EXPECT_LE(diff / ref, 1e-4) << p.name << ": max |diff| " << diff << ", max |grad| " << ref;
    if (diff / ref > worst) {
      worst = diff / ref;
      worst_name = p.name;
    }
  }
  std::printf("[ fixture  ] worst gradient error %.3g (max |diff| / max |ref|) in %s\n", worst,
              worst_name.c_str());
  RecordProperty("worst_grad_rel_error", std::to_string(worst));
}

// ---------------------------------------------------------------- 4. accumulation, threads

TEST(TrainModel, HalfScaledTwiceEqualsOnceAndForwardEqualsForwardBackward) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{0.3f, 0.05f});
  randomise(m, 4);
  const Batch b = random_batch(c.vocab_size, 3, 7, 2);

  m.zero_grad();
  m.reset_expert_counts();
  const StepLosses once = m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 1.0f);
  const std::vector<Vec> g1 = grads(m);
  const auto counts1 = m.expert_counts();
  for (const auto& v : counts1) {
    int64_t total = 0;
    for (int64_t n : v) total += n;
    EXPECT_EQ(total, b.B * b.T * c.num_experts_per_tok);
  }

  m.zero_grad();
  m.reset_expert_counts();
  const StepLosses h1 = m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 0.5f);
  const StepLosses h2 = m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 0.5f);
  EXPECT_EQ(h1.loss, once.loss);
  EXPECT_EQ(h2.loss, once.loss);
  const std::vector<Vec> g2 = grads(m);
  for (size_t t = 0; t < g1.size(); t++)
    for (size_t i = 0; i < g1[t].size(); i++)
      ASSERT_NEAR(g2[t][i], g1[t][i], 1e-6f * (1.0f + std::fabs(g1[t][i])))
          << m.params()[t].name << "[" << i << "]";
  for (size_t l = 0; l < counts1.size(); l++)
    for (size_t e = 0; e < counts1[l].size(); e++)
      EXPECT_EQ(m.expert_counts()[l][e], 2 * counts1[l][e]);

  // Validation: the same losses, bit for bit, and neither gradients nor counts move.
  const auto counts2 = m.expert_counts();
  const StepLosses v = m.forward(b.inputs.data(), b.targets.data(), b.B, b.T);
  EXPECT_EQ(v.loss, once.loss);
  EXPECT_EQ(v.main, once.main);
  EXPECT_EQ(v.mtp, once.mtp);
  EXPECT_EQ(v.balance, once.balance);
  EXPECT_EQ(v.tokens, once.tokens);
  EXPECT_EQ(v.tokens, b.B * b.T - 1);
  EXPECT_EQ(grads(m), g2);
  EXPECT_EQ(m.expert_counts(), counts2);
  EXPECT_EQ(once.loss, once.main + double(0.3f) * once.mtp + once.balance);
}

// The same thread count gives bit-identical results run after run (exact resume); 1 and 2 threads
// agree to rounding (OpenBLAS may block differently on a share of the rows: train/ops.h).
TEST(TrainModel, ResultsAreReproducibleAndAgreeAcrossThreadCounts) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{0.3f, 0.05f});
  randomise(m, 9);
  const Batch b = random_batch(c.vocab_size, 4, 16, 1);
  std::vector<StepLosses> losses;
  std::vector<std::vector<Vec>> g;
  for (int threads : {1, 2, 2}) {
    const ThreadCount n(threads);
    m.zero_grad();
    losses.push_back(m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 1.0f));
    g.push_back(grads(m));
  }
  EXPECT_EQ(losses[1].loss, losses[2].loss);
  EXPECT_TRUE(g[1] == g[2]) << "two runs on 2 threads differ";
  EXPECT_NEAR(losses[0].loss, losses[1].loss, 1e-6 * losses[1].loss);
  EXPECT_NEAR(losses[0].balance, losses[1].balance, 1e-6 * losses[1].balance);
  for (size_t t = 0; t < g[0].size(); t++) {
    double diff = 0, ref = 0;
    for (size_t i = 0; i < g[0][t].size(); i++) {
      diff = std::max(diff, std::fabs(double(g[0][t][i]) - g[1][t][i]));
      ref = std::max(ref, std::fabs(double(g[1][t][i])));
    }
    EXPECT_LE(diff, 1e-5 * ref) << m.params()[t].name << ": 1 and 2 threads";
  }
}

// Changing the batch shape reallocates; coming back gives the same numbers.
TEST(TrainModel, BatchShapeChangesAreHandled) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{});
  randomise(m, 5);
  const Batch a = random_batch(c.vocab_size, 2, 8, 1), b = random_batch(c.vocab_size, 1, 3, 2);
  const StepLosses la = m.forward(a.inputs.data(), a.targets.data(), a.B, a.T);
  m.forward(b.inputs.data(), b.targets.data(), b.B, b.T);
  EXPECT_EQ(m.routed_experts(0).size(), size_t(b.B * b.T * c.num_experts_per_tok));
  EXPECT_EQ(m.forward(a.inputs.data(), a.targets.data(), a.B, a.T).loss, la.loss);
  // A single token: the MTP module has nothing to predict.
  const StepLosses one = m.forward(b.inputs.data(), b.targets.data(), 1, 1);
  EXPECT_EQ(one.mtp, 0.0);
  EXPECT_EQ(one.tokens, 1);
}

// With mtp_lambda 0 the MTP module is not run (its gradients stay zero, mtp = 0); with alpha 0
// there is no balance loss. The main loss is the same either way.
TEST(TrainModel, MtpAndBalanceCanBeSwitchedOff) {
  const ModelConfig c = tiny_config();
  TrainModel full(c, LossConfig{0.3f, 0.1f}), off(c, LossConfig{0.0f, 0.0f});
  randomise(full, 6);
  for (size_t t = 0; t < full.params().size(); t++)
    std::copy_n(full.params()[t].data, full.params()[t].numel, off.params()[t].data);
  for (size_t t = 0; t < full.buffers().size(); t++)
    std::copy_n(full.buffers()[t].data, full.buffers()[t].numel, off.buffers()[t].data);
  const Batch b = random_batch(c.vocab_size, 2, 5, 3);
  const StepLosses a = full.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 1.0f);
  off.zero_grad();
  const StepLosses z = off.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 1.0f);
  EXPECT_EQ(z.main, a.main);
  EXPECT_EQ(z.mtp, 0.0);
  EXPECT_EQ(z.balance, 0.0);
  EXPECT_EQ(z.loss, z.main);
  EXPECT_GT(a.mtp, 0.0);
  EXPECT_GT(a.balance, 0.0);
  for (const ParamTensor& p : off.params()) {
    if (p.name.rfind("model.layers.2.", 0) != 0) continue;
    for (int64_t i = 0; i < p.numel; i++) ASSERT_EQ(p.grad[i], 0.0f) << p.name;
  }
  for (int64_t x : off.expert_counts()[1]) EXPECT_EQ(x, 0);  // the MTP block routed nothing
}

// End to end: plain gradient descent with the bias updates on one batch drives the loss down.
TEST(TrainModel, GradientDescentLowersTheLoss) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{0.3f, 1e-3f});
  m.init(3, 0.02f);
  const Batch b = random_batch(c.vocab_size, 2, 12, 4);
  double first = 0, last = 0;
  for (int step = 0; step < 40; step++) {
    m.zero_grad();
    m.reset_expert_counts();
    last = m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 1.0f).loss;
    if (step == 0) first = last;
    for (const ParamTensor& p : m.params())
      for (int64_t i = 0; i < p.numel; i++) p.data[i] -= 0.5f * p.grad[i];
    m.update_expert_biases(1e-3f);
  }
  EXPECT_NEAR(first, 1.3 * std::log(37.0), 0.05);  // uniform predictions at the start
  EXPECT_LT(last, 0.5 * first);
}

// ---------------------------------------------------------------- per-target weights

// Random weights of both signs; the ignored target keeps a weight that must not count.
Vec random_weights(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  return ::whale::testing::randn(n, rng, 0.5f);
}

// -sum_n w_n log p_n from token_logprobs, in double: the weighted loss as a function of the
// parameters, computed without forward_backward.
double weighted_loss(TrainModel& m, const Batch& b, const Vec& w) {
  Vec logp(size_t(b.B * b.T));
  m.token_logprobs(b.inputs.data(), b.targets.data(), b.B, b.T, logp.data());
  double l = 0;
  for (size_t n = 0; n < logp.size(); n++) l -= double(w[n]) * logp[n];
  return l;
}

// The weighted main loss (MTP and balance off, as GRPO runs it): gradients of a sample of entries
// of every tensor against central differences of -sum_n w_n log p_n.
TEST(TrainModel, WeightedLossGradientMatchesFiniteDifferences) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{0.0f, 0.0f});
  randomise(m, 11);
  const Batch b = random_batch(c.vocab_size, 2, 6, 5);
  const Vec w = random_weights(size_t(b.B * b.T), 9);
  const ThreadCount one(1);
  m.zero_grad();
  const StepLosses l =
      m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 1.0f, w.data());
  EXPECT_NEAR(l.main, weighted_loss(m, b, w), 1e-5 * std::fabs(l.main) + 1e-6);
  EXPECT_EQ(l.mtp, 0.0);
  EXPECT_EQ(l.balance, 0.0);
  EXPECT_EQ(l.loss, l.main);
  const std::vector<Vec> g = grads(m);
  const auto selection = routing(m);

  std::mt19937 rng(4);
  int flips = 0;
  size_t checked = 0, main_tensors = 0;
  for (size_t t = 0; t < m.params().size(); t++) {
    const ParamTensor& p = m.params()[t];
    if (p.name.rfind("model.layers.2.", 0) == 0) {  // the MTP module: not run, no gradient
      for (int64_t i = 0; i < p.numel; i++) ASSERT_EQ(p.grad[i], 0.0f) << p.name;
      continue;
    }
    main_tensors++;
    // The largest |gradient| and two random entries.
    std::vector<int64_t> idx{
        int64_t(std::max_element(g[t].begin(), g[t].end(),
                                 [](float a, float z) { return std::fabs(a) < std::fabs(z); }) -
                g[t].begin())};
    std::uniform_int_distribution<int64_t> any(0, p.numel - 1);
    for (int k = 0; k < 2; k++) {
      const int64_t i = any(rng);
      if (std::find(idx.begin(), idx.end(), i) == idx.end()) idx.push_back(i);
    }
    if (g[t][size_t(idx[0])] == 0.0f) continue;  // an expert no token selected
    std::vector<float> x(idx.size()), gx(idx.size());
    for (size_t j = 0; j < idx.size(); j++) {
      x[j] = p.data[idx[j]];
      gx[j] = g[t][size_t(idx[j])];
    }
    auto loss = [&]() {
      for (size_t j = 0; j < idx.size(); j++) p.data[idx[j]] = x[j];
      const double v = weighted_loss(m, b, w);
      flips += routing(m) != selection;
      return v;
    };
    const float h = std::clamp(3e-4f / std::fabs(gx[0]), 2e-3f, 5e-2f);
    ::whale::testing::expect_grad_matches(x, gx, loss, p.name, h);
    loss();  // restore
    checked++;
  }
  EXPECT_EQ(flips, 0) << "perturbations changed an expert selection: pick another seed or h";
  EXPECT_GT(checked, main_tensors * 3 / 4);
}

// One-hot weights give exactly one token's cross-entropy, bit-equal to -token_logprobs; weights
// 1/count give the mean loss and its gradients; grad_scale scales them.
TEST(TrainModel, WeightedLossIsTheWeightedSumOfTokenCrossEntropies) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{0.0f, 0.0f});
  randomise(m, 12);
  const Batch b = random_batch(c.vocab_size, 2, 5, 6);
  const size_t N = size_t(b.B * b.T);
  Vec logp(N);
  m.token_logprobs(b.inputs.data(), b.targets.data(), b.B, b.T, logp.data());
  for (size_t k = 0; k < N; k++) {
    Vec w(N, 0.0f);
    w[k] = 1.0f;
    const StepLosses l =
        m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 1.0f, w.data());
    if (b.targets[k] == kIgnoreIndex) {
      EXPECT_EQ(l.main, 0.0) << "an ignored target counts for nothing, whatever its weight";
      EXPECT_EQ(logp[k], 0.0f);
    } else {
      EXPECT_EQ(-float(l.main), logp[k]) << "token " << k;
      EXPECT_LT(logp[k], 0.0f);
    }
  }

  const StepLosses mean_loss = m.forward(b.inputs.data(), b.targets.data(), b.B, b.T);
  m.zero_grad();
  m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 0.5f);
  const std::vector<Vec> want = grads(m);
  Vec w(N, 1.0f / float(mean_loss.tokens));
  w[size_t(b.T / 2)] = 123.0f;  // the ignored target
  m.zero_grad();
  const StepLosses l =
      m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 0.5f, w.data());
  EXPECT_NEAR(l.main, mean_loss.main, 1e-6 * mean_loss.main);
  EXPECT_EQ(l.tokens, mean_loss.tokens);
  const std::vector<Vec> got = grads(m);
  for (size_t t = 0; t < got.size(); t++) {
    double diff = 0, ref = 0;
    for (size_t i = 0; i < got[t].size(); i++) {
      diff = std::max(diff, std::fabs(double(got[t][i]) - want[t][i]));
      ref = std::max(ref, std::fabs(double(want[t][i])));
    }
    EXPECT_LE(diff, 1e-5 * ref + 1e-12) << m.params()[t].name;
  }
  EXPECT_THROW(m.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 1.0f, nullptr),
               std::invalid_argument);
}

// token_logprobs = log_softmax(forward_logits)[target], 0 on ignored targets; it touches neither
// the gradients nor the expert counts, and is the same whatever batch shape ran before.
TEST(TrainModel, TokenLogprobsAreLogSoftmaxOfTheLogits) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{});
  randomise(m, 13, 0.2f);
  const Batch b = random_batch(c.vocab_size, 3, 7, 7);
  const int64_t N = b.B * b.T, V = c.vocab_size;
  Vec logits(static_cast<size_t>(N * V)), logp(static_cast<size_t>(N));
  m.forward_logits(b.inputs.data(), b.B, b.T, logits.data());
  m.zero_grad();
  m.reset_expert_counts();
  m.token_logprobs(b.inputs.data(), b.targets.data(), b.B, b.T, logp.data());
  double worst = 0;
  for (int64_t n = 0; n < N; n++) {
    if (b.targets[size_t(n)] == kIgnoreIndex) {
      EXPECT_EQ(logp[size_t(n)], 0.0f);
      continue;
    }
    const float* l = logits.data() + n * V;
    const double mx = *std::max_element(l, l + V);
    double sum = 0;
    for (int64_t v = 0; v < V; v++) sum += std::exp(double(l[v]) - mx);
    const double want = double(l[b.targets[size_t(n)]]) - mx - std::log(sum);
    worst = std::max(worst, std::fabs(logp[size_t(n)] - want));
  }
  EXPECT_LT(worst, 2e-6);
  for (const ParamTensor& p : m.params())
    for (int64_t i = 0; i < p.numel; i++) ASSERT_EQ(p.grad[i], 0.0f) << p.name;
  for (const auto& v : m.expert_counts())
    for (int64_t x : v) EXPECT_EQ(x, 0);
  // Another shape in between, then the same values again.
  const Batch other = random_batch(c.vocab_size, 1, 4, 8);
  Vec scratch(4), again(static_cast<size_t>(N));
  m.token_logprobs(other.inputs.data(), other.targets.data(), 1, 4, scratch.data());
  m.token_logprobs(b.inputs.data(), b.targets.data(), b.B, b.T, again.data());
  EXPECT_EQ(again, logp);
}

// ---------------------------------------------------------------- tensors, init, balancing

TEST(TrainModel, TensorsHaveCheckpointNamesAndDistinctStorage) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{});
  std::map<std::string, std::vector<int64_t>> shapes;
  int64_t total = 0;
  std::vector<std::pair<const float*, const float*>> ranges;
  for (const ParamTensor& p : m.params()) {
    EXPECT_TRUE(shapes.emplace(p.name, p.shape).second) << "duplicate " << p.name;
    EXPECT_EQ(p.decay, p.shape.size() == 2) << p.name;
    total += p.numel;
    ranges.push_back({p.data, p.data + p.numel});
    ranges.push_back({p.grad, p.grad + p.numel});
  }
  EXPECT_EQ(m.num_params(), total);
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); i++) EXPECT_LE(ranges[i - 1].second, ranges[i].first);

  using S = std::vector<int64_t>;
  const std::map<std::string, S> want = {
      {"model.embed_tokens.weight", {37, 16}},
      {"lm_head.weight", {37, 16}},
      {"model.norm.weight", {16}},
      {"model.layers.0.input_layernorm.weight", {16}},
      {"model.layers.0.self_attn.q_a_proj.weight", {8, 16}},
      {"model.layers.0.self_attn.q_a_layernorm.weight", {8}},
      {"model.layers.0.self_attn.q_b_proj.weight", {16, 8}},
      {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", {10, 16}},
      {"model.layers.0.self_attn.kv_a_layernorm.weight", {6}},
      {"model.layers.0.self_attn.kv_b_proj.weight", {16, 6}},
      {"model.layers.0.self_attn.o_proj.weight", {16, 8}},
      {"model.layers.0.post_attention_layernorm.weight", {16}},
      {"model.layers.0.mlp.gate_proj.weight", {24, 16}},
      {"model.layers.0.mlp.up_proj.weight", {24, 16}},
      {"model.layers.0.mlp.down_proj.weight", {16, 24}},
      {"model.layers.1.mlp.gate.weight", {8, 16}},
      {"model.layers.1.mlp.experts.7.gate_proj.weight", {8, 16}},
      {"model.layers.1.mlp.experts.7.down_proj.weight", {16, 8}},
      {"model.layers.1.mlp.shared_experts.up_proj.weight", {8, 16}},
      {"model.layers.2.enorm.weight", {16}},
      {"model.layers.2.hnorm.weight", {16}},
      {"model.layers.2.eh_proj.weight", {16, 32}},
      {"model.layers.2.self_attn.kv_b_proj.weight", {16, 6}},
      {"model.layers.2.mlp.experts.0.up_proj.weight", {8, 16}},
      {"model.layers.2.shared_head.norm.weight", {16}},
  };
  for (const auto& [name, shape] : want) {
    ASSERT_TRUE(shapes.count(name)) << name;
    EXPECT_EQ(shapes[name], shape) << name;
  }
  EXPECT_FALSE(shapes.count("model.layers.1.mlp.gate_proj.weight"));
  EXPECT_FALSE(shapes.count("model.layers.2.embed_tokens.weight"));  // a copy, written on save
  // Per layer: 2 norms + 7 MLA tensors, then 3 dense or 1 + 3*8 + 3 MoE tensors.
  EXPECT_EQ(m.params().size(), size_t(3 + (9 + 3) + (9 + 28) + (3 + 9 + 28 + 1)));
  ASSERT_EQ(m.buffers().size(), 2u);
  EXPECT_EQ(m.buffers()[0].name, "model.layers.1.mlp.gate.e_score_correction_bias");
  EXPECT_EQ(m.buffers()[1].name, "model.layers.2.mlp.gate.e_score_correction_bias");
  EXPECT_EQ(m.buffers()[1].shape, S{8});
  EXPECT_EQ(m.expert_counts().size(), 2u);

  // Active per token: everything but 6 of the 8 routed experts of both MoE layers, the head twice.
  const int64_t expert = 3 * 8 * 16;
  EXPECT_EQ(m.num_active_params(), total - 2 * 6 * expert + 37 * 16);
  TrainModel no_mtp(c, LossConfig{0.0f, 1e-4f});
  EXPECT_EQ(no_mtp.num_params(), total);  // kept for the checkpoint
  // The MTP module by hand: enorm, hnorm 16 each; eh_proj 16*32; the block: 2 norms 32, MLA
  // 128+8+128+160+6+96+128 = 654, router 128, shared + 2 routed experts 3*384; shared_head.norm
  // 16; the head again 37*16.
  EXPECT_EQ(no_mtp.num_active_params(),
            m.num_active_params() - (32 + 512 + 32 + 654 + 128 + 3 * 384 + 16 + 592));
}

TEST(TrainModel, InitIsV3AndDeterministic) {
  const ModelConfig c = tiny_config();
  TrainModel a(c, LossConfig{}), b(c, LossConfig{});
  a.init(42, 0.006f);
  b.init(42, 0.006f);
  double sum = 0, sq = 0;
  int64_t n = 0;
  for (size_t t = 0; t < a.params().size(); t++) {
    const ParamTensor &p = a.params()[t], &q = b.params()[t];
    ASSERT_EQ(std::memcmp(p.data, q.data, size_t(p.numel) * sizeof(float)), 0) << p.name;
    for (int64_t i = 0; i < p.numel; i++) {
      EXPECT_EQ(p.grad[i], 0.0f);
      if (p.shape.size() == 1) {
        ASSERT_EQ(p.data[i], 1.0f) << p.name;
      } else {
        sum += p.data[i];
        sq += double(p.data[i]) * p.data[i];
        n++;
      }
    }
  }
  for (const BufferTensor& buf : a.buffers())
    for (int64_t i = 0; i < buf.numel; i++) EXPECT_EQ(buf.data[i], 0.0f);
  const double mean = sum / double(n), sd = std::sqrt(sq / double(n) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 4 * 0.006 / std::sqrt(double(n)));
  EXPECT_NEAR(sd, 0.006, 0.006 * 0.02);
  // Another seed draws other values; the same tensor's first values are pinned (any platform).
  b.init(43, 0.006f);
  EXPECT_NE(std::memcmp(a.params()[0].data, b.params()[0].data, 64), 0);
  // Pinned: state = seed ^ FNV-1a-64(name), splitmix64, u = (bits >> 11 + 0.5) 2^-53, Box-Muller
  // (cos, then sin) -- the same values from a few lines of Python.
  TrainModel d(c, LossConfig{});
  d.init(0, 1.0f);
  const float* e = d.params()[0].data;  // model.embed_tokens.weight
  EXPECT_EQ(d.params()[0].name, "model.embed_tokens.weight");
  EXPECT_FLOAT_EQ(e[0], -0.599503338f);
  EXPECT_FLOAT_EQ(e[1], 1.27363133f);
  EXPECT_FLOAT_EQ(e[2], 0.0113054086f);
  EXPECT_FLOAT_EQ(e[3], 1.15486765f);
}

TEST(TrainModel, ExpertBiasesMoveTowardsBalance) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{});
  m.init(1);
  m.expert_counts()[0] = {9, 1, 5, 5, 5, 5, 5, 5};  // mean 5
  m.expert_counts()[1] = {5, 5, 5, 5, 5, 5, 5, 5};
  m.update_expert_biases(0.01f);
  const float* b0 = m.buffers()[0].data;
  EXPECT_FLOAT_EQ(b0[0], -0.01f);
  EXPECT_FLOAT_EQ(b0[1], 0.01f);
  EXPECT_EQ(b0[2], 0.0f);
  for (int i = 0; i < 8; i++) EXPECT_EQ(m.buffers()[1].data[i], 0.0f);
  m.reset_expert_counts();
  for (const auto& v : m.expert_counts())
    for (int64_t x : v) EXPECT_EQ(x, 0);
}

// ---------------------------------------------------------------- 5. errors

void expect_invalid(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning " << needle;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TrainModel, ImpossibleConfigsAreClearErrors) {
  auto with = [](const std::string& key, const json& value) {
    json j = json::parse(kTinyConfig);
    j[key] = value;
    return ModelConfig::from_json_text(j.dump(), "test");
  };
  auto make = [](const ModelConfig& c, LossConfig l = {}) {
    return [c, l]() { TrainModel m(c, l); };
  };
  ModelConfig c = tiny_config();
  c.num_experts_per_tok = 9;
  expect_invalid(make(c), "num_experts_per_tok");
  c = tiny_config();
  c.kv_lora_rank = 0;
  expect_invalid(make(c), "kv_lora_rank");
  c = tiny_config();
  c.qk_rope_head_dim = 3;
  expect_invalid(make(c), "qk_rope_head_dim");
  expect_invalid(make(with("tie_word_embeddings", true)), "tie_word_embeddings");
  expect_invalid(make(with("num_nextn_predict_layers", 2)), "num_nextn_predict_layers");
  expect_invalid(make(with("scoring_func", "softmax")), "scoring_func");
  c = tiny_config();
  c.n_group = 3;
  expect_invalid(make(c), "n_group");
  expect_invalid(make(tiny_config(), LossConfig{-0.1f, 0.0f}), "mtp_lambda");
  expect_invalid(make(tiny_config(), LossConfig{0.3f, NAN}), "balance_alpha");
  TrainModel m(tiny_config(), LossConfig{});
  expect_invalid([&] { m.init(1, -1.0f); }, "std");
}

TEST(TrainModel, BadBatchesAreClearErrors) {
  const ModelConfig c = tiny_config();
  TrainModel m(c, LossConfig{});
  m.init(1);
  Batch b = random_batch(c.vocab_size, 2, 4, 1);
  auto fb = [&](int64_t B, int64_t T) {
    return [&m, &b, B, T]() { m.forward_backward(b.inputs.data(), b.targets.data(), B, T, 1.0f); };
  };
  b.inputs[5] = 37;
  expect_invalid(fb(2, 4), "inputs[1][1] = 37 is outside the vocabulary (vocab_size 37)");
  b.inputs[5] = -1;
  expect_invalid(fb(2, 4), "inputs[1][1] = -1");
  b.inputs[5] = 0;
  b.targets[2] = 40;
  expect_invalid(fb(2, 4), "targets[0][2] = 40");
  b.targets[2] = -2;
  expect_invalid([&] { m.forward(b.inputs.data(), b.targets.data(), 2, 4); }, "targets[0][2] = -2");
  b.targets[2] = kIgnoreIndex;
  expect_invalid(fb(0, 4), "must be > 0");
  std::vector<int32_t> longer(33, 1);
  expect_invalid([&] { m.forward(longer.data(), longer.data(), 1, 33); },
                 "exceeds max_position_embeddings (32)");
  expect_invalid([&] { m.forward_backward(nullptr, b.targets.data(), 2, 4, 1.0f); }, "null");
  EXPECT_THROW(m.routed_experts(2), std::out_of_range);
  EXPECT_NO_THROW(fb(2, 4)());
}

}  // namespace
}  // namespace whale::train
