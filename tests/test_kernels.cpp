// Tests of the dispatched matrix kernels (kernels/linear.h) and vector ops (kernels/ops.h)
// against the plain reference loops, on every instruction-set path this CPU can run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "isa_scope.h"
#include "kernels/cpu.h"
#include "kernels/linear.h"
#include "kernels/ops.h"

namespace whale {
namespace {

const Isa kAllIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512};

std::string IsaParamName(const testing::TestParamInfo<Isa>& info) {
  return std::string(isa_name(info.param));
}

// IEEE half from f32 (round to nearest even), for making F16 test matrices.
uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const float a = std::fabs(f);
  if (a >= 65520.0f) return uint16_t(sign | 0x7c00u);
  if (a < 6.103515625e-05f) {  // subnormal half: multiple of 2^-24
    return uint16_t(sign | uint32_t(std::nearbyint(a * 16777216.0f)));
  }
  std::memcpy(&u, &a, 4);
  uint32_t h = ((u >> 13) - (112u << 10));
  const uint32_t rest = u & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
  return uint16_t(sign | h);
}

// A quantised/stored matrix owning its bytes (and FP8 block scales).
struct Matrix {
  DType dtype;
  int64_t rows, cols;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;  // FP8: [ceil(rows/128)][ceil(cols/128)]

  WeightRef ref() const {
    WeightRef w;
    w.dtype = dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = bytes.data();
    if (dtype == DType::F8_E4M3 && !scales.empty()) {
      w.scale_inv = scales.data();
      w.scale_cols = (cols + 127) / 128;
    }
    return w;
  }
};

// Random weights of roughly unit size (FP8: bytes over the whole range but NaN, times scales).
Matrix random_matrix(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  Matrix m{dtype, rows, cols, std::vector<uint8_t>(rows * cols * dtype_size(dtype)), {}};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < rows * cols; i++) {
    const float v = normal(rng);
    switch (dtype) {
      case DType::F32:
        std::memcpy(&m.bytes[i * 4], &v, 4);
        break;
      case DType::BF16: {
        const uint16_t h = f32_to_bf16(v);
        std::memcpy(&m.bytes[i * 2], &h, 2);
        break;
      }
      case DType::F16: {
        const uint16_t h = f32_to_f16(v);
        std::memcpy(&m.bytes[i * 2], &h, 2);
        break;
      }
      case DType::F8_E4M3: {
        uint8_t b;
        do b = uint8_t(rng());
        while ((b & 0x7f) == 0x7f);
        m.bytes[i] = b;
        break;
      }
      default:
        break;
    }
  }
  if (dtype == DType::F8_E4M3) {
    std::uniform_real_distribution<float> scale(1e-3f, 4e-3f);
    m.scales.resize(((rows + 127) / 128) * ((cols + 127) / 128));
    for (float& s : m.scales) s = scale(rng);
  }
  return m;
}

