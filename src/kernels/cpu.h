// Run-time CPU feature detection and the choice of kernel instruction set.
//
// Kernels are compiled once per instruction set (files ending _avx512.cpp / _avx2.cpp) and the
// fastest one the CPU supports is picked at run time. The environment variable
// WHALE_ISA=scalar|avx2|avx512 overrides the choice (for tests and for comparing paths); asking
// for an instruction set the CPU lacks falls back to the best supported one.
#pragma once

#include <string>
#include <string_view>

namespace whale {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512bf16 = false, avx512vnni = false;
};

enum class Isa { Scalar, Avx2, Avx512 };

// What this CPU supports (detected once).
const CpuFeatures& cpu_features();
// Whether the kernels for `isa` can run on this CPU.
bool isa_supported(Isa isa);
// The instruction set the kernels use now.
Isa active_isa();
// Forces the kernels onto `isa` (if supported; otherwise the best supported one). Returns the
// instruction set actually selected. Not thread-safe against kernels running concurrently.
Isa set_isa(Isa isa);
// The best instruction set the CPU supports, ignoring WHALE_ISA.
Isa best_isa();
std::string_view isa_name(Isa isa);
// Parses "scalar" / "avx2" / "avx512"; returns false on anything else.
bool isa_from_name(std::string_view name, Isa* out);

// Worker threads used by the kernels (OpenMP). Default: all cores (omp_get_max_threads()).
// n <= 0 restores the default.
void set_num_threads(int n);
int num_threads();

// One line for `whale info` and benchmark output, e.g.
// "cpu: avx512f avx512bw avx512bf16 avx512vnni avx2 fma f16c | kernels: avx512 | threads: 2".
std::string cpu_description();

}  // namespace whale
