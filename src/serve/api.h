// The OpenAI / DeepSeek HTTP API as data: request bodies parsed and validated into GenRequest,
// responses and stream chunks built as JSON, errors as OpenAI error objects, and the SSE framing.
//
// Nothing here touches sockets or the model; the server (serve/server.h) glues it to HTTP and the
// engine (serve/engine.h).
//
// Validation follows the OpenAI API reference: unknown fields are ignored; a known field with the
// wrong type or out of range is a 400 `invalid_request_error` whose `param` names the field.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "run/chat.h"
#include "run/sampler.h"
#include "serve/json_schema.h"
#include "serve/tools.h"

namespace whale::serve {

// An error the client sees: HTTP status plus the OpenAI error object
//   {"error": {"message": ..., "type": ..., "param": ... | null, "code": ... | null}}
struct ApiError : std::runtime_error {
  int status;         // 400, 401, 404, 413, 429, 500, 503
  std::string type;   // "invalid_request_error", "authentication_error", "server_error", ...
  std::string code;   // "" -> null; e.g. "context_length_exceeded", "invalid_api_key"
  std::string param;  // "" -> null; e.g. "messages[1].role", "temperature"
  ApiError(int status, std::string type, std::string message, std::string code = "",
           std::string param = "");
  nlohmann::json to_json() const;
};

// A parsed /v1/chat/completions or /v1/completions request.
struct GenRequest {
  bool chat = true;  // chat completion (messages) or plain completion (prompt)
  std::string model;
  std::vector<ChatMessage> messages;  // chat: in order; content parts joined
  std::string prompt;                 // completions: a string prompt
  std::vector<int32_t> prompt_ids;    // completions: a prompt given as token ids (then prompt "")
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  std::optional<int64_t> max_tokens;  // max_tokens or max_completion_tokens; absent: server default
  SamplingParams sampling;            // temperature, top_p, seed, penalties (see parse_request)
  bool has_seed = false;              // seed given by the client
  std::vector<std::string> stop;      // string or array of strings
  bool json_object = false;           // response_format {"type":"json_object"}
  // response_format {"type":"json_schema","json_schema":{"schema":...}}, compiled.
  std::shared_ptr<const JsonSchema> json_schema;
  bool echo = false;  // completions only: echo the prompt
  // completions only: fill in the middle between `prompt` and `suffix` (FIM); absent: no FIM.
  std::optional<std::string> suffix;
  // Log-probabilities: -1 none; otherwise each generated token's logprob and this many most
  // likely alternatives (chat: logprobs true + top_logprobs 0-20; completions: logprobs 0-20).
  int top_logprobs = -1;
  // Function calling (chat): the functions offered, which the model may or must call, and
  // whether it may make several calls in one turn.
  std::vector<ToolDef> tools;
  ToolChoice tool_choice;  // defaults to auto with tools, none without
  bool parallel_tool_calls = true;
  // V3.1's thinking mode (chat): 1 on, 0 off, -1 not chosen (the server's default). Chosen by
  // `thinking: {"type": "enabled" | "disabled"}` (DeepSeek's and Anthropic's field),
  // `chat_template_kwargs: {"thinking" | "enable_thinking": bool}` (vLLM's and SGLang's), or the
  // model name ("deepseek-reasoner" on, "deepseek-chat" off), in that order.
  int thinking = -1;
};

// Parses and validates a request body. `chat`: which endpoint. Throws ApiError (400) naming the
// problem and the param.
GenRequest parse_request(std::string_view body, bool chat);

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0, cache_hit_tokens = 0, reasoning_tokens = 0;
  // Also total_tokens, DeepSeek's prompt_cache_hit_tokens / _miss_tokens and OpenAI's
  // prompt_tokens_details.cached_tokens and completion_tokens_details.reasoning_tokens.
  nlohmann::json to_json() const;
};

