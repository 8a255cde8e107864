// Training ops: each forward beside its backward, on explicit f32 buffers (llm.c style).
//
// Conventions:
// - Every buffer is passed in by the caller; no op allocates. Shapes are given in the comments,
//   row-major, N = number of tokens (B*T flattened), C = hidden size.
// - Backward functions ACCUMULATE (+=) into every gradient buffer, parameters and activations
//   alike, so the caller zeroes them once per step and shared tensors (e.g. embedding tied with
//   the head, k_rope shared across heads) need no special handling. The exceptions are the
//   in-place RoPE (a rotation of the buffer it is given) and cross_entropy_backward (which may
//   overwrite the logits with their gradient); both say so.
// - Every op is deterministic: each output element is reduced in a fixed order, so the same
//   thread count gives bit-identical results run after run (needed for exact resume). The matrix
//   products go through OpenBLAS, whose blocking may depend on its thread count: results on
//   different thread counts agree to rounding, not necessarily to the bit.
// - Threads: whale's setting (set_num_threads, `-t`; default OpenMP's) governs both the OpenMP
//   loops here and OpenBLAS; small problems stay on one thread (see threads_for).
// - Bad token ids / targets throw std::invalid_argument; shapes are the caller's responsibility.
#pragma once

#include <cstdint>
#include <vector>

#include "model/rope.h"

namespace whale::train {

// ---- threads and GEMM ----
// Below this many multiply-adds (or element operations) a loop or product runs on one thread:
// forking costs more than it saves.
inline constexpr int64_t kParallelMinWork = int64_t(1) << 15;
// whale::num_threads() when `work` >= kParallelMinWork and not already inside a parallel region,
// else 1.
int threads_for(int64_t work);

// Row-major C[M][N] = alpha * op(A) op(B) + beta * C through cblas_sgemm, where op(A) is [M][K]
// (A [M][lda] or, transposed, A [K][lda]) and op(B) is [K][N] (B [K][ldb] or [N][ldb]).
// OpenBLAS itself always runs single-threaded: with threads > 1 the rows of C (or its columns)
// are split over an OpenMP team of that size, one sgemm per thread. So OpenBLAS never starts
// threads of its own (whale's setting governs all, nothing oversubscribes, and no OpenBLAS thread
// spins waiting for a descheduled one on a busy machine), and the same thread count gives the
// same bits. M, N or K of 0 is allowed (K = 0 scales C by beta).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int threads);

// ---- embedding (embed_tokens) ----
// out[N][C] = wte[ids[n]][:]  with wte [V][C].
void embedding_forward(float* out, const int32_t* ids, const float* wte, int64_t N, int64_t C,
                       int64_t V);
// dwte[ids[n]][:] += dout[n][:]  (repeated ids accumulate).
void embedding_backward(float* dwte, const float* dout, const int32_t* ids, int64_t N, int64_t C,
                        int64_t V);

// ---- RMSNorm (DeepseekV3RMSNorm) ----
// y[n] = x[n] * rstd[n] * w,  rstd[n] = 1 / sqrt(mean_c(x[n][c]^2) + eps).
// x, y [N][C]; w [C]; rstd [N] is saved for the backward.
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t C,
                     float eps);
// With g = dy * w:  dx += rstd * g - rstd^3 / C * x * sum_c(g * x);  dw += sum_n dy * x * rstd.
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t C);

// ---- linear layer without bias (every DeepSeek projection) ----
// y[N][out] = x[N][in] W[out][in]^T  (W in the PyTorch nn.Linear layout).  One sgemm.
void matmul_forward(float* y, const float* x, const float* W, int64_t N, int64_t in, int64_t out);
// dx[N][in] += dy[N][out] W[out][in];  dW[out][in] += dy^T x.  dx may be null (first layer input).
// Two sgemms with beta = 1.
void matmul_backward(float* dx, float* dW, const float* dy, const float* x, const float* W,
                     int64_t N, int64_t in, int64_t out);
// The same products as plain loops (one dot product / axpy per element), for tests.
void matmul_forward_ref(float* y, const float* x, const float* W, int64_t N, int64_t in,
                        int64_t out);
void matmul_backward_ref(float* dx, float* dW, const float* dy, const float* x, const float* W,
                         int64_t N, int64_t in, int64_t out);

// G independent products sharing one shape (e.g. the routed experts on their gathered rows):
// group g maps rows [offset[g], offset[g+1]) of x [rows][in] to the same rows of y [rows][out]
// with its own W + g*out*in.  offset [G+1], nondecreasing; empty groups are skipped.
// When the groups are balanced enough, each runs on one thread and the groups are spread over the
// threads; otherwise they run one after another, each on every thread.
void matmul_forward_grouped(float* y, const float* x, const float* W, const int64_t* offset,
                            int64_t G, int64_t in, int64_t out);
// dx rows += dy rows W_g (dx may be null); dW + g*out*in += dy_g^T x_g.
void matmul_backward_grouped(float* dx, float* dW, const float* dy, const float* x, const float* W,
                             const int64_t* offset, int64_t G, int64_t in, int64_t out);

