// Function calling (serve/tools.h, run/chat.h): the call parser on both of DeepSeek's layouts,
// parallel calls, malformed and cut-off sections degrading to content; the streaming parser equal
// to the whole-text one at every split; the tool list and forced-call prompts; tool-call turns in
// the chat history.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "run/chat.h"
#include "serve/tools.h"

using namespace whale;
using namespace whale::serve;

namespace {

const std::string kB = std::string(kCallsBegin), kE = std::string(kCallsEnd),
                  kCB = std::string(kCallBegin), kCE = std::string(kCallEnd),
                  kS = std::string(kToolSep);

// A V3 / R1 call: function<｜tool▁sep｜>NAME\n```json\nARGS\n```
std::string v3_call(const std::string& name, const std::string& args) {
  return kCB + "function" + kS + name + "\n```json\n" + args + "\n```" + kCE;
}

bool same(const ParsedCalls& a, const ParsedCalls& b) {
  if (a.content != b.content || a.calls.size() != b.calls.size()) return false;
  for (size_t i = 0; i < a.calls.size(); ++i)
    if (a.calls[i].id != b.calls[i].id || a.calls[i].name != b.calls[i].name ||
        a.calls[i].arguments != b.calls[i].arguments)
      return false;
  return true;
}

// The streaming parser fed `pieces`, collected.
ParsedCalls streamed(const std::vector<std::string>& pieces) {
  ToolCallStream s("x");
  ParsedCalls out;
  auto take = [&](ToolCallStream::Events e) {
    out.content += e.content;
    for (ToolCall& c : e.calls) out.calls.push_back(std::move(c));
  };
  for (const std::string& p : pieces) take(s.push(p));
  take(s.flush());
  return out;
}

}  // namespace

TEST(ToolCalls, ParsesTheV3LayoutWithParallelCalls) {
  const std::string text = "Let me check." + kB + v3_call("get_weather", R"({"city": "Paris"})") +
                           "\n" + v3_call("get_time", R"({"tz":"CET", "n": [1, 2]})") + kE;
  const ParsedCalls p = parse_tool_calls(text, "abc");
  EXPECT_EQ(p.content, "Let me check.");
  ASSERT_EQ(p.calls.size(), 2u);
  EXPECT_EQ(p.calls[0].id, "call_abc_0");
  EXPECT_EQ(p.calls[0].type, "function");
  EXPECT_EQ(p.calls[0].name, "get_weather");
  EXPECT_EQ(p.calls[0].arguments, R"({"city": "Paris"})");
  EXPECT_EQ(p.calls[1].id, "call_abc_1");
  EXPECT_EQ(p.calls[1].name, "get_time");
  EXPECT_EQ(p.calls[1].arguments, R"({"tz":"CET", "n": [1, 2]})");
}

TEST(ToolCalls, ParsesTheV31Layout) {
  const std::string text = kB + kCB + "get_weather" + kS + R"({"city": "Paris"})" + kCE + kCB +
                           "f" + kS + "{}" + kCE + kE;
  const ParsedCalls p = parse_tool_calls(text, "q");
  EXPECT_EQ(p.content, "");
  ASSERT_EQ(p.calls.size(), 2u);
  EXPECT_EQ(p.calls[0].name, "get_weather");
  EXPECT_EQ(p.calls[0].arguments, R"({"city": "Paris"})");
  EXPECT_EQ(p.calls[1].name, "f");
  EXPECT_EQ(p.calls[1].arguments, "{}");
}