// One generated token's log-probability and its most likely alternatives, as text.
struct LogprobEntry {
  std::string token;  // the token's bytes (may be part of a UTF-8 character)
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
};
// The `logprobs` object of a chat choice or chunk: {"content": [{token, logprob, bytes,
// top_logprobs: [{token, logprob, bytes}]}]}.
nlohmann::json chat_logprobs(const std::vector<LogprobEntry>& entries);
// The legacy completions shape: {tokens, token_logprobs, top_logprobs: [{token: logprob}],
// text_offset}; offsets count bytes from `offset`, the position of the first token in the text.
nlohmann::json completion_logprobs(const std::vector<LogprobEntry>& entries, size_t offset);

// Non-streamed responses. `logprobs`: the choice's logprobs object, or null.
// `tool_calls`: the calls of the message (then `content` "" becomes null, as OpenAI sends it).
nlohmann::json chat_response(const std::string& id, int64_t created, const std::string& model,
                             const std::string& content,
                             const std::optional<std::string>& reasoning_content,
                             const std::string& finish_reason, const Usage& usage,
                             nlohmann::json logprobs = nullptr,
                             const std::vector<ToolCall>& tool_calls = {});
nlohmann::json completion_response(const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, const std::string& finish_reason,
                                   const Usage& usage, nlohmann::json logprobs = nullptr);

// Stream chunks ("chat.completion.chunk" / "text_completion"). Fields left empty (nullopt) are
// omitted from the delta, an engaged "" is kept (OpenAI's first chunk: {"role": "assistant",
// "content": ""}); finish_reason "" -> null. A usage chunk has empty choices.
struct ChatDelta {
  bool role = false;  // include "role": "assistant" (first chunk)
  std::optional<std::string> content, reasoning_content;
  // Tool calls, OpenAI's streamed shape: the first fragment of a call carries index, id, type and
  // function.name (arguments ""), later ones index and function.arguments only.
  struct CallFragment {
    int index = 0;
    std::string id, name;  // both empty: an arguments-only fragment
    std::string arguments;
  };
  std::vector<CallFragment> tool_calls;
};
nlohmann::json chat_chunk(const std::string& id, int64_t created, const std::string& model,
                          const ChatDelta& delta, const std::string& finish_reason,
                          nlohmann::json logprobs = nullptr);
nlohmann::json completion_chunk(const std::string& id, int64_t created, const std::string& model,
                                const std::string& text, const std::string& finish_reason,
                                nlohmann::json logprobs = nullptr);
nlohmann::json usage_chunk(const std::string& id, int64_t created, const std::string& model,
                           bool chat, const Usage& usage);

// Server-sent events: "data: <json>\n\n" and the terminator "data: [DONE]\n\n".
std::string sse_event(const nlohmann::json& j);
std::string sse_done();

// Splits streamed R1 output into reasoning and answer as it arrives, so that the concatenated
// pieces equal split_reasoning(all text): reasoning = text before the first "</think>" (a leading
// "<think>" and surrounding whitespace removed), content = the text after it without leading
// whitespace. Bytes that might still turn out to be whitespace at the end of the reasoning, part
// of "</think>" or part of a leading "<think>" are held back until they are decided; so is an
// incomplete UTF-8 sequence at the end of a push, so that every piece ends on a code point
// boundary when the text is valid UTF-8. Everything else is released at once. Linear time.
class ReasoningStream {
 public:
  struct Piece {
    std::string reasoning, content;  // either may be empty
  };
  Piece push(std::string_view text);
  Piece flush();  // end of output: releases what is held (trailing reasoning whitespace dropped)
  bool thinking_done() const { return done_; }

 private:
  void feed(char c, Piece& out);  // one byte through the automaton

  std::string utf8_;      // pushed bytes not fed yet: an incomplete UTF-8 sequence
  std::string held_;      // whitespace inside the reasoning that may turn out to be trailing
  size_t matched_ = 0;    // bytes of "<think>" (before opened_) or "</think>" matched and held
  bool opened_ = false;   // past the leading whitespace and the optional "<think>"
  bool started_ = false;  // first non-space reasoning byte seen
  bool done_ = false;     // "</think>" seen
  bool content_started_ = false;  // first non-space content byte seen
};

}  // namespace whale::serve
