// Request parsing, response shapes, SSE framing and the streaming reasoning splitter of the
// OpenAI-compatible API (serve/api.h). Expected JSON is written out by hand from the OpenAI and
// DeepSeek API references; ReasoningStream is checked against run/chat.h's split_reasoning.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "serve/anthropic.h"
#include "serve/api.h"

namespace whale::serve {
namespace {

using json = nlohmann::json;

GenRequest chat(const std::string& body) {
  return parse_request(body, /*chat=*/true);
}
GenRequest completion(const std::string& body) {
  return parse_request(body, /*chat=*/false);
}

// A chat body with one user message plus `extra` fields ("" or `"key": value, ...`).
std::string chat_body(const std::string& extra) {
  return R"({"messages":[{"role":"user","content":"hi"}])" +
         (extra.empty() ? std::string() : "," + extra) + "}";
}

ChatDelta delta(bool role, std::optional<std::string> content,
                std::optional<std::string> reasoning_content) {
  ChatDelta d;
  d.role = role;
  d.content = std::move(content);
  d.reasoning_content = std::move(reasoning_content);
  return d;
}

// The ApiError that parsing `body` throws; fails the test if it parses.
ApiError error_of(const std::string& body, bool is_chat) {
  try {
    parse_request(body, is_chat);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "parsed without error: " << body;
  return ApiError(0, "", "");
}

TEST(ApiParse, ChatDefaults) {
  const GenRequest r = chat(R"({"messages":[{"role":"user","content":"Hello"}]})");
  EXPECT_TRUE(r.chat);
  EXPECT_EQ(r.model, "");
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].role, "user");
  EXPECT_EQ(r.messages[0].content, "Hello");
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
  EXPECT_FALSE(r.max_tokens.has_value());
  // OpenAI defaults: temperature 1, top_p 1, no penalties.
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_EQ(r.sampling.top_p, 1.0f);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_EQ(r.sampling.min_p, 0.0f);
  EXPECT_FALSE(r.sampling.greedy);
  EXPECT_EQ(r.sampling.frequency_penalty, 0.0f);
  EXPECT_EQ(r.sampling.presence_penalty, 0.0f);
  EXPECT_EQ(r.sampling.repetition_penalty, 1.0f);
  EXPECT_FALSE(r.has_seed);
  EXPECT_TRUE(r.stop.empty());
  EXPECT_FALSE(r.json_object);
  EXPECT_FALSE(r.echo);
}

TEST(ApiParse, ChatEveryField) {
  const GenRequest r = chat(R"({
    "model": "deepseek-reasoner",
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "developer", "content": "Answer in English."},
      {"role": "user", "content": "2+2?", "name": "bob"},
      {"role": "assistant", "content": "4", "reasoning_content": "Adding."},
      {"role": "tool", "content": "{\"ok\":true}", "tool_call_id": "c1"},
      {"role": "user", "content": "and 3+3?"}],
    "stream": true, "stream_options": {"include_usage": true},
    "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "seed": 42,
    "frequency_penalty": 0.25, "presence_penalty": -1.5, "n": 1,
    "stop": ["\n\n", "", "END"], "response_format": {"type": "json_object"},
    "logprobs": false, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1,
    "tools": [], "user": "someone", "unknown_field": {"deep": [1, 2]}})");
  EXPECT_EQ(r.model, "deepseek-reasoner");
  ASSERT_EQ(r.messages.size(), 6u);
  const std::vector<std::string> roles = {"system", "system", "user", "assistant", "tool", "user"};
  for (size_t i = 0; i < roles.size(); ++i) EXPECT_EQ(r.messages[i].role, roles[i]) << i;
  EXPECT_EQ(r.messages[1].content, "Answer in English.");
  EXPECT_EQ(r.messages[3].content, "4");
  EXPECT_EQ(r.messages[3].reasoning_content, "Adding.");
  EXPECT_EQ(r.messages[4].content, R"({"ok":true})");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.max_tokens, 100);
  EXPECT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FALSE(r.sampling.greedy);
  EXPECT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_TRUE(r.has_seed);
  EXPECT_EQ(r.sampling.seed, 42u);
  EXPECT_EQ(r.sampling.frequency_penalty, 0.25f);
  EXPECT_EQ(r.sampling.presence_penalty, -1.5f);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "END"}));  // "" ignored
  EXPECT_TRUE(r.json_object);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_EQ(r.sampling.min_p, 0.05f);
  EXPECT_EQ(r.sampling.repetition_penalty, 1.1f);
}

TEST(ApiParse, NullMeansDefault) {
  const GenRequest r = chat(chat_body(
      R"("model":null,"stream":null,"stream_options":null,"max_tokens":null,"temperature":null,)"
      R"("top_p":null,"seed":null,"n":null,"stop":null,"response_format":null,"logprobs":null)"));
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_FALSE(r.has_seed);
  EXPECT_TRUE(r.stop.empty());
}

TEST(ApiParse, TemperatureZeroIsGreedy) {
  EXPECT_TRUE(chat(chat_body(R"("temperature":0)")).sampling.greedy);
  EXPECT_TRUE(chat(chat_body(R"("temperature":0.0)")).sampling.greedy);
  EXPECT_FALSE(chat(chat_body(R"("temperature":2)")).sampling.greedy);
  EXPECT_EQ(chat(chat_body(R"("temperature":2)")).sampling.temperature, 2.0f);
}

