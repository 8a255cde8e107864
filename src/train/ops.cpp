#include "train/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

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

// ---- embedding ----

void embedding_forward(float* out, const int32_t* ids, const float* wte, int64_t N, int64_t C,
                       int64_t V) {
  check_ids(ids, N, V, false, "token id");
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < out; o++) y[n * out + o] = dot(x + n * in, W + o * in, in);
}

void matmul_backward(float* dx, float* dW, const float* dy, const float* x, const float* W,
                     int64_t N, int64_t in, int64_t out) {
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++)
      for (int64_t o = 0; o < out; o++) axpy(dy[n * out + o], W + o * in, dx + n * in, in);
  }
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < out; o++)
    for (int64_t n = 0; n < N; n++) axpy(dy[n * out + o], x + n * in, dW + o * in, in);
}

// ---- SwiGLU ----

void swiglu_forward(float* h, const float* g, const float* u, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u,
                     int64_t n) {
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
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

void causal_attention_forward(float* out, float* att, const float* q, const float* k_nope,
                              const float* k_pe, const float* v, const AttnShape& s) {
  const int64_t T = s.T, H = s.H, nope = s.nope, rope = s.rope, dv = s.dv, dqk = s.dqk();
#pragma omp parallel for collapse(2) schedule(static)
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

void causal_attention_backward(float* dq, float* dk_nope, float* dk_pe, float* dv, float* datt,
                               const float* dout, const float* q, const float* k_nope,
                               const float* k_pe, const float* v, const float* att,
                               const AttnShape& s) {
  const int64_t T = s.T, H = s.H, nope = s.nope, rope = s.rope, dvh = s.dv, dqk = s.dqk();
  // Per head, every write (dq, dk_nope, dv, datt) is to that head's own slice.
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < T; j++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = j; i < T; i++)
        axpy(s.scale * datt[(h * T + i) * T + j], q + (i * H + h) * dqk + nope, dk_pe + j * rope,
             rope);
}

// ---- cross-entropy ----

float cross_entropy_forward(float* lse, const float* logits, const int32_t* targets, int64_t N,
                            int64_t V) {
  check_ids(targets, N, V, true, "target");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* l = logits + n * V;
    const float mx = *std::max_element(l, l + V);
    double sum = 0.0;
    for (int64_t v = 0; v < V; v++) sum += std::exp(l[v] - mx);
    lse[n] = mx + float(std::log(sum));
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

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V, float dloss) {
  check_ids(targets, N, V, true, "target");
  const int64_t count = std::count_if(targets, targets + N, [](int32_t t) { return t >= 0; });
  const float k = count ? dloss / float(count) : 0.0f;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* l = logits + n * V;
    float* d = dlogits + n * V;
    if (targets[n] == kIgnoreIndex) {
      std::fill(d, d + V, 0.0f);
      continue;
    }
    for (int64_t v = 0; v < V; v++) d[v] = k * std::exp(l[v] - lse[n]);  // in place is fine
    d[targets[n]] -= k;
  }
}

}  // namespace whale::train
