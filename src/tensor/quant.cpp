#include "tensor/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tensor/dtype.h"

namespace whale {
namespace {

constexpr int64_t QK = 32;     // values per block of the simple formats
constexpr int64_t QK_K = 256;  // values per super-block of the k-quants

// The non-linear 4-bit code book of IQ4_NL and IQ4_XS.
constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

float half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Q8_0: d (f16), q[32] (int8).
void dequant_q8_0(const uint8_t* b, float* y) {
  const float d = half(b);
  for (int64_t j = 0; j < QK; j++) y[j] = d * float(int8_t(b[2 + j]));
}

// Q4_0: d, qs[16]; value j < 16 is the low nibble of qs[j], value 16 + j the high one; q - 8.
void dequant_q4_0(const uint8_t* b, float* y) {
  const float d = half(b);
  const uint8_t* qs = b + 2;
  for (int64_t j = 0; j < QK / 2; j++) {
    y[j] = d * float(int(qs[j] & 15) - 8);
    y[j + QK / 2] = d * float(int(qs[j] >> 4) - 8);
  }
}

// Q4_1: d, m, qs[16] as Q4_0 without the offset; x = d * q + m.
void dequant_q4_1(const uint8_t* b, float* y) {
  const float d = half(b), m = half(b + 2);
  const uint8_t* qs = b + 4;
  for (int64_t j = 0; j < QK / 2; j++) {
    y[j] = d * float(qs[j] & 15) + m;
    y[j + QK / 2] = d * float(qs[j] >> 4) + m;
  }
}

// Q5_0: d, qh (u32: bit j is the fifth bit of value j), qs[16] as Q4_0; q - 16.
void dequant_q5_0(const uint8_t* b, float* y) {
  const float d = half(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int64_t j = 0; j < QK / 2; j++) {
    const int lo = (qs[j] & 15) | int((qh >> j) & 1) << 4;
    const int hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
    y[j] = d * float(lo - 16);
    y[j + QK / 2] = d * float(hi - 16);
  }
}

// Q5_1: d, m, qh, qs[16] as Q5_0 without the offset; x = d * q + m.
void dequant_q5_1(const uint8_t* b, float* y) {
  const float d = half(b), m = half(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int64_t j = 0; j < QK / 2; j++) {
    const int lo = (qs[j] & 15) | int((qh >> j) & 1) << 4;
    const int hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
    y[j] = d * float(lo) + m;
    y[j + QK / 2] = d * float(hi) + m;
  }
}

// IQ4_NL: d, qs[16] as Q4_0, each nibble an index into the code book.
void dequant_iq4_nl(const uint8_t* b, float* y) {
  const float d = half(b);
  const uint8_t* qs = b + 2;
  for (int64_t j = 0; j < QK / 2; j++) {
    y[j] = d * float(kIq4Values[qs[j] & 15]);
    y[j + QK / 2] = d * float(kIq4Values[qs[j] >> 4]);
  }
}

// Q2_K: scales[16] (low nibble: scale, high nibble: minimum of each 16 values), qs[64], d, dmin.
// Value e = 128 h + 32 s + l (h < 2, s < 4, l < 32) is bits 2s..2s+1 of qs[32 h + l];
// x = d * scale * q - dmin * min.
void dequant_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = half(b + 80), dmin = half(b + 82);
  for (int64_t e = 0; e < QK_K; e++) {
    const int64_t h = e / 128, s = (e / 32) % 4, l = e % 32;
    const int q = (qs[32 * h + l] >> (2 * s)) & 3;
    const uint8_t sc = scales[e / 16];
    y[e] = d * float(sc & 15) * float(q) - dmin * float(sc >> 4);
  }
}

// Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit scales, offset 32), d.
// Low two bits of value e as in Q2_K; its third bit is bit e / 32 of hmask[e % 32], and a CLEAR
// bit subtracts 4: q = low - (bit ? 0 : 4), in -4..3. Scale j: low nibble from
// scales[j % 8] >> 4 (j / 8), high two bits from scales[8 + j % 4] >> 2 (j / 4).
void dequant_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = half(b + 108);
  for (int64_t e = 0; e < QK_K; e++) {
    const int64_t h = e / 128, s = (e / 32) % 4, l = e % 32, j = e / 16;
    const int low = (qs[32 * h + l] >> (2 * s)) & 3;
    const int bit = (hmask[l] >> (e / 32)) & 1;
    const int q = low - (bit ? 0 : 4);
    const int scale =
        (((sc[j % 8] >> (4 * (j / 8))) & 15) | ((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
    y[e] = d * float(scale) * float(q);
  }
}

// The eight 6-bit scales and minimums of Q4_K / Q5_K, packed in 12 bytes: for j < 4 scale j is
// the low 6 bits of byte j and minimum j those of byte 4 + j; for j >= 4 the low 4 bits come
// from byte 8 + (j - 4) (scale: low nibble, minimum: high nibble) and the top 2 bits from the
// top 2 bits of byte j - 4 (scale) or j (minimum).
void scale_min_k4(const uint8_t* s, int64_t j, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 63;
    *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q4_K: d, dmin, scales[12], qs[128]. Sub-block j (32 values) uses the low (j even) or high (j
// odd) nibbles of qs[32 (j / 2) .. +32); x = d * scale_j * q - dmin * min_j.
void dequant_q4_k(const uint8_t* b, float* y) {
  const float d = half(b), dmin = half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int64_t j = 0; j < 8; j++) {
    int sc, m;
    scale_min_k4(scales, j, &sc, &m);
    const float dl = d * float(sc), ml = dmin * float(m);
    for (int64_t l = 0; l < 32; l++) {
      const int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
      y[32 * j + l] = dl * float(q) - ml;
    }
  }
}

// Q5_K: d, dmin, scales[12], qh[32], qs[128]: Q4_K's nibbles plus a fifth bit, bit j of qh[l]
// for value l of sub-block j.
void dequant_q5_k(const uint8_t* b, float* y) {
  const float d = half(b), dmin = half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int64_t j = 0; j < 8; j++) {
    int sc, m;
    scale_min_k4(scales, j, &sc, &m);
    const float dl = d * float(sc), ml = dmin * float(m);
    for (int64_t l = 0; l < 32; l++) {
      const int q = ((qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15) | ((qh[l] >> j) & 1) << 4;
      y[32 * j + l] = dl * float(q) - ml;
    }
  }
}

// Q6_K: ql[128], qh[64], scales[16] (int8, one per 16 values), d. Value e = 128 h + 32 s + l
// (h < 2, s < 4, l < 32): low 4 bits from ql[64 h + 32 (s % 2) + l] (low nibble for s < 2, high
// for s >= 2), top 2 bits from bits 2s..2s+1 of qh[32 h + l]; q - 32.
void dequant_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half(b + 208);
  for (int64_t e = 0; e < QK_K; e++) {
    const int64_t h = e / 128, s = (e / 32) % 4, l = e % 32;
    const int low = (ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 15;
    const int high = (qh[32 * h + l] >> (2 * s)) & 3;
    const int q = (low | high << 4) - 32;
    y[e] = d * float(scales[e / 16]) * float(q);
  }
}

// IQ4_XS: d, scales_h (u16: 2 high bits per sub-block), scales_l[4] (a nibble per sub-block),
// qs[128]. Sub-block j's scale is (low | high << 4) - 32; its value 16 s + k (s < 2, k < 16) is
// the low (s = 0) or high nibble of qs[16 j + k], an index into the code book.
void dequant_iq4_xs(const uint8_t* b, float* y) {
  const float d = half(b);
  uint16_t scales_h;
  std::memcpy(&scales_h, b + 2, 2);
  const uint8_t* scales_l = b + 4;
  const uint8_t* qs = b + 8;
  for (int64_t j = 0; j < 8; j++) {
    const int low = (scales_l[j / 2] >> (4 * (j % 2))) & 15;
    const int high = (scales_h >> (2 * j)) & 3;
    const float dl = d * float((low | high << 4) - 32);
    for (int64_t s = 0; s < 2; s++)
      for (int64_t k = 0; k < 16; k++)
        y[32 * j + 16 * s + k] = dl * float(kIq4Values[(qs[16 * j + k] >> (4 * s)) & 15]);
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

struct TypeEntry {
  GgmlType type;
  GgmlTypeInfo info;
  BlockFn block;  // nullptr for the element types handled inline
};

const TypeEntry kTypes[] = {
    {GgmlType::F32, {"F32", 1, 4, true}, nullptr},
    {GgmlType::F16, {"F16", 1, 2, true}, nullptr},
    {GgmlType::BF16, {"BF16", 1, 2, true}, nullptr},
    {GgmlType::F64, {"F64", 1, 8, false}, nullptr},
    {GgmlType::I8, {"I8", 1, 1, false}, nullptr},
    {GgmlType::I16, {"I16", 1, 2, false}, nullptr},
    {GgmlType::I32, {"I32", 1, 4, false}, nullptr},
    {GgmlType::I64, {"I64", 1, 8, false}, nullptr},
    {GgmlType::Q4_0, {"Q4_0", QK, 18, true}, dequant_q4_0},
    {GgmlType::Q4_1, {"Q4_1", QK, 20, true}, dequant_q4_1},
    {GgmlType::Q5_0, {"Q5_0", QK, 22, true}, dequant_q5_0},
    {GgmlType::Q5_1, {"Q5_1", QK, 24, true}, dequant_q5_1},
    {GgmlType::Q8_0, {"Q8_0", QK, 34, true}, dequant_q8_0},
    {GgmlType::Q8_1, {"Q8_1", QK, 36, false}, nullptr},
    {GgmlType::Q2_K, {"Q2_K", QK_K, 84, true}, dequant_q2_k},
    {GgmlType::Q3_K, {"Q3_K", QK_K, 110, true}, dequant_q3_k},
    {GgmlType::Q4_K, {"Q4_K", QK_K, 144, true}, dequant_q4_k},
    {GgmlType::Q5_K, {"Q5_K", QK_K, 176, true}, dequant_q5_k},
    {GgmlType::Q6_K, {"Q6_K", QK_K, 210, true}, dequant_q6_k},
    {GgmlType::Q8_K, {"Q8_K", QK_K, 292, false}, nullptr},
    {GgmlType::IQ4_NL, {"IQ4_NL", QK, 18, true}, dequant_iq4_nl},
    {GgmlType::IQ4_XS, {"IQ4_XS", QK_K, 136, true}, dequant_iq4_xs},
};

const TypeEntry* entry(uint32_t type) {
  for (const TypeEntry& e : kTypes)
    if (uint32_t(e.type) == type) return &e;
  return nullptr;
}

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  const TypeEntry* e = entry(type);
  return e ? &e->info : nullptr;
}

size_t ggml_row_bytes(GgmlType type, int64_t n) {
  const GgmlTypeInfo* t = ggml_type_info(uint32_t(type));
  if (!t || n < 0 || n % t->block_size != 0)
    throw std::invalid_argument("ggml_row_bytes: bad type or row length " + std::to_string(n));
  return size_t(n / t->block_size) * size_t(t->block_bytes);
}

void dequantize_row(GgmlType type, const void* src, int64_t n, float* dst) {
  const TypeEntry* e = entry(uint32_t(type));
  if (!e || !e->info.dequantizable)
    throw std::invalid_argument("dequantize_row: type " + std::to_string(uint32_t(type)) +
                                " cannot be converted to f32");
  if (n < 0 || n % e->info.block_size != 0)
    throw std::invalid_argument("dequantize_row: " + std::string(e->info.name) + " row of " +
                                std::to_string(n) + " values is not a whole number of blocks");
  const uint8_t* p = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, p, size_t(n) * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; i++) dst[i] = half(p + 2 * i);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    default:
      break;
  }
  const int64_t bs = e->info.block_size, bb = e->info.block_bytes;
  for (int64_t i = 0; i < n / bs; i++) e->block(p + i * bb, dst + i * bs);
}

namespace {
struct DTypePair {
  GgmlType g;
  DType d;
};
constexpr DTypePair kDTypes[] = {
    {GgmlType::F32, DType::F32},       {GgmlType::F16, DType::F16},
    {GgmlType::BF16, DType::BF16},     {GgmlType::Q4_0, DType::Q4_0},
    {GgmlType::Q4_1, DType::Q4_1},     {GgmlType::Q5_0, DType::Q5_0},
    {GgmlType::Q5_1, DType::Q5_1},     {GgmlType::Q8_0, DType::Q8_0},
    {GgmlType::Q2_K, DType::Q2_K},     {GgmlType::Q3_K, DType::Q3_K},
    {GgmlType::Q4_K, DType::Q4_K},     {GgmlType::Q5_K, DType::Q5_K},
    {GgmlType::Q6_K, DType::Q6_K},     {GgmlType::IQ4_NL, DType::IQ4_NL},
    {GgmlType::IQ4_XS, DType::IQ4_XS},
};
}  // namespace

bool ggml_to_dtype(GgmlType type, DType* out) {
  for (const DTypePair& p : kDTypes)
    if (p.g == type) {
      *out = p.d;
      return true;
    }
  return false;
}

GgmlType dtype_to_ggml(DType t) {
  for (const DTypePair& p : kDTypes)
    if (p.d == t) return p.g;
  throw std::invalid_argument("dtype " + std::string(dtype_name(t)) + " has no GGML type");
}

// ------------------------------------------------------------------ quantizing

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: infinity
  if (ax < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    if (ax < 0x33000000u) return uint16_t(sign);  // below half the smallest subnormal: +-0
    const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // value = m * 2^(e - 150); half subnormal unit 2^-24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) q++;
    return uint16_t(sign | q);
  }
  uint32_t h = ((ax >> 13) - (112u << 10));  // rebias exponent 127 -> 15
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return uint16_t(sign | h);
}

namespace {

void put_half(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// The value of largest magnitude (its sign kept) and the min / max of a block of 32.
float signed_absmax(const float* x) {
  float amax = 0, m = 0;
  for (int j = 0; j < QK; j++)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      m = x[j];
    }
  return m;
}

// Low nibbles of values 0..15 and high nibbles of 16..31 into qs[16]; fifth bits into qh.
void pack(const uint8_t* q, uint8_t* qs, uint32_t* qh) {
  for (int j = 0; j < QK / 2; j++) {
    qs[j] = uint8_t((q[j] & 0xf) | ((q[j + QK / 2] & 0xf) << 4));
    if (qh) *qh |= uint32_t((q[j] >> 4) & 1) << j | uint32_t((q[j + QK / 2] >> 4) & 1) << (j + 16);
  }
}

void quant_q8_0(const float* x, uint8_t* b) {
  float amax = 0;
  for (int j = 0; j < QK; j++) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
  put_half(b, d);
  for (int j = 0; j < QK; j++) b[2 + j] = uint8_t(int8_t(std::roundf(x[j] * id)));
}

// Q4_0 (levels 16, offset 8) and Q5_0 (levels 32, offset 16): symmetric around the extreme value.
void quant_sym(const float* x, uint8_t* b, int levels, bool five_bits) {
  const float m = signed_absmax(x);
  const float d = m / float(-levels / 2), id = d != 0 ? 1.0f / d : 0.0f;
  put_half(b, d);
  uint8_t q[QK];
  for (int j = 0; j < QK; j++)
    q[j] = uint8_t(std::min(levels - 1, int(int8_t(x[j] * id + float(levels / 2) + 0.5f))));
  uint32_t qh = 0;
  pack(q, b + (five_bits ? 6 : 2), five_bits ? &qh : nullptr);
  if (five_bits) std::memcpy(b + 2, &qh, 4);
}

// Q4_1 (levels 16) and Q5_1 (levels 32): d and the minimum.
void quant_affine(const float* x, uint8_t* b, int levels, bool five_bits) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < QK; j++) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  const float d = (hi - lo) / float(levels - 1), id = d != 0 ? 1.0f / d : 0.0f;
  put_half(b, d);
  put_half(b + 2, lo);
  uint8_t q[QK];
  for (int j = 0; j < QK; j++)
    q[j] = uint8_t(std::min(levels - 1, int(int8_t((x[j] - lo) * id + 0.5f))));
  uint32_t qh = 0;
  pack(q, b + (five_bits ? 8 : 4), five_bits ? &qh : nullptr);
  if (five_bits) std::memcpy(b + 4, &qh, 4);
}

// ---- k-quants (llama.cpp's quantize_row_q{4,5,6}_K_ref without an importance matrix)

// Round to nearest, ties to even (llama.cpp's nearest_int under the default rounding mode).
int round_even(float v) {
  return int(std::nearbyintf(v));
}

// Fits the n values x as  scale * L + m  with codes L in 0..nmax and an offset m <= 0, minimising
// the error weighted by w. The first fit spans [min(x, 0), max(x)]; then nstep + 1 grids of
// (nmax + rmin + rdelta * is) steps over that span are tried, each followed by the weighted least-
// squares scale and offset for its codes (offset clamped to 0), and the best fit is kept. Returns
// the scale; *neg_m = -m, the non-negative "minimum" the K formats store.
float fit_scale_offset(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_m,
                       float rmin, float rdelta, int nstep) {
  float lo = x[0], hi = x[0], sum_w = w[0], sum_x = w[0] * x[0];
  for (int i = 1; i < n; i++) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (lo > 0) lo = 0;
  if (hi == lo) {
    for (int i = 0; i < n; i++) L[i] = 0;
    *neg_m = -lo;
    return 0;
  }
  float iscale = float(nmax) / (hi - lo), scale = 1 / iscale, best = 0;
  for (int i = 0; i < n; i++) {
    L[i] = uint8_t(std::clamp(round_even(iscale * (x[i] - lo)), 0, nmax));
    const float diff = scale * L[i] + lo - x[i];
    best += w[i] * (diff * diff);
  }
  uint8_t trial[32];
  for (int is = 0; is <= nstep; is++) {
    iscale = (rmin + rdelta * float(is) + float(nmax)) / (hi - lo);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; i++) {
      const int l = std::clamp(round_even(iscale * (x[i] - lo)), 0, nmax);
      trial[i] = uint8_t(l);
      sum_l += w[i] * float(l);
      sum_l2 += w[i] * float(l) * float(l);
      sum_xl += w[i] * float(l) * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0)) continue;
    float s = (sum_w * sum_xl - sum_x * sum_l) / det;
    float m = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (m > 0) {
      m = 0;
      s = sum_xl / sum_l2;
    }
    float err = 0;
    for (int i = 0; i < n; i++) {
      const float diff = s * trial[i] + m - x[i];
      err += w[i] * (diff * diff);
    }
    if (err < best) {
      std::memcpy(L, trial, size_t(n));
      best = err;
      scale = s;
      lo = m;
    }
  }
  *neg_m = -lo;
  return scale;
}