TEST(ApiParse, StopAsStringAndLimits) {
  EXPECT_EQ(chat(chat_body(R"("stop":"###")")).stop, std::vector<std::string>{"###"});
  EXPECT_TRUE(chat(chat_body(R"("stop":"")")).stop.empty());
  std::string sixteen = "[";
  for (int i = 0; i < 16; ++i) sixteen += (i ? ",\"s" : "\"s") + std::to_string(i) + "\"";
  EXPECT_EQ(chat(chat_body("\"stop\":" + sixteen + "]")).stop.size(), 16u);
  const ApiError e = error_of(chat_body("\"stop\":" + sixteen + ",\"x\"]"), true);
  EXPECT_EQ(e.param, "stop");
}

TEST(ApiParse, MaxTokensAndMaxCompletionTokens) {
  EXPECT_EQ(chat(chat_body(R"("max_completion_tokens":7)")).max_tokens, 7);
  EXPECT_EQ(chat(chat_body(R"("max_tokens":5,"max_completion_tokens":7)")).max_tokens, 7);
  EXPECT_EQ(chat(chat_body(R"("max_tokens":1)")).max_tokens, 1);
  // Beyond int64 (parsed as unsigned): saturates.
  EXPECT_EQ(chat(chat_body(R"("max_tokens":18446744073709551615)")).max_tokens, INT64_MAX);
}

TEST(ApiParse, SeedKeepsItsBits) {
  EXPECT_EQ(chat(chat_body(R"("seed":-1)")).sampling.seed, UINT64_MAX);
  EXPECT_EQ(chat(chat_body(R"("seed":18446744073709551615)")).sampling.seed, UINT64_MAX);
  EXPECT_EQ(chat(chat_body(R"("seed":9223372036854775808)")).sampling.seed, 1ull << 63);
  EXPECT_EQ(chat(chat_body(R"("seed":0)")).sampling.seed, 0u);
  EXPECT_TRUE(chat(chat_body(R"("seed":0)")).has_seed);
}

TEST(ApiParse, IncludeUsageOnlyWhenStreaming) {
  EXPECT_FALSE(chat(chat_body(R"("stream_options":{"include_usage":true})")).include_usage);
  EXPECT_FALSE(
      chat(chat_body(R"("stream":true,"stream_options":{"include_usage":false})")).include_usage);
  EXPECT_FALSE(chat(chat_body(R"("stream":true,"stream_options":{})")).include_usage);
}

TEST(ApiParse, ContentParts) {
  const GenRequest r = chat(R"({"messages":[{"role":"user","content":[
      {"type":"text","text":"Hello, "},{"type":"text","text":"wor"},{"type":"text","text":"ld"}]},
      {"role":"system","content":[]}]})");
  EXPECT_EQ(r.messages[0].content, "Hello, world");
  EXPECT_EQ(r.messages[1].content, "");
}

TEST(ApiParse, AssistantContentMayBeNullOrMissing) {
  const GenRequest r = chat(R"({"messages":[{"role":"user","content":"q"},
      {"role":"assistant","content":null,"tool_calls":[]},{"role":"assistant"},
      {"role":"user","content":"again"}]})");
  EXPECT_EQ(r.messages[1].content, "");
  EXPECT_EQ(r.messages[2].content, "");
  EXPECT_EQ(r.messages[2].reasoning_content, "");
}

TEST(ApiParse, Utf8ContentSurvives) {
  const GenRequest r =
      chat(R"({"messages":[{"role":"user","content":"héllo 你好 \u00e9\ud83d\ude00"}]})");
  EXPECT_EQ(r.messages[0].content, "héllo 你好 é😀");
}

TEST(ApiParse, CompletionPrompts) {
  GenRequest r = completion(R"({"prompt":"The whale is","echo":true,"max_tokens":3})");
  EXPECT_FALSE(r.chat);
  EXPECT_EQ(r.prompt, "The whale is");
  EXPECT_TRUE(r.prompt_ids.empty());
  EXPECT_TRUE(r.echo);
  EXPECT_EQ(r.max_tokens, 3);

  r = completion(R"({"prompt":["one string"]})");
  EXPECT_EQ(r.prompt, "one string");
  EXPECT_FALSE(r.echo);

  r = completion(R"({"prompt":[0, 15, 2147483647]})");
  EXPECT_EQ(r.prompt, "");
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{0, 15, 2147483647}));

  r = completion(R"({"prompt":[[7, 8]]})");
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{7, 8}));

  r = completion(R"({"prompt":[5]})");
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{5}));

  // Sampling fields are shared with chat; logprobs may be false.
  r = completion(R"({"prompt":"x","temperature":0,"stop":"\n","logprobs":false,"seed":3})");
  EXPECT_TRUE(r.sampling.greedy);
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(r.sampling.seed, 3u);
  EXPECT_EQ(r.top_logprobs, -1);
  EXPECT_FALSE(r.suffix);

  // logprobs: a count of alternatives; FIM: a suffix.
  r = completion(R"({"prompt":"x","logprobs":5,"suffix":""})");
  EXPECT_EQ(r.top_logprobs, 5);
  EXPECT_EQ(r.suffix, "");
  EXPECT_EQ(completion(R"({"prompt":"x","logprobs":0})").top_logprobs, 0);
}

TEST(ApiParse, ToolsAndToolCalls) {
  GenRequest r = chat(chat_body(""));
  EXPECT_TRUE(r.tools.empty());
  EXPECT_EQ(r.tool_choice.kind, ToolChoice::kNone);
  r = chat(
      chat_body(R"("tools":[{"type":"function","function":{"name":"get_weather","description":"d",)"
                R"("parameters":{"type":"object"},"strict":true}}],"parallel_tool_calls":false)"));
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tools[0].name, "get_weather");
  EXPECT_EQ(r.tools[0].description, "d");
  EXPECT_EQ(r.tools[0].parameters, nlohmann::json::parse(R"({"type":"object"})"));
  EXPECT_TRUE(r.tools[0].strict);
  EXPECT_EQ(r.tool_choice.kind, ToolChoice::kAuto);
  EXPECT_FALSE(r.parallel_tool_calls);
  r = chat(chat_body(R"("tools":[{"type":"function","function":{"name":"f"}}],)"
                     R"("tool_choice":{"type":"function","function":{"name":"f"}})"));
  EXPECT_EQ(r.tool_choice.kind, ToolChoice::kNamed);
  EXPECT_EQ(r.tool_choice.name, "f");
  EXPECT_EQ(chat(chat_body(R"("tools":[{"type":"function","function":{"name":"f"}}],)"
                           R"("tool_choice":"none")"))
                .tool_choice.kind,
            ToolChoice::kNone);
  // History: an assistant turn with calls (content null) and the tool's answer.
  r = chat(
      R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":null,)"
      R"("tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},)"
      R"({"role":"tool","tool_call_id":"c1","content":"42"}]})");
  ASSERT_EQ(r.messages.size(), 3u);
  ASSERT_EQ(r.messages[1].tool_calls.size(), 1u);
  EXPECT_EQ(r.messages[1].tool_calls[0].id, "c1");
  EXPECT_EQ(r.messages[1].tool_calls[0].name, "f");
  EXPECT_EQ(r.messages[1].tool_calls[0].arguments, "{}");
  EXPECT_EQ(r.messages[2].tool_call_id, "c1");
}

