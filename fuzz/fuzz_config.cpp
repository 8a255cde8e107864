// libFuzzer target: arbitrary bytes as config.json. Must throw or parse a valid config.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "model/config.h"
#include "model/rope.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    whale::ModelConfig c = whale::ModelConfig::from_json_text(
        std::string(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
    whale::Rope r(c);  // a parsed config must build its RoPE table
    (void)c.softmax_scale();
  } catch (const std::runtime_error&) {
  } catch (const std::length_error&) {
  }
  return 0;
}