TEST(ToolCalls, MalformedOrCutSectionsAreContent) {
  // No calls at all.
  EXPECT_EQ(parse_tool_calls("just text <｜tool", "i").content, "just text <｜tool");
  EXPECT_TRUE(parse_tool_calls("just text", "i").calls.empty());
  // Arguments that are not a JSON object, a missing separator, junk where a call should start.
  for (const std::string& bad :
       {kB + v3_call("f", "[1, 2]") + kE, kB + v3_call("f", "{\"a\": ") + kE,
        kB + kCB + "function" + "f\n```json\n{}\n```" + kCE + kE, kB + "oops" + kE,
        kB + kCB + kS + "{}" + kCE + kE}) {
    const ParsedCalls p = parse_tool_calls("Hi " + bad, "i");
    EXPECT_TRUE(p.calls.empty()) << bad;
    EXPECT_EQ(p.content, "Hi " + bad);
  }
  // Cut off by max_tokens inside a call: the whole section is content.
  const std::string cut = "Hi " + kB + kCB + "function" + kS + "f\n```json\n{\"a\"";
  EXPECT_EQ(parse_tool_calls(cut, "i").content, cut);
  EXPECT_TRUE(parse_tool_calls(cut, "i").calls.empty());
  // A good call then a broken one: the good one stays a call, the rest is content.
  const std::string mixed = kB + v3_call("f", "{}") + "\n" + v3_call("g", "nope") + kE;
  const ParsedCalls m = parse_tool_calls(mixed, "i");
  ASSERT_EQ(m.calls.size(), 1u);
  EXPECT_EQ(m.calls[0].name, "f");
  EXPECT_EQ(m.content, "\n" + v3_call("g", "nope") + kE);
  // Calls made and the closing tag missing (the model stopped): the calls stand, nothing is lost.
  const ParsedCalls open = parse_tool_calls(kB + v3_call("f", "{}"), "i");
  ASSERT_EQ(open.calls.size(), 1u);
  EXPECT_EQ(open.content, "");
  // Text after the section is content.
  EXPECT_EQ(parse_tool_calls(kB + v3_call("f", "{}") + kE + " done", "i").content, " done");
}

// Streaming gives the whole-text result at every split point, and on random multi-piece splits.
TEST(ToolCalls, StreamingEqualsWholeTextAtEverySplit) {
  const std::vector<std::string> texts = {
      "Sure." + kB + v3_call("get_weather", R"({"city": "Paris"})") + "\n" +
          v3_call("get_time", "{}") + kE,
      kB + kCB + "lookup" + kS + R"({"q": "a ``` b"})" + kCE + kE,
      "Hi " + kB + v3_call("f", "{}") + "\n" + v3_call("g", "nope") + kE,
      "Hi " + kB + kCB + "function" + kS + "f\n```json\n{\"a\"",
      "no calls <｜tool▁calls▁beg but close",
      "plain text only",
  };
  std::mt19937 rng(5);
  for (const std::string& t : texts) {
    const ParsedCalls whole = parse_tool_calls(t, "x");
    for (size_t cut = 0; cut <= t.size(); ++cut) {
      ASSERT_TRUE(same(streamed({t.substr(0, cut), t.substr(cut)}), whole)) << t << " @" << cut;
    }
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<std::string> pieces;
      for (size_t at = 0; at < t.size();) {
        const size_t n = 1 + rng() % 7;
        pieces.push_back(t.substr(at, n));
        at += n;
      }
      ASSERT_TRUE(same(streamed(pieces), whole)) << t;
    }
  }
  // Content is released as soon as it cannot start the section.
  ToolCallStream s("x");
  EXPECT_EQ(s.push("Hello <").content, "Hello ");
  EXPECT_EQ(s.push("b").content, "<b");
}

// get_weather(city), as a request's tools list would give it.
ToolDef weather_tool() {
  ToolDef t;
  t.name = "get_weather";
  t.description = "Weather for a city.";
  t.parameters =
      nlohmann::json::parse(R"({"type":"object","properties":{"city":{"type":"string"}}})");
  return t;
}

TEST(ToolCalls, ToolListAndForcedCalls) {
  const ToolDef t = weather_tool();
  const std::string p = tools_prompt({t});
  EXPECT_NE(p.find("### get_weather\nDescription: Weather for a city.\n"), std::string::npos) << p;
  EXPECT_NE(p.find(t.parameters.dump()), std::string::npos);
  EXPECT_NE(p.find(kB + kCB + "function" + kS), std::string::npos);
  EXPECT_EQ(forced_call_prefix({ToolChoice::kAuto, ""}, false), "");
  EXPECT_EQ(forced_call_prefix({ToolChoice::kNone, ""}, true), "");
  EXPECT_EQ(forced_call_prefix({ToolChoice::kRequired, ""}, false), kB + kCB);
  EXPECT_EQ(forced_call_prefix({ToolChoice::kNamed, "f"}, true),
            "\n</think>\n\n" + kB + kCB + "function" + kS + "f\n```json\n");
  // A forced named call read back with the model's continuation is a call.
  const ParsedCalls c = parse_tool_calls(
      forced_call_prefix({ToolChoice::kNamed, "f"}, false) + "{\"a\": 1}\n```" + kCE + kE, "i");
  ASSERT_EQ(c.calls.size(), 1u);
  EXPECT_EQ(c.calls[0].arguments, "{\"a\": 1}");
}