// Q4_K (nmax 15) and Q5_K (nmax 31): per sub-block of 32 a fitted scale and offset, weighted by
// sqrt(mean x^2) + |x|; both quantized to 6 bits against the block's largest (d, dmin in f16,
// packed as scale_min_k4 reads them); then each code re-rounded against the stored scales.
// Writes d, dmin and scales[12] to b[0..16) and the 256 codes to L.
void quant_k_scales(const float* x, uint8_t* b, int nmax, float rmin, int nstep, uint8_t* L) {
  float scale[8], neg_min[8], w[32], max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; j++) {
    const float* xj = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; l++) sum_x2 += xj[l] * xj[l];
    const float av = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; l++) w[l] = av + std::fabs(xj[l]);
    scale[j] = fit_scale_offset(32, nmax, xj, w, L + 32 * j, &neg_min[j], rmin, 0.1f, nstep);
    max_scale = std::max(max_scale, scale[j]);
    max_min = std::max(max_min, neg_min[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t* sc = b + 4;
  for (int j = 0; j < 8; j++) {
    const uint8_t ls = uint8_t(std::min(63, round_even(inv_scale * scale[j])));
    const uint8_t lm = uint8_t(std::min(63, round_even(inv_min * neg_min[j])));
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = uint8_t((ls & 15) | (lm & 15) << 4);
      sc[j - 4] |= uint8_t((ls >> 4) << 6);
      sc[j] |= uint8_t((lm >> 4) << 6);
    }
  }
  put_half(b, max_scale / 63.f);
  put_half(b + 2, max_min / 63.f);
  const float d = half(b), dmin = half(b + 2);
  for (int j = 0; j < 8; j++) {
    int s, m;
    scale_min_k4(sc, j, &s, &m);
    const float dl = d * float(s);
    if (dl == 0) continue;
    const float ml = dmin * float(m);
    for (int l = 0; l < 32; l++)
      L[32 * j + l] = uint8_t(std::clamp(round_even((x[32 * j + l] + ml) / dl), 0, nmax));
  }
}