// The Anthropic Messages request as whale's request: system, blocks, tool use and results.
TEST(ApiParse, AnthropicMessages) {
  const GenRequest r = parse_anthropic_request(R"({"model": "m", "max_tokens": 64,
      "system": [{"type": "text", "text": "Be brief."}], "temperature": 0.5, "top_k": 5,
      "stop_sequences": ["END"], "tools": [{"name": "f", "description": "d",
      "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "f"},
      "messages": [{"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"},
          {"type": "text", "text": "calling"},
          {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
          "content": [{"type": "text", "text": "42"}]}, {"type": "text", "text": "thanks"}]},
        {"role": "assistant", "content": "Sure"}]})");
  EXPECT_EQ(r.max_tokens, 64);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 5);
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  ASSERT_EQ(r.messages.size(), 6u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[0].content, "Be brief.");
  EXPECT_EQ(r.messages[2].content, "calling");
  ASSERT_EQ(r.messages[2].tool_calls.size(), 1u);
  EXPECT_EQ(r.messages[2].tool_calls[0].arguments, R"({"a":1})");
  EXPECT_EQ(r.messages[3].role, "tool");
  EXPECT_EQ(r.messages[3].content, "42");
  EXPECT_EQ(r.messages[3].tool_call_id, "t1");
  EXPECT_EQ(r.messages[4].content, "thanks");
  EXPECT_TRUE(r.messages[5].prefix);  // a last assistant turn is continued (prefill)
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tool_choice.kind, ToolChoice::kNamed);
  auto param_of = [](const std::string& body) {
    try {
      parse_anthropic_request(body);
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 400);
      EXPECT_EQ(anthropic_error(e)["error"]["type"], "invalid_request_error");
      return e.param;
    }
    return std::string("(parsed)");
  };
  EXPECT_EQ(param_of(R"({"messages": [{"role": "user", "content": "q"}]})"), "max_tokens");
  EXPECT_EQ(param_of(R"({"max_tokens": 5, "messages": []})"), "messages");
  EXPECT_EQ(param_of(R"({"max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user",
      "content": "q"}]})"),
            "temperature");
  EXPECT_EQ(param_of(R"({"max_tokens": 5, "messages": [{"role": "system", "content": "q"}]})"),
            "messages[0].role");
  EXPECT_EQ(param_of(R"({"max_tokens": 5, "messages": [{"role": "user", "content":
      [{"type": "image"}]}]})"),
            "messages[0].content[0].type");
  EXPECT_EQ(param_of(R"({"max_tokens": 5, "messages": [{"role": "user", "content": "q"}],
      "tool_choice": {"type": "any"}})"),
            "tool_choice");
}

TEST(ApiParse, ChatLogprobsAndPrefix) {
  EXPECT_EQ(chat(chat_body(R"("logprobs":true)")).top_logprobs, 0);
  EXPECT_EQ(chat(chat_body(R"("logprobs":true,"top_logprobs":20)")).top_logprobs, 20);
  EXPECT_EQ(chat(chat_body(R"("logprobs":false,"top_logprobs":null)")).top_logprobs, -1);
  const GenRequest r =
      chat(R"({"messages":[{"role":"user","content":"q"},)"
           R"({"role":"assistant","content":"a","reasoning_content":"r","prefix":true}]})");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_TRUE(r.messages[1].prefix);
  EXPECT_FALSE(r.messages[0].prefix);
  EXPECT_EQ(r.messages[1].reasoning_content, "r");
}

// V3.1's thinking mode: DeepSeek's `thinking` object, chat_template_kwargs, the model name.
TEST(ApiParse, ThinkingChoice) {
  EXPECT_EQ(chat(chat_body(R"("model":"m")")).thinking, -1);
  EXPECT_EQ(chat(chat_body(R"("thinking":{"type":"enabled"})")).thinking, 1);
  EXPECT_EQ(
      chat(chat_body(R"("thinking":{"type":"disabled"},"model":"deepseek-reasoner")")).thinking, 0);
  EXPECT_EQ(chat(chat_body(R"("chat_template_kwargs":{"thinking":true})")).thinking, 1);
  EXPECT_EQ(chat(chat_body(R"("chat_template_kwargs":{"enable_thinking":false})")).thinking, 0);
  EXPECT_EQ(chat(chat_body(R"("chat_template_kwargs":{"other":1})")).thinking, -1);
  EXPECT_EQ(chat(chat_body(R"("model":"deepseek-reasoner")")).thinking, 1);
  EXPECT_EQ(chat(chat_body(R"("model":"deepseek-chat")")).thinking, 0);
  EXPECT_EQ(parse_anthropic_request(R"({"max_tokens": 9, "thinking": {"type": "enabled",
      "budget_tokens": 1024}, "messages": [{"role": "user", "content": "q"}]})")
                .thinking,
            1);
}

TEST(ApiParse, ChatIgnoresEchoAndCompletionIgnoresMessages) {
  EXPECT_FALSE(chat(chat_body(R"("echo":"not checked for chat")")).echo);
  EXPECT_TRUE(completion(R"({"prompt":"p","messages":5})").messages.empty());
}

struct ErrorCase {
  std::string body;
  bool chat;
  std::string param;    // expected ApiError::param
  std::string message;  // a substring of the expected message
};

