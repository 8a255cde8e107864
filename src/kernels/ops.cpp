// Reference vector ops (also the scalar path) and the run-time dispatch.
#include "kernels/ops.h"

#include <cmath>

#include "kernels/cpu.h"

namespace whale {

namespace ref {

void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* y) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
  const float r = 1.0f / std::sqrt(ss / float(n) + eps);
  for (int64_t i = 0; i < n; i++) y[i] = w[i] * (x[i] * r);
}

void softmax_inplace(float* x, int64_t n) {
  if (n <= 0) return;
  float m = x[0];
  for (int64_t i = 1; i < n; i++) m = std::fmax(m, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; i++) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  for (int64_t i = 0; i < n; i++) x[i] /= sum;
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

}  // namespace ref

namespace detail {

const OpsKernels kOpsScalar = {ref::rmsnorm, ref::softmax_inplace, ref::silu_mul, ref::dot,
                               ref::axpy,    ref::add_inplace};

namespace {
const OpsKernels& ops() {
  switch (active_isa()) {
    case Isa::Avx512:
      return kOpsAvx512;
    case Isa::Avx2:
      return kOpsAvx2;
    case Isa::Scalar:
      break;
  }
  return kOpsScalar;
}
}  // namespace

}  // namespace detail

void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* y) {
  if (n > 0) detail::ops().rmsnorm(x, w, n, eps, y);
}
void softmax_inplace(float* x, int64_t n) {
  if (n > 0) detail::ops().softmax_inplace(x, n);
}
void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  if (n > 0) detail::ops().silu_mul(gate, up, n, out);
}
float dot(const float* a, const float* b, int64_t n) {
  return n > 0 ? detail::ops().dot(a, b, n) : 0.0f;
}
void axpy(float a, const float* x, float* y, int64_t n) {
  if (n > 0) detail::ops().axpy(a, x, y, n);
}
void add_inplace(float* y, const float* x, int64_t n) {
  if (n > 0) detail::ops().add_inplace(y, x, n);
}

}  // namespace whale
