#include "serve/anthropic.h"

#include "serve/api_detail.h"

namespace whale::serve {

using json = nlohmann::json;
using namespace detail;

namespace {

// Text of a content given as a string or as blocks of which only `text` ones count.
std::string text_of(const json& c, const std::string& p) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) wrong_type(p, "a string or an array of content blocks", c);
  std::string out;
  for (size_t k = 0; k < c.size(); ++k) {
    const std::string q = index_param(p, k);
    if (!c[k].is_object()) wrong_type(q, "an object", c[k]);
    const json* type = field(c[k], "type");
    if (!type) fail(q + ".type", "is required");
    if (get_string(*type, q + ".type") != "text")
      fail(q + ".type", "only text blocks are supported here");
    const json* text = field(c[k], "text");
    if (!text) fail(q + ".text", "is required");
    out += get_string(*text, q + ".text");
  }
  return out;
}

// One Anthropic message: a user turn may carry tool results (each becomes a "tool" message,
// before the user's own text); an assistant turn text and tool_use blocks (its calls).
void add_message(const json& m, size_t i, std::vector<ChatMessage>& out) {
  const std::string p = index_param("messages", i);
  if (!m.is_object()) wrong_type(p, "an object", m);
  const json* role = field(m, "role");
  if (!role) fail(p + ".role", "is required");
  const std::string& r = get_string(*role, p + ".role");
  if (r != "user" && r != "assistant")
    fail(p + ".role", "unknown role " + excerpt(r) + " (expected user or assistant)");
  const json* content = field(m, "content");
  if (!content) fail(p + ".content", "is required");
  const std::string cp = p + ".content";
  if (content->is_string()) {
    out.push_back({r, content->get<std::string>()});
    return;
  }
  if (!content->is_array()) wrong_type(cp, "a string or an array of content blocks", *content);
  ChatMessage msg{r, ""};
  for (size_t k = 0; k < content->size(); ++k) {
    const json& b = (*content)[k];
    const std::string q = index_param(cp, k);
    if (!b.is_object()) wrong_type(q, "an object", b);
    const json* type = field(b, "type");
    if (!type) fail(q + ".type", "is required");
    const std::string& t = get_string(*type, q + ".type");
    if (t == "text") {
      const json* text = field(b, "text");
      if (!text) fail(q + ".text", "is required");
      msg.content += get_string(*text, q + ".text");
    } else if (t == "thinking" || t == "redacted_thinking") {
      if (r != "assistant") fail(q + ".type", "thinking blocks belong to assistant turns");
    } else if (t == "tool_use" && r == "assistant") {
      ToolCall c;
      const json* id = field(b, "id");
      const json* name = field(b, "name");
      if (!name) fail(q + ".name", "is required");
      if (id) c.id = get_string(*id, q + ".id");
      c.name = get_string(*name, q + ".name");
      const json* input = field(b, "input");
      if (input && !input->is_object()) wrong_type(q + ".input", "an object", *input);
      c.arguments = input ? input->dump() : "{}";
      msg.tool_calls.push_back(std::move(c));
    } else if (t == "tool_result" && r == "user") {
      ChatMessage res{"tool", ""};
      if (const json* id = field(b, "tool_use_id"))
        res.tool_call_id = get_string(*id, q + ".tool_use_id");
      if (const json* c = field(b, "content")) res.content = text_of(*c, q + ".content");
      if (const json* err = field(b, "is_error"); err && get_bool(*err, q + ".is_error"))
        res.content = "Error: " + res.content;
      out.push_back(std::move(res));
    } else {
      fail(q + ".type", "block type " + excerpt(t) + " is not supported in a " + r + " message");
    }
  }
  if (!msg.content.empty() || !msg.tool_calls.empty() || r == "assistant")
    out.push_back(std::move(msg));
}

