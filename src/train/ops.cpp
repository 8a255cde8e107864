#include "train/ops.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cpu.h"
#include "kernels/ops.h"

namespace whale::train {

namespace {

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

// y += a * x
void axpy(float a, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

// Checked before the parallel loops: an exception cannot leave an OpenMP region.
void check_ids(const int32_t* ids, int64_t N, int64_t V, bool allow_ignore, const char* what) {
  for (int64_t n = 0; n < N; n++) {
    const int32_t id = ids[n];
    if ((id < 0 || id >= V) && !(allow_ignore && id == kIgnoreIndex))
      throw std::invalid_argument(std::string(what) + " " + std::to_string(id) + " at position " +
                                  std::to_string(n) + " is outside the vocabulary [0, " +
                                  std::to_string(V) + ")");
  }
}

}  // namespace

// ---- threads and GEMM ----

int threads_for(int64_t work) {
  // Inside another parallel region (a caller's, or a task of ours): one thread, no nesting.
  return work >= kParallelMinWork && !omp_in_parallel() ? num_threads() : 1;
}

namespace {

// One cblas_sgemm on the calling thread alone. (The OpenMP build of OpenBLAS sizes its team from
// omp_get_max_threads() at each call: 1 for this call, then the caller's setting again.)
void sgemm_1(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
             const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
             int64_t ldc) {
  const int saved = omp_get_max_threads();
  if (saved != 1) omp_set_num_threads(1);
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, int(M), int(N), int(K), alpha, A, int(lda), B,
              int(ldb), beta, C, int(ldc));
  if (saved != 1) omp_set_num_threads(saved);
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
          int threads) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // C = beta * C (OpenBLAS rejects a zero leading dimension)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  if (threads <= 1) return sgemm_1(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  // The rows of C (or its columns, when there are more of those) in one contiguous part per
  // thread, part boundaries on multiples of kAlign (whole microkernel tiles): every element is
  // computed by one single-threaded sgemm, and the parts depend only on the thread count.
  constexpr int64_t kAlign = 32;
  const bool split_rows = M >= N;
  const int64_t len = split_rows ? M : N;
#pragma omp parallel num_threads(threads)
  {
    const int64_t nth = omp_get_num_threads(), t = omp_get_thread_num();
    auto bound = [&](int64_t k) {
      return k == nth ? len : std::min(len, (len * k / nth + kAlign / 2) / kAlign * kAlign);
    };
    const int64_t b0 = bound(t), n = bound(t + 1) - b0;
    if (n > 0 && split_rows)
      sgemm_1(trans_a, trans_b, n, N, K, alpha, trans_a ? A + b0 : A + b0 * lda, lda, B, ldb, beta,
              C + b0 * ldc, ldc);
    else if (n > 0)
      sgemm_1(trans_a, trans_b, M, n, K, alpha, A, lda, trans_b ? B + b0 * ldb : B + b0, ldb, beta,
              C + b0, ldc);
  }
}

// ---- embedding ----

void embedding_forward(float* out, const int32_t* ids, const float* wte, int64_t N, int64_t C,
                       int64_t V) {
  check_ids(ids, N, V, false, "token id");
  const int nt = threads_for(N * C);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t n = 0; n < N; n++) std::copy_n(wte + int64_t(ids[n]) * C, C, out + n * C);
}

void embedding_backward(float* dwte, const float* dout, const int32_t* ids, int64_t N, int64_t C,
                        int64_t V) {
  check_ids(ids, N, V, false, "token id");
  // Serial: repeated ids would race, and a fixed order keeps the sum deterministic.
  for (int64_t n = 0; n < N; n++) axpy(1.0f, dout + n * C, dwte + int64_t(ids[n]) * C, C);
}

