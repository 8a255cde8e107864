#include "run/think_display.h"

#include <algorithm>

namespace whale {

namespace {
constexpr std::string_view kEndThink = "</think>";

// Length of the longest suffix of s that is a proper prefix of kEndThink.
size_t partial_tag_suffix(std::string_view s) {
  for (size_t n = std::min(s.size(), kEndThink.size() - 1); n > 0; n--)
    if (s.substr(s.size() - n) == kEndThink.substr(0, n)) return n;
  return 0;
}
}  // namespace

ThinkDisplay::ThinkDisplay(Mode mode, bool thinking, std::function<void(std::string_view)> out)
    : mode_(mode), thinking_(thinking), out_(std::move(out)) {}

void ThinkDisplay::emit_reasoning(std::string_view s) {
  if (s.empty() || mode_ == Mode::Hidden) return;
  if (mode_ == Mode::Styled && !styled_open_) {
    out_(kDim);
    styled_open_ = true;
  }
  out_(s);
}

void ThinkDisplay::emit_answer(std::string_view s) {
  if (mode_ != Mode::Raw && !answer_started_) {
    // Whitespace between </think> and the answer is dropped; the separator is ours.
    const size_t first = s.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos) return;
    s.remove_prefix(first);
    answer_started_ = true;
  }
  if (!s.empty()) out_(s);
}

void ThinkDisplay::feed(std::string_view piece) {
  if (mode_ == Mode::Raw) {
    out_(piece);
    return;
  }
  if (!thinking_) {
    emit_answer(piece);
    return;
  }
  std::string text = held_ + std::string(piece);
  held_.clear();
  const size_t at = text.find(kEndThink);
  if (at == std::string::npos) {
    // Held back too: whitespace that would end the reasoning if the tag follows.
    size_t keep = partial_tag_suffix(text);
    while (keep < text.size() &&
           (text[text.size() - keep - 1] == '\n' || text[text.size() - keep - 1] == ' '))
      keep++;
    emit_reasoning(std::string_view(text).substr(0, text.size() - keep));
    held_ = text.substr(text.size() - keep);
    return;
  }
  // The reasoning ends: trailing whitespace of the reasoning is not worth a dim line.
  std::string_view reasoning = std::string_view(text).substr(0, at);
  while (!reasoning.empty() && (reasoning.back() == '\n' || reasoning.back() == ' '))
    reasoning.remove_suffix(1);
  emit_reasoning(reasoning);
  if (mode_ == Mode::Styled) {
    if (styled_open_) out_(kReset);
    styled_open_ = false;
    out_("\n\n");
  }
  thinking_ = false;
  emit_answer(std::string_view(text).substr(at + kEndThink.size()));
}

void ThinkDisplay::finish() {
  if (!held_.empty()) {
    emit_reasoning(held_);  // the stream ended inside the think block
    held_.clear();
  }
  if (styled_open_) out_(kReset);
  styled_open_ = false;
}

}  // namespace whale