TEST(ApiParse, Errors) {
  const std::vector<ErrorCase> cases = {
      // The body itself.
      {"", true, "", "not valid JSON"},
      {"{", true, "", "not valid JSON"},
      {R"({"messages": [}})", true, "", "not valid JSON"},
      {"{\"messages\":\"\xff\"}", true, "", "not valid JSON"},
      {R"({"a":1e999})", true, "", "not valid JSON"},
      {"[]", true, "", "must be a JSON object, got array"},
      {"\"str\"", false, "", "must be a JSON object, got string"},
      {"null", true, "", "must be a JSON object, got null"},
      // messages.
      {"{}", true, "messages", "messages: is required"},
      {R"({"messages":null})", true, "messages", "is required"},
      {R"({"messages":{}})", true, "messages", "messages: expected an array, got object"},
      {R"({"messages":[]})", true, "messages", "at least one message"},
      // thinking.
      {chat_body(R"("thinking":true)"), true, "thinking", "expected an object, got boolean"},
      {chat_body(R"("thinking":{})"), true, "thinking.type", "is required"},
      {chat_body(R"("thinking":{"type":"on"})"), true, "thinking.type", "unknown value"},
      {chat_body(R"("chat_template_kwargs":[])"), true, "chat_template_kwargs",
       "expected an object"},
      {chat_body(R"("chat_template_kwargs":{"thinking":"yes"})"), true,
       "chat_template_kwargs.thinking", "expected a boolean"},
      {R"({"messages":["hi"]})", true, "messages[0]", "expected an object, got string"},
      {R"({"messages":[{"content":"x"}]})", true, "messages[0].role", "is required"},
      {R"({"messages":[{"role":5,"content":"x"}]})", true, "messages[0].role",
       "expected a string, got number"},
      {R"({"messages":[{"role":"user","content":"a"},{"role":"robot","content":"x"}]})", true,
       "messages[1].role", "unknown role 'robot'"},
      {R"({"messages":[{"role":"function","content":"x"}]})", true, "messages[0].role",
       "unknown role"},
      {R"({"messages":[{"role":"User","content":"x"}]})", true, "messages[0].role", "unknown role"},
      {R"({"messages":[{"role":"user"}]})", true, "messages[0].content", "required"},
      {R"({"messages":[{"role":"system","content":null}]})", true, "messages[0].content",
       "required"},
      {R"({"messages":[{"role":"tool"}]})", true, "messages[0].content", "required"},
      {R"({"messages":[{"role":"user","content":3}]})", true, "messages[0].content",
       "expected a string or an array of content parts, got number"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]})",
       true, "messages[0].content[0].type", "'image_url' is not supported"},
      {R"({"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"input_audio"}]}]})",
       true, "messages[0].content[1].type", "'input_audio' is not supported"},
      {R"({"messages":[{"role":"user","content":["text"]}]})", true, "messages[0].content[0]",
       "expected an object, got string"},
      {R"({"messages":[{"role":"user","content":[{"text":"a"}]}]})", true,
       "messages[0].content[0].type", "is required"},
      {R"({"messages":[{"role":"user","content":[{"type":"text"}]}]})", true,
       "messages[0].content[0].text", "is required"},
      {R"({"messages":[{"role":"user","content":[{"type":"text","text":1}]}]})", true,
       "messages[0].content[0].text", "expected a string, got number"},
      {R"({"messages":[{"role":"assistant","content":"a","reasoning_content":[]}]})", true,
       "messages[0].reasoning_content", "expected a string, got array"},
      // prompt.
      {R"({"messages":[{"role":"user","content":"x"}]})", false, "prompt", "prompt: is required"},
      {R"({"prompt":""})", false, "prompt", "must not be empty"},
      {R"({"prompt":[]})", false, "prompt", "must not be empty"},
      {R"({"prompt":[""]})", false, "prompt", "must not be empty"},
      {R"({"prompt":[[]]})", false, "prompt", "must not be empty"},
      {R"({"prompt":["a","b"]})", false, "prompt", "batch prompts"},
      {R"({"prompt":[[1],[2]]})", false, "prompt", "batch prompts"},
      {R"({"prompt":[1,-2]})", false, "prompt[1]", "token id must be between 0 and 2147483647"},
      {R"({"prompt":[2147483648]})", false, "prompt[0]", "token id must be between"},
      {R"({"prompt":[1,1.5]})", false, "prompt[1]", "expected an integer, got non-integer number"},
      {R"({"prompt":[1,"a"]})", false, "prompt[1]", "expected an integer, got string"},
      {R"({"prompt":[[1,"a"]]})", false, "prompt[0][1]", "expected an integer, got string"},
      {R"({"prompt":7})", false, "prompt", "expected a string or an array of token ids"},
      {R"({"prompt":{"text":"a"}})", false, "prompt", "got object"},
      {R"({"prompt":"a","echo":"yes"})", false, "echo", "echo: expected a boolean, got string"},
      // Shared fields: types.
      {chat_body(R"("model":1)"), true, "model", "model: expected a string, got number"},
      {chat_body(R"("stream":"true")"), true, "stream", "stream: expected a boolean, got string"},
      {chat_body(R"("stream":1)"), true, "stream", "expected a boolean, got number"},
      {chat_body(R"("stream_options":true)"), true, "stream_options",
       "expected an object, got boolean"},
      {chat_body(R"("stream":true,"stream_options":{"include_usage":"yes"})"), true,
       "stream_options.include_usage", "expected a boolean, got string"},
      {chat_body(R"("temperature":"0.5")"), true, "temperature",
       "temperature: expected a number, got string"},
      {chat_body(R"("top_p":[])"), true, "top_p", "expected a number, got array"},
      {chat_body(R"("max_tokens":1.5)"), true, "max_tokens",
       "max_tokens: expected an integer, got non-integer number"},
      {chat_body(R"("max_tokens":"10")"), true, "max_tokens", "expected an integer, got string"},
      {chat_body(R"("max_tokens":10.0)"), true, "max_tokens", "expected an integer"},
      {chat_body(R"("max_completion_tokens":true)"), true, "max_completion_tokens",
       "expected an integer, got boolean"},
      {chat_body(R"("seed":1.5)"), true, "seed", "seed: expected an integer"},
      {chat_body(R"("seed":"1")"), true, "seed", "expected an integer, got string"},
      {chat_body(R"("frequency_penalty":"a")"), true, "frequency_penalty", "expected a number"},
      {chat_body(R"("presence_penalty":{})"), true, "presence_penalty", "expected a number"},
      {chat_body(R"("n":"1")"), true, "n", "expected an integer, got string"},
      {chat_body(R"("stop":5)"), true, "stop", "expected a string or an array of strings"},
      {chat_body(R"("stop":["a",5])"), true, "stop[1]", "expected a string, got number"},
      {chat_body(R"("response_format":"json_object")"), true, "response_format",
       "expected an object, got string"},
      {chat_body(R"("response_format":{})"), true, "response_format.type", "is required"},
      {chat_body(R"("response_format":{"type":1})"), true, "response_format.type",
       "expected a string"},
      {chat_body(R"("logprobs":1)"), true, "logprobs", "expected a boolean, got number"},
      {chat_body(R"("top_k":1.5)"), true, "top_k", "expected an integer"},
      {chat_body(R"("min_p":"0")"), true, "min_p", "expected a number"},
      {chat_body(R"("repetition_penalty":null,"top_k":"1")"), true, "top_k", "expected an integer"},
      {chat_body(R"("repetition_penalty":"1")"), true, "repetition_penalty", "expected a number"},
      // Shared fields: ranges and unsupported values.
      {chat_body(R"("max_tokens":0)"), true, "max_tokens", "must be at least 1, got 0"},
      {chat_body(R"("max_completion_tokens":-5)"), true, "max_completion_tokens",
       "must be at least 1"},
      {chat_body(R"("temperature":2.5)"), true, "temperature", "must be >= 0 and <= 2, got 2.5"},
      {chat_body(R"("temperature":-0.1)"), true, "temperature", "must be >= 0"},
      {chat_body(R"("top_p":0)"), true, "top_p", "must be > 0 and <= 1, got 0"},
      {chat_body(R"("top_p":1.01)"), true, "top_p", "must be > 0"},
      {chat_body(R"("frequency_penalty":2.01)"), true, "frequency_penalty",
       "must be >= -2 and <= 2"},
      {chat_body(R"("presence_penalty":-3)"), true, "presence_penalty", "must be >= -2"},
      {chat_body(R"("n":2)"), true, "n", "only n = 1 is supported"},
      {chat_body(R"("n":0)"), true, "n", "only n = 1"},
      {chat_body(R"("response_format":{"type":"json_schema","json_schema":{}})"), true,
       "response_format.json_schema.schema", "is required"},
      {chat_body(R"("response_format":{"type":"json_schema"})"), true,
       "response_format.json_schema", "is required"},
      {chat_body(R"("response_format":{"type":"json_schema","json_schema":{"schema":)"
                 R"({"type":"string","maxLength":3}}})"),
       true, "response_format.json_schema.schema.maxLength",
       "keyword 'maxLength' is not supported"},
      {chat_body(R"("response_format":{"type":"yaml"})"), true, "response_format.type",
       "unknown type 'yaml'"},
      {chat_body(R"("logprobs":true,"top_logprobs":21)"), true, "top_logprobs",
       "must be between 0 and 20"},
      {chat_body(R"("top_logprobs":2)"), true, "top_logprobs", "needs logprobs: true"},
      {chat_body(R"("logprobs":true,"top_logprobs":1.5)"), true, "top_logprobs",
       "expected an integer"},
      {chat_body(R"("tools":{})"), true, "tools", "expected an array"},
      {chat_body(R"("tools":[{"type":"function"}])"), true, "tools[0].function", "is required"},
      {chat_body(R"("tools":[{"function":{"name":"f"}}])"), true, "tools[0].type", "is required"},
      {chat_body(R"("tools":[{"type":"code","function":{"name":"f"}}])"), true, "tools[0].type",
       "only 'function'"},
      {chat_body(R"("tools":[{"type":"function","function":{"name":"a b"}}])"), true,
       "tools[0].function.name", "must be 1-64 characters"},
      {chat_body(R"("tools":[{"type":"function","function":{"name":"f"}},)"
                 R"({"type":"function","function":{"name":"f"}}])"),
       true, "tools[1].function.name", "duplicate"},
      {chat_body(R"("tools":[{"type":"function","function":{"name":"f","parameters":[]}}])"), true,
       "tools[0].function.parameters", "expected an object"},
      {chat_body(R"("tools":[{"type":"function","function":{"name":"f","strict":"yes"}}])"), true,
       "tools[0].function.strict", "expected a boolean"},
      {chat_body(R"("tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"any")"),
       true, "tool_choice", "unknown value 'any'"},
      {chat_body(R"("tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":)"
                 R"({"type":"function","function":{"name":"g"}})"),
       true, "tool_choice.function.name", "no tool named 'g'"},
      {chat_body(R"("tool_choice":"required")"), true, "tool_choice", "needs tools"},
      {chat_body(R"("tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":5)"), true,
       "tool_choice", "expected a string or an object"},
      {R"({"messages":[{"role":"assistant","tool_calls":[{"type":"function"}]}]})", true,
       "messages[0].tool_calls[0].function", "is required"},
      {R"({"messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f",)"
       R"("arguments":{}}}]}]})",
       true, "messages[0].tool_calls[0].function.arguments", "expected a string"},
      {R"({"messages":[{"role":"tool","content":"x","tool_call_id":3}]})", true,
       "messages[0].tool_call_id", "expected a string"},
      {R"({"prompt":"a","logprobs":21})", false, "logprobs", "must be between 0 and 20"},
      {R"({"prompt":"a","logprobs":-1})", false, "logprobs", "must be between 0 and 20"},
      {R"({"prompt":"a","logprobs":1,"echo":true})", false, "echo", "not supported"},
      {R"({"prompt":"a","suffix":"b","echo":true})", false, "echo", "cannot be combined"},
      {R"({"prompt":"a","suffix":["b"]})", false, "suffix", "expected a string"},
      {R"({"messages":[{"role":"user","content":"a","prefix":true}]})", true, "messages[0].prefix",
       "only the last message"},
      {R"({"messages":[{"role":"assistant","content":"a","prefix":true},)"
       R"({"role":"user","content":"b"}]})",
       true, "messages[0].prefix", "only the last message"},
      {R"({"messages":[{"role":"assistant","content":"a","prefix":1}]})", true,
       "messages[0].prefix", "expected a boolean"},
      {R"({"prompt":"a","logprobs":"2"})", false, "logprobs", "expected an integer, got string"},
      {chat_body(R"("top_k":-1)"), true, "top_k", "must be >= 0"},
      {chat_body(R"("min_p":1.5)"), true, "min_p", "must be >= 0 and <= 1"},
      {chat_body(R"("repetition_penalty":0)"), true, "repetition_penalty", "must be > 0"},
      {chat_body(R"("repetition_penalty":1e300)"), true, "repetition_penalty", "must be > 0"},
  };
  for (const ErrorCase& c : cases) {
    const ApiError e = error_of(c.body, c.chat);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.type, "invalid_request_error") << c.body;
    EXPECT_EQ(e.code, "") << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos)
        << c.body << "\n  message: " << e.what() << "\n  expected to contain: " << c.message;
    // The error object must always serialise (it is sent to the client).
    EXPECT_NO_THROW((void)e.to_json().dump()) << c.body;
  }
}

