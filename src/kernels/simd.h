// The x86 intrinsics header, for the per-ISA kernel files (*_avx2.cpp, *_avx512.cpp) only.
// GCC 12 warns about the deliberately undefined vectors inside its own intrinsics (GCC bug
// 105593); the warning is silenced for this header alone.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
