// The training MLA layer: its forward against the inference whale::MLA on the same weights (written
// to a real safetensors checkpoint and loaded the way the engine loads it), its backward against
// central finite differences, causality, and its errors.
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "grad_check.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/mla.h"
#include "model/rope.h"
#include "train/mla_train.h"

namespace whale::train {
namespace {

namespace fs = std::filesystem;
using Vec = std::vector<float>;

// C=16, H=2, nope=rope=v=4, q_lora=kv_lora=8 (q_lora 0 for the q_proj variant).
ModelConfig tiny_config(int64_t q_lora, bool yarn) {
  ModelConfig c;
  c.hidden_size = 16;
  c.num_attention_heads = 2;
  c.num_hidden_layers = 1;
  c.q_lora_rank = q_lora;
  c.kv_lora_rank = 8;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 4;
  c.rope_theta = 100.0;  // fast rotations, so positions 0..4 differ visibly
  if (yarn) {
    // Factors chosen so that every YaRN term matters: a ramp across the two frequencies, an
    // attn_factor != 1 (mscale != mscale_all_dim) and a softmax scale != 1/sqrt(8).
    c.yarn.enabled = true;
    c.yarn.factor = 4.0;
    c.yarn.original_max_position_embeddings = 8;
    c.yarn.beta_fast = 4.0;
    c.yarn.beta_slow = 1.0;
    c.yarn.mscale = 1.0;
    c.yarn.mscale_all_dim = 0.5;
  }
  return c;
}

using whale::testing::randn;

// Norm weights near 1, projections with unit-variance outputs, so attention is far from uniform.
void init_params(MlaParams& p, std::mt19937& rng) {
  for (const MlaTensor& t : p.tensors()) {
    const bool norm = t.shape.size() == 1;
    *t.data = randn(t.data->size(), rng, norm ? 0.2f : 1.0f / std::sqrt(float(t.shape[1])),
                    norm ? 1.0f : 0.0f);
  }
}

// A one-file F32 checkpoint holding `p` under model.layers.0.self_attn.*, in a fresh temp dir.
class TempCheckpoint {
 public:
  explicit TempCheckpoint(MlaParams& p) {
    static int serial = 0;
    dir_ = fs::temp_directory_path() /
           ("whale-test-mla-" + std::to_string(::getpid()) + "-" + std::to_string(serial++));
    fs::create_directories(dir_);
    std::string header = "{";
    std::string data;
    for (const MlaTensor& t : p.tensors()) {
      std::string shape;
      for (int64_t d : t.shape) {
        if (!shape.empty()) shape += ',';
        shape += std::to_string(d);
      }
      const size_t begin = data.size();
      data.append(reinterpret_cast<const char*>(t.data->data()), t.data->size() * sizeof(float));
      if (header.size() > 1) header += ",";
      header += "\"model.layers.0.self_attn." + t.name + "\":{\"dtype\":\"F32\",\"shape\":[" +
                shape + "],\"data_offsets\":[" + std::to_string(begin) + "," +
                std::to_string(data.size()) + "]}";
    }
    header += "}";
    header.resize((header.size() + 7) / 8 * 8, ' ');
    const uint64_t n = header.size();
    std::ofstream f(dir_ / "model.safetensors", std::ios::binary);
    char len[8];
    for (int i = 0; i < 8; i++) len[i] = char((n >> (8 * i)) & 0xff);  // little-endian
    f.write(len, 8);
    f << header << data;
  }
  ~TempCheckpoint() { fs::remove_all(dir_); }
  std::string dir() const { return dir_.string(); }