TEST(ApiParse, ErrorMessagesStayValidUtf8) {
  // A long role made of 3-byte characters: the quoted excerpt is cut on a character boundary.
  std::string role;
  for (int i = 0; i < 30; ++i) role += "你";
  const ApiError e = error_of(R"({"messages":[{"role":")" + role + R"(","content":"x"}]})", true);
  EXPECT_EQ(e.param, "messages[0].role");
  EXPECT_NE(std::string(e.what()).find("'你你你你你你你你你你你你你...'"), std::string::npos)
      << e.what();
  // Invalid UTF-8 in the body: nlohmann's "last read" excerpt of raw bytes is not quoted back.
  const ApiError bad = error_of("{\"model\":\"\xc3\x28\"}", true);
  EXPECT_NO_THROW((void)bad.to_json().dump()) << bad.what();
  EXPECT_EQ(std::string(bad.what()).find('\xc3'), std::string::npos);
}

TEST(ApiError, ToJson) {
  const ApiError full(400, "invalid_request_error", "too long", "context_length_exceeded",
                      "messages");
  EXPECT_EQ(full.to_json(), json::parse(R"({"error":{"message":"too long",
      "type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}})"));
  const ApiError bare(401, "authentication_error", "bad key");
  EXPECT_EQ(bare.status, 401);
  EXPECT_EQ(bare.to_json(), json::parse(R"({"error":{"message":"bad key",
      "type":"authentication_error","param":null,"code":null}})"));
}