std::vector<float> random_vector(int64_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> normal(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// |y - y_ref| <= tol * sum_i |x_i w_i| for each output (an f32 reassociation bound), and NaN
// exactly where the reference has NaN.
void expect_close(const std::vector<float>& y, const std::vector<float>& want,
                  const std::vector<double>& magnitude, double tol, const std::string& what) {
  ASSERT_EQ(y.size(), want.size());
  int reported = 0;
  for (size_t i = 0; i < y.size() && reported < 5; i++) {
    if (std::isnan(want[i]) || std::isnan(y[i])) {
      if (std::isnan(want[i]) != std::isnan(y[i])) {
        ADD_FAILURE() << what << " [" << i << "]: got " << y[i] << ", want " << want[i];
        reported++;
      }
      continue;
    }
    const double err = std::fabs(double(y[i]) - double(want[i]));
    if (err > tol * magnitude[i] + 1e-30) {
      ADD_FAILURE() << what << " [" << i << "]: got " << y[i] << ", want " << want[i] << " (err "
                    << err << ", scale " << magnitude[i] << ")";
      reported++;
    }
  }
}

// sum_c |x[t][c] W[r][c]| for each output of linear().
std::vector<double> linear_magnitude(const float* x, int64_t n, const WeightRef& w) {
  std::vector<double> m(n * w.rows, 0.0);
  std::vector<double> row(w.cols);
  for (int64_t r = 0; r < w.rows; r++) {
    for (int64_t c = 0; c < w.cols; c++) row[c] = std::fabs(ref::weight_at(w, r, c));
    for (int64_t t = 0; t < n; t++) {
      double s = 0.0;
      for (int64_t c = 0; c < w.cols; c++) s += std::fabs(x[t * w.cols + c]) * row[c];
      m[t * w.rows + r] = s;
    }
  }
  return m;
}

std::vector<double> linear_t_magnitude(const float* x, int64_t n, const WeightRef& w) {
  std::vector<double> m(n * w.cols, 0.0);
  for (int64_t r = 0; r < w.rows; r++)
    for (int64_t c = 0; c < w.cols; c++) {
      const double a = std::fabs(ref::weight_at(w, r, c));
      for (int64_t t = 0; t < n; t++) m[t * w.cols + c] += std::fabs(x[t * w.rows + r]) * a;
    }
  return m;
}

constexpr double kTol = 1e-5;
const DType kDtypes[] = {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3};

void check_linear(const WeightRef& w, int64_t n, std::mt19937& rng, const std::string& what) {
  const std::vector<float> x = random_vector(n * w.cols, rng);
  std::vector<float> y(n * w.rows, -7.0f), want(n * w.rows);
  linear(x.data(), n, w, y.data());
  ref::linear(x.data(), n, w, want.data());
  expect_close(y, want, linear_magnitude(x.data(), n, w), kTol, what);
}

void check_linear_t(const WeightRef& w, int64_t n, std::mt19937& rng, const std::string& what) {
  const std::vector<float> x = random_vector(n * w.rows, rng);
  std::vector<float> y(n * w.cols, -7.0f), want(n * w.cols);
  linear_t(x.data(), n, w, y.data());
  ref::linear_t(x.data(), n, w, want.data());
  expect_close(y, want, linear_t_magnitude(x.data(), n, w), kTol, what);
}

std::string describe(DType d, int64_t rows, int64_t cols, int64_t n) {
  return std::string(dtype_name(d)) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
         " n=" + std::to_string(n);
}

// ---- CPU detection and settings ----

TEST(KernelCpu, IsaNamesRoundTripAndFallback) {
  for (Isa isa : kAllIsas) {
    Isa parsed;
    ASSERT_TRUE(isa_from_name(isa_name(isa), &parsed));
    EXPECT_EQ(parsed, isa);
  }
  Isa parsed;
  EXPECT_FALSE(isa_from_name("sse9", &parsed));
  EXPECT_TRUE(isa_supported(Isa::Scalar));
  EXPECT_TRUE(isa_supported(best_isa()));
  const CpuFeatures& f = cpu_features();
  EXPECT_EQ(isa_supported(Isa::Avx2), f.avx2 && f.fma && f.f16c);
  if (isa_supported(Isa::Avx512)) {
    EXPECT_TRUE(f.avx512f && f.avx512bw && f.avx512bf16);
    EXPECT_EQ(best_isa(), Isa::Avx512);
  }
  IsaScope scope(Isa::Scalar);
  EXPECT_EQ(active_isa(), Isa::Scalar);
  for (Isa isa : kAllIsas) EXPECT_EQ(set_isa(isa), isa_supported(isa) ? isa : best_isa());
}

TEST(KernelCpu, ThreadsAndDescription) {
  const int all = num_threads();
  EXPECT_GE(all, 1);
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  EXPECT_NE(cpu_description().find("threads: 1"), std::string::npos);
  set_num_threads(0);
  EXPECT_EQ(num_threads(), all);
  EXPECT_NE(cpu_description().find(std::string("kernels: ") + std::string(isa_name(active_isa()))),
            std::string::npos);
}

// ---- linear / linear_t / weight_row on each ISA ----

class KernelIsa : public testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam())) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
    scope_ = std::make_unique<IsaScope>(GetParam());
    ASSERT_EQ(active_isa(), GetParam());
  }
  void TearDown() override { scope_.reset(); }
  std::unique_ptr<IsaScope> scope_;
};