void parse_anthropic_tools(const json& body, GenRequest& req) {
  if (const json* tools = field(body, "tools")) {
    if (!tools->is_array()) wrong_type("tools", "an array", *tools);
    for (size_t i = 0; i < tools->size(); ++i) {
      const std::string p = index_param("tools", i);
      const json& t = (*tools)[i];
      if (!t.is_object()) wrong_type(p, "an object", t);
      if (const json* type = field(t, "type"); type && get_string(*type, p + ".type") != "custom")
        fail(p + ".type", "only custom (client) tools are supported");
      ToolDef def;
      const json* name = field(t, "name");
      if (!name) fail(p + ".name", "is required");
      def.name = tool_name(*name, req, p + ".name");
      if (const json* d = field(t, "description"))
        def.description = get_string(*d, p + ".description");
      const json* schema = field(t, "input_schema");
      if (!schema) fail(p + ".input_schema", "is required");
      if (!schema->is_object()) wrong_type(p + ".input_schema", "an object", *schema);
      def.parameters = *schema;
      req.tools.push_back(std::move(def));
    }
  }
  req.tool_choice.kind = req.tools.empty() ? ToolChoice::kNone : ToolChoice::kAuto;
  if (const json* tc = field(body, "tool_choice")) {
    if (!tc->is_object()) wrong_type("tool_choice", "an object", *tc);
    const json* type = field(*tc, "type");
    if (!type) fail("tool_choice.type", "is required");
    const std::string& t = get_string(*type, "tool_choice.type");
    if (t == "auto") {
      req.tool_choice.kind = ToolChoice::kAuto;
    } else if (t == "any") {
      req.tool_choice.kind = ToolChoice::kRequired;
    } else if (t == "none") {
      req.tool_choice.kind = ToolChoice::kNone;
    } else if (t == "tool") {
      const json* name = field(*tc, "name");
      if (!name) fail("tool_choice.name", "is required");
      req.tool_choice = {ToolChoice::kNamed, get_string(*name, "tool_choice.name")};
      check_tool_named(req, "tool_choice.name");
    } else {
      fail("tool_choice.type", "unknown type " + excerpt(t) + " (expected auto, any, tool, none)");
    }
    if (req.tools.empty() && req.tool_choice.kind != ToolChoice::kNone) {
      if (req.tool_choice.kind != ToolChoice::kAuto) fail("tool_choice", "needs tools");
      req.tool_choice.kind = ToolChoice::kNone;
    }
    if (const json* dis = field(*tc, "disable_parallel_tool_use"))
      req.parallel_tool_calls = !get_bool(*dis, "tool_choice.disable_parallel_tool_use");
  }
}

}  // namespace