TEST(ApiResponse, Usage) {
  const Usage u{
      .prompt_tokens = 10, .completion_tokens = 5, .cache_hit_tokens = 4, .reasoning_tokens = 3};
  EXPECT_EQ(u.to_json(), json::parse(R"({"prompt_tokens":10,"completion_tokens":5,
      "total_tokens":15,"prompt_cache_hit_tokens":4,"prompt_cache_miss_tokens":6,
      "prompt_tokens_details":{"cached_tokens":4},
      "completion_tokens_details":{"reasoning_tokens":3}})"));
}

TEST(ApiResponse, ChatResponse) {
  const Usage u{.prompt_tokens = 3, .completion_tokens = 2, .cache_hit_tokens = 0};
  EXPECT_EQ(chat_response("chatcmpl-1", 1700000000, "m", "Hi!", std::nullopt, "stop", u),
            json::parse(R"({"id":"chatcmpl-1","object":"chat.completion","created":1700000000,
      "model":"m","system_fingerprint":"whale",
      "choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"logprobs":null,
                  "finish_reason":"stop"}],
      "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,
               "prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":3,
               "prompt_tokens_details":{"cached_tokens":0},
               "completion_tokens_details":{"reasoning_tokens":0}}})"));
  const json r = chat_response("c", 5, "r1", "4", std::string("2+2=4"), "length", u);
  EXPECT_EQ(r["choices"][0]["message"], json::parse(R"({"role":"assistant","content":"4",
      "reasoning_content":"2+2=4"})"));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  // An engaged empty reasoning is still reported (the model thought nothing).
  EXPECT_EQ(chat_response("c", 5, "r1", "4", std::string(), "stop", u)["choices"][0]["message"],
            json::parse(R"({"role":"assistant","content":"4","reasoning_content":""})"));
}

TEST(ApiResponse, CompletionResponse) {
  const Usage u{.prompt_tokens = 4, .completion_tokens = 1, .cache_hit_tokens = 4};
  EXPECT_EQ(completion_response("cmpl-9", 42, "tiny", " a whale", "length", u),
            json::parse(R"({"id":"cmpl-9","object":"text_completion","created":42,"model":"tiny",
      "system_fingerprint":"whale",
      "choices":[{"index":0,"text":" a whale","logprobs":null,"finish_reason":"length"}],
      "usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5,
               "prompt_cache_hit_tokens":4,"prompt_cache_miss_tokens":0,
               "prompt_tokens_details":{"cached_tokens":4},
               "completion_tokens_details":{"reasoning_tokens":0}}})"));
}