INSTANTIATE_TEST_SUITE_P(Kernel, KernelIsa, testing::ValuesIn(kAllIsas), IsaParamName);

const int64_t kSizes[] = {1, 3, 17, 127, 128, 129, 300};

TEST_P(KernelIsa, LinearDecodeOddSizes) {
  std::mt19937 rng(1);
  for (DType d : kDtypes)
    for (int64_t rows : kSizes)
      for (int64_t cols : kSizes) {
        const Matrix m = random_matrix(d, rows, cols, rng);
        for (int64_t n : {1, 2, 3, 4}) check_linear(m.ref(), n, rng, describe(d, rows, cols, n));
      }
}

TEST_P(KernelIsa, LinearPrefillOddSizes) {
  std::mt19937 rng(2);
  for (DType d : kDtypes)
    for (int64_t rows : kSizes)
      for (int64_t cols : kSizes) {
        const Matrix m = random_matrix(d, rows, cols, rng);
        for (int64_t n : {5, 13}) check_linear(m.ref(), n, rng, describe(d, rows, cols, n));
      }
  for (DType d : kDtypes)
    for (int64_t rows : {33, 300})
      for (int64_t cols : {127, 520}) {
        const Matrix m = random_matrix(d, rows, cols, rng);
        for (int64_t n : {12, 33, 64}) check_linear(m.ref(), n, rng, describe(d, rows, cols, n));
      }
}

// Big enough to be split across threads, with panels and row tiles that do not divide evenly.
TEST_P(KernelIsa, LinearLargeMultithreaded) {
  std::mt19937 rng(3);
  for (DType d : kDtypes) {
    const Matrix m = random_matrix(d, 389, 1100, rng);
    for (int64_t n : {1, 4, 33}) check_linear(m.ref(), n, rng, describe(d, 389, 1100, n));
  }
}

// Results do not depend on the number of threads (each output is computed by one thread in a
// fixed order).
TEST_P(KernelIsa, LinearSameForAnyThreadCount) {
  std::mt19937 rng(4);
  for (DType d : kDtypes) {
    const Matrix m = random_matrix(d, 515, 777, rng);
    for (int64_t n : {1, 3, 20}) {
      const std::vector<float> x = random_vector(n * m.cols, rng);
      std::vector<float> y1(n * m.rows), y2(n * m.rows);
      set_num_threads(1);
      linear(x.data(), n, m.ref(), y1.data());
      set_num_threads(2);
      linear(x.data(), n, m.ref(), y2.data());
      set_num_threads(0);
      EXPECT_EQ(y1, y2) << describe(d, m.rows, m.cols, n);
    }
  }
}

// Views from slice_rows start mid-block: FP8 must find each row's block scale through row0.
TEST_P(KernelIsa, LinearRowViews) {
  std::mt19937 rng(5);
  for (DType d : kDtypes) {
    const Matrix m = random_matrix(d, 400, 300, rng);
    for (int64_t r0 : {1, 37, 100, 130, 255}) {
      for (int64_t len : {1, 5, 29, 140}) {
        if (r0 + len > m.rows) continue;
        const WeightRef v = m.ref().slice_rows(r0, len);
        ASSERT_EQ(v.row0, r0);
        for (int64_t n : {1, 2, 5, 33}) {
          const std::string what = describe(d, len, 300, n) + " view@" + std::to_string(r0);
          check_linear(v, n, rng, what);
          check_linear_t(v, std::min<int64_t>(n, 5), rng, what + " (t)");
        }
      }
    }
  }
}

TEST_P(KernelIsa, LinearTransposed) {
  std::mt19937 rng(6);
  for (DType d : kDtypes)
    for (int64_t rows : kSizes)
      for (int64_t cols : kSizes) {
        const Matrix m = random_matrix(d, rows, cols, rng);
        for (int64_t n : {1, 2, 5}) check_linear_t(m.ref(), n, rng, describe(d, rows, cols, n));
      }
  for (DType d : kDtypes) {  // large: split across threads
    const Matrix m = random_matrix(d, 256, 1500, rng);
    for (int64_t n : {1, 4, 9}) check_linear_t(m.ref(), n, rng, describe(d, 256, 1500, n));
  }
}

