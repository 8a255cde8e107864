// Benchmarks of the matrix kernels for each dtype, instruction set and thread count.
//
//   Read/threads:T               sum over a 1 GiB buffer: the machine's read bandwidth (bytes/s)
//   GEMV/<dtype>/<RxC>/n<N>/...  decode: weight bytes streamed per second (bytes_per_second);
//                                 cycles through enough copies of the matrix (>= 512 MiB) that
//                                 the weights come from DRAM, as in a real forward pass
//   GEMM/<dtype>/<RxC>/n<N>/...  prefill: FLOP/s (2 * rows * cols * n per call)
//   LinearT/...                   the transposed product, as GEMV
//   LinearMany/..., LinearEach/...  8 experts' gate+up products [512 x 1024] in one linear_many
//                                 call vs one linear() call each (bytes_per_second)
// Filter with e.g. --benchmark_filter='GEMV/BF16.*avx512'.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/linear.h"
#include "kernels/repack.h"
#include "tensor/quant.h"

namespace whale {
namespace {

constexpr int64_t kMiB = int64_t(1) << 20;

// ---- read bandwidth ----

void BM_Read(benchmark::State& state) {
  const int threads = int(state.range(0));
  const int64_t words = (int64_t(1) << 30) / 8;
  static std::vector<uint64_t> buf(words, 1);  // 1 GiB, touched once
  uint64_t total = 0;
  for (auto _ : state) {
    uint64_t sum = 0;
#pragma omp parallel for reduction(+ : sum) num_threads(threads) schedule(static)
    for (int64_t i = 0; i < words; i++) sum += buf[i];
    total += sum;
  }
  benchmark::DoNotOptimize(total);
  state.SetBytesProcessed(state.iterations() * words * 8);
  state.SetLabel(cpu_description());
}
BENCHMARK(BM_Read)->Name("Read")->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->MinTime(1.0);

// ---- weight matrices ----

// `copies` back-to-back [rows x cols] matrices of realistic values (FP8 with block scales).
struct Weights {
  DType dtype;
  int64_t rows, cols, copies;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;