TEST(ApiResponse, ChatChunks) {
  const std::string head = R"("id":"c1","object":"chat.completion.chunk","created":7,"model":"m",)"
                           R"("system_fingerprint":"whale",)";
  EXPECT_EQ(chat_chunk("c1", 7, "m", delta(true, "", std::nullopt), ""),
            json::parse("{" + head + R"("choices":[{"index":0,
      "delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]})"));
  EXPECT_EQ(chat_chunk("c1", 7, "m", delta(false, std::nullopt, "hmm"), ""),
            json::parse("{" + head + R"("choices":[{"index":0,
      "delta":{"reasoning_content":"hmm"},"logprobs":null,"finish_reason":null}]})"));
  EXPECT_EQ(chat_chunk("c1", 7, "m", delta(false, "x", "y"), ""),
            json::parse("{" + head + R"("choices":[{"index":0,
      "delta":{"content":"x","reasoning_content":"y"},"logprobs":null,"finish_reason":null}]})"));
  EXPECT_EQ(chat_chunk("c1", 7, "m", ChatDelta{}, "stop"),
            json::parse("{" + head + R"("choices":[{"index":0,"delta":{},"logprobs":null,
      "finish_reason":"stop"}]})"));
  const Usage u{.prompt_tokens = 2, .completion_tokens = 3, .cache_hit_tokens = 1};
  EXPECT_EQ(usage_chunk("c1", 7, "m", true, u),
            json::parse("{" + head + R"("choices":[],"usage":{"prompt_tokens":2,
      "completion_tokens":3,"total_tokens":5,"prompt_cache_hit_tokens":1,
      "prompt_cache_miss_tokens":1,"prompt_tokens_details":{"cached_tokens":1},
      "completion_tokens_details":{"reasoning_tokens":0}}})"));
}

TEST(ApiResponse, CompletionChunks) {
  const std::string head =
      R"("id":"k","object":"text_completion","created":8,"model":"m","system_fingerprint":"whale",)";
  EXPECT_EQ(completion_chunk("k", 8, "m", "tok", ""),
            json::parse("{" + head + R"("choices":[{"index":0,"text":"tok","logprobs":null,
      "finish_reason":null}]})"));
  EXPECT_EQ(completion_chunk("k", 8, "m", "", "length"),
            json::parse("{" + head + R"("choices":[{"index":0,"text":"","logprobs":null,
      "finish_reason":"length"}]})"));
  const Usage u{.prompt_tokens = 1, .completion_tokens = 1, .cache_hit_tokens = 0};
  EXPECT_EQ(usage_chunk("k", 8, "m", false, u),
            json::parse("{" + head + R"("choices":[],"usage":{"prompt_tokens":1,
      "completion_tokens":1,"total_tokens":2,"prompt_cache_hit_tokens":0,
      "prompt_cache_miss_tokens":1,"prompt_tokens_details":{"cached_tokens":0},
      "completion_tokens_details":{"reasoning_tokens":0}}})"));
}

TEST(ApiSse, Framing) {
  EXPECT_EQ(sse_event(json::parse(R"({"a":[1,"x"]})")), "data: {\"a\":[1,\"x\"]}\n\n");
  EXPECT_EQ(sse_event(json("line\nbreak")), "data: \"line\\nbreak\"\n\n");  // one line per event
  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
  // Multi-byte UTF-8 goes through unescaped; a cut-off sequence becomes U+FFFD, never a throw.
  EXPECT_EQ(sse_event(json{{"t", "é"}}), "data: {\"t\":\"é\"}\n\n");
  EXPECT_EQ(sse_event(json{{"t", "a\xc3"}}), "data: {\"t\":\"a\xef\xbf\xbd\"}\n\n");
  const std::string chunk =
      sse_event(chat_chunk("i", 1, "m", delta(true, std::nullopt, std::nullopt), ""));
  ASSERT_TRUE(chunk.starts_with("data: "));
  ASSERT_TRUE(chunk.ends_with("\n\n"));
  EXPECT_EQ(chunk.find('\n'), chunk.size() - 2);
  EXPECT_EQ(json::parse(chunk.substr(6)),
            chat_chunk("i", 1, "m", delta(true, std::nullopt, std::nullopt), ""));
}

// ---- ReasoningStream ----

struct Streamed {
  std::string reasoning, content;
  bool done = false;
};

// Pushes `pieces` in order, then flushes.
Streamed stream_all(const std::vector<std::string>& pieces) {
  ReasoningStream rs;
  Streamed s;
  for (const std::string& p : pieces) {
    const ReasoningStream::Piece out = rs.push(p);
    s.reasoning += out.reasoning;
    s.content += out.content;
  }
  s.done = rs.thinking_done();
  const ReasoningStream::Piece out = rs.flush();
  s.reasoning += out.reasoning;
  s.content += out.content;
  return s;
}

void expect_matches_split(const std::vector<std::string>& pieces) {
  std::string text;
  for (const std::string& p : pieces) text += p;
  const ReasoningSplit want = split_reasoning(text);
  const Streamed got = stream_all(pieces);
  EXPECT_EQ(got.reasoning, want.reasoning)
      << "text: " << json(text).dump(-1, ' ', false, json::error_handler_t::replace);
  EXPECT_EQ(got.content, want.content)
      << "text: " << json(text).dump(-1, ' ', false, json::error_handler_t::replace);
  EXPECT_EQ(got.done, want.thinking_done);
}

TEST(ApiReasoningStream, HandCases) {
  expect_matches_split({"<think>\nLet me think.\n</think>\n\nThe answer is 4."});
  expect_matches_split({"Let me", " think.", "\n</", "think", ">", "\n\n", "The answer"});
  expect_matches_split({"", "  <think>  <think> x"});  // only one "<think>" is removed
  expect_matches_split({"<thi", "nk>"});
  expect_matches_split({"<thi"});
  expect_matches_split({"a </thi"});
  expect_matches_split({"a </thi", "x"});
  expect_matches_split({"</think>"});
  expect_matches_split({"<think></think>"});
  expect_matches_split({"a</think>b</think>c"});  // only the first "</think>" splits
  expect_matches_split({"a </th</think> \n b "});
  expect_matches_split({"\n \t"});
  expect_matches_split({});

  const Streamed s = stream_all(
      {"<think>\n", "Step 1.", "\n\n", "Step 2.\n", "</think>", "\n\n", "Answer", " here. "});
  EXPECT_EQ(s.reasoning, "Step 1.\n\nStep 2.");
  EXPECT_EQ(s.content, "Answer here. ");
  EXPECT_TRUE(s.done);
}