void quant_q4_k(const float* x, uint8_t* b) {
  uint8_t L[QK_K];
  quant_k_scales(x, b, 15, -1.0f, 20, L);
  uint8_t* qs = b + 16;
  for (int j = 0; j < QK_K; j += 64, qs += 32)
    for (int l = 0; l < 32; l++) qs[l] = uint8_t(L[j + l] | L[j + l + 32] << 4);
}

void quant_q5_k(const float* x, uint8_t* b) {
  uint8_t L[QK_K];
  quant_k_scales(x, b, 31, -0.5f, 15, L);
  uint8_t* qh = b + 16;
  uint8_t* qs = b + 48;
  std::memset(qh, 0, 32);
  for (int j = 0; j < 8; j += 2, qs += 32)  // sub-blocks j and j + 1 share qs; bit j / j+1 of qh
    for (int l = 0; l < 32; l++) {
      const int lo = L[32 * j + l], hi = L[32 * (j + 1) + l];
      qh[l] |= uint8_t((lo >> 4) << j | (hi >> 4) << (j + 1));
      qs[l] = uint8_t((lo & 15) | (hi & 15) << 4);
    }
}

// Q6_K's per-16 scale: codes in -32..31 against the value of largest magnitude, then 18 stretched
// grids (nmax +- 0.1 k) each with its x^2-weighted least-squares scale; the best kept. Returns the
// scale (0 for an all-zero group).
float fit_scale_q6(const float* x, int8_t* L) {
  constexpr int nmax = 32;
  float amax = 0, mx = 0;
  for (int i = 0; i < 16; i++)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      mx = x[i];
    }
  if (amax < 1e-15f) {
    for (int i = 0; i < 16; i++) L[i] = 0;
    return 0;
  }
  auto code = [](float v) { return std::clamp(round_even(v), -nmax, nmax - 1); };
  float iscale = -float(nmax) / mx, sum_lx = 0, sum_l2 = 0;
  for (int i = 0; i < 16; i++) {
    const int l = code(iscale * x[i]);
    L[i] = int8_t(l + nmax);
    const float w = x[i] * x[i];
    sum_lx += w * x[i] * float(l);
    sum_l2 += w * float(l) * float(l);
  }
  float scale = sum_l2 != 0 ? sum_lx / sum_l2 : 0.0f, best = scale * sum_lx;
  for (int is = -9; is <= 9; is++) {
    if (is == 0) continue;
    iscale = -(float(nmax) + 0.1f * float(is)) / mx;
    sum_lx = sum_l2 = 0;
    for (int i = 0; i < 16; i++) {
      const int l = code(iscale * x[i]);
      const float w = x[i] * x[i];
      sum_lx += w * x[i] * float(l);
      sum_l2 += w * float(l) * float(l);
    }
    if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
      for (int i = 0; i < 16; i++) L[i] = int8_t(code(iscale * x[i]) + nmax);
      scale = sum_lx / sum_l2;
      best = scale * sum_lx;
    }
  }
  return scale;
}

