// ThinkDisplay: R1 replies printed with the reasoning dimmed / hidden, whatever the piece
// boundaries of the stream.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "run/think_display.h"

namespace whale {
namespace {

const std::string kDim(ThinkDisplay::kDim), kReset(ThinkDisplay::kReset);

// Feeds `text` cut at the given positions; returns what was printed.
std::string show(ThinkDisplay::Mode mode, bool thinking, const std::string& text,
                 const std::vector<size_t>& cuts) {
  std::string out;
  ThinkDisplay d(mode, thinking, [&](std::string_view s) { out += s; });
  size_t at = 0;
  for (size_t c : cuts) {
    d.feed(std::string_view(text).substr(at, c - at));
    at = c;
  }
  d.feed(std::string_view(text).substr(at));
  d.finish();
  return out;
}

// Every way of cutting the text in two and three pieces gives `want`.
void expect_all_cuts(ThinkDisplay::Mode mode, bool thinking, const std::string& text,
                     const std::string& want) {
  EXPECT_EQ(show(mode, thinking, text, {}), want);
  for (size_t i = 0; i <= text.size(); i++) {
    EXPECT_EQ(show(mode, thinking, text, {i}), want) << "cut at " << i;
    for (size_t j = i; j <= text.size(); j += 3)
      EXPECT_EQ(show(mode, thinking, text, {i, j}), want) << "cuts at " << i << ", " << j;
  }
}

const std::string kReply = "7*8+0=56, 4, c5, r6\n</think>\n\nThe answer is \\boxed{376}.";

TEST(ThinkDisplay, StyledDimsTheReasoningAndDropsTheTag) {
  expect_all_cuts(ThinkDisplay::Mode::Styled, true, kReply,
                  kDim + "7*8+0=56, 4, c5, r6" + kReset + "\n\nThe answer is \\boxed{376}.");
}

TEST(ThinkDisplay, HiddenPrintsOnlyTheAnswer) {
  expect_all_cuts(ThinkDisplay::Mode::Hidden, true, kReply, "The answer is \\boxed{376}.");
}

TEST(ThinkDisplay, RawIsTheTextAsGenerated) {
  expect_all_cuts(ThinkDisplay::Mode::Raw, true, kReply, kReply);
}

TEST(ThinkDisplay, SomethingLikeTheTagIsReasoning) {
  expect_all_cuts(ThinkDisplay::Mode::Styled, true, "a</thing> b</th",
                  kDim + "a</thing> b</th" + kReset);
  expect_all_cuts(ThinkDisplay::Mode::Hidden, true, "still thinking </thin", "");
}

TEST(ThinkDisplay, OnlyTheFirstTagEndsTheReasoning) {
  expect_all_cuts(ThinkDisplay::Mode::Styled, true, "r</think> a </think>",
                  kDim + "r" + kReset + "\n\na </think>");
}

TEST(ThinkDisplay, NotThinkingIsAllAnswer) {
  expect_all_cuts(ThinkDisplay::Mode::Styled, false, "  hello </think>", "hello </think>");
  // No reasoning at all: no dim escape codes.
  expect_all_cuts(ThinkDisplay::Mode::Styled, true, "</think>\n\nok", "\n\nok");
}

}  // namespace
}  // namespace whale
