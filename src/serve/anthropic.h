// The Anthropic Messages API (POST /anthropic/v1/messages), which DeepSeek's API also offers:
// requests translated into whale's GenRequest, responses and stream events in Anthropic's shapes.
//
// Request: model, max_tokens (required), messages (user / assistant; content a string or blocks:
// text, tool_use, tool_result; thinking blocks in the history are dropped, as R1 drops earlier
// reasoning), system (a string or text blocks), stop_sequences, temperature (0-1), top_p, top_k,
// stream, tools (name, description, input_schema), tool_choice (auto, any, tool, none), thinking
// and metadata (accepted; an R1 model always thinks). Unknown fields are ignored.
//
// Response: {id: "msg_...", type: "message", role: "assistant", model, content: [thinking?,
// text?, tool_use...], stop_reason: end_turn | max_tokens | stop_sequence | tool_use,
// stop_sequence, usage: {input_tokens, output_tokens, cache_read_input_tokens}}. Errors:
// {"type": "error", "error": {"type": "invalid_request_error", "message": ...}}.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "serve/api.h"

namespace whale::serve {

// Parses and validates a Messages request (throws ApiError 400 naming the field).
GenRequest parse_anthropic_request(std::string_view body);

// An ApiError in Anthropic's error shape.
nlohmann::json anthropic_error(const ApiError& e);

// One content block of a response.
struct AnthropicBlock {
  enum Kind { kThinking, kText, kToolUse } kind = kText;
  std::string text;  // thinking or text
  ToolCall call;     // tool_use (id, name, arguments as JSON text)
};
nlohmann::json anthropic_block(const AnthropicBlock& b);

// stop_reason from whale's finish reason: "stop" is end_turn or, when `stop_sequence` is not
// empty, stop_sequence; "length" max_tokens; calls made tool_use.
std::string anthropic_stop_reason(const std::string& finish_reason, bool tool_use,
                                  const std::string& stop_sequence);

nlohmann::json anthropic_response(const std::string& id, const std::string& model,
                                  const std::vector<AnthropicBlock>& blocks,
                                  const std::string& stop_reason, const std::string& stop_sequence,
                                  const Usage& usage);

// "event: TYPE\ndata: JSON\n\n".
std::string anthropic_event(const nlohmann::json& data);

}  // namespace whale::serve
