#include "train/moe_train.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/ops.h"
#include "model/moe.h"
#include "train/ops.h"

namespace whale::train {

namespace {

void check_config(const ModelConfig& c) {
  if (c.n_routed_experts <= 0 || c.hidden_size <= 0 || c.moe_intermediate_size <= 0)
    throw std::invalid_argument(
        "MoE training needs n_routed_experts, hidden_size and moe_intermediate_size > 0");
  if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.n_routed_experts)
    throw std::invalid_argument("MoE training: num_experts_per_tok must be in 1..n_routed_experts");
  if (c.scoring_func != ScoringFunc::Sigmoid)
    throw std::invalid_argument("MoE training supports sigmoid scoring (DeepSeek-V3) only");
  if (c.n_shared_experts < 0) throw std::invalid_argument("n_shared_experts must be >= 0");
}

// The scale route_token applies after the optional normalisation.
bool normalises(const ModelConfig& c) {
  return c.num_experts_per_tok > 1 && c.norm_topk_prob;
}
float gate_scale(const ModelConfig& c) {
  return c.arch == Arch::DeepseekV3 || !normalises(c) ? float(c.routed_scaling_factor) : 1.0f;
}

void zero(std::vector<float>& v, size_t n) {
  std::fill_n(v.begin(), n, 0.0f);
}

void check_sequences(const MoeActs& a, int64_t T) {
  if (T <= 0 || a.N % T != 0)
    throw std::invalid_argument("balance loss: " + std::to_string(a.N) +
                                " tokens are not a whole number of sequences of length " +
                                std::to_string(T));
}

// f_i of one sequence (tokens [t0, t0+T)).
void sequence_f(const MoeActs& a, int64_t t0, int64_t T, std::vector<double>& f) {
  std::fill(f.begin(), f.end(), 0.0);
  for (int64_t t = t0; t < t0 + T; t++)
    for (int64_t k = 0; k < a.K; k++) f[size_t(a.ids[size_t(t * a.K + k)])] += 1.0;
  for (double& v : f) v *= double(a.E) / double(a.K * T);
}

}  // namespace

int64_t moe_num_params(const ModelConfig& c) {
  check_config(c);
  const int64_t C = c.hidden_size, E = c.n_routed_experts, F = c.moe_intermediate_size;
  const int64_t Fs = F * c.n_shared_experts;
  return E * C + 3 * E * F * C + 3 * Fs * C;
}

MoeParams moe_params_at(float* base, const ModelConfig& c) {
  check_config(c);
  const int64_t C = c.hidden_size, E = c.n_routed_experts, F = c.moe_intermediate_size;
  const int64_t Fs = F * c.n_shared_experts;
  MoeParams p;
  p.router = base;
  p.w_gate = p.router + E * C;
  p.w_up = p.w_gate + E * F * C;
  p.w_down = p.w_up + E * F * C;
  if (Fs > 0) {
    p.s_gate = p.w_down + E * C * F;
    p.s_up = p.s_gate + Fs * C;
    p.s_down = p.s_up + Fs * C;
  }
  return p;
}

void MoeActs::resize(const ModelConfig& c, int64_t n) {
  check_config(c);
  N = n;
  C = c.hidden_size;
  E = c.n_routed_experts;
  K = c.num_experts_per_tok;
  F = c.moe_intermediate_size;
  Fs = F * c.n_shared_experts;
  const size_t NK = size_t(N * K);
  logits.resize(size_t(N * E));
  scores.resize(size_t(N * E));
  ids.resize(NK);
  gates.resize(NK);
  counts.resize(size_t(E));
  offset.resize(size_t(E + 1));
  row_token.resize(NK);
  row_of.resize(NK);
  xg.resize(NK * size_t(C));
  hg.resize(NK * size_t(F));
  hu.resize(NK * size_t(F));
  h.resize(NK * size_t(F));
  out.resize(NK * size_t(C));
  sg.resize(size_t(N * Fs));
  su.resize(size_t(N * Fs));
  sh.resize(size_t(N * Fs));
  dgate.resize(NK);
  dxg.resize(NK * size_t(C));
  dout.resize(NK * size_t(C));
  // Shared by the routed experts' rows and the shared experts' tokens.
  const size_t hidden = std::max(NK * size_t(F), size_t(N * Fs));
  dh.resize(hidden);
  dhg.resize(hidden);
  dhu.resize(hidden);
  dlogits.resize(size_t(N * E));
}

