// libFuzzer target: arbitrary bytes as a /v1/chat/completions, a /v1/completions and an
// /anthropic/v1/messages request body.
// parse_request must return a valid request or throw a 400 ApiError whose error object
// serialises; any other exception escapes and libFuzzer reports it. A parsed request's text is
// also streamed through ReasoningStream in pieces and checked against split_reasoning, and put
// into a response to check that it serialises; the same text goes through the tool-call parser,
// whole and streamed in pieces, which must agree; with a json_schema response format, the text goes
// through its automaton, and what that accepts must parse.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "run/chat.h"
#include "serve/anthropic.h"
#include "serve/api.h"
#include "serve/json_schema.h"
#include "serve/tools.h"

namespace {

using whale::serve::GenRequest;

void check(bool ok) {
  if (!ok) std::abort();
}

// Streams `text` in pieces of 1..7 bytes (lengths taken from the text itself) and compares the
// concatenation with split_reasoning.
void check_reasoning_stream(const std::string& text) {
  whale::serve::ReasoningStream rs;
  std::string reasoning, content;
  for (size_t pos = 0; pos < text.size();) {
    const size_t len = 1 + static_cast<unsigned char>(text[pos]) % 7;
    const auto piece = rs.push(std::string_view(text).substr(pos, len));
    reasoning += piece.reasoning;
    content += piece.content;
    pos += len;
  }
  const auto last = rs.flush();
  const whale::ReasoningSplit want = whale::split_reasoning(text);
  check(reasoning + last.reasoning == want.reasoning);
  check(content + last.content == want.content);
}

// The streaming tool-call parser, fed pieces of 1..7 bytes, against the whole-text one.
void check_tool_stream(const std::string& text) {
  whale::serve::ToolCallStream ts("f");
  std::string content;
  std::vector<whale::ToolCall> calls;
  auto take = [&](const whale::serve::ToolCallStream::Events& e) {
    content += e.content;
    calls.insert(calls.end(), e.calls.begin(), e.calls.end());
  };
  for (size_t pos = 0; pos < text.size();) {
    const size_t len = 1 + static_cast<unsigned char>(text[pos]) % 7;
    take(ts.push(std::string_view(text).substr(pos, len)));
    pos += len;
  }
  take(ts.flush());
  const whale::serve::ParsedCalls want = whale::serve::parse_tool_calls(text, "f");
  check(content == want.content && calls.size() == want.calls.size());
  for (size_t i = 0; i < calls.size(); ++i)
    check(calls[i].name == want.calls[i].name && calls[i].arguments == want.calls[i].arguments &&
          calls[i].id == want.calls[i].id && !calls[i].name.empty());
}

void check_request(const GenRequest& r) {
  const whale::SamplingParams& s = r.sampling;
  check(s.temperature >= 0 && s.temperature <= 2 && s.top_p > 0 && s.top_p <= 1);
  check(s.min_p >= 0 && s.min_p <= 1 && s.repetition_penalty > 0 && s.top_k >= 0);
  check(!r.max_tokens || *r.max_tokens >= 1);
  check(r.stop.size() <= 16);
  std::string text;
  if (r.chat) {
    check(!r.messages.empty());
    for (const whale::ChatMessage& m : r.messages) {
      check(m.role == "system" || m.role == "user" || m.role == "assistant" || m.role == "tool");
      text += m.content;
    }
  } else {
    check(!r.prompt.empty() || !r.prompt_ids.empty());
    text = r.prompt;
  }
  check_reasoning_stream(text);
  check_tool_stream(text);
  // A structured-output schema: whatever text the automaton accepts as complete is JSON.
  if (r.json_schema) {
    whale::serve::SchemaState st(r.json_schema.get());
    if (st.push(text) && st.complete())
      check(!nlohmann::json::parse(text, nullptr, false).is_discarded());
  }
  for (const whale::serve::ToolDef& t : r.tools) check(!t.name.empty() && t.parameters.is_object());
  // Every chat format renders every parsed conversation (V3.1 with thinking on and off); a
  // prompt starts with the bos text and the system prompt.
  for (const whale::ChatStyle style :
       {whale::ChatStyle::V3, whale::ChatStyle::R1, whale::ChatStyle::V31}) {
    const std::string tools = whale::serve::tools_prompt(r.tools, style);
    if (r.chat)
      for (const bool thinking : {false, true})
        check(
            whale::render_chat(r.messages, style, "<B>", true, tools, thinking).starts_with("<B>"));
  }
  const whale::ReasoningSplit split = whale::split_reasoning(text);
  const whale::serve::Usage usage{
      .prompt_tokens = 1, .completion_tokens = 2, .cache_hit_tokens = 0};
  // Parsed strings are valid UTF-8, so the strict dump must not throw.
  (void)whale::serve::chat_response("id", 0, r.model, split.content, split.reasoning, "stop", usage)
      .dump();
  const whale::serve::ParsedCalls pc = whale::serve::parse_tool_calls(split.content, "f");
  (void)whale::serve::chat_response("id", 0, r.model, pc.content, split.reasoning, "tool_calls",
                                    usage, nullptr, pc.calls)
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  (void)whale::serve::sse_event(whale::serve::completion_chunk("id", 0, r.model, text, ""));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  for (const bool chat : {true, false}) {
    try {
      check_request(whale::serve::parse_request(body, chat));
    } catch (const whale::serve::ApiError& e) {
      check(e.status == 400 && e.type == "invalid_request_error" && e.code.empty());
      (void)e.to_json().dump();  // strict: throws (and so fails) on invalid UTF-8
    }
  }
  // The same bytes as an Anthropic Messages request.
  try {
    check_request(whale::serve::parse_anthropic_request(body));
  } catch (const whale::serve::ApiError& e) {
    check(e.status == 400 && e.type == "invalid_request_error");
    (void)whale::serve::anthropic_error(e).dump();
  }
  return 0;
}
