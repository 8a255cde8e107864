// ThinkDisplay: R1 replies printed with the reasoning dimmed / hidden, whatever the piece
// boundaries of the stream.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "run/think_display.h"
#include "test_util.h"

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

// `whale run --chat` on an R1 model that always answers the same: piped, the text as generated;
// --hide-thinking, the answer alone; on a terminal (script(1) gives it a pty), dimmed reasoning.
TEST(ThinkDisplay, RunCommandShowsRawHiddenAndStyledReplies) {
  const std::string dir = testing::scripted_model(
      "think-seven", "Four plus three makes seven.\n</think>\n\nThe answer is \\boxed{7}.");
  const std::string args = "run -m " + dir + " --chat -p 'What is 4 + 3?' -n 64 --no-stats";
  const testing::Result raw = testing::run_whale(args);
  ASSERT_EQ(raw.code, 0) << raw.out;
  EXPECT_EQ(raw.out, "Four plus three makes seven.\n</think>\n\nThe answer is \\boxed{7}.\n");
  const testing::Result hidden = testing::run_whale(args + " --hide-thinking");
  ASSERT_EQ(hidden.code, 0) << hidden.out;
  EXPECT_EQ(hidden.out, "The answer is \\boxed{7}.\n");
  const testing::Result tty = testing::sh("script -qec \"" + std::string(WHALE_BINARY) + " " +
                                          args + "\" /dev/null < /dev/null");
  ASSERT_EQ(tty.code, 0) << tty.out;
  EXPECT_NE(tty.out.find(kDim + "Four plus three makes seven." + kReset), std::string::npos)
      << tty.out;
  EXPECT_EQ(tty.out.find("</think>"), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("The answer is \\boxed{7}."), std::string::npos) << tty.out;
}

// DeepSeek-V3.1: non-thinking by default (the answer only), --thinking for the reasoning first;
// `whale chat` keeps only the answer of an earlier turn, so the second turn answers alike.
TEST(ThinkDisplay, V31ThinkingSwitch) {
  const std::string dir =
      testing::v31_model("v31-hello", "A greeting. I reply in kind.</think>Hi there.", "Hi there.");
  const std::string args = "run -m " + dir + " --chat -p 'Hello' -n 64 --no-stats";
  const testing::Result plain = testing::run_whale(args);
  ASSERT_EQ(plain.code, 0) << plain.out;
  EXPECT_EQ(plain.out, "Hi there.\n");
  const testing::Result think = testing::run_whale(args + " --thinking");
  ASSERT_EQ(think.code, 0) << think.out;
  EXPECT_EQ(think.out, "A greeting. I reply in kind.</think>Hi there.\n");
  const testing::Result hidden = testing::run_whale(args + " --thinking --hide-thinking");
  ASSERT_EQ(hidden.code, 0) << hidden.out;
  EXPECT_EQ(hidden.out, "Hi there.\n");
  const testing::Result chat =
      testing::sh("printf 'Hello\\nAgain\\n' | " + std::string(WHALE_BINARY) + " chat -m " + dir +
                  " --thinking --hide-thinking -n 64 --no-stats");
  ASSERT_EQ(chat.code, 0) << chat.out;
  EXPECT_EQ(chat.out, "Hi there.\nHi there.\n");
}

}  // namespace
}  // namespace whale