void moe_forward(float* y, MoeActs& a, const float* u, const MoeParams& p,
                 std::span<const float> bias, const ModelConfig& c, int64_t N) {
  check_config(c);
  if (!bias.empty() && int64_t(bias.size()) != c.n_routed_experts)
    throw std::invalid_argument("e_score_correction_bias has " + std::to_string(bias.size()) +
                                " values, expected " + std::to_string(c.n_routed_experts));
  a.resize(c, N);
  const int64_t C = a.C, E = a.E, K = a.K, F = a.F, Fs = a.Fs;

  // Route: the inference routine itself, so training selects exactly what inference selects.
  matmul_forward(a.logits.data(), u, p.router, N, C, E);
  const int nt_route = threads_for(N * E * 16);  // ~16 operations per score (exp, sorting)
#pragma omp parallel num_threads(nt_route)
  {
    RouteScratch scratch;  // one per thread: no allocation per token
#pragma omp for schedule(static)
    for (int64_t t = 0; t < N; t++) {
      const float* l = a.logits.data() + t * E;
      for (int64_t e = 0; e < E; e++) a.scores[size_t(t * E + e)] = 1.0f / (1.0f + std::exp(-l[e]));
      route_token(c, l, bias, a.ids.data() + t * K, a.gates.data() + t * K, scratch);
    }
  }

  // Group the (token, slot) pairs by expert, tokens in order.
  std::fill(a.counts.begin(), a.counts.end(), 0);
  for (int64_t i = 0; i < N * K; i++) a.counts[size_t(a.ids[size_t(i)])]++;
  a.offset[0] = 0;
  for (int64_t e = 0; e < E; e++)
    a.offset[size_t(e + 1)] = a.offset[size_t(e)] + a.counts[size_t(e)];
  std::vector<int64_t> cursor(a.offset.begin(), a.offset.end() - 1);
  for (int64_t t = 0; t < N; t++)
    for (int64_t k = 0; k < K; k++) {
      const int64_t r = cursor[size_t(a.ids[size_t(t * K + k)])]++;
      a.row_token[size_t(r)] = int32_t(t);
      a.row_of[size_t(t * K + k)] = int32_t(r);
    }
  const int nt_rows = threads_for(N * K * C);
#pragma omp parallel for schedule(static) num_threads(nt_rows)
  for (int64_t r = 0; r < N * K; r++)
    std::copy_n(u + int64_t(a.row_token[size_t(r)]) * C, C, a.xg.data() + r * C);

  // Routed experts on their gathered rows: one GEMM per expert and projection.
  const int64_t* off = a.offset.data();
  matmul_forward_grouped(a.hg.data(), a.xg.data(), p.w_gate, off, E, C, F);
  matmul_forward_grouped(a.hu.data(), a.xg.data(), p.w_up, off, E, C, F);
  swiglu_forward(a.h.data(), a.hg.data(), a.hu.data(), N * K * F);
  matmul_forward_grouped(a.out.data(), a.h.data(), p.w_down, off, E, F, C);

  // Shared experts write y; then every token adds its gated experts, in slot order.
  if (Fs > 0) {
    matmul_forward(a.sg.data(), u, p.s_gate, N, C, Fs);
    matmul_forward(a.su.data(), u, p.s_up, N, C, Fs);
    swiglu_forward(a.sh.data(), a.sg.data(), a.su.data(), N * Fs);
    matmul_forward(y, a.sh.data(), p.s_down, N, Fs, C);
  } else {
    std::fill_n(y, N * C, 0.0f);
  }
#pragma omp parallel for schedule(static) num_threads(nt_rows)
  for (int64_t t = 0; t < N; t++)
    for (int64_t k = 0; k < K; k++)
      axpy(a.gates[size_t(t * K + k)], a.out.data() + int64_t(a.row_of[size_t(t * K + k)]) * C,
           y + t * C, C);
}

