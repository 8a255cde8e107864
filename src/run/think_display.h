// Showing R1 output on a terminal: the reasoning dimmed and set apart from the answer, or hidden.
//
// An R1 reply streams as "reasoning</think>\n\nanswer" (the prompt already opened the think
// block). ThinkDisplay filters that stream piece by piece for printing:
//   Raw     the text as generated (pipes and scripts);
//   Styled  the reasoning in ANSI dim (ESC[2m), then the style is reset, the "</think>" tag
//           and the whitespace after it are dropped, and a blank line sets the answer apart;
//   Hidden  only the answer.
// "</think>" may arrive split over several pieces: a tail that could be the start of the tag is
// held back until the next piece decides it, and so is trailing whitespace (dropped before the
// tag).
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace whale {

class ThinkDisplay {
 public:
  enum class Mode { Raw, Styled, Hidden };
  // thinking: the stream starts inside the think block (R1 generation prompt).
  ThinkDisplay(Mode mode, bool thinking, std::function<void(std::string_view)> out);

  void feed(std::string_view piece);
  // End of the stream: flushes what was held back and resets the style.
  void finish();

  static constexpr std::string_view kDim = "\033[2m", kReset = "\033[0m";

 private:
  void emit_reasoning(std::string_view s);
  void emit_answer(std::string_view s);

  Mode mode_;
  bool thinking_;
  bool styled_open_ = false;  // kDim printed and not yet reset
  bool answer_started_ = false;
  std::string held_;  // a possible prefix of "</think>"
  std::function<void(std::string_view)> out_;
};

}  // namespace whale