// ---- RMSNorm ----

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t C,
                     float eps) {
  const int nt = threads_for(N * C);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t n = 0; n < N; n++) {
    const float* xn = x + n * C;
    const float r = 1.0f / std::sqrt(dot(xn, xn, C) / float(C) + eps);
    rstd[n] = r;
    float* yn = y + n * C;
    for (int64_t c = 0; c < C; c++) yn[c] = xn[c] * r * w[c];
  }
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t C) {
  const int nt = threads_for(N * C);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t n = 0; n < N; n++) {
    const float* xn = x + n * C;
    const float* dyn = dy + n * C;
    const float r = rstd[n];
    float gx = 0.0f;  // sum_c dy * w * x
#pragma omp simd reduction(+ : gx)
    for (int64_t c = 0; c < C; c++) gx += dyn[c] * w[c] * xn[c];
    const float k = r * r * r * gx / float(C);
    float* dxn = dx + n * C;
    for (int64_t c = 0; c < C; c++) dxn[c] += r * dyn[c] * w[c] - k * xn[c];
  }
  // Rows in order, so dw does not depend on the thread count.
  for (int64_t n = 0; n < N; n++) {
    const float* xn = x + n * C;
    const float* dyn = dy + n * C;
    const float r = rstd[n];
#pragma omp simd
    for (int64_t c = 0; c < C; c++) dw[c] += dyn[c] * xn[c] * r;
  }
}

// ---- matmul ----

void matmul_forward(float* y, const float* x, const float* W, int64_t N, int64_t in, int64_t out) {
  gemm(false, true, N, out, in, 1.0f, x, in, W, in, 0.0f, y, out, threads_for(N * in * out));
}

void matmul_backward(float* dx, float* dW, const float* dy, const float* x, const float* W,
                     int64_t N, int64_t in, int64_t out) {
  const int nt = threads_for(N * in * out);
  if (dx) gemm(false, false, N, in, out, 1.0f, dy, out, W, in, 1.0f, dx, in, nt);
  gemm(true, false, out, in, N, 1.0f, dy, out, x, in, 1.0f, dW, in, nt);
}

void matmul_forward_ref(float* y, const float* x, const float* W, int64_t N, int64_t in,
                        int64_t out) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < out; o++) y[n * out + o] = dot(x + n * in, W + o * in, in);
}

void matmul_backward_ref(float* dx, float* dW, const float* dy, const float* x, const float* W,
                         int64_t N, int64_t in, int64_t out) {
  if (dx)
    for (int64_t n = 0; n < N; n++)
      for (int64_t o = 0; o < out; o++) axpy(dy[n * out + o], W + o * in, dx + n * in, in);
  for (int64_t o = 0; o < out; o++)
    for (int64_t n = 0; n < N; n++) axpy(dy[n * out + o], x + n * in, dW + o * in, in);
}

namespace {

// Runs fn(g, threads) for every non-empty group: spread over the threads, one thread each, when
// no group is much more than its share of the rows; else one after another on every thread.
template <class Fn>
void for_each_group(const int64_t* offset, int64_t G, int64_t work_per_row, Fn fn) {
  int64_t total = 0, largest = 0, nonempty = 0;
  for (int64_t g = 0; g < G; g++) {
    const int64_t m = offset[g + 1] - offset[g];
    total += m;
    largest = std::max(largest, m);
    nonempty += m > 0;
  }
  const int nt = threads_for(total * work_per_row);
  if (nt > 1 && nonempty > 1 && 2 * largest * nt <= 3 * total) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t g = 0; g < G; g++)
      if (offset[g + 1] > offset[g]) fn(g, 1);
  } else {
    for (int64_t g = 0; g < G; g++)
      if (offset[g + 1] > offset[g]) fn(g, threads_for((offset[g + 1] - offset[g]) * work_per_row));
  }
}

}  // namespace

void matmul_forward_grouped(float* y, const float* x, const float* W, const int64_t* offset,
                            int64_t G, int64_t in, int64_t out) {
  for_each_group(offset, G, in * out, [&](int64_t g, int threads) {
    const int64_t o = offset[g], m = offset[g + 1] - o;
    gemm(false, true, m, out, in, 1.0f, x + o * in, in, W + g * out * in, in, 0.0f, y + o * out,
         out, threads);
  });
}

void matmul_backward_grouped(float* dx, float* dW, const float* dy, const float* x, const float* W,
                             const int64_t* offset, int64_t G, int64_t in, int64_t out) {
  for_each_group(offset, G, 2 * in * out, [&](int64_t g, int threads) {
    const int64_t o = offset[g], m = offset[g + 1] - o;
    if (dx)
      gemm(false, false, m, in, out, 1.0f, dy + o * out, out, W + g * out * in, in, 1.0f,
           dx + o * in, in, threads);
    gemm(true, false, out, in, m, 1.0f, dy + o * out, out, x + o * in, in, 1.0f, dW + g * out * in,
         in, threads);
  });
}

// ---- SwiGLU ----