// A NaN weight makes its row's outputs NaN (as in the reference) and leaves other rows alone.
TEST_P(KernelIsa, Fp8NanWeightsPropagate) {
  std::mt19937 rng(7);
  Matrix m = random_matrix(DType::F8_E4M3, 40, 300, rng);
  m.bytes[3 * 300 + 5] = 0x7f;     // row 3, in a full 64-column stretch
  m.bytes[17 * 300 + 299] = 0xff;  // row 17, last column (tail)
  m.bytes[30 * 300 + 130] = 0xff;  // row 30, second scale block
  for (int64_t n : {1, 4, 5, 33}) {
    const std::vector<float> x = random_vector(n * m.cols, rng);
    std::vector<float> y(n * m.rows);
    linear(x.data(), n, m.ref(), y.data());
    for (int64_t t = 0; t < n; t++)
      for (int64_t r = 0; r < m.rows; r++)
        EXPECT_EQ(std::isnan(y[t * m.rows + r]), r == 3 || r == 17 || r == 30)
            << "n=" << n << " t=" << t << " r=" << r;
  }
  check_linear_t(m.ref(), 2, rng, "fp8 with NaN (t)");
}

bool same_value(float got, float want) {
  if (std::isnan(want)) return std::isnan(got);
  uint32_t a, b;
  std::memcpy(&a, &got, 4);
  std::memcpy(&b, &want, 4);
  return a == b;  // bitwise: keeps the sign of zero
}

// Every bit pattern, through weight_row: equal to the scalar conversions in tensor/dtype.h.
TEST_P(KernelIsa, WeightRowConvertsEveryBitPattern) {
  Matrix fp8{DType::F8_E4M3, 1, 256, std::vector<uint8_t>(256), {}};
  for (int i = 0; i < 256; i++) fp8.bytes[i] = uint8_t(i);
  std::vector<float> out(65536);
  weight_row(fp8.ref(), 0, out.data());
  for (int i = 0; i < 256; i++)
    EXPECT_TRUE(same_value(out[i], fp8_e4m3_to_f32(uint8_t(i)))) << "fp8 0x" << std::hex << i;

  fp8.scales = {0.75f, 3.0f};  // two column blocks
  weight_row(fp8.ref(), 0, out.data());
  for (int i = 0; i < 256; i++)
    EXPECT_TRUE(same_value(out[i], fp8_e4m3_to_f32(uint8_t(i)) * (i < 128 ? 0.75f : 3.0f)))
        << "scaled fp8 0x" << std::hex << i;

  for (DType d : {DType::BF16, DType::F16}) {
    Matrix m{d, 1, 65536, std::vector<uint8_t>(2 * 65536), {}};
    for (int i = 0; i < 65536; i++) {
      const uint16_t h = uint16_t(i);
      std::memcpy(&m.bytes[2 * i], &h, 2);
    }
    weight_row(m.ref(), 0, out.data());
    int bad = 0;
    for (int i = 0; i < 65536 && bad < 5; i++) {
      const float want = d == DType::BF16 ? bf16_to_f32(uint16_t(i)) : f16_to_f32(uint16_t(i));
      if (!same_value(out[i], want)) {
        ADD_FAILURE() << dtype_name(d) << " 0x" << std::hex << i << ": " << out[i] << " vs "
                      << want;
        bad++;
      }
    }
  }
}

