// libFuzzer target: arbitrary bytes as a completion of a task problem (the first byte picks the
// problem), as a prompt, and as a countdown answer. Nothing may throw, and the Score must be
// consistent: reward from the booleans, why empty iff both hold, a correct answer non-empty.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "reason/task.h"
#include "reason/verify.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto task = whale::reason::make_task("all");
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const uint8_t pick = size ? data[0] : 0;
  const whale::reason::Problem p = task->generate(
      0, pick % 32, pick & 32 ? whale::reason::Split::Eval : whale::reason::Split::Train);
  const std::string_view completion = bytes.substr(size ? 1 : 0);
  const whale::reason::Score s = task->score(p, completion, {});
  if (s.reward != (s.correct ? 1.0 : 0.0) + (s.formatted ? 0.1 : 0.0)) std::abort();
  if (s.why.empty() != (s.correct && s.formatted)) std::abort();
  if (s.correct && s.answer.empty()) std::abort();
  if (const auto q = whale::reason::parse_problem(bytes)) {
    if (q->prompt != bytes) std::abort();  // only the exact forms parse
  }
  (void)whale::reason::check_countdown(completion, {7, 5, 3}, 32);
  (void)whale::reason::check_integer(completion, -4336);
  return 0;
}
