// Benchmarks of the training kernels (train/ops.h, mla_train.h, moe_train.h) at the reference
// training size of issue 4: hidden 256, B*T = 2048 rows (batch 8 x seq 256), 4 heads, q_lora 128,
// kv_lora 64, nope 32, rope 16, v 32, 16 routed experts top-2 + 1 shared, moe_intermediate 256.
//
//   TrainMatmul{Fwd,Bwd}/out:O/threads:P    [2048 x 256] x [O x 256]^T; FLOP/s (2*N*in*out fwd,
//                                           twice that bwd)
//   TrainAttention{Fwd,Bwd}/threads:P       causal attention of 8 sequences of 256 tokens, 4 heads
//   TrainMlaFwdBwd/threads:P, TrainMoeFwdBwd/threads:P   one layer's forward + backward; the
//                                           counters give tokens/s
// Filter with e.g. --benchmark_filter='Train.*threads:2'.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "kernels/cpu.h"
#include "model/config.h"
#include "model/rope.h"
#include "train/mla_train.h"
#include "train/moe_train.h"
#include "train/ops.h"

namespace whale::train {
namespace {

using Vec = std::vector<float>;

constexpr int64_t kB = 8, kT = 256, kN = kB * kT, kC = 256;

Vec randn(int64_t n, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  Vec v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// Sets both whale's and OpenMP's thread count for one benchmark, restores them afterwards.
class Threads {
 public:
  explicit Threads(int n) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(n);
    set_num_threads(n);
  }
  ~Threads() {
    omp_set_num_threads(saved_);
    set_num_threads(0);
  }

 private:
  int saved_;
};

ModelConfig reference_config() {
  ModelConfig c;
  c.arch = Arch::DeepseekV3;
  c.hidden_size = kC;
  c.num_attention_heads = 4;
  c.num_hidden_layers = 1;
  c.q_lora_rank = 128;
  c.kv_lora_rank = 64;
  c.qk_nope_head_dim = 32;
  c.qk_rope_head_dim = 16;
  c.v_head_dim = 32;
  c.moe_intermediate_size = 256;
  c.n_routed_experts = 16;
  c.num_experts_per_tok = 2;
  c.n_shared_experts = 1;
  c.scoring_func = ScoringFunc::Sigmoid;
  c.topk_method = TopkMethod::NoauxTc;
  c.n_group = 1;
  c.topk_group = 1;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  return c;
}

// ---- matmul ----

void BM_TrainMatmulFwd(benchmark::State& state) {
  const int64_t out = state.range(0);
  Threads th(int(state.range(1)));
  const Vec x = randn(kN * kC, 1, 1.0f), W = randn(out * kC, 2, 0.05f);
  Vec y(size_t(kN * out));
  for (auto _ : state) {
    matmul_forward(y.data(), x.data(), W.data(), kN, kC, out);
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(double(2 * kN * kC * out) * state.iterations(),
                                                benchmark::Counter::kIsRate);
}

void BM_TrainMatmulBwd(benchmark::State& state) {
  const int64_t out = state.range(0);
  Threads th(int(state.range(1)));
  const Vec x = randn(kN * kC, 1, 1.0f), W = randn(out * kC, 2, 0.05f), dy = randn(kN * out, 3, 1);
  Vec dx(size_t(kN * kC)), dW(size_t(out * kC));
  for (auto _ : state) {
    matmul_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), kN, kC, out);
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(double(4 * kN * kC * out) * state.iterations(),
                                                benchmark::Counter::kIsRate);
}

BENCHMARK(BM_TrainMatmulFwd)
    ->Name("TrainMatmulFwd")
    ->ArgNames({"out", "threads"})
    ->Args({256, 2})
    ->Args({1024, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_TrainMatmulBwd)
    ->Name("TrainMatmulBwd")
    ->ArgNames({"out", "threads"})
    ->Args({256, 2})
    ->Args({1024, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ---- causal attention (8 sequences in one call, as mla_forward does) ----

struct AttnData {
  AttnShape s{.T = kT, .H = 4, .nope = 32, .rope = 16, .dv = 32, .scale = 0.144f, .B = kB};
  int64_t H = s.H;
  Vec q = randn(kN * H * s.dqk(), 4, 1.0f), k_nope = randn(kN * H * s.nope, 5, 1.0f),
      k_pe = randn(kN * s.rope, 6, 1.0f), v = randn(kN * H * s.dv, 7, 1.0f),
      dout = randn(kN * H * s.dv, 8, 1.0f);
  Vec out = Vec(size_t(kN * H * s.dv)), att = Vec(size_t(kB * H * kT * kT)), datt = att;
  Vec dq = q, dk_nope = k_nope, dk_pe = k_pe, dv = v;

  void forward() {
    causal_attention_forward(out.data(), att.data(), q.data(), k_nope.data(), k_pe.data(), v.data(),
                             s);
  }
  void backward() {
    causal_attention_backward(dq.data(), dk_nope.data(), dk_pe.data(), dv.data(), datt.data(),
                              dout.data(), q.data(), k_nope.data(), k_pe.data(), v.data(),
                              att.data(), s);
  }
};

void BM_TrainAttentionFwd(benchmark::State& state) {
  Threads th(int(state.range(0)));
  AttnData d;
  for (auto _ : state) {
    d.forward();
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] =
      benchmark::Counter(double(kN) * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_TrainAttentionBwd(benchmark::State& state) {
  Threads th(int(state.range(0)));
  AttnData d;
  d.forward();
  for (auto _ : state) {
    d.backward();
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] =
      benchmark::Counter(double(kN) * state.iterations(), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_TrainAttentionFwd)
    ->Name("TrainAttentionFwd")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_TrainAttentionBwd)
    ->Name("TrainAttentionBwd")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ---- one MLA layer, forward + backward ----

void BM_TrainMlaFwdBwd(benchmark::State& state) {
  Threads th(int(state.range(0)));
  const ModelConfig c = reference_config();
  MlaParams p(c), g(c);
  uint32_t seed = 10;
  for (const MlaTensor& t : p.tensors()) {
    const bool norm = t.shape.size() == 1;
    *t.data = randn(int64_t(t.data->size()), seed++, norm ? 0.1f : 0.006f);
    if (norm)
      for (float& w : *t.data) w += 1.0f;
  }
  MlaActs acts(c, kB, kT);
  const RopeTable rope(Rope(c), kT);
  const Vec x = randn(kN * kC, 20, 1.0f), dy = randn(kN * kC, 21, 1.0f);
  Vec y(size_t(kN * kC)), dx(size_t(kN * kC));
  for (auto _ : state) {
    mla_forward(y.data(), x.data(), p, acts, rope, c);
    mla_backward(dx.data(), g, dy.data(), x.data(), p, acts, rope, c);
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] =
      benchmark::Counter(double(kN) * state.iterations(), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_TrainMlaFwdBwd)
    ->Name("TrainMlaFwdBwd")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ---- one MoE layer, forward + backward ----

void BM_TrainMoeFwdBwd(benchmark::State& state) {
  Threads th(int(state.range(0)));
  const ModelConfig c = reference_config();
  const int64_t n = moe_num_params(c);
  // Router rows with some spread, so the selection is not degenerate; experts at V3's init std.
  Vec flat = randn(n, 30, 0.006f);
  const MoeParams p = moe_params_at(flat.data(), c);
  const Vec router = randn(c.n_routed_experts * kC, 31, 0.1f);
  std::copy(router.begin(), router.end(), p.router);
  Vec gflat(static_cast<size_t>(n));
  const MoeParams g = moe_params_at(gflat.data(), c);
  const Vec bias(size_t(c.n_routed_experts), 0.0f);
  const Vec u = randn(kN * kC, 32, 1.0f), dy = randn(kN * kC, 33, 1.0f);
  Vec y(size_t(kN * kC)), du(size_t(kN * kC));
  MoeActs acts;
  moe_forward(y.data(), acts, u.data(), p, bias, c, kN);  // sizes the activations once
  for (auto _ : state) {
    moe_forward(y.data(), acts, u.data(), p, bias, c, kN);
    moe_backward(du.data(), g, acts, dy.data(), u.data(), p, nullptr, c);
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] =
      benchmark::Counter(double(kN) * state.iterations(), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_TrainMoeFwdBwd)
    ->Name("TrainMoeFwdBwd")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace whale::train