// Every bit pattern through the fused conversions inside linear (GEMV and GEMM) and linear_t:
// with one-hot activations each output is a single weight, so results must equal the reference
// exactly (NaN wherever the reference row/column holds a NaN or an infinity times zero).
void check_exact(const WeightRef& w, const std::vector<float>& x, int64_t n, bool transposed,
                 const std::string& what) {
  const int64_t out = transposed ? w.cols : w.rows;
  std::vector<float> y(n * out), want(n * out);
  if (transposed) {
    linear_t(x.data(), n, w, y.data());
    ref::linear_t(x.data(), n, w, want.data());
  } else {
    linear(x.data(), n, w, y.data());
    ref::linear(x.data(), n, w, want.data());
  }
  int bad = 0;
  for (int64_t i = 0; i < n * out && bad < 5; i++) {
    const bool ok = std::isnan(want[i]) ? std::isnan(y[i]) : y[i] == want[i];
    if (!ok) {
      ADD_FAILURE() << what << " [" << i << "]: " << y[i] << " vs " << want[i];
      bad++;
    }
  }
}

TEST_P(KernelIsa, FusedConversionsEveryBitPattern) {
  for (DType d : {DType::F8_E4M3, DType::BF16, DType::F16}) {
    const int64_t patterns = d == DType::F8_E4M3 ? 256 : 65536;
    const size_t es = dtype_size(d);
    // [patterns/16 x 16]: pattern r*16 + c at (r, c).
    Matrix m{d, patterns / 16, 16, std::vector<uint8_t>(patterns * es), {}};
    for (int64_t i = 0; i < patterns; i++) {
      const uint16_t v = uint16_t(i);
      std::memcpy(&m.bytes[i * es], &v, es);  // little-endian: the low byte for FP8
    }
    if (d == DType::F8_E4M3) m.scales = {1.0f};
    // GEMM: token t = e_t picks column t.
    std::vector<float> eye(16 * 16, 0.0f);
    for (int t = 0; t < 16; t++) eye[t * 16 + t] = 1.0f;
    check_exact(m.ref(), eye, 16, false, std::string(dtype_name(d)) + " gemm");
    // GEMV: four calls of four one-hot tokens.
    for (int t0 = 0; t0 < 16; t0 += 4)
      check_exact(m.ref(), std::vector<float>(eye.begin() + t0 * 16, eye.begin() + (t0 + 4) * 16),
                  4, false, std::string(dtype_name(d)) + " gemv");
    // linear_t over the transposed layout [16 x patterns/16]: token t = e_t picks row t.
    Matrix mt = m;
    mt.rows = 16;
    mt.cols = patterns / 16;
    if (d == DType::F8_E4M3) mt.scales = {1.0f};
    std::vector<float> eye_t(16 * 16, 0.0f);
    for (int t = 0; t < 16; t++) eye_t[t * 16 + t] = 1.0f;
    check_exact(mt.ref(), eye_t, 16, true, std::string(dtype_name(d)) + " linear_t");
  }
}

TEST_P(KernelIsa, WeightRowMatchesReference) {
  std::mt19937 rng(8);
  for (DType d : kDtypes) {
    const Matrix m = random_matrix(d, 260, 301, rng);
    const WeightRef v = m.ref().slice_rows(100, 160);
    std::vector<float> row(301);
    for (int64_t r : {0, 27, 28, 159}) {
      weight_row(v, r, row.data());
      for (int64_t c = 0; c < 301; c++)
        ASSERT_TRUE(same_value(row[c], ref::weight_at(v, r, c)))
            << dtype_name(d) << " r=" << r << " c=" << c;
    }
  }
}

TEST_P(KernelIsa, EmptyInnerDimensionGivesZeros) {
  Matrix m{DType::BF16, 5, 0, {}, {}};
  std::vector<float> y(10, 3.0f);
  linear(nullptr, 2, m.ref(), y.data());
  EXPECT_EQ(y, std::vector<float>(10, 0.0f));
  Matrix mt{DType::BF16, 0, 5, {}, {}};
  linear_t(nullptr, 2, mt.ref(), y.data());
  EXPECT_EQ(y, std::vector<float>(10, 0.0f));
}

// ---- linear_many, the small-n path, the FP8 conversion table ----

// Switches the AVX-512 FP8 table conversion (VBMI) on or off for a scope.
class Fp8VbmiScope {
 public:
  explicit Fp8VbmiScope(bool on) : saved_(detail::fp8_vbmi_enabled()) { detail::set_fp8_vbmi(on); }
  ~Fp8VbmiScope() { detail::set_fp8_vbmi(saved_); }

