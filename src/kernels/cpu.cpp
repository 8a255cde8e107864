#include "kernels/cpu.h"

#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <atomic>
#include <cstdlib>
#include <utility>

namespace whale {

namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  // F16C via CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports does not know "f16c").
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  __cpuid(1, eax, ebx, ecx, edx);
  f.f16c = (ecx >> 29) & 1u;
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
#endif
  return f;
}

// The ISA chosen at first use: WHALE_ISA if set and supported, else the best one.
Isa initial_isa() {
  Isa isa = best_isa();
  if (const char* env = std::getenv("WHALE_ISA")) {
    Isa wanted;
    if (isa_from_name(env, &wanted) && isa_supported(wanted)) isa = wanted;
  }
  return isa;
}

std::atomic<Isa>& isa_slot() {
  static std::atomic<Isa> slot{initial_isa()};
  return slot;
}

std::atomic<int> g_threads{0};  // 0: OpenMP default

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Scalar:
      return true;
    case Isa::Avx2:
      return f.avx2 && f.fma && f.f16c;
    case Isa::Avx512:
      return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512bf16 && f.avx512vnni &&
             f.fma && f.f16c;
  }
  return false;
}

Isa best_isa() {
  if (isa_supported(Isa::Avx512)) return Isa::Avx512;
  if (isa_supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Scalar;
}

Isa active_isa() {
  return isa_slot().load(std::memory_order_relaxed);
}

Isa set_isa(Isa isa) {
  if (!isa_supported(isa)) isa = best_isa();
  isa_slot().store(isa, std::memory_order_relaxed);
  return isa;
}

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return "scalar";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
  }
  return "?";
}

bool isa_from_name(std::string_view name, Isa* out) {
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (name == isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

void set_num_threads(int n) {
  g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed);
}

int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

std::string cpu_description() {
  const CpuFeatures& f = cpu_features();
  std::string s = "cpu:";
  const std::pair<bool, const char*> flags[] = {{f.avx512f, "avx512f"},
                                                {f.avx512bw, "avx512bw"},
                                                {f.avx512vl, "avx512vl"},
                                                {f.avx512dq, "avx512dq"},
                                                {f.avx512bf16, "avx512bf16"},
                                                {f.avx512vnni, "avx512vnni"},
                                                {f.avx2, "avx2"},
                                                {f.fma, "fma"},
                                                {f.f16c, "f16c"}};
  bool any = false;
  for (const auto& [has, name] : flags) {
    if (!has) continue;
    s += ' ';
    s += name;
    any = true;
  }
  if (!any) s += " (no SIMD extensions used)";
  s += " | kernels: ";
  s += isa_name(active_isa());
  s += " | threads: " + std::to_string(num_threads());
  return s;
}

}  // namespace whale