// ---- SwiGLU (DeepseekV3MLP: down(silu(gate(x)) * up(x))) ----
// h = silu(g) * u,  silu(g) = g * sigmoid(g).  g, u, h [N*F].
void swiglu_forward(float* h, const float* g, const float* u, int64_t n);
// dg += dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g)));  du += dh * silu(g).
void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u,
                     int64_t n);

// ---- RoPE on the decoupled rope dims (q_pe, k_pe) ----
// The cos/sin of whale's inference Rope (YaRN frequencies and attn_factor included), tabulated
// for positions [0, n_pos) in exactly the float values Rope::apply uses, so training and inference
// rotate identically.
struct RopeTable {
  RopeTable(const Rope& rope, int64_t n_pos);
  int64_t n_pos = 0;
  int64_t half = 0;        // rope dim / 2
  std::vector<float> cos;  // [n_pos][half], times attn_factor
  std::vector<float> sin;  // [n_pos][half], times attn_factor
};
// In place on x: token t (position t), head h has its rope part at x + (t*H + h)*stride, with
// pairs interleaved as in the HF checkpoints: (x[2i], x[2i+1]) rotated by pos * inv_freq[i].
// For q [T][H][nope+rope] pass q + nope and stride nope+rope; for k_pe [T][rope] pass H = 1.
void rope_forward(float* x, const RopeTable& tab, int64_t T, int64_t H, int64_t stride);
// The transpose of the forward rotation, in place on the gradient: dx = R^T dx.
void rope_backward(float* dx, const RopeTable& tab, int64_t T, int64_t H, int64_t stride);

// ---- causal softmax attention, MLA after decompression ----
// For each of B independent sequences of T tokens (one after another in every buffer below):
// head h of query i attends keys j <= i with score
//   s_ij = scale * (q_nope[i][h] . k_nope[j][h] + q_pe[i][h] . k_pe[j])
// where q [T][H][nope+rope] = [q_nope; q_pe] per head, k_nope [T][H][nope], k_pe [T][rope] is
// shared by all heads, v [T][H][dv].  out[i][h] = sum_j P_ij v[j][h] with P = softmax_j(s) saved in
// att [H][T][T] (zero above the diagonal) for the backward.
// Computed with single-threaded sgemms on blocks of query rows (keys up to the block's last query
// only), the (sequence, head, block) tasks spread over the threads in one parallel region.
struct AttnShape {
  int64_t T = 0, H = 0, nope = 0, rope = 0, dv = 0;
  float scale = 1.0f;  // softmax scale (ModelConfig::softmax_scale())
  int64_t B = 1;       // sequences
  int64_t dqk() const { return nope + rope; }
};
void causal_attention_forward(float* out, float* att, const float* q, const float* k_nope,
                              const float* k_pe, const float* v, const AttnShape& s);
// dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik) with dP_ij = dout_i . v_j; then dq, dk_nope, dk_pe
// (summed over heads) and dv accumulate.  datt [H][T][T] per sequence is scratch (holds dS
// afterwards).
void causal_attention_backward(float* dq, float* dk_nope, float* dk_pe, float* dv, float* datt,
                               const float* dout, const float* q, const float* k_nope,
                               const float* k_pe, const float* v, const float* att,
                               const AttnShape& s);
// The same as plain per-element loops on one thread, for tests.
void causal_attention_forward_ref(float* out, float* att, const float* q, const float* k_nope,
                                  const float* k_pe, const float* v, const AttnShape& s);
void causal_attention_backward_ref(float* dq, float* dk_nope, float* dk_pe, float* dv, float* datt,
                                   const float* dout, const float* q, const float* k_nope,
                                   const float* k_pe, const float* v, const float* att,
                                   const AttnShape& s);

// ---- cross-entropy over the vocabulary ----
// loss = mean over n with targets[n] != kIgnoreIndex of (lse[n] - logits[n][targets[n]]),
// lse[n] = log sum_v exp(logits[n][v]) saved [N].  logits [N][V].  Returns 0 if nothing counts.
inline constexpr int32_t kIgnoreIndex = -1;
float cross_entropy_forward(float* lse, const float* logits, const int32_t* targets, int64_t N,
                            int64_t V);
// dlogits[n][v] = dloss * (softmax(logits[n])[v] - [v == target]) / count, zero on ignored rows.
// Overwrites (not accumulates); dlogits may be the logits buffer itself.
void cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V, float dloss);
// Per-token weights instead of the mean: loss = sum over counted n of weights[n] * (lse[n] -
// logits[n][targets[n]]) (no division by the count), so
// dlogits[n][v] = dloss * weights[n] * (softmax(logits[n])[v] - [v == target]), zero on ignored
// rows. Overwrites; dlogits may be the logits buffer itself.
double cross_entropy_weighted_loss(const float* lse, const float* logits, const int32_t* targets,
                                   const float* weights, int64_t N, int64_t V);
void cross_entropy_weighted_backward(float* dlogits, const float* logits, const int32_t* targets,
                                     const float* weights, int64_t N, int64_t V, float dloss);

}  // namespace whale::train