 private:
  bool saved_;
};

// Batches of products with mixed dtypes, shapes and token counts (the MoE pattern plus odd
// sizes), on 1 and 2 threads: each output matches ref::linear, and is bitwise what linear() gives.
TEST_P(KernelIsa, LinearManyMatchesLinear) {
  std::mt19937 rng(9);
  struct Spec {
    DType d;
    int64_t rows, cols, n;
  };
  const Spec specs[] = {{DType::BF16, 512, 256, 1},    {DType::BF16, 512, 256, 1},
                        {DType::F8_E4M3, 384, 300, 3}, {DType::F32, 7, 129, 5},
                        {DType::F16, 300, 127, 16},    {DType::F8_E4M3, 260, 256, 9},
                        {DType::BF16, 1, 64, 33},      {DType::F16, 200, 0, 2},
                        {DType::F32, 0, 10, 2},        {DType::BF16, 64, 520, 0}};
  std::vector<Matrix> mats;
  std::vector<std::vector<float>> xs, ys, want;
  for (const Spec& sp : specs) {
    mats.push_back(random_matrix(sp.d, sp.rows, sp.cols, rng));
    xs.push_back(random_vector(sp.n * sp.cols, rng));
    ys.emplace_back(size_t(sp.n * sp.rows), -7.0f);
    want.emplace_back(size_t(sp.n * sp.rows), -7.0f);
  }
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<LinearJob> jobs;
    for (size_t i = 0; i < mats.size(); i++) {
      jobs.push_back({xs[i].data(), specs[i].n, mats[i].ref(), ys[i].data()});
      linear(xs[i].data(), specs[i].n, mats[i].ref(), want[i].data());
    }
    linear_many(jobs);
    for (size_t i = 0; i < mats.size(); i++) {
      const Spec& sp = specs[i];
      const std::string what = describe(sp.d, sp.rows, sp.cols, sp.n) + " job " +
                               std::to_string(i) + " threads " + std::to_string(threads);
      EXPECT_EQ(ys[i], want[i]) << what;
      std::vector<float> r(size_t(sp.n * sp.rows));
      ref::linear(xs[i].data(), sp.n, mats[i].ref(), r.data());
      expect_close(ys[i], r, linear_magnitude(xs[i].data(), sp.n, mats[i].ref()), kTol, what);
    }
  }
  set_num_threads(0);
  linear_many({});  // nothing to do
}

// Big enough that one job is split between threads at a row that is not a job boundary.
TEST_P(KernelIsa, LinearManySplitsInsideAJob) {
  std::mt19937 rng(10);
  const Matrix a = random_matrix(DType::BF16, 1000, 700, rng);
  const Matrix b = random_matrix(DType::F8_E4M3, 100, 700, rng);
  for (int64_t n : {1, 7}) {
    const std::vector<float> x = random_vector(n * 700, rng);
    std::vector<float> ya(size_t(n * 1000)), yb(size_t(n * 100)), wa(ya.size()), wb(yb.size());
    const LinearJob jobs[] = {{x.data(), n, a.ref(), ya.data()}, {x.data(), n, b.ref(), yb.data()}};
    set_num_threads(2);
    linear_many(jobs);
    set_num_threads(1);
    linear(x.data(), n, a.ref(), wa.data());
    linear(x.data(), n, b.ref(), wb.data());
    set_num_threads(0);
    EXPECT_EQ(ya, wa) << "n=" << n;
    EXPECT_EQ(yb, wb) << "n=" << n;
  }
}

// Every token count around the GEMV / small-n / GEMM crossovers, odd shapes, FP8 with and without
// the table conversion.
TEST_P(KernelIsa, LinearSmallBatches) {
  std::mt19937 rng(11);
  for (bool vbmi : {true, false}) {
    Fp8VbmiScope scope(vbmi);
    for (DType d : kDtypes)
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{37, 200}, {130, 67}, {9, 1100}}) {
        const Matrix m = random_matrix(d, rows, cols, rng);
        for (int64_t n = 1; n <= 34; n += (n < 18 ? 1 : 5))
          check_linear(m.ref(), n, rng, describe(d, rows, cols, n) + (vbmi ? "" : " no-vbmi"));
      }
  }
}