void swiglu_forward(float* h, const float* g, const float* u, int64_t n) {
  // In chunks through the inference kernel (kernels/ops.h), vectorised for the CPU.
  constexpr int64_t kChunk = 4096;
  const int nt = threads_for(n);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < n; i += kChunk) silu_mul(g + i, u + i, std::min(kChunk, n - i), h + i);
}

void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u,
                     int64_t n) {
  const int nt = threads_for(n);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < n; i++) {
    const float sig = 1.0f / (1.0f + std::exp(-g[i]));
    dg[i] += dh[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
    du[i] += dh[i] * g[i] * sig;
  }
}

// ---- RoPE ----

RopeTable::RopeTable(const Rope& rope, int64_t n_positions)
    : n_pos(n_positions), half(int64_t(rope.inv_freq().size())) {
  cos.resize(size_t(n_pos * half));
  sin.resize(size_t(n_pos * half));
  // The same double-precision angle and rounding as Rope::apply.
  for (int64_t p = 0; p < n_pos; p++)
    for (int64_t i = 0; i < half; i++) {
      const double angle = double(p) * rope.inv_freq()[size_t(i)];
      cos[size_t(p * half + i)] = float(std::cos(angle) * rope.attn_factor());
      sin[size_t(p * half + i)] = float(std::sin(angle) * rope.attn_factor());
    }
}

namespace {

// Rotates every (x[2i], x[2i+1]) pair by +angle (forward) or -angle (backward, the transpose).
template <bool kTranspose>
void rope_rotate(float* x, const RopeTable& tab, int64_t T, int64_t H, int64_t stride) {
  if (T > tab.n_pos)
    throw std::invalid_argument("rope: sequence of " + std::to_string(T) +
                                " tokens exceeds the table's " + std::to_string(tab.n_pos));
  const int nt = threads_for(T * H * tab.half);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t t = 0; t < T; t++) {
    const float* cs = tab.cos.data() + t * tab.half;
    const float* sn = tab.sin.data() + t * tab.half;
    for (int64_t h = 0; h < H; h++) {
      float* p = x + (t * H + h) * stride;
      for (int64_t i = 0; i < tab.half; i++) {
        const float c = cs[i], s = kTranspose ? -sn[i] : sn[i];
        const float a = p[2 * i], b = p[2 * i + 1];
        p[2 * i] = a * c - b * s;
        p[2 * i + 1] = b * c + a * s;
      }
    }
  }
}

}  // namespace

void rope_forward(float* x, const RopeTable& tab, int64_t T, int64_t H, int64_t stride) {
  rope_rotate<false>(x, tab, T, H, stride);
}

void rope_backward(float* dx, const RopeTable& tab, int64_t T, int64_t H, int64_t stride) {
  rope_rotate<true>(dx, tab, T, H, stride);
}

// ---- causal attention ----

namespace {

// Element offsets of sequence b in each attention buffer.
struct AttnStrides {
  explicit AttnStrides(const AttnShape& s)
      : q(s.T * s.H * s.dqk()),
        k_nope(s.T * s.H * s.nope),
        k_pe(s.T * s.rope),
        v(s.T * s.H * s.dv),
        att(s.H * s.T * s.T) {}
  int64_t q, k_nope, k_pe, v, att;  // out, dout and dv as v; dq as q; datt as att
};

void attention_forward_ref_one(float* out, float* att, const float* q, const float* k_nope,
                               const float* k_pe, const float* v, const AttnShape& s) {
  const int64_t T = s.T, H = s.H, nope = s.nope, rope = s.rope, dv = s.dv, dqk = s.dqk();
  for (int64_t h = 0; h < H; h++)
    for (int64_t i = 0; i < T; i++) {
      const float* qi = q + (i * H + h) * dqk;
      float* p = att + (h * T + i) * T;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j <= i; j++) {
        p[j] = s.scale *
               (dot(qi, k_nope + (j * H + h) * nope, nope) + dot(qi + nope, k_pe + j * rope, rope));
        mx = std::max(mx, p[j]);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j <= i; j++) {
        p[j] = std::exp(p[j] - mx);
        sum += p[j];
      }
      const float inv = 1.0f / sum;
      for (int64_t j = 0; j <= i; j++) p[j] *= inv;
      std::fill(p + i + 1, p + T, 0.0f);
      float* o = out + (i * H + h) * dv;
      std::fill(o, o + dv, 0.0f);
      for (int64_t j = 0; j <= i; j++) axpy(p[j], v + (j * H + h) * dv, o, dv);
    }
}

