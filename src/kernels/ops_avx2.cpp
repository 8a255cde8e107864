// AVX2 + FMA vector ops. 8-lane vectors; partial vectors go through a zero-padded buffer.
// No standard-library templates here (see linear_avx512.cpp).
#include <cmath>

#include "kernels/ops.h"
#include "kernels/simd.h"

namespace whale::detail {
namespace {

inline __m256 load_part(const float* p, int64_t n) {
  if (n >= 8) return _mm256_loadu_ps(p);
  float buf[8] = {};
  for (int64_t i = 0; i < n; i++) buf[i] = p[i];
  return _mm256_loadu_ps(buf);
}

inline void store_part(float* p, int64_t n, __m256 v) {
  if (n >= 8) return _mm256_storeu_ps(p, v);
  float buf[8];
  _mm256_storeu_ps(buf, v);
  for (int64_t i = 0; i < n; i++) p[i] = buf[i];
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 2^k for integral k in [-126, 127], built in the exponent field.
inline __m256 pow2i(__m256 k) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}

// exp(x) as in ops_avx512.cpp; the 2^k scaling is split into two factors 2^(k/2) and
// 2^(k - k/2) so that k up to +-150 stays representable (overflow to inf, gradual underflow).
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x);  // NaN-preserving clamps
  x = _mm256_min_ps(_mm256_set1_ps(89.0f), x);
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.42860682030941723212e-6f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256 k1 = _mm256_round_ps(_mm256_mul_ps(k, _mm256_set1_ps(0.5f)),
                                    _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 k2 = _mm256_sub_ps(k, k1);
  const __m256 e = _mm256_mul_ps(_mm256_mul_ps(p, pow2i(k1)), pow2i(k2));
  // The clamps turned NaN into NaN already, but cvtps_epi32(NaN) garbles the exponent: restore.
  return _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

void rmsnorm_avx2(const float* x, const float* w, int64_t n, float eps, float* y) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    a0 = _mm256_fmadd_ps(v0, v0, a0);
    a1 = _mm256_fmadd_ps(v1, v1, a1);
  }
  for (; i < n; i += 8) {
    const __m256 v = load_part(x + i, n - i);
    a0 = _mm256_fmadd_ps(v, v, a0);
  }
  const float ss = hsum(_mm256_add_ps(a0, a1));
  const __m256 r = _mm256_set1_ps(1.0f / std::sqrt(ss / float(n) + eps));
  for (i = 0; i < n; i += 8) {
    const __m256 v = _mm256_mul_ps(load_part(x + i, n - i), r);
    store_part(y + i, n - i, _mm256_mul_ps(load_part(w + i, n - i), v));
  }
}

void softmax_avx2(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; i++) mx = std::fmax(mx, x[i]);
  const __m256 vmax = _mm256_set1_ps(mx);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t k = n - i;
    __m256 e = exp8(_mm256_sub_ps(load_part(x + i, k), vmax));
    if (k < 8) {  // zero the padding lanes before summing
      float buf[8];
      _mm256_storeu_ps(buf, e);
      for (int64_t j = k; j < 8; j++) buf[j] = 0.0f;
      e = _mm256_loadu_ps(buf);
    }
    sum = _mm256_add_ps(sum, e);
    store_part(x + i, k, e);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
  for (int64_t i = 0; i < n; i += 8)
    store_part(x + i, n - i, _mm256_mul_ps(load_part(x + i, n - i), inv));
}

void silu_mul_avx2(const float* gate, const float* up, int64_t n, float* out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 g = load_part(gate + i, n - i), u = load_part(up + i, n - i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    store_part(out + i, n - i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u));
  }
}

float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                 _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int j = 0; j < 4; j++)
      s[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8 * j), _mm256_loadu_ps(b + i + 8 * j), s[j]);
  for (; i < n; i += 8)
    s[0] = _mm256_fmadd_ps(load_part(a + i, n - i), load_part(b + i, n - i), s[0]);
  return hsum(_mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3])));
}

void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  for (int64_t i = 0; i < n; i += 8)
    store_part(y + i, n - i, _mm256_fmadd_ps(va, load_part(x + i, n - i), load_part(y + i, n - i)));
}

void add_inplace_avx2(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 8)
    store_part(y + i, n - i, _mm256_add_ps(load_part(y + i, n - i), load_part(x + i, n - i)));
}

}  // namespace

const OpsKernels kOpsAvx2 = {rmsnorm_avx2, softmax_avx2, silu_mul_avx2,
                             dot_avx2,     axpy_avx2,    add_inplace_avx2};

}  // namespace whale::detail