TEST(ApiReasoningStream, ReleasesEarly) {
  ReasoningStream rs;
  auto push = [&](std::string_view t) {
    const ReasoningStream::Piece p = rs.push(t);
    return std::make_pair(p.reasoning, p.content);
  };
  using P = std::pair<std::string, std::string>;
  EXPECT_EQ(push("<thi"), P("", ""));  // could still be the opening tag
  EXPECT_EQ(push("nk>\n"), P("", ""));
  EXPECT_EQ(push("Hello"), P("Hello", ""));  // released at once
  EXPECT_EQ(push(" \n"), P("", ""));         // may be trailing whitespace
  EXPECT_EQ(push("w"), P(" \nw", ""));
  EXPECT_EQ(push(" </th"), P("", ""));  // may be "</think>"
  EXPECT_EQ(push("ey"), P(" </they", ""));
  EXPECT_EQ(push("\xc3"), P("", ""));  // half of "é"
  EXPECT_EQ(push("\xa9"), P("é", ""));
  EXPECT_FALSE(rs.thinking_done());
  EXPECT_EQ(push("\n</think>"), P("", ""));
  EXPECT_TRUE(rs.thinking_done());
  EXPECT_EQ(push("\n\n"), P("", ""));  // leading whitespace of the answer is dropped
  EXPECT_EQ(push("Answer "), P("", "Answer "));
  EXPECT_EQ(push("\xe4\xbd"), P("", ""));
  EXPECT_EQ(push("\xa0 <think> </think>"), P("", "你 <think> </think>"));
  const ReasoningStream::Piece last = rs.flush();
  EXPECT_EQ(last.reasoning, "");
  EXPECT_EQ(last.content, "");
}

TEST(ApiReasoningStream, FlushReleasesHeldText) {
  ReasoningStream rs;
  EXPECT_EQ(rs.push("  <thin").reasoning, "");
  EXPECT_EQ(rs.flush().reasoning, "<thin");  // never became "<think>": it is reasoning text
  ReasoningStream rs2;
  EXPECT_EQ(rs2.push("x \n</thi").reasoning, "x");
  EXPECT_EQ(rs2.flush().reasoning, " \n</thi");
  ReasoningStream rs3;
  EXPECT_EQ(rs3.push("x \n").reasoning, "x");
  EXPECT_EQ(rs3.flush().reasoning, "");  // trailing whitespace dropped
}

// The longest common prefix of two strings.
std::string common_prefix(const std::string& a, const std::string& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return a.substr(0, n);
}

// Whatever is certain after seeing `seen`: the common prefix of split_reasoning over every way the
// text could go on. Only these continuations can change a held decision (end of text, something
// else, the rest of either tag).
ReasoningSplit certain_after(const std::string& seen) {
  std::vector<std::string> continuations = {"", "x", " "};
  for (size_t k = 0; k <= 8; ++k) continuations.push_back(std::string("</think>").substr(k));
  for (size_t k = 0; k <= 7; ++k) continuations.push_back(std::string("<think>").substr(k));
  ReasoningSplit certain = split_reasoning(seen);
  for (const std::string& c : continuations) {
    const ReasoningSplit s = split_reasoning(seen + c);
    certain.reasoning = common_prefix(certain.reasoning, s.reasoning);
    certain.content = common_prefix(certain.content, s.content);
  }
  return certain;
}

// `s` without an incomplete UTF-8 sequence at its end.
std::string complete_utf8(const std::string& s) {
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? s.substr(0, s.size() - back) : s;
  }
  return s;
}

TEST(ApiReasoningStream, RandomTextsAndSplitsMatchSplitReasoning) {
  const std::vector<std::string> fragments = {"<think>", "</think>", " ",   "\n", "a",   "é",
                                              "</thi",   "nk>",      "<",   "\t", "b",   "<th",
                                              "</",      "think",    ">\n", "你", "\r\n"};
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 10000; ++iter) {
    std::string text;
    const int n_frag = std::uniform_int_distribution<int>(0, 14)(rng);
    for (int i = 0; i < n_frag; ++i) {
      text += fragments[std::uniform_int_distribution<size_t>(0, fragments.size() - 1)(rng)];
    }
    // Random cut points (byte-level: they may split "é" and "你").
    std::vector<std::string> pieces;
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t len = std::uniform_int_distribution<size_t>(0, 6)(rng);
      pieces.push_back(text.substr(pos, len));
      pos += len;
    }
    const ReasoningSplit want = split_reasoning(text);
    ReasoningStream rs;
    std::string reasoning, content, seen;
    for (const std::string& p : pieces) {
      const ReasoningStream::Piece out = rs.push(p);
      reasoning += out.reasoning;
      content += out.content;
      seen += p;
      // Released as early as possible: exactly what is already certain, up to an unfinished
      // UTF-8 sequence.
      const std::string complete = complete_utf8(seen);
      const ReasoningSplit certain = certain_after(complete);
      ASSERT_EQ(reasoning, certain.reasoning)
          << "seen: " << json(seen).dump(-1, ' ', false, json::error_handler_t::replace);
      ASSERT_EQ(content, certain.content)
          << "seen: " << json(seen).dump(-1, ' ', false, json::error_handler_t::replace);
      ASSERT_EQ(rs.thinking_done(), split_reasoning(complete).thinking_done);
    }
    const ReasoningStream::Piece out = rs.flush();
    reasoning += out.reasoning;
    content += out.content;
    ASSERT_EQ(reasoning, want.reasoning)
        << "text: " << json(text).dump(-1, ' ', false, json::error_handler_t::replace);
    ASSERT_EQ(content, want.content)
        << "text: " << json(text).dump(-1, ' ', false, json::error_handler_t::replace);
  }
}

}  // namespace
}  // namespace whale::serve