void attention_backward_ref_one(float* dq, float* dk_nope, float* dk_pe, float* dv, float* datt,
                                const float* dout, const float* q, const float* k_nope,
                                const float* k_pe, const float* v, const float* att,
                                const AttnShape& s) {
  const int64_t T = s.T, H = s.H, nope = s.nope, rope = s.rope, dvh = s.dv, dqk = s.dqk();
  for (int64_t h = 0; h < H; h++)
    for (int64_t i = 0; i < T; i++) {
      const float* p = att + (h * T + i) * T;
      float* ds = datt + (h * T + i) * T;
      const float* doi = dout + (i * H + h) * dvh;
      float pdp = 0.0f;  // sum_j P_ij dP_ij
      for (int64_t j = 0; j <= i; j++) {
        ds[j] = dot(doi, v + (j * H + h) * dvh, dvh);  // dP_ij
        pdp += p[j] * ds[j];
        axpy(p[j], doi, dv + (j * H + h) * dvh, dvh);
      }
      std::fill(ds + i + 1, ds + T, 0.0f);
      const float* qi = q + (i * H + h) * dqk;
      float* dqi = dq + (i * H + h) * dqk;
      for (int64_t j = 0; j <= i; j++) {
        ds[j] = p[j] * (ds[j] - pdp);  // dS_ij, the gradient of the pre-softmax score
        const float g = s.scale * ds[j];
        axpy(g, k_nope + (j * H + h) * nope, dqi, nope);
        axpy(g, k_pe + j * rope, dqi + nope, rope);
        axpy(g, qi, dk_nope + (j * H + h) * nope, nope);
      }
    }
  // k_pe is shared by the heads: sum over heads and queries per key, in a fixed order.
  for (int64_t j = 0; j < T; j++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = j; i < T; i++)
        axpy(s.scale * datt[(h * T + i) * T + j], q + (i * H + h) * dqk + nope, dk_pe + j * rope,
             rope);
}

}  // namespace

void causal_attention_forward_ref(float* out, float* att, const float* q, const float* k_nope,
                                  const float* k_pe, const float* v, const AttnShape& s) {
  const AttnStrides z(s);
  for (int64_t b = 0; b < s.B; b++)
    attention_forward_ref_one(out + b * z.v, att + b * z.att, q + b * z.q, k_nope + b * z.k_nope,
                              k_pe + b * z.k_pe, v + b * z.v, s);
}

void causal_attention_backward_ref(float* dq, float* dk_nope, float* dk_pe, float* dv, float* datt,
                                   const float* dout, const float* q, const float* k_nope,
                                   const float* k_pe, const float* v, const float* att,
                                   const AttnShape& s) {
  const AttnStrides z(s);
  for (int64_t b = 0; b < s.B; b++)
    attention_backward_ref_one(dq + b * z.q, dk_nope + b * z.k_nope, dk_pe + b * z.k_pe,
                               dv + b * z.v, datt + b * z.att, dout + b * z.v, q + b * z.q,
                               k_nope + b * z.k_nope, k_pe + b * z.k_pe, v + b * z.v,
                               att + b * z.att, s);
}

// The fast versions work on blocks of kAttnBlock query rows: block [i0, i1) needs the keys
// [0, i1) only, so the products skip most of the masked triangle. Every task (sequence, head,
// block) writes its own rows, with single-threaded sgemms, so the results do not depend on which
// thread runs it.
namespace {

constexpr int64_t kAttnBlock = 64;

struct AttnTasks {
  explicit AttnTasks(const AttnShape& s)
      : blocks((s.T + kAttnBlock - 1) / kAttnBlock), per_seq(s.H * blocks) {}
  int64_t blocks, per_seq;  // blocks per head, tasks per sequence
  int64_t count(const AttnShape& s) const { return s.B * per_seq; }
};

}  // namespace

