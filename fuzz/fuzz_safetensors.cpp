// libFuzzer target: arbitrary bytes as a safetensors file. Must throw or parse, never crash.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto tensors = whale::parse_safetensors(data, size, "fuzz.safetensors");
    // Touch every tensor's first and last byte: offsets must lie inside the buffer.
    volatile uint8_t sink = 0;
    for (const auto& t : tensors)
      if (t.nbytes) sink = sink ^ t.data[0] ^ t.data[t.nbytes - 1];
  } catch (const std::runtime_error&) {
  }
  return 0;
}
