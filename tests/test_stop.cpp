// Tests for run/stop.h: hand-made cases plus a randomised comparison with a brute-force reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "run/stop.h"

namespace whale {
namespace {

// Feeds `pieces` one by one; returns everything emitted (plus flush() if it never stopped).
struct Fed {
  std::string out;
  bool stopped = false;
};
Fed feed(StopMatcher& m, const std::vector<std::string>& pieces) {
  Fed f;
  for (const std::string& p : pieces) {
    StopMatcher::Result r = m.push(p);
    f.out += r.emit;
    if (r.stopped) {
      f.stopped = true;
      return f;
    }
  }
  f.out += m.flush();
  return f;
}

// Brute force: the first end position e at which some stop string ends; the output is the text
// before the earliest-starting stop that ends there.
Fed reference(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t e = 1; e <= text.size(); ++e) {
    size_t best = std::string::npos;
    for (const std::string& s : stops) {
      if (!s.empty() && s.size() <= e && text.compare(e - s.size(), s.size(), s) == 0) {
        best = std::min(best, e - s.size());
      }
    }
    if (best != std::string::npos) return {text.substr(0, best), true};
  }
  return {text, false};
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80         ? 1
                       : (c >> 5) == 6  ? 2
                       : (c >> 4) == 14 ? 3
                       : (c >> 3) == 30 ? 4
                                        : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t j = 1; j < len; ++j) {
      if ((static_cast<unsigned char>(s[i + j]) & 0xc0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

TEST(StopMatcher, NoStopsPassesEverythingThrough) {
  StopMatcher m({});
  StopMatcher::Result r = m.push("hello ");
  EXPECT_EQ(r.emit, "hello ");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m.push("world").emit, "world");
  EXPECT_EQ(m.flush(), "");
  StopMatcher empty_strings({"", ""});  // empty stop strings are ignored
  EXPECT_EQ(empty_strings.push("abc").emit, "abc");
}

TEST(StopMatcher, StopInsideOnePush) {
  StopMatcher m({"</s>"});
  StopMatcher::Result r = m.push("Hello</s>ignored");
  EXPECT_EQ(r.emit, "Hello");
  EXPECT_TRUE(r.stopped);
  EXPECT_TRUE(m.stopped());
  // After a stop nothing more comes out.
  r = m.push("more");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopSplitAcrossPushes) {
  StopMatcher m({"<|end|>"});
  StopMatcher::Result r = m.push("The answer<|");
  EXPECT_EQ(r.emit, "The answer");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m.pending(), 2u);
  r = m.push("en");
  EXPECT_EQ(r.emit, "");
  EXPECT_FALSE(r.stopped);
  r = m.push("d|> tail");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcher, FalseAlarmReleasesHeldText) {
  StopMatcher m({"<|end|>"});
  EXPECT_EQ(m.push("a<|e").emit, "a");
  EXPECT_EQ(m.push("x").emit, "<|ex");  // can no longer be "<|end|>"
  EXPECT_EQ(m.push("<").emit, "");
  EXPECT_EQ(m.flush(), "<");  // end of generation: the held prefix is shown after all
}

TEST(StopMatcher, OverlappingCandidates) {
  // "abc" with stops "bcd" and "abx": "abc" is not a prefix of "abx", but "bc" is a prefix of
  // "bcd", so only "a" is safe.
  {
    StopMatcher m({"bcd", "abx"});
    StopMatcher::Result r = m.push("abc");
    EXPECT_EQ(r.emit, "a");
    EXPECT_FALSE(r.stopped);
    r = m.push("d");
    EXPECT_EQ(r.emit, "");
    EXPECT_TRUE(r.stopped);
  }
  {
    StopMatcher m({"bcd", "abx"});
    EXPECT_EQ(m.push("abc").emit, "a");
    StopMatcher::Result r = m.push("x");
    EXPECT_EQ(r.emit, "bcx");
    EXPECT_FALSE(r.stopped);
  }
  {
    StopMatcher m({"bcd", "abx"});
    EXPECT_EQ(m.push("ab").emit, "");  // "ab" is a prefix of "abx"
    StopMatcher::Result r = m.push("x!");
    EXPECT_EQ(r.emit, "");
    EXPECT_TRUE(r.stopped);
  }
  {
    // Self-overlapping stop: "aab" in "aaab".
    StopMatcher m({"aab"});
    EXPECT_EQ(m.push("a").emit, "");
    EXPECT_EQ(m.push("a").emit, "");
    EXPECT_EQ(m.push("a").emit, "a");
    StopMatcher::Result r = m.push("b");  // "aab" completes inside the held "aa" + "b"
    EXPECT_EQ(r.emit, "");
    EXPECT_TRUE(r.stopped);
  }
}

TEST(StopMatcher, EarliestEndingStopWinsRegardlessOfSplit) {
  // In "xabcd", "bc" (ends at 4) completes before "abcd" (ends at 5): output "xa" either way.
  const std::vector<std::string> stops = {"abcd", "bc"};
  StopMatcher one(stops);
  StopMatcher::Result r = one.push("xabcd");
  EXPECT_EQ(r.emit, "xa");
  EXPECT_TRUE(r.stopped);
  StopMatcher split(stops);
  EXPECT_EQ(split.push("xab").emit, "x");
  r = split.push("cd");
  EXPECT_EQ(r.emit, "a");
  EXPECT_TRUE(r.stopped);
  // Same end: the longer (earlier-starting) stop wins, so less text is emitted.
  StopMatcher same_end({"cd", "bcd"});
  r = same_end.push("abcd");
  EXPECT_EQ(r.emit, "a");
}

TEST(StopMatcher, StopAtVeryStart) {
  StopMatcher m({"###"});
  StopMatcher::Result r = m.push("###");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
  StopMatcher n({"###"});
  EXPECT_EQ(n.push("#").emit, "");
  EXPECT_EQ(n.push("#").emit, "");
  r = n.push("#after");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcher, MultiByteUtf8) {
  // "你好。世界" with stop "。" (E3 80 82), fed one byte at a time: emitted pieces are whole
  // characters and the output is "你好".
  const std::string text = "你好。世界";
  StopMatcher m({"。"});
  std::string out;
  bool stopped = false;
  for (char c : text) {
    StopMatcher::Result r = m.push(std::string(1, c));
    EXPECT_TRUE(valid_utf8(r.emit)) << "emitted a split character";
    out += r.emit;
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "你好");
  // A stop that shares a lead byte with ordinary text: "世" and "丁" both start with E4.
  StopMatcher k({"世界"});
  EXPECT_EQ(k.push("丁\xe4").emit, "丁");
  EXPECT_EQ(k.push("\xb8").emit, "");
  StopMatcher::Result r = k.push("\x96界");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.emit, "");
  // Without stops, a character split over pushes is held until complete.
  StopMatcher none({});
  EXPECT_EQ(none.push("a\xe4\xb8").emit, "a");
  EXPECT_EQ(none.push("\x81z").emit, "\xe4\xb8\x81z");
  // Invalid bytes are not held forever.
  EXPECT_EQ(none.push("\x80\xff").emit, "\x80\xff");
}

TEST(StopMatcher, EverySplitIntoThreePiecesAgrees) {
  const std::vector<std::string> stops = {"<|end|>", "\n\nUser:", "end"};
  for (const std::string text : {"ab<|en<|end|>cd", "line\n\nUse\n\nUser: hi", "no stop <|en"}) {
    const Fed want = reference(text, stops);
    for (size_t i = 0; i <= text.size(); ++i) {
      for (size_t j = i; j <= text.size(); ++j) {
        StopMatcher m(stops);
        const Fed got = feed(m, {text.substr(0, i), text.substr(i, j - i), text.substr(j)});
        ASSERT_EQ(got.out, want.out) << text << " split " << i << "," << j;
        ASSERT_EQ(got.stopped, want.stopped);
      }
    }
  }
  // The expectations of the reference itself.
  EXPECT_EQ(reference("ab<|en<|end|>cd", stops).out, "ab<|en<|");  // "end" ends first
  EXPECT_EQ(reference("line\n\nUse\n\nUser: hi", stops).out, "line\n\nUse");
  EXPECT_FALSE(reference("no stop <|en", stops).stopped);
}

TEST(StopMatcher, ResetStartsOver) {
  StopMatcher m({"END"});
  EXPECT_TRUE(m.push("xEND").stopped);
  m.reset();
  EXPECT_EQ(m.push("abcEN").emit, "abc");
  EXPECT_EQ(m.flush(), "EN");
}

TEST(StopMatcher, RandomisedAgainstBruteForce) {
  // Small alphabets make stops, partial matches and overlaps frequent. Multi-byte characters
  // are included and pushes are cut at arbitrary bytes.
  const std::vector<std::string> alphabet = {"a", "b", "c", "é", "中"};
  std::mt19937 g(12345);
  auto pick = [&](size_t n) { return size_t(g() % n); };
  auto random_string = [&](size_t max_chars) {
    std::string s;
    const size_t len = pick(max_chars + 1);
    for (size_t i = 0; i < len; ++i) s += alphabet[pick(alphabet.size())];
    return s;
  };
  int stopped_count = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<std::string> stops;
    const size_t n_stops = pick(4);
    size_t max_stop = 0;
    for (size_t i = 0; i < n_stops; ++i) {
      stops.push_back(random_string(4));
      max_stop = std::max(max_stop, stops.back().size());
    }
    const std::string text = random_string(24);
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      const size_t len = 1 + pick(6);
      pieces.push_back(text.substr(i, len));
      i += len;
    }
    const Fed want = reference(text, stops);
    StopMatcher m(stops);
    Fed got;
    std::string fed;
    for (const std::string& p : pieces) {
      fed += p;
      StopMatcher::Result r = m.push(p);
      ASSERT_TRUE(valid_utf8(r.emit)) << "iter " << iter;
      got.out += r.emit;
      if (r.stopped) {
        got.stopped = true;
        break;
      }
      // What is held back is either a proper prefix of a stop or an unfinished character.
      const std::string held = fed.substr(got.out.size());
      ASSERT_EQ(held.size(), m.pending());
      const bool stop_prefix = std::any_of(stops.begin(), stops.end(), [&](const std::string& s) {
        return held.size() < s.size() && s.compare(0, held.size(), held) == 0;
      });
      ASSERT_TRUE(held.empty() || stop_prefix || (held.size() <= 3 && !valid_utf8(held)))
          << "iter " << iter << " held '" << held << "'";
    }
    if (!got.stopped) got.out += m.flush();
    ASSERT_EQ(got.stopped, want.stopped) << "iter " << iter << " text " << text;
    ASSERT_EQ(got.out, want.out) << "iter " << iter << " text " << text;
    stopped_count += got.stopped;
  }
  EXPECT_GT(stopped_count, 1000);  // the generator really exercises stops
}

}  // namespace
}  // namespace whale