// Q6_K: the 16 group scales quantized to int8 against the one of largest magnitude (d = its
// value / -128), then every code re-rounded against its stored scale; layout as dequant_q6_k.
void quant_q6_k(const float* x, uint8_t* b) {
  int8_t L[QK_K];
  float scale[16], max_scale = 0, max_abs = 0;
  for (int g = 0; g < 16; g++) {
    scale[g] = fit_scale_q6(x + 16 * g, L + 16 * g);
    if (std::fabs(scale[g]) > max_abs) {
      max_abs = std::fabs(scale[g]);
      max_scale = scale[g];
    }
  }
  std::memset(b, 0, 210);
  if (max_abs < 1e-15f) return;  // all zero: d = 0
  int8_t* sc = reinterpret_cast<int8_t*>(b + 192);
  const float iscale = -128.f / max_scale;
  put_half(b + 208, 1 / iscale);
  for (int g = 0; g < 16; g++) sc[g] = int8_t(std::min(127, round_even(iscale * scale[g])));
  const float d = half(b + 208);
  for (int g = 0; g < 16; g++) {
    const float dg = d * float(sc[g]);
    if (dg == 0) continue;
    for (int i = 0; i < 16; i++)
      L[16 * g + i] = int8_t(std::clamp(round_even(x[16 * g + i] / dg), -32, 31) + 32);
  }
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  for (int h = 0; h < 2; h++)  // value 128 h + 32 s + l, as dequant_q6_k reads it
    for (int l = 0; l < 32; l++) {
      const int q0 = L[128 * h + l], q1 = L[128 * h + 32 + l], q2 = L[128 * h + 64 + l],
                q3 = L[128 * h + 96 + l];
      ql[64 * h + l] = uint8_t((q0 & 15) | (q2 & 15) << 4);
      ql[64 * h + 32 + l] = uint8_t((q1 & 15) | (q3 & 15) << 4);
      qh[32 * h + l] = uint8_t((q0 >> 4) | (q1 >> 4) << 2 | (q2 >> 4) << 4 | (q3 >> 4) << 6);
    }
}

}  // namespace