void causal_attention_forward(float* out, float* att, const float* q, const float* k_nope,
                              const float* k_pe, const float* v, const AttnShape& s) {
  const int64_t T = s.T, H = s.H, nope = s.nope, rope = s.rope, dv = s.dv, dqk = s.dqk();
  const AttnStrides z(s);
  const AttnTasks tasks(s);
  const int nt = threads_for(s.B * H * T * T / 2 * (dqk + dv));
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t task = 0; task < tasks.count(s); task++) {
    const int64_t b = task / tasks.per_seq, h = task % tasks.per_seq / tasks.blocks;
    const int64_t i0 = task % tasks.blocks * kAttnBlock, i1 = std::min(T, i0 + kAttnBlock);
    const int64_t m = i1 - i0;
    float* S = att + b * z.att + (h * T + i0) * T;  // rows [i0, i1) of head h: [m][T]
    const float* qb = q + b * z.q + (i0 * H + h) * dqk;
    const float* vb = v + b * z.v + h * dv;
    // S = scale * (q_nope k_nope^T + q_pe k_pe^T) over the keys [0, i1).
    gemm(false, true, m, i1, nope, s.scale, qb, H * dqk, k_nope + b * z.k_nope + h * nope, H * nope,
         0.0f, S, T, 1);
    gemm(false, true, m, i1, rope, s.scale, qb + nope, H * dqk, k_pe + b * z.k_pe, rope, 1.0f, S, T,
         1);
    for (int64_t i = i0; i < i1; i++) {
      float* p = S + (i - i0) * T;
      softmax_inplace(p, i + 1);  // kernels/ops.h, as inference
      std::fill(p + i + 1, p + T, 0.0f);
    }
    // out = P v (P is zero above the diagonal).
    gemm(false, false, m, dv, i1, 1.0f, S, T, vb, H * dv, 0.0f, out + b * z.v + (i0 * H + h) * dv,
         H * dv, 1);
  }
}

void causal_attention_backward(float* dq, float* dk_nope, float* dk_pe, float* dv, float* datt,
                               const float* dout, const float* q, const float* k_nope,
                               const float* k_pe, const float* v, const float* att,
                               const AttnShape& s) {
  const int64_t T = s.T, H = s.H, nope = s.nope, rope = s.rope, dvh = s.dv, dqk = s.dqk();
  const AttnStrides z(s);
  const AttnTasks tasks(s);
  const int nt = threads_for(s.B * H * T * T * (dqk + dvh));

  // Per (sequence, head, query block): dP = dout v^T, dS = P (dP - rowsum(P dP)) into datt, and
  // the query gradient dq += scale dS [k_nope ; k_pe].
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t task = 0; task < tasks.count(s); task++) {
    const int64_t b = task / tasks.per_seq, h = task % tasks.per_seq / tasks.blocks;
    const int64_t i0 = task % tasks.blocks * kAttnBlock, i1 = std::min(T, i0 + kAttnBlock);
    const int64_t m = i1 - i0;
    float* dS = datt + b * z.att + (h * T + i0) * T;
    const float* P = att + b * z.att + (h * T + i0) * T;
    gemm(false, true, m, i1, dvh, 1.0f, dout + b * z.v + (i0 * H + h) * dvh, H * dvh,
         v + b * z.v + h * dvh, H * dvh, 0.0f, dS, T, 1);
    for (int64_t r = 0; r < m; r++) {
      const int64_t n = i0 + r + 1;  // keys 0..i
      const float* p = P + r * T;
      float* ds = dS + r * T;
      const float pdp = dot(p, ds, n);  // sum_j P_ij dP_ij
#pragma omp simd
      for (int64_t j = 0; j < n; j++) ds[j] = p[j] * (ds[j] - pdp);
      std::fill(ds + n, ds + T, 0.0f);
    }
    float* dqb = dq + b * z.q + (i0 * H + h) * dqk;
    gemm(false, false, m, nope, i1, s.scale, dS, T, k_nope + b * z.k_nope + h * nope, H * nope,
         1.0f, dqb, H * dqk, 1);
    gemm(false, false, m, rope, i1, s.scale, dS, T, k_pe + b * z.k_pe, rope, 1.0f, dqb + nope,
         H * dqk, 1);
  }

  // Per (sequence, key block [j0, j1)), seen by the queries [j0, T): dv += P^T dout and
  // dk_nope += scale dS^T q_nope per head, and the shared dk_pe += scale sum_h dS_h^T q_pe_h with
  // the heads in order.
  const int64_t key_tasks = s.B * tasks.blocks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t task = 0; task < key_tasks; task++) {
    const int64_t b = task / tasks.blocks;
    const int64_t j0 = task % tasks.blocks * kAttnBlock, j1 = std::min(T, j0 + kAttnBlock);
    const int64_t n = j1 - j0, rows = T - j0;
    for (int64_t h = 0; h < H; h++) {
      const float* P = att + b * z.att + (h * T + j0) * T + j0;  // [rows][n], ld T
      const float* dS = datt + b * z.att + (h * T + j0) * T + j0;
      const float* qb = q + b * z.q + (j0 * H + h) * dqk;
      gemm(true, false, n, dvh, rows, 1.0f, P, T, dout + b * z.v + (j0 * H + h) * dvh, H * dvh,
           1.0f, dv + b * z.v + (j0 * H + h) * dvh, H * dvh, 1);
      gemm(true, false, n, nope, rows, s.scale, dS, T, qb, H * dqk, 1.0f,
           dk_nope + b * z.k_nope + (j0 * H + h) * nope, H * nope, 1);
      gemm(true, false, n, rope, rows, s.scale, dS, T, qb + nope, H * dqk, 1.0f,
           dk_pe + b * z.k_pe + j0 * rope, rope, 1);
    }
  }
}

