// libFuzzer target: arbitrary bytes as a GGUF file. Must throw or parse, never crash; every
// tensor it accepts lies inside the buffer and its first row dequantizes.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "formats/gguf.h"
#include "tensor/quant.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const whale::GgufHeader h = whale::parse_gguf(data, size, "fuzz.gguf");
    volatile float sink = 0;
    std::vector<float> row;
    for (const auto& t : h.tensors) {
      if (t.nbytes == 0) continue;
      sink = sink + float(t.data[0] ^ t.data[t.nbytes - 1]);
      const auto* info = whale::ggml_type_info(uint32_t(t.type));
      if (!info->dequantizable || t.ne[0] > 4096) continue;
      row.resize(size_t(t.ne[0]));
      whale::dequantize_row(t.type, t.data, t.ne[0], row.data());
      if (!row.empty()) sink = sink + row[0];
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