bool quantizable(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return true;
    default:
      return false;
  }
}

void quantize_row(GgmlType type, const float* src, int64_t n, void* dst) {
  if (!quantizable(type))
    throw std::invalid_argument("quantize_row: whale cannot write type " +
                                std::to_string(uint32_t(type)));
  const GgmlTypeInfo* t = ggml_type_info(uint32_t(type));
  if (n < 0 || n % t->block_size != 0)
    throw std::invalid_argument("quantize_row: " + std::string(t->name) + " row of " +
                                std::to_string(n) + " values is not a whole number of blocks");
  uint8_t* out = static_cast<uint8_t*>(dst);
  if (type == GgmlType::F32) {
    std::memcpy(out, src, size_t(n) * 4);
    return;
  }
  if (type == GgmlType::F16 || type == GgmlType::BF16) {
    for (int64_t i = 0; i < n; i++) {
      const uint16_t h = type == GgmlType::F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
      std::memcpy(out + 2 * i, &h, 2);
    }
    return;
  }
  if (t->block_size == QK_K) {
    void (*quant)(const float*, uint8_t*) = type == GgmlType::Q4_K   ? quant_q4_k
                                            : type == GgmlType::Q5_K ? quant_q5_k
                                                                     : quant_q6_k;
    for (int64_t i = 0; i < n / QK_K; i++) quant(src + i * QK_K, out + i * t->block_bytes);
    return;
  }
  for (int64_t i = 0; i < n / QK; i++) {
    const float* x = src + i * QK;
    uint8_t* b = out + i * t->block_bytes;
    switch (type) {
      case GgmlType::Q8_0:
        quant_q8_0(x, b);
        break;
      case GgmlType::Q4_0:
        quant_sym(x, b, 16, false);
        break;
      case GgmlType::Q5_0:
        quant_sym(x, b, 32, true);
        break;
      case GgmlType::Q4_1:
        quant_affine(x, b, 16, false);
        break;
      case GgmlType::Q5_1:
        quant_affine(x, b, 32, true);
        break;
      default:
        break;
    }
  }
}

}  // namespace whale