void moe_backward(float* du, const MoeParams& g, MoeActs& a, const float* dy, const float* u,
                  const MoeParams& p, const float* dlogits_extra, const ModelConfig& c) {
  check_config(c);
  const int64_t N = a.N, C = a.C, E = a.E, K = a.K, F = a.F, Fs = a.Fs;
  const int nt_rows = threads_for(N * K * C);
  const bool norm = normalises(c);
  const float scale = gate_scale(c);
  zero(a.dh, size_t(N * K * F));
  zero(a.dhg, size_t(N * K * F));
  zero(a.dhu, size_t(N * K * F));
  zero(a.dxg, size_t(N * K * C));
  if (dlogits_extra)
    std::copy_n(dlogits_extra, N * E, a.dlogits.begin());
  else
    zero(a.dlogits, size_t(N * E));

    // y_t = sum_k g_k out_k:  dout_k = g_k dy_t,  dg_k = dy_t . out_k; then back through the gate
    // values to the logits of the selected experts.
#pragma omp parallel for schedule(static) num_threads(nt_rows)
  for (int64_t t = 0; t < N; t++) {
    const float* dyt = dy + t * C;
    double S = 1e-20, sum_dg_s = 0.0;  // route_token's normaliser
    for (int64_t k = 0; k < K; k++) {
      const int64_t i = t * K + k, r = a.row_of[size_t(i)];
      const float* outr = a.out.data() + r * C;
      float* doutr = a.dout.data() + r * C;
      for (int64_t j = 0; j < C; j++) doutr[j] = a.gates[size_t(i)] * dyt[j];
      a.dgate[size_t(i)] = dot(dyt, outr, C);
      const double s = a.scores[size_t(t * E + a.ids[size_t(i)])];
      S += s;
      sum_dg_s += double(a.dgate[size_t(i)]) * s;
    }
    for (int64_t k = 0; k < K; k++) {
      const int64_t i = t * K + k, e = a.ids[size_t(i)];
      const double s = a.scores[size_t(t * E + e)];
      // g_k = scale * s_k / S:  dL/ds_k = scale * (dg_k / S - sum_j dg_j s_j / S^2).
      const double ds = norm ? scale * (a.dgate[size_t(i)] / S - sum_dg_s / (S * S))
                             : scale * double(a.dgate[size_t(i)]);
      a.dlogits[size_t(t * E + e)] += float(ds * s * (1.0 - s));
    }
  }

  // Routed experts, each on its own rows.
  const int64_t* off = a.offset.data();
  matmul_backward_grouped(a.dh.data(), g.w_down, a.dout.data(), a.h.data(), p.w_down, off, E, F, C);
  swiglu_backward(a.dhg.data(), a.dhu.data(), a.dh.data(), a.hg.data(), a.hu.data(), N * K * F);
  matmul_backward_grouped(a.dxg.data(), g.w_gate, a.dhg.data(), a.xg.data(), p.w_gate, off, E, C,
                          F);
  matmul_backward_grouped(a.dxg.data(), g.w_up, a.dhu.data(), a.xg.data(), p.w_up, off, E, C, F);
#pragma omp parallel for schedule(static) num_threads(nt_rows)
  for (int64_t t = 0; t < N; t++)
    for (int64_t k = 0; k < K; k++)
      axpy(1.0f, a.dxg.data() + int64_t(a.row_of[size_t(t * K + k)]) * C, du + t * C, C);

  // Shared experts (the hidden scratch is free again).
  if (Fs > 0) {
    zero(a.dh, size_t(N * Fs));
    zero(a.dhg, size_t(N * Fs));
    zero(a.dhu, size_t(N * Fs));
    matmul_backward(a.dh.data(), g.s_down, dy, a.sh.data(), p.s_down, N, Fs, C);
    swiglu_backward(a.dhg.data(), a.dhu.data(), a.dh.data(), a.sg.data(), a.su.data(), N * Fs);
    matmul_backward(du, g.s_gate, a.dhg.data(), u, p.s_gate, N, C, Fs);
    matmul_backward(du, g.s_up, a.dhu.data(), u, p.s_up, N, C, Fs);
  }

  matmul_backward(du, g.router, a.dlogits.data(), u, p.router, N, C, E);
}