TEST(ToolCalls, V31ToolListAndForcedCalls) {
  const ToolDef t = weather_tool();
  // The model card's section: the list, then the call format and its rules.
  const std::string p = tools_prompt({t}, ChatStyle::V31);
  EXPECT_TRUE(
      p.starts_with("## Tools\nYou have access to the following tools:\n\n### get_weather\n"
                    "Description: Weather for a city.\n\nParameters: " +
                    t.parameters.dump() + "\n\nIMPORTANT: ALWAYS adhere"))
      << p;
  EXPECT_NE(p.find(kB + kCB + "tool_call_name" + kS + "tool_call_arguments" + kCE +
                   "{{additional_tool_calls}}" + kE),
            std::string::npos);
  EXPECT_TRUE(p.ends_with("chain them directly without separators or spaces")) << p;
  EXPECT_EQ(forced_call_prefix({ToolChoice::kRequired, ""}, false, ChatStyle::V31), kB + kCB);
  // Thinking mode left "<think>" open: it is closed first.
  EXPECT_EQ(forced_call_prefix({ToolChoice::kNamed, "f"}, true, ChatStyle::V31),
            "</think>" + kB + kCB + "f" + kS);
  EXPECT_EQ(forced_call_tail(ChatStyle::V31), kCE + kE);
  EXPECT_EQ(forced_call_tail(ChatStyle::R1), "\n```" + kCE + kE);
  const ParsedCalls c =
      parse_tool_calls(forced_call_prefix({ToolChoice::kNamed, "f"}, false, ChatStyle::V31) +
                           "{\"a\": 1}" + forced_call_tail(ChatStyle::V31),
                       "i");
  ASSERT_EQ(c.calls.size(), 1u);
  EXPECT_EQ(c.calls[0].name, "f");
  EXPECT_EQ(c.calls[0].arguments, "{\"a\": 1}");
}

// Tool-call turns in the history: whole turns (calls, then results, then the answer that follows
// them), in the V3 layout the parser reads back.
TEST(ToolCalls, HistoryRendersCallsAndResults) {
  std::vector<ChatMessage> msgs(5);
  msgs[0] = {"user", "Weather in Paris and the time?"};
  msgs[1] = {"assistant", ""};
  msgs[1].tool_calls = {{"c0", "function", "get_weather", R"({"city": "Paris"})"},
                        {"c1", "function", "get_time", "{}"}};
  msgs[2] = {"tool", "18C"};
  msgs[3] = {"tool", "12:00"};
  msgs[4] = {"assistant", "18C at noon."};
  const std::string want =
      "<s>SYS<｜User｜>Weather in Paris and the time?<｜Assistant｜>" + kB +
      v3_call("get_weather", R"({"city": "Paris"})") + "\n" + v3_call("get_time", "{}") + kE +
      "<｜end▁of▁sentence｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜>"
      "\n<｜tool▁output▁begin｜>12:00<｜tool▁output▁end｜><｜tool▁outputs▁end｜>18C at "
      "noon.<｜end▁of▁sentence｜><｜Assistant｜>";
  EXPECT_EQ(render_chat(msgs, ChatStyle::V3, "<s>", true, "SYS"), want);
  // The rendered calls read back as the same calls.
  const size_t at = want.find(kB);
  const ParsedCalls back = parse_tool_calls(want.substr(at, want.find(kE) + kE.size() - at), "i");
  ASSERT_EQ(back.calls.size(), 2u);
  EXPECT_EQ(back.calls[1].name, "get_time");
  // The tool list joins a system prompt with a blank line.
  std::vector<ChatMessage> sys = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(render_chat(sys, ChatStyle::V3, "", true, "TOOLS"),
            "Be brief.\n\nTOOLS<｜User｜>Hi<｜Assistant｜>");
}