  WeightRef at(int64_t i) const {
    WeightRef w;
    w.dtype = dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = bytes.data() + i * matrix_bytes();
    if (dtype == DType::F8_E4M3) {
      w.scale_inv = scales.data();
      w.scale_cols = (cols + 127) / 128;
    }
    return w;
  }
  int64_t matrix_bytes() const { return rows * int64_t(dtype_row_bytes(dtype, cols)); }
};

// Cached per (dtype, shape, copies): building 512 MiB of weights takes a while.
const Weights& weights(DType dtype, int64_t rows, int64_t cols, int64_t copies) {
  static std::map<std::tuple<DType, int64_t, int64_t, int64_t>, std::unique_ptr<Weights>> cache;
  auto& slot = cache[{dtype, rows, cols, copies}];
  if (slot) return *slot;
  if (cache.size() > 2) {  // keep memory bounded: drop the others
    for (auto& [key, w] : cache)
      if (w.get() != slot.get()) w.reset();
  }
  slot = std::make_unique<Weights>();
  Weights& w = *slot;
  w.dtype = dtype;
  w.rows = rows;
  w.cols = cols;
  w.copies = copies;
  if (dtype_is_quantized(dtype)) {  // GGML blocks: 64 quantized N(0, 1) rows, tiled
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const size_t rb = dtype_row_bytes(dtype, cols);
    std::vector<float> v(static_cast<size_t>(cols));
    std::vector<uint8_t> pattern(64 * rb);
    for (size_t r = 0; r < 64; r++) {
      for (float& x : v) x = normal(rng);
      quantize_row(dtype_to_ggml(block_dtype(dtype)), v.data(), cols, pattern.data() + r * rb);
    }
    const int64_t total = w.matrix_bytes() * copies;
    w.bytes.resize(size_t(total));
    for (int64_t off = 0; off < total; off += int64_t(pattern.size()))
      std::memcpy(&w.bytes[size_t(off)], pattern.data(),
                  size_t(std::min<int64_t>(int64_t(pattern.size()), total - off)));
    if (dtype_is_x16(dtype))  // the layout a GGUF model read into RAM gets (kernels/repack.h)
      for (int64_t i = 0; i < copies; i++)
        repack_x16(block_dtype(dtype), &w.bytes[size_t(i * w.matrix_bytes())], rows, cols);
    return w;
  }
  const size_t es = dtype_size(dtype);
  // A 64 KiB pattern of N(0, 1) values in the dtype, tiled.
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint8_t> pattern(64 * 1024);
  for (size_t i = 0; i < pattern.size() / es; i++) {
    const float v = normal(rng);
    switch (dtype) {
      case DType::F32:
        std::memcpy(&pattern[i * 4], &v, 4);
        break;
      case DType::BF16: {
        const uint16_t h = f32_to_bf16(v);
        std::memcpy(&pattern[i * 2], &h, 2);
        break;
      }
      case DType::F16: {  // +-[0.25, 1): sign, exponent 13, random mantissa
        const uint16_t h = uint16_t((v < 0 ? 0x8000u : 0u) | (0x3400u + (rng() & 0x7ffu)));
        std::memcpy(&pattern[i * 2], &h, 2);
        break;
      }
      case DType::F8_E4M3: {
        uint8_t b = uint8_t(rng());
        if ((b & 0x7f) == 0x7f) b = 0x3f;
        pattern[i] = b;
        break;
      }
      default:
        break;
    }
  }
  const int64_t total = w.matrix_bytes() * copies;
  w.bytes.resize(total);
  for (int64_t off = 0; off < total; off += int64_t(pattern.size()))
    std::memcpy(&w.bytes[off], pattern.data(), std::min<int64_t>(pattern.size(), total - off));
  if (dtype == DType::F8_E4M3) w.scales.assign(((rows + 127) / 128) * ((cols + 127) / 128), 1e-3f);
  return w;
}

// Runs the body with the given ISA and thread count, restoring both afterwards.
struct Setting {
  Setting(Isa isa, int threads) : saved_isa(active_isa()) {
    set_isa(isa);
    set_num_threads(threads);
  }
  ~Setting() {
    set_isa(saved_isa);
    set_num_threads(0);
  }
  Isa saved_isa;
};

std::vector<float> activations(int64_t n) {
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

void run_gemv(benchmark::State& state, DType dtype, int64_t rows, int64_t cols, int64_t n, Isa isa,
              int threads, bool transposed) {
  if (!isa_supported(isa)) return state.SkipWithError("ISA not supported");
  const int64_t one = rows * int64_t(dtype_row_bytes(dtype, cols));
  const int64_t copies = std::max<int64_t>(2, (512 * kMiB + one - 1) / one);
  const Weights& w = weights(dtype, rows, cols, copies);
  const int64_t in = transposed ? rows : cols, out = transposed ? cols : rows;
  const std::vector<float> x = activations(n * in);
  std::vector<float> y(n * out);
  Setting setting(isa, threads);
  int64_t i = 0;
  for (auto _ : state) {
    const WeightRef ref = w.at(i++ % copies);
    if (transposed)
      linear_t(x.data(), n, ref, y.data());
    else
      linear(x.data(), n, ref, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * one);
}

void run_gemm(benchmark::State& state, DType dtype, int64_t rows, int64_t cols, int64_t n, Isa isa,
              int threads) {
  if (!isa_supported(isa)) return state.SkipWithError("ISA not supported");
  const Weights& w = weights(dtype, rows, cols, 1);
  const std::vector<float> x = activations(n * cols);
  std::vector<float> y(n * rows);
  Setting setting(isa, threads);
  for (auto _ : state) {
    linear(x.data(), n, w.at(0), y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(double(2 * rows * cols * n),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

// A MoE layer's expert products at decode (n = 1) or small-batch prefill: `experts` gate/up
// products [inter x hidden] in one linear_many call (or one linear() each), on distinct weights
// cycled through >= 512 MiB as in run_gemv. Reports weight bytes per second.
void run_experts(benchmark::State& state, DType dtype, int64_t experts, int64_t n, bool batched,
                 int threads) {
  constexpr int64_t kInter = 512, kHidden = 1024;
  const int64_t one = kInter * kHidden * int64_t(dtype_size(dtype));
  const int64_t copies = std::max<int64_t>(2 * experts, (512 * kMiB + one - 1) / one);
  const Weights& w = weights(dtype, kInter, kHidden, copies);
  const std::vector<float> x = activations(n * kHidden);
  std::vector<float> y(experts * 2 * n * kInter);
  std::vector<LinearJob> jobs(size_t(2 * experts));
  Setting setting(best_isa(), threads);
  int64_t i = 0;
  for (auto _ : state) {
    for (int64_t e = 0; e < 2 * experts; e++)
      jobs[size_t(e)] = {x.data(), n, w.at(i++ % copies), y.data() + e * n * kInter};
    if (batched) {
      linear_many(jobs);
    } else {
      for (const LinearJob& j : jobs) linear(j.x, j.n, j.w, j.y);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 2 * experts * one);
}

std::string name(const char* kind, DType d, int64_t rows, int64_t cols, int64_t n, Isa isa,
                 int threads) {
  return std::string(kind) + "/" + std::string(dtype_name(d)) + "/" + std::to_string(rows) + "x" +
         std::to_string(cols) + "/n" + std::to_string(n) + "/" + std::string(isa_name(isa)) +
         "/threads:" + std::to_string(threads);
}

const bool registered = [] {
  const DType dtypes[] = {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3};
  const Isa isas[] = {Isa::Avx512, Isa::Avx2, Isa::Scalar};
  const std::pair<int64_t, int64_t> shapes[] = {{2048, 7168}, {7168, 2048}};
  for (DType d : dtypes)
    for (auto [rows, cols] : shapes)
      for (int64_t n : {1, 4})
        for (Isa isa : isas)
          for (int threads : {1, 2}) {
            if (n == 4 && isa == Isa::Scalar) continue;
            benchmark::RegisterBenchmark(
                name("GEMV", d, rows, cols, n, isa, threads).c_str(),
                [=](benchmark::State& s) { run_gemv(s, d, rows, cols, n, isa, threads, false); })
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
          }
  for (DType d : dtypes)
    for (auto [rows, cols] : shapes)
      for (int64_t n : {8, 16, 32, 64, 512})
        for (Isa isa : isas)
          for (int threads : {1, 2}) {
            if (isa == Isa::Scalar && (n > 64 || threads == 1)) continue;
            if (rows == 7168 && n != 512) continue;
            if (isa == Isa::Scalar && n != 16) continue;
            benchmark::RegisterBenchmark(
                name("GEMM", d, rows, cols, n, isa, threads).c_str(),
                [=](benchmark::State& s) { run_gemm(s, d, rows, cols, n, isa, threads); })
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
          }
  // GGML block types through the int8 kernels (kernels/qlinear.h): decode and prefill (Q6_K's
  // prefill: the dequantizing GEMM on AVX-512; the others the int8 GEMM).
  // (Named by hand: dtype_name of a block type reads a table that may not be initialised yet
  // while these registrations run during static initialisation.)
  // Q4_0x16 / Q8_0x16: the rows repacked at load (kernels/repack.h), AVX-512 only.
  for (auto [d, dn] : {std::pair<DType, const char*>{DType::Q8_0, "Q8_0"},
                       {DType::Q4_0, "Q4_0"},
                       {DType::Q8_0_X16, "Q8_0x16"},
                       {DType::Q4_0_X16, "Q4_0x16"},
                       {DType::Q4_K, "Q4_K"},
                       {DType::Q6_K, "Q6_K"}})
    for (auto [rows, cols] : shapes)
      for (int64_t n : {1, 4, 16, 512})
        for (Isa isa : {Isa::Avx512, Isa::Avx2})
          for (int threads : {1, 2}) {
            if (n >= 16 && (rows == 7168 || threads == 1)) continue;
            if (dtype_is_x16(d) && isa != Isa::Avx512) continue;
            benchmark::RegisterBenchmark(
                (std::string(n <= 4 ? "GEMV/" : "GEMM/") + dn + "/" + std::to_string(rows) + "x" +
                 std::to_string(cols) + "/n" + std::to_string(n) + "/" +
                 std::string(isa_name(isa)) + "/threads:" + std::to_string(threads))
                    .c_str(),
                [=](benchmark::State& s) {
                  if (n <= 4)
                    run_gemv(s, d, rows, cols, n, isa, threads, false);
                  else
                    run_gemm(s, d, rows, cols, n, isa, threads);
                })
                ->UseRealTime()
                ->Unit(n <= 4 ? benchmark::kMicrosecond : benchmark::kMillisecond);
          }
  // Batched decoding: 8 tokens against 1024-column weights (the 1B V3-shape model's lm_head,
  // o_proj, down-projections), where the activations stay in L1.
  for (DType d : dtypes)
    for (Isa isa : {Isa::Avx512, Isa::Avx2})
      for (int threads : {1, 2})
        benchmark::RegisterBenchmark(
            name("GEMM", d, 16384, 1024, 8, isa, threads).c_str(),
            [=](benchmark::State& s) { run_gemm(s, d, 16384, 1024, 8, isa, threads); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
  // The 1B V3-shape model's output head [129280 x 1024] streamed from memory (two copies, more
  // than the last-level cache) for one token and for a batched decoding step of 8.
  for (DType d : {DType::BF16, DType::F8_E4M3})
    for (int64_t n : {1, 8})
      for (int threads : {1, 2})
        benchmark::RegisterBenchmark(name("GEMV", d, 129280, 1024, n, Isa::Avx512, threads).c_str(),
                                     [=](benchmark::State& s) {
                                       run_gemv(s, d, 129280, 1024, n, Isa::Avx512, threads, false);
                                     })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
  // Transposed product: a head's W_UK slice (absorbed MLA) and a large bandwidth-bound one.
  for (DType d : {DType::BF16, DType::F8_E4M3})
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{128, 512}, {2048, 7168}})
      for (Isa isa : {Isa::Avx512, Isa::Avx2})
        for (int threads : {1, 2}) {
          if (rows == 128 && threads == 2) continue;  // too small to split
          benchmark::RegisterBenchmark(
              name("LinearT", d, rows, cols, 1, isa, threads).c_str(),
              [=](benchmark::State& s) { run_gemv(s, d, rows, cols, 1, isa, threads, true); })
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
        }
  for (DType d : {DType::BF16, DType::F8_E4M3})
    for (int64_t n : {1, 16})
      for (bool batched : {false, true})
        for (int threads : {1, 2}) {
          const std::string nm = std::string(batched ? "LinearMany" : "LinearEach") + "/" +
                                 std::string(dtype_name(d)) + "/8x2x512x1024/n" +
                                 std::to_string(n) + "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(
              nm.c_str(), [=](benchmark::State& s) { run_experts(s, d, 8, n, batched, threads); })
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
        }
  return true;
}();

}  // namespace
}  // namespace whale