// ---- auxiliary-loss-free balancing ----

void update_expert_bias(std::span<float> bias, std::span<const int64_t> counts, float gamma) {
  if (bias.size() != counts.size())
    throw std::invalid_argument("expert bias has " + std::to_string(bias.size()) +
                                " values but there are " + std::to_string(counts.size()) +
                                " expert counts");
  if (counts.empty()) return;
  double mean = 0.0;
  for (int64_t n : counts) mean += double(n);
  mean /= double(counts.size());
  for (size_t i = 0; i < bias.size(); i++) {
    const double d = mean - double(counts[i]);
    bias[i] += gamma * float((d > 0) - (d < 0));
  }
}

ExpertLoad expert_load(std::span<const int64_t> counts) {
  ExpertLoad l;
  if (counts.empty()) return l;
  int64_t lo = counts[0], hi = counts[0];
  for (int64_t n : counts) {
    l.total += n;
    lo = std::min(lo, n);
    hi = std::max(hi, n);
  }
  l.mean = double(l.total) / double(counts.size());
  if (l.total > 0) {
    l.max_over_mean = double(hi) / l.mean;
    l.min_over_mean = double(lo) / l.mean;
  }
  return l;
}

// ---- sequence-wise balance loss ----

// For one token's scores s: sum_i s_i and sum_i f_i s_i (so s' = s / sum gives
// sum_i f_i s'_i = fs / sum).
namespace {
struct ScoreSums {
  double sum = 0.0, fs = 0.0;
};
ScoreSums score_sums(const float* s, const std::vector<double>& f) {
  ScoreSums z;
  for (size_t e = 0; e < f.size(); e++) {
    z.sum += s[e];
    z.fs += f[e] * s[e];
  }
  return z;
}
}  // namespace

float balance_loss_forward(const MoeActs& a, int64_t T, float alpha) {
  check_sequences(a, T);
  const int64_t B = a.N / T, E = a.E;
  std::vector<double> f(static_cast<size_t>(E));
  double total = 0.0;
  for (int64_t b = 0; b < B; b++) {
    sequence_f(a, b * T, T, f);
    for (int64_t t = b * T; t < (b + 1) * T; t++) {
      const ScoreSums z = score_sums(a.scores.data() + t * E, f);
      total += z.fs / z.sum / double(T);  // sum_i f_i s'_{i,t} / T
    }
  }
  return float(double(alpha) * total / double(B));
}

void balance_loss_backward(float* dlogits, const MoeActs& a, int64_t T, float alpha, float dloss) {
  check_sequences(a, T);
  const int64_t B = a.N / T, E = a.E;
  std::vector<double> f(static_cast<size_t>(E));
  for (int64_t b = 0; b < B; b++) {
    sequence_f(a, b * T, T, f);
    // dL/ds'_{i,t} = w f_i; s' = s / sum_j s_j gives dL/ds_j = w (f_j - sum_i f_i s'_i) / sum.
    const double w = double(dloss) * double(alpha) / double(B * T);
    for (int64_t t = b * T; t < (b + 1) * T; t++) {
      const float* s = a.scores.data() + t * E;
      const ScoreSums z = score_sums(s, f);
      for (int64_t e = 0; e < E; e++) {
        const double ds = w * (f[size_t(e)] - z.fs / z.sum) / z.sum;
        dlogits[t * E + e] += float(ds * s[e] * (1.0 - s[e]));
      }
    }
  }
}

}  // namespace whale::train