 private:
  fs::path dir_;
};

// The inference MLA (naive form) on B independent sequences of T tokens each.
Vec inference_forward(const ModelConfig& c, MlaParams& p, const Vec& x, int64_t B, int64_t T) {
  TempCheckpoint tmp(p);
  const Checkpoint ck(tmp.dir());
  const Rope rope(c);
  const MLA mla(c, ck, "model.layers.0.self_attn", 0, &rope);
  std::vector<KVCache> caches;
  for (int64_t b = 0; b < B; b++) caches.emplace_back(c, T);
  std::vector<AttnSegment> segs;
  for (int64_t b = 0; b < B; b++) segs.push_back({&caches[size_t(b)], b * T, T});
  Vec y(x.size());
  mla.forward(x.data(), B * T, segs, y.data(), AttnMode::Naive);
  return y;
}

Vec train_forward(const ModelConfig& c, const MlaParams& p, const Vec& x, int64_t B, int64_t T) {
  MlaActs acts(c, B, T);
  const RopeTable tab(Rope(c), T);
  Vec y(x.size());
  mla_forward(y.data(), x.data(), p, acts, tab, c);
  return y;
}

void expect_forward_matches_inference(const ModelConfig& c, int64_t B = 2, int64_t T = 5) {
  std::mt19937 rng(11);
  MlaParams p(c);
  init_params(p, rng);
  const Vec x = randn(size_t(B * T * c.hidden_size), rng);
  const Vec want = inference_forward(c, p, x, B, T);
  const Vec got = train_forward(c, p, x, B, T);
  float largest = 0.0f;
  for (float v : want) largest = std::max(largest, std::fabs(v));
  ASSERT_GT(largest, 0.1f);
  for (size_t i = 0; i < want.size(); i++)
    EXPECT_NEAR(got[i], want[i], 1e-5f * largest) << "y[" << i << "]";
}

TEST(TrainMla, ForwardMatchesInference) {
  expect_forward_matches_inference(tiny_config(8, false));
}

TEST(TrainMla, ForwardMatchesInferenceWithYarn) {
  const ModelConfig c = tiny_config(8, true);
  ASSERT_NE(Rope(c).attn_factor(), 1.0);
  ASSERT_NE(float(c.softmax_scale()), float(1.0 / std::sqrt(8.0)));
  expect_forward_matches_inference(c);
}

TEST(TrainMla, ForwardMatchesInferenceWithoutQueryCompression) {
  expect_forward_matches_inference(tiny_config(0, true));
}

// Sequences longer than one block of the blocked attention (64 queries), the last block partial.
TEST(TrainMla, ForwardMatchesInferenceOverSeveralAttentionBlocks) {
  expect_forward_matches_inference(tiny_config(8, true), 3, 70);
}

using whale::testing::expect_grad_matches;
using whale::testing::project;

void expect_gradients_match(const ModelConfig& c) {
  const int64_t B = 2, T = 5, N = B * T, C = c.hidden_size;
  std::mt19937 rng(5);
  MlaParams p(c), g(c);
  init_params(p, rng);
  Vec x = randn(size_t(N * C), rng);
  const Vec r = randn(size_t(N * C), rng);
  MlaActs acts(c, B, T);
  const RopeTable tab(Rope(c), T);
  Vec y(size_t(N * C));
  auto loss = [&] {
    mla_forward(y.data(), x.data(), p, acts, tab, c);
    return project(y, r);
  };

  Vec dx(x.size(), 0.0f);
  loss();
  mla_backward(dx.data(), g, r.data(), x.data(), p, acts, tab, c);

  // The ~2000 tiny forwards of the finite differences run on one thread: the ops open a parallel
  // region per call, whose cost on a busy machine dwarfs the work (the results are the same).
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  expect_grad_matches(x, dx, loss, "dx");
  std::vector<MlaTensor> params = p.tensors(), grads = g.tensors();
  ASSERT_EQ(params.size(), c.q_lora_rank > 0 ? 7u : 5u);
  for (size_t k = 0; k < params.size(); k++)
    expect_grad_matches(*params[k].data, *grads[k].data, loss, "d" + params[k].name);
  omp_set_num_threads(threads);

  // A second backward adds the same gradients again (accumulation across micro-batches), up to
  // the rounding of the longer sums.
  std::vector<Vec> once{dx};
  for (const MlaTensor& t : grads) once.push_back(*t.data);
  loss();
  mla_backward(dx.data(), g, r.data(), x.data(), p, acts, tab, c);
  for (size_t k = 0; k < once.size(); k++) {
    const Vec& twice = k == 0 ? dx : *grads[k - 1].data;
    float largest = 0.0f;
    for (float v : once[k]) largest = std::max(largest, std::fabs(v));
    for (size_t i = 0; i < twice.size(); i++)
      EXPECT_NEAR(twice[i], 2 * once[k][i], 1e-5f * largest) << "gradient " << k << "[" << i << "]";
  }
}

TEST(TrainMla, GradientsMatchFiniteDifferences) {
  expect_gradients_match(tiny_config(8, true));
}

TEST(TrainMla, GradientsMatchFiniteDifferencesWithoutQueryCompression) {
  expect_gradients_match(tiny_config(0, false));
}

// Changing the last token of sequence 0 changes only that token's output: not the earlier
// tokens (causal mask) and not sequence 1 (sequences are independent).
TEST(TrainMla, CausalAndSequencesIndependent) {
  const ModelConfig c = tiny_config(8, false);
  const int64_t B = 2, T = 5, C = c.hidden_size;
  std::mt19937 rng(3);
  MlaParams p(c);
  init_params(p, rng);
  Vec x = randn(size_t(B * T * C), rng);
  const Vec before = train_forward(c, p, x, B, T);
  for (int64_t i = 0; i < C; i++) x[size_t((T - 1) * C + i)] += 1.0f;
  const Vec after = train_forward(c, p, x, B, T);
  float last_change = 0.0f;
  for (int64_t n = 0; n < B * T; n++)
    for (int64_t i = 0; i < C; i++) {
      const size_t k = size_t(n * C + i);
      if (n == T - 1)
        last_change = std::max(last_change, std::fabs(after[k] - before[k]));
      else
        EXPECT_EQ(after[k], before[k]) << "token " << n << " dim " << i;
    }
  EXPECT_GT(last_change, 1e-3f);
}

TEST(TrainMla, BadConfigsAndBuffersAreErrors) {
  ModelConfig c = tiny_config(8, false);
  c.kv_lora_rank = 0;
  EXPECT_THROW(MlaParams{c}, std::invalid_argument);
  c = tiny_config(8, false);
  c.qk_rope_head_dim = 3;
  EXPECT_THROW(MlaParams{c}, std::invalid_argument);
  c = tiny_config(8, false);
  EXPECT_THROW(MlaActs(c, 0, 5), std::invalid_argument);

  // A RoPE table shorter than the sequence, and parameters of another config.
  MlaParams p(c);
  MlaActs acts(c, 1, 5);
  Vec x(size_t(5 * c.hidden_size)), y(x.size());
  EXPECT_THROW(mla_forward(y.data(), x.data(), p, acts, RopeTable(Rope(c), 4), c),
               std::invalid_argument);
  const MlaParams other(tiny_config(0, false));
  EXPECT_THROW(mla_forward(y.data(), x.data(), other, acts, RopeTable(Rope(c), 5), c),
               std::invalid_argument);
}

}  // namespace
}  // namespace whale::train