// The FP8 -> bf16 table (sign merged) reproduces fp8_e4m3_to_f32 for all 256 codes, bitwise.
TEST(KernelFp8, Bf16TableIsExact) {
  const uint8_t* t = detail::fp8_bf16_table();
  for (int code = 0; code < 256; code++) {
    const int c = code & 0x7f;
    const uint32_t h = uint32_t(t[c] | (code & 0x80)) << 8 | t[128 + c];
    float f;
    const uint32_t bits = h << 16;
    std::memcpy(&f, &bits, 4);
    EXPECT_TRUE(same_value(f, fp8_e4m3_to_f32(uint8_t(code)))) << "0x" << std::hex << code;
  }
}

// All 256 FP8 codes through every FP8 product path (table conversion on and off), exactly.
TEST_P(KernelIsa, Fp8EveryCodeOnEveryPath) {
  Matrix m{DType::F8_E4M3, 16, 16, std::vector<uint8_t>(256), {1.0f}};
  for (int i = 0; i < 256; i++) m.bytes[size_t(i)] = uint8_t(i);
  // Rows of 128 columns too, so the 64-byte vector loops (not only the tails) see every code; the
  // NaN codes (which make a whole row NaN, checked by the 16x16 rows 7 and 15) become zeros here.
  Matrix wide{DType::F8_E4M3, 2, 128, m.bytes, {1.0f}};
  wide.bytes[0x7f] = 0x00;
  wide.bytes[0xff] = 0x80;
  for (bool vbmi : {true, false}) {
    Fp8VbmiScope scope(vbmi);
    for (int64_t n : {1, 2, 3, 4, 5, 8, 16, 17}) {
      std::vector<float> x(size_t(n * 16), 0.0f), xw(size_t(n * 128), 0.0f);
      for (int64_t t = 0; t < n; t++) x[size_t(t * 16 + t % 16)] = 1.0f;
      check_exact(m.ref(), x, n, false, "fp8 16x16 n=" + std::to_string(n));
      for (int64_t c0 = 0; c0 < 128; c0 += n) {  // one-hot columns c0 .. c0 + n - 1
        std::fill(xw.begin(), xw.end(), 0.0f);
        for (int64_t t = 0; t < n && c0 + t < 128; t++) xw[size_t(t * 128 + c0 + t)] = 1.0f;
        check_exact(wide.ref(), xw, n, false, "fp8 2x128 n=" + std::to_string(n));
      }
    }
  }
}

// ---- Vector ops ----

class OpsIsa : public KernelIsa {};
INSTANTIATE_TEST_SUITE_P(Ops, OpsIsa, testing::ValuesIn(kAllIsas), IsaParamName);

const int64_t kOpSizes[] = {1, 2, 7, 15, 16, 17, 31, 33, 64, 100, 1000, 7168};

void expect_near_rel(const std::vector<float>& got, const std::vector<double>& want, double rel,
                     double abs, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); i++)
    ASSERT_NEAR(got[i], want[i], rel * std::fabs(want[i]) + abs) << what << " [" << i << "]";
}

TEST_P(OpsIsa, RmsNorm) {
  std::mt19937 rng(10);
  for (int64_t n : kOpSizes) {
    const std::vector<float> x = random_vector(n, rng, 3.0f), w = random_vector(n, rng);
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const double r = 1.0 / std::sqrt(ss / n + 1e-6);
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; i++) want[i] = w[i] * (x[i] * r);
    std::vector<float> y(n), y_ref(n);
    rmsnorm(x.data(), w.data(), n, 1e-6f, y.data());
    ref::rmsnorm(x.data(), w.data(), n, 1e-6f, y_ref.data());
    expect_near_rel(y, want, 1e-5, 0, "rmsnorm n=" + std::to_string(n));
    expect_near_rel(y_ref, want, 1e-5, 0, "ref::rmsnorm n=" + std::to_string(n));
    std::vector<float> inplace = x;  // y may alias x
    rmsnorm(inplace.data(), w.data(), n, 1e-6f, inplace.data());
    EXPECT_EQ(inplace, y);
  }
}