GenRequest parse_anthropic_request(std::string_view body) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    throw ApiError(400, "invalid_request_error",
                   "the request body is not valid JSON: " + describe_json_error(e));
  }
  if (!j.is_object())
    throw ApiError(400, "invalid_request_error", "the body must be a JSON object");
  GenRequest req;
  req.chat = true;
  if (const json* m = field(j, "model")) req.model = get_string(*m, "model");
  const json* max_tokens = field(j, "max_tokens");
  if (!max_tokens) fail("max_tokens", "is required");
  const int64_t mt = get_int(*max_tokens, "max_tokens");
  if (mt < 1) fail("max_tokens", "must be at least 1, got " + std::to_string(mt));
  req.max_tokens = mt;
  if (const json* sys = field(j, "system"))
    req.messages.push_back({"system", text_of(*sys, "system")});
  const json* messages = field(j, "messages");
  if (!messages) fail("messages", "is required");
  if (!messages->is_array()) wrong_type("messages", "an array", *messages);
  if (messages->empty()) fail("messages", "must contain at least one message");
  for (size_t i = 0; i < messages->size(); ++i) add_message((*messages)[i], i, req.messages);
  // A last assistant message is a prefix the model continues (Anthropic's prefill).
  if (req.messages.back().role == "assistant" && req.messages.back().tool_calls.empty())
    req.messages.back().prefix = true;
  if (const json* s = field(j, "stream")) req.stream = get_bool(*s, "stream");
  SamplingParams& sp = req.sampling;
  if (const json* t = field(j, "temperature")) {
    sp.temperature = float(get_number(*t, "temperature", 0, 1));
    sp.greedy = sp.temperature == 0.0f;
  }
  if (const json* t = field(j, "top_p")) sp.top_p = float(get_number(*t, "top_p", 0, 1, true));
  if (const json* t = field(j, "top_k")) {
    const int64_t k = get_int(*t, "top_k");
    if (k < 0) fail("top_k", "must be >= 0");
    sp.top_k = k > 1 << 30 ? 0 : int(k);
  }
  if (const json* st = field(j, "stop_sequences")) {
    if (!st->is_array()) wrong_type("stop_sequences", "an array of strings", *st);
    if (st->size() > 16) fail("stop_sequences", "at most 16 stop sequences are supported");
    for (size_t i = 0; i < st->size(); ++i) {
      const std::string& s = get_string((*st)[i], index_param("stop_sequences", i));
      if (!s.empty()) req.stop.push_back(s);
    }
  }
  if (const json* th = field(j, "thinking")) {
    if (!th->is_object()) wrong_type("thinking", "an object", *th);
    // {"type": "enabled", "budget_tokens": N} turns V3.1's thinking mode on (the budget is not
    // enforced beyond max_tokens).
    if (const json* type = field(*th, "type"))
      req.thinking = get_string(*type, "thinking.type") == "enabled";
  }
  parse_anthropic_tools(j, req);
  return req;
}

nlohmann::json anthropic_error(const ApiError& e) {
  std::string type = e.type;
  if (e.status == 401) type = "authentication_error";
  if (e.status == 404) type = "not_found_error";
  if (e.status == 413) type = "request_too_large";
  if (e.status == 503 || e.status == 429) type = "overloaded_error";
  if (e.status >= 500 && e.status != 503) type = "api_error";
  return {{"type", "error"}, {"error", {{"type", type}, {"message", e.what()}}}};
}

nlohmann::json anthropic_block(const AnthropicBlock& b) {
  switch (b.kind) {
    case AnthropicBlock::kThinking:
      return {{"type", "thinking"}, {"thinking", b.text}, {"signature", ""}};
    case AnthropicBlock::kText:
      return {{"type", "text"}, {"text", b.text}};
    case AnthropicBlock::kToolUse:
      return {{"type", "tool_use"},
              {"id", b.call.id},
              {"name", b.call.name},
              {"input", json::parse(b.call.arguments, nullptr, false)}};
  }
  return nullptr;
}

std::string anthropic_stop_reason(const std::string& finish_reason, bool tool_use,
                                  const std::string& stop_sequence) {
  if (tool_use) return "tool_use";
  if (finish_reason == "length") return "max_tokens";
  return stop_sequence.empty() ? "end_turn" : "stop_sequence";
}

nlohmann::json anthropic_response(const std::string& id, const std::string& model,
                                  const std::vector<AnthropicBlock>& blocks,
                                  const std::string& stop_reason, const std::string& stop_sequence,
                                  const Usage& usage) {
  json content = json::array();
  for (const AnthropicBlock& b : blocks) content.push_back(anthropic_block(b));
  return {{"id", id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", model},
          {"content", std::move(content)},
          {"stop_reason", stop_reason},
          {"stop_sequence", stop_sequence.empty() ? json(nullptr) : json(stop_sequence)},
          {"usage",
           {{"input_tokens", usage.prompt_tokens - usage.cache_hit_tokens},
            {"cache_read_input_tokens", usage.cache_hit_tokens},
            {"cache_creation_input_tokens", 0},
            {"output_tokens", usage.completion_tokens}}}};
}

std::string anthropic_event(const nlohmann::json& data) {
  return "event: " + data.value("type", std::string("message")) +
         "\ndata: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace whale::serve
