// Small f32 vector operations used by the model, vectorised with the same run-time dispatch as
// the matrix kernels (kernels/cpu.h). Single-threaded: the vectors are at most a few tens of
// thousands of elements. Each has a plain reference in ref:: that the fast versions are tested
// against.
#pragma once

#include <cstdint>

namespace whale {

// RMSNorm as in DeepSeek-V3: y = w * (x / sqrt(mean(x^2) + eps)). y may alias x.
void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* y);
// x = softmax(x) over n elements (max-subtracted; -inf entries become 0).
void softmax_inplace(float* x, int64_t n);
// out = silu(gate) * up with silu(g) = g / (1 + exp(-g)). out may alias gate or up.
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
// sum a[i] * b[i].
float dot(const float* a, const float* b, int64_t n);
// y += a * x.
void axpy(float a, const float* x, float* y, int64_t n);
// y += x.
void add_inplace(float* y, const float* x, int64_t n);

namespace ref {
void rmsnorm(const float* x, const float* w, int64_t n, float eps, float* y);
void softmax_inplace(float* x, int64_t n);
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
float dot(const float* a, const float* b, int64_t n);
void axpy(float a, const float* x, float* y, int64_t n);
void add_inplace(float* y, const float* x, int64_t n);
}  // namespace ref

namespace detail {
// One instruction set's implementation of the ops above.
struct OpsKernels {
  void (*rmsnorm)(const float* x, const float* w, int64_t n, float eps, float* y);
  void (*softmax_inplace)(float* x, int64_t n);
  void (*silu_mul)(const float* gate, const float* up, int64_t n, float* out);
  float (*dot)(const float* a, const float* b, int64_t n);
  void (*axpy)(float a, const float* x, float* y, int64_t n);
  void (*add_inplace)(float* y, const float* x, int64_t n);
};
extern const OpsKernels kOpsScalar;  // the ref:: loops
extern const OpsKernels kOpsAvx2;    // ops_avx2.cpp
extern const OpsKernels kOpsAvx512;  // ops_avx512.cpp
}  // namespace detail

}  // namespace whale