TEST_P(OpsIsa, Softmax) {
  std::mt19937 rng(11);
  for (int64_t n : kOpSizes) {
    std::vector<float> x = random_vector(n, rng, 8.0f);
    if (n > 3) x[2] = -INFINITY;  // masked entry
    double m = -INFINITY;
    for (float v : x) m = std::max(m, double(v));
    std::vector<double> want(n);
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += want[i] = std::exp(double(x[i]) - m);
    for (double& v : want) v /= sum;
    std::vector<float> y = x, y_ref = x;
    softmax_inplace(y.data(), n);
    ref::softmax_inplace(y_ref.data(), n);
    expect_near_rel(y, want, 2e-6, 1e-12, "softmax n=" + std::to_string(n));
    expect_near_rel(y_ref, want, 2e-6, 1e-12, "ref::softmax n=" + std::to_string(n));
    if (n > 3) {
      EXPECT_EQ(y[2], 0.0f);
    }
  }
  // Extreme spreads: exp underflows to zero for the small ones, no overflow for the large one.
  std::vector<float> x = {1000.0f, 0.0f, -1000.0f, 999.0f};
  softmax_inplace(x.data(), 4);
  EXPECT_NEAR(x[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_NEAR(x[3], std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-6);
}

TEST_P(OpsIsa, SiluMul) {
  std::mt19937 rng(12);
  for (int64_t n : kOpSizes) {
    std::vector<float> g = random_vector(n, rng, 4.0f), u = random_vector(n, rng);
    if (n > 4) {  // saturation and zero
      g[0] = 100.0f;
      g[1] = -100.0f;
      g[3] = 0.0f;
    }
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; i++) want[i] = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
    std::vector<float> y(n), y_ref(n);
    silu_mul(g.data(), u.data(), n, y.data());
    ref::silu_mul(g.data(), u.data(), n, y_ref.data());
    expect_near_rel(y, want, 2e-6, 1e-30, "silu_mul n=" + std::to_string(n));
    expect_near_rel(y_ref, want, 2e-6, 1e-30, "ref::silu_mul n=" + std::to_string(n));
    std::vector<float> inplace = g;  // out may alias gate
    silu_mul(inplace.data(), u.data(), n, inplace.data());
    EXPECT_EQ(inplace, y);
  }
}

TEST_P(OpsIsa, DotAxpyAdd) {
  std::mt19937 rng(13);
  for (int64_t n : kOpSizes) {
    const std::vector<float> a = random_vector(n, rng), b = random_vector(n, rng);
    double want = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) want += double(a[i]) * b[i], mag += std::fabs(a[i] * b[i]);
    EXPECT_NEAR(dot(a.data(), b.data(), n), want, 1e-6 * mag) << "dot n=" << n;
    EXPECT_NEAR(ref::dot(a.data(), b.data(), n), want, 1e-5 * mag) << "ref::dot n=" << n;

    std::vector<float> y = b, y_ref = b;
    axpy(-1.5f, a.data(), y.data(), n);
    ref::axpy(-1.5f, a.data(), y_ref.data(), n);
    for (int64_t i = 0; i < n; i++)
      ASSERT_NEAR(y[i], b[i] - 1.5 * a[i], 1e-6 * (std::fabs(b[i]) + std::fabs(1.5 * a[i])));
    for (int64_t i = 0; i < n; i++)
      ASSERT_NEAR(y_ref[i], y[i], 1e-6 * (std::fabs(b[i]) + std::fabs(1.5 * a[i])));

    std::vector<float> z = b;
    add_inplace(z.data(), a.data(), n);
    for (int64_t i = 0; i < n; i++) ASSERT_EQ(z[i], b[i] + a[i]) << "add n=" << n;
    ref::add_inplace(y_ref.data(), a.data(), n);  // exercise the reference too
  }
  EXPECT_EQ(dot(nullptr, nullptr, 0), 0.0f);
}

}  // namespace
}  // namespace whale