// ---- cross-entropy ----
// Both directions go through softmax_inplace (kernels/ops.h: vectorised, as inference), on a
// per-thread copy of the row in the forward.

float cross_entropy_forward(float* lse, const float* logits, const int32_t* targets, int64_t N,
                            int64_t V) {
  check_ids(targets, N, V, true, "target");
  const int nt = threads_for(N * V);
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> p(static_cast<size_t>(V));  // once per thread
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      const float* l = logits + n * V;
      std::copy_n(l, V, p.data());
      softmax_inplace(p.data(), V);
      // p[v] = e^(l[v] - lse): read lse off the largest probability (at least 1/V, so its log
      // is well conditioned). A NaN logit makes every p NaN, and so lse.
      const int64_t top = std::max_element(p.begin(), p.end()) - p.begin();
      lse[n] = std::isnan(p[size_t(top)]) ? p[size_t(top)] : l[top] - std::log(p[size_t(top)]);
    }
  }
  double loss = 0.0;
  int64_t count = 0;
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] == kIgnoreIndex) continue;
    loss += double(lse[n]) - double(logits[n * V + targets[n]]);
    count++;
  }
  return count ? float(loss / double(count)) : 0.0f;
}

namespace {

// dlogits[n] = k_n * (softmax(logits[n]) - onehot(targets[n])), k_n = k * (weights ? weights[n]
// : 1); zero on ignored rows.
void cross_entropy_rows_backward(float* dlogits, const float* logits, const int32_t* targets,
                                 const float* weights, int64_t N, int64_t V, float k) {
  const int nt = threads_for(N * V);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t n = 0; n < N; n++) {
    float* d = dlogits + n * V;
    if (targets[n] == kIgnoreIndex) {
      std::fill(d, d + V, 0.0f);
      continue;
    }
    const float kn = weights ? k * weights[n] : k;
    if (d != logits + n * V) std::copy_n(logits + n * V, V, d);
    softmax_inplace(d, V);
    for (int64_t v = 0; v < V; v++) d[v] *= kn;
    d[targets[n]] -= kn;
  }
}

}  // namespace

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V, float dloss) {
  check_ids(targets, N, V, true, "target");
  (void)lse;  // softmax recomputes it
  const int64_t count = std::count_if(targets, targets + N, [](int32_t t) { return t >= 0; });
  const float k = count ? dloss / float(count) : 0.0f;
  cross_entropy_rows_backward(dlogits, logits, targets, nullptr, N, V, k);
}

double cross_entropy_weighted_loss(const float* lse, const float* logits, const int32_t* targets,
                                   const float* weights, int64_t N, int64_t V) {
  check_ids(targets, N, V, true, "target");
  double loss = 0.0;
  for (int64_t n = 0; n < N; n++)
    if (targets[n] != kIgnoreIndex)
      loss += double(weights[n]) * (double(lse[n]) - double(logits[n * V + targets[n]]));
  return loss;
}

void cross_entropy_weighted_backward(float* dlogits, const float* logits, const int32_t* targets,
                                     const float* weights, int64_t N, int64_t V, float dloss) {
  check_ids(targets, N, V, true, "target");
  cross_entropy_rows_backward(dlogits, logits, targets, weights, N, V, dloss);
}

}  // namespace whale::train
