#include "serve/api.h"

#include <cctype>
#include <cstdio>
#include <limits>
#include <utility>

#include "serve/api_detail.h"

namespace whale::serve {
namespace detail {  // helpers shared with anthropic.cpp (declared in serve/api_detail.h)

using json = nlohmann::json;

constexpr std::string_view kThink = "<think>";
constexpr size_t kMaxStop = 16;
constexpr int64_t kMaxTopLogprobs = 20;
constexpr size_t kMaxTools = 128;

// The same whitespace as split_reasoning (run/chat.cpp) trims.
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

[[noreturn]] void fail(const std::string& param, const std::string& message) {
  throw ApiError(400, "invalid_request_error", param + ": " + message, "", param);
}

// How a JSON value is named in "expected X, got Y" messages.
const char* kind(const json& j) {
  switch (j.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::string:
      return "string";
    case json::value_t::array:
      return "array";
    case json::value_t::object:
      return "object";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "number";
    case json::value_t::number_float:
      return "non-integer number";
    default:
      return j.type_name();  // binary and discarded: never produced by parsing text
  }
}

[[noreturn]] void wrong_type(const std::string& param, const char* expected, const json& j) {
  fail(param, std::string("expected ") + expected + ", got " + kind(j));
}

// A client-supplied string quoted in an error message: at most 40 bytes, cut at a UTF-8 code point
// boundary so that the error object stays valid UTF-8.
std::string excerpt(std::string_view s) {
  if (s.size() <= 40) return "'" + std::string(s) + "'";
  size_t n = 40;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return "'" + std::string(s.substr(0, n)) + "...'";
}

// A range bound in an error message: "2", "0.5", "3.40282e+38".
std::string bound_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The value of `key`, or nullptr when it is absent or null (null means "the default" in the
// OpenAI API).
const json* field(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const json& j, const std::string& param) {
  if (!j.is_boolean()) wrong_type(param, "a boolean", j);
  return j.get<bool>();
}

const std::string& get_string(const json& j, const std::string& param) {
  if (!j.is_string()) wrong_type(param, "a string", j);
  return j.get_ref<const std::string&>();
}

// A number within [lo, hi]; `lo_open`: lo itself excluded.
double get_number(const json& j, const std::string& param, double lo, double hi, bool lo_open) {
  if (!j.is_number()) wrong_type(param, "a number", j);
  const double v = j.get<double>();
  if (v < lo || v > hi || (lo_open && v == lo)) {
    fail(param, "must be " + std::string(lo_open ? "> " : ">= ") + bound_text(lo) +
                    " and <= " + bound_text(hi) + ", got " + j.dump());
  }
  return v;
}

// Integer fields take JSON integers only (1.5 and "10" are rejected). Integers above INT64_MAX,
// which nlohmann parses as unsigned, saturate: every such field is a limit or a count.
int64_t get_int(const json& j, const std::string& param) {
  if (j.is_number_unsigned()) {
    const uint64_t u = j.get<uint64_t>();
    return u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
               ? std::numeric_limits<int64_t>::max()
               : static_cast<int64_t>(u);
  }
  if (!j.is_number_integer()) wrong_type(param, "an integer", j);
  return j.get<int64_t>();
}

std::string index_param(const std::string& base, size_t i) {
  return base + "[" + std::to_string(i) + "]";
}

// Content: a string, or an array of text parts joined with no separator.
std::string parse_content(const json& c, const std::string& param) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) wrong_type(param, "a string or an array of content parts", c);
  std::string out;
  for (size_t k = 0; k < c.size(); ++k) {
    const json& part = c[k];
    const std::string p = index_param(param, k);
    if (!part.is_object()) wrong_type(p, "an object", part);
    const json* type = field(part, "type");
    if (!type) fail(p + ".type", "is required");
    const std::string& t = get_string(*type, p + ".type");
    if (t != "text") {
      fail(p + ".type", "content part type " + excerpt(t) + " is not supported (text only)");
    }
    const json* text = field(part, "text");
    if (!text) fail(p + ".text", "is required");
    out += get_string(*text, p + ".text");
  }
  return out;
}

// An assistant message's tool_calls: [{id, type: "function", function: {name, arguments}}].
std::vector<ToolCall> parse_calls(const json& calls, const std::string& msg) {
  const std::string p = msg + ".tool_calls";
  if (!calls.is_array()) wrong_type(p, "an array", calls);
  std::vector<ToolCall> out;
  for (size_t k = 0; k < calls.size(); ++k) {
    const std::string q = index_param(p, k);
    const json& c = calls[k];
    if (!c.is_object()) wrong_type(q, "an object", c);
    ToolCall call;
    if (const json* id = field(c, "id")) call.id = get_string(*id, q + ".id");
    if (const json* t = field(c, "type"); t && get_string(*t, q + ".type") != "function")
      fail(q + ".type", "only 'function' tool calls are supported");
    const json* f = field(c, "function");
    if (!f) fail(q + ".function", "is required");
    if (!f->is_object()) wrong_type(q + ".function", "an object", *f);
    const json* name = field(*f, "name");
    if (!name) fail(q + ".function.name", "is required");
    call.name = get_string(*name, q + ".function.name");
    const json* args = field(*f, "arguments");
    if (!args) fail(q + ".function.arguments", "is required");
    call.arguments = get_string(*args, q + ".function.arguments");
    out.push_back(std::move(call));
  }
  return out;
}

ChatMessage parse_message(const json& m, size_t i) {
  const std::string p = index_param("messages", i);
  if (!m.is_object()) wrong_type(p, "an object", m);
  const json* role = field(m, "role");
  if (!role) fail(p + ".role", "is required");
  ChatMessage msg;
  msg.role = get_string(*role, p + ".role");
  if (msg.role == "developer") msg.role = "system";  // OpenAI's newer name for system
  if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" && msg.role != "tool") {
    fail(p + ".role", "unknown role " + excerpt(role->get_ref<const std::string&>()) +
                          " (expected system, developer, user, assistant or tool)");
  }
  // An assistant turn may have no content (it made tool calls); every other role needs it.
  if (const json* content = field(m, "content")) {
    msg.content = parse_content(*content, p + ".content");
  } else if (msg.role != "assistant") {
    fail(p + ".content", "is required for role " + excerpt(role->get_ref<const std::string&>()));
  }
  if (msg.role == "assistant") {
    if (const json* r = field(m, "reasoning_content")) {
      msg.reasoning_content = get_string(*r, p + ".reasoning_content");
    }
    if (const json* calls = field(m, "tool_calls")) msg.tool_calls = parse_calls(*calls, p);
  }
  if (msg.role == "tool") {
    if (const json* id = field(m, "tool_call_id")) {
      msg.tool_call_id = get_string(*id, p + ".tool_call_id");
    }
  }
  if (const json* prefix = field(m, "prefix")) msg.prefix = get_bool(*prefix, p + ".prefix");
  return msg;
}

void parse_messages(const json& body, GenRequest& req) {
  const json* messages = field(body, "messages");
  if (!messages) fail("messages", "is required");
  if (!messages->is_array()) wrong_type("messages", "an array", *messages);
  if (messages->empty()) fail("messages", "must contain at least one message");
  for (size_t i = 0; i < messages->size(); ++i) {
    req.messages.push_back(parse_message((*messages)[i], i));
    // Chat prefix completion: only the last message, an assistant one, may be continued.
    if (req.messages.back().prefix &&
        (i + 1 != messages->size() || req.messages.back().role != "assistant")) {
      fail(index_param("messages", i) + ".prefix",
           "only the last message, with role assistant, can be a prefix");
    }
  }
}

// Token ids: integers in [0, INT32_MAX].
std::vector<int32_t> parse_token_ids(const json& ids, const std::string& param) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = get_int(ids[i], index_param(param, i));
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
      fail(index_param(param, i), "token id must be between 0 and 2147483647");
    }
    out.push_back(static_cast<int32_t>(id));
  }
  return out;
}

bool all_integers(const json& arr) {
  for (const json& e : arr) {
    if (!e.is_number_integer()) return false;
  }
  return true;
}

// prompt: a string, an array of token ids, or a one-element array holding either. Several
// prompts in one request (the batch form) are not supported.
void parse_prompt(const json& body, GenRequest& req) {
  const json* prompt = field(body, "prompt");
  if (!prompt) fail("prompt", "is required");
  const json* single = prompt;
  if (prompt->is_array() && prompt->size() == 1 &&
      ((*prompt)[0].is_string() || (*prompt)[0].is_array())) {
    single = &(*prompt)[0];
  } else if (prompt->is_array() && prompt->size() > 1 && !all_integers(*prompt)) {
    if ((*prompt)[0].is_string() || (*prompt)[0].is_array()) {
      fail("prompt",
           "batch prompts (several prompts in one request) are not supported; send one "
           "prompt per request");
    }
  }
  if (single->is_string()) {
    req.prompt = single->get<std::string>();
    if (req.prompt.empty()) fail("prompt", "must not be empty");
    return;
  }
  if (!single->is_array()) {
    wrong_type("prompt", "a string or an array of token ids", *single);
  }
  req.prompt_ids = parse_token_ids(*single, single == prompt ? "prompt" : "prompt[0]");
  if (req.prompt_ids.empty()) fail("prompt", "must not be empty");
}

void parse_stop(const json& stop, GenRequest& req) {
  if (stop.is_string()) {
    if (!stop.get_ref<const std::string&>().empty()) req.stop.push_back(stop.get<std::string>());
    return;
  }
  if (!stop.is_array()) wrong_type("stop", "a string or an array of strings", stop);
  if (stop.size() > kMaxStop) fail("stop", "at most 16 stop sequences are supported");
  for (size_t i = 0; i < stop.size(); ++i) {
    const std::string& s = get_string(stop[i], index_param("stop", i));
    if (!s.empty()) req.stop.push_back(s);
  }
}

// A JSON schema compiled for constrained generation; an unsupported keyword is a 400 naming it.
std::shared_ptr<const JsonSchema> compile_schema(const json& schema, const std::string& param) {
  try {
    return JsonSchema::compile(schema);
  } catch (const SchemaError& e) {
    const std::string p = e.path.empty() ? param : param + "." + e.path;
    throw ApiError(400, "invalid_request_error", param + ": " + e.what(), "", p);
  }
}

void parse_response_format(const json& rf, GenRequest& req) {
  if (!rf.is_object()) wrong_type("response_format", "an object", rf);
  const json* type = field(rf, "type");
  if (!type) fail("response_format.type", "is required");
  const std::string& t = get_string(*type, "response_format.type");
  if (t == "json_object") {
    req.json_object = true;
  } else if (t == "json_schema") {
    const json* js = field(rf, "json_schema");
    if (!js) fail("response_format.json_schema", "is required");
    if (!js->is_object()) wrong_type("response_format.json_schema", "an object", *js);
    if (const json* name = field(*js, "name"))
      get_string(*name, "response_format.json_schema.name");
    if (const json* strict = field(*js, "strict"))
      get_bool(*strict, "response_format.json_schema.strict");
    const json* schema = field(*js, "schema");
    if (!schema) fail("response_format.json_schema.schema", "is required");
    req.json_schema = compile_schema(*schema, "response_format.json_schema.schema");
  } else if (t != "text") {
    fail("response_format.type",
         "unknown type " + excerpt(t) + " (expected 'text', 'json_object' or 'json_schema')");
  }
}

// A function name as OpenAI allows it: 1-64 of [a-zA-Z0-9_-].
bool valid_function_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  return true;
}

std::string tool_name(const json& name, const GenRequest& req, const std::string& param) {
  const std::string& n = get_string(name, param);
  if (!valid_function_name(n))
    fail(param, "must be 1-64 characters of a-z, A-Z, 0-9, '_' and '-', got " + excerpt(n));
  for (const ToolDef& d : req.tools)
    if (d.name == n) fail(param, "duplicate function name " + excerpt(n));
  return n;
}

void check_tool_named(const GenRequest& req, const std::string& param) {
  for (const ToolDef& d : req.tools)
    if (d.name == req.tool_choice.name) return;
  fail(param, "no tool named " + excerpt(req.tool_choice.name) + " in tools");
}

void parse_tools(const json& body, GenRequest& req) {
  if (const json* tools = field(body, "tools")) {
    if (!tools->is_array()) wrong_type("tools", "an array", *tools);
    if (tools->size() > kMaxTools) fail("tools", "at most 128 tools are supported");
    for (size_t i = 0; i < tools->size(); ++i) {
      const std::string p = index_param("tools", i);
      const json& t = (*tools)[i];
      if (!t.is_object()) wrong_type(p, "an object", t);
      const json* type = field(t, "type");
      if (!type) fail(p + ".type", "is required");
      if (get_string(*type, p + ".type") != "function")
        fail(p + ".type", "only 'function' tools are supported");
      const json* f = field(t, "function");
      if (!f) fail(p + ".function", "is required");
      if (!f->is_object()) wrong_type(p + ".function", "an object", *f);
      ToolDef def;
      const json* name = field(*f, "name");
      if (!name) fail(p + ".function.name", "is required");
      def.name = tool_name(*name, req, p + ".function.name");
      if (const json* d = field(*f, "description"))
        def.description = get_string(*d, p + ".function.description");
      if (const json* params = field(*f, "parameters")) {
        if (!params->is_object()) wrong_type(p + ".function.parameters", "an object", *params);
        def.parameters = *params;
      }
      if (const json* strict = field(*f, "strict"))
        def.strict = get_bool(*strict, p + ".function.strict");
      if (def.strict) def.schema = compile_schema(def.parameters, p + ".function.parameters");
      req.tools.push_back(std::move(def));
    }
  }
  req.tool_choice.kind = req.tools.empty() ? ToolChoice::kNone : ToolChoice::kAuto;
  if (const json* tc = field(body, "tool_choice")) {
    if (tc->is_string()) {
      const std::string& v = tc->get_ref<const std::string&>();
      if (v == "none") {
        req.tool_choice.kind = ToolChoice::kNone;
      } else if (v == "auto") {
        req.tool_choice.kind = ToolChoice::kAuto;
      } else if (v == "required") {
        req.tool_choice.kind = ToolChoice::kRequired;
      } else {
        fail("tool_choice", "unknown value " + excerpt(v) + " (expected none, auto or required)");
      }
    } else if (tc->is_object()) {
      const json* type = field(*tc, "type");
      if (!type || get_string(*type, "tool_choice.type") != "function")
        fail("tool_choice.type", "must be 'function'");
      const json* f = field(*tc, "function");
      if (!f || !f->is_object()) fail("tool_choice.function", "must be an object with a name");
      const json* name = field(*f, "name");
      if (!name) fail("tool_choice.function.name", "is required");
      req.tool_choice = {ToolChoice::kNamed, get_string(*name, "tool_choice.function.name")};
      check_tool_named(req, "tool_choice.function.name");
    } else {
      wrong_type("tool_choice", "a string or an object", *tc);
    }
    if (req.tools.empty() && req.tool_choice.kind != ToolChoice::kNone &&
        req.tool_choice.kind != ToolChoice::kAuto)
      fail("tool_choice", "needs tools");
    if (req.tools.empty()) req.tool_choice.kind = ToolChoice::kNone;
  }
  if (const json* par = field(body, "parallel_tool_calls"))
    req.parallel_tool_calls = get_bool(*par, "parallel_tool_calls");
}

// Sampling, limits and streaming: the fields both endpoints share.
void parse_common(const json& body, GenRequest& req) {
  if (const json* j = field(body, "model")) req.model = get_string(*j, "model");
  if (const json* j = field(body, "stream")) req.stream = get_bool(*j, "stream");
  if (const json* j = field(body, "stream_options")) {
    if (!j->is_object()) wrong_type("stream_options", "an object", *j);
    if (const json* u = field(*j, "include_usage")) {
      // A usage chunk only exists in a stream.
      req.include_usage = get_bool(*u, "stream_options.include_usage") && req.stream;
    }
  }
  // max_completion_tokens is the current name of max_tokens; it wins when both are given.
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (const json* j = field(body, name)) {
      const int64_t v = get_int(*j, name);
      if (v < 1) fail(name, "must be at least 1, got " + std::to_string(v));
      req.max_tokens = v;
    }
  }
  SamplingParams& s = req.sampling;
  if (const json* j = field(body, "temperature")) {
    s.temperature = static_cast<float>(get_number(*j, "temperature", 0, 2));
    s.greedy = s.temperature == 0.0f;
  }
  if (const json* j = field(body, "top_p")) {
    s.top_p = static_cast<float>(get_number(*j, "top_p", 0, 1, /*lo_open=*/true));
  }
  if (const json* j = field(body, "frequency_penalty")) {
    s.frequency_penalty = static_cast<float>(get_number(*j, "frequency_penalty", -2, 2));
  }
  if (const json* j = field(body, "presence_penalty")) {
    s.presence_penalty = static_cast<float>(get_number(*j, "presence_penalty", -2, 2));
  }
  if (const json* j = field(body, "seed")) {
    // Any JSON integer; a negative seed keeps its two's-complement bits.
    if (!j->is_number_integer()) wrong_type("seed", "an integer", *j);
    s.seed =
        j->is_number_unsigned() ? j->get<uint64_t>() : static_cast<uint64_t>(j->get<int64_t>());
    req.has_seed = true;
  }
  if (const json* j = field(body, "n")) {
    if (get_int(*j, "n") != 1) fail("n", "only n = 1 is supported");
  }
  if (const json* j = field(body, "stop")) parse_stop(*j, req);
  if (const json* j = field(body, "response_format")) parse_response_format(*j, req);
  // Chat takes logprobs as a boolean plus top_logprobs, completions logprobs as a count.
  if (const json* j = field(body, "logprobs")) {
    if (req.chat) {
      if (get_bool(*j, "logprobs")) req.top_logprobs = 0;
    } else if (j->is_boolean()) {  // accepted too: false is "none", true "no alternatives"
      if (j->get<bool>()) req.top_logprobs = 0;
    } else {
      const int64_t n = get_int(*j, "logprobs");
      if (n < 0 || n > kMaxTopLogprobs) fail("logprobs", "must be between 0 and 20");
      req.top_logprobs = int(n);
    }
  }
  if (const json* j = field(body, "top_logprobs"); j && req.chat) {
    const int64_t n = get_int(*j, "top_logprobs");
    if (n < 0 || n > kMaxTopLogprobs) fail("top_logprobs", "must be between 0 and 20");
    if (req.top_logprobs < 0) fail("top_logprobs", "needs logprobs: true");
    req.top_logprobs = int(n);
  }
  // Extensions of llama.cpp and vLLM.
  if (const json* j = field(body, "top_k")) {
    const int64_t k = get_int(*j, "top_k");
    if (k < 0) fail("top_k", "must be >= 0, got " + std::to_string(k));
    // Any k beyond the vocabulary keeps everything, as 0 does.
    s.top_k = k > std::numeric_limits<int>::max() ? 0 : static_cast<int>(k);
  }
  if (const json* j = field(body, "min_p")) {
    s.min_p = static_cast<float>(get_number(*j, "min_p", 0, 1));
  }
  if (const json* j = field(body, "repetition_penalty")) {
    // The upper bound keeps the value finite as a float.
    s.repetition_penalty = static_cast<float>(get_number(
        *j, "repetition_penalty", 0, std::numeric_limits<float>::max(), /*lo_open=*/true));
  }
}

// nlohmann's message without its "[json.exception...] " prefix and without the "; last read:
// '...'" tail, which quotes raw (possibly invalid UTF-8) bytes of the body.
std::string describe_json_error(const nlohmann::json::exception& e) {
  std::string_view what = e.what();
  if (const size_t p = what.find("] "); p != std::string_view::npos) what.remove_prefix(p + 2);
  if (const size_t p = what.find("; last read"); p != std::string_view::npos) {
    what = what.substr(0, p);
  }
  return std::string(what);
}

// Length of the incomplete UTF-8 sequence at the end of `s` (0 if it ends on a code point
// boundary or in bytes that are not valid UTF-8 anyway: those are passed through as they are).
size_t incomplete_utf8_tail(std::string_view s) {
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back for the lead
    const size_t need = (c & 0xE0) == 0xC0   ? 2
                        : (c & 0xF0) == 0xE0 ? 3
                        : (c & 0xF8) == 0xF0 ? 4
                                             : 0;
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace detail

using namespace detail;

ApiError::ApiError(int status_, std::string type_, std::string message, std::string code_,
                   std::string param_)
    : std::runtime_error(std::move(message)),
      status(status_),
      type(std::move(type_)),
      code(std::move(code_)),
      param(std::move(param_)) {}

nlohmann::json ApiError::to_json() const {
  auto or_null = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
  return {
      {"error",
       {{"message", what()}, {"type", type}, {"param", or_null(param)}, {"code", or_null(code)}}}};
}

// The `thinking` choice of a chat request (GenRequest::thinking).
void parse_thinking(const json& body, GenRequest& req) {
  if (const json* th = field(body, "thinking")) {
    if (!th->is_object()) wrong_type("thinking", "an object", *th);
    const json* type = field(*th, "type");
    if (!type) fail("thinking.type", "is required (enabled or disabled)");
    const std::string& t = get_string(*type, "thinking.type");
    if (t != "enabled" && t != "disabled")
      fail("thinking.type", "unknown value " + excerpt(t) + " (expected enabled or disabled)");
    req.thinking = t == "enabled";
    return;
  }
  if (const json* kw = field(body, "chat_template_kwargs")) {
    if (!kw->is_object()) wrong_type("chat_template_kwargs", "an object", *kw);
    for (const char* name : {"thinking", "enable_thinking"})
      if (const json* v = field(*kw, name)) {
        req.thinking = get_bool(*v, std::string("chat_template_kwargs.") + name);
        return;
      }
  }
  if (req.model == "deepseek-reasoner") req.thinking = 1;
  if (req.model == "deepseek-chat") req.thinking = 0;
}

GenRequest parse_request(std::string_view body, bool chat) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    throw ApiError(400, "invalid_request_error",
                   "the request body is not valid JSON: " + describe_json_error(e));
  }
  if (!j.is_object()) {
    throw ApiError(400, "invalid_request_error",
                   std::string("the request body must be a JSON object, got ") + kind(j));
  }
  GenRequest req;
  req.chat = chat;
  if (chat) {
    parse_messages(j, req);
    parse_tools(j, req);
  } else {
    parse_prompt(j, req);
    if (const json* e = field(j, "echo")) req.echo = get_bool(*e, "echo");
    if (const json* sfx = field(j, "suffix")) req.suffix = get_string(*sfx, "suffix");
  }
  parse_common(j, req);
  if (chat) parse_thinking(j, req);
  if (req.echo && req.suffix) fail("echo", "echo cannot be combined with suffix (FIM)");
  if (req.echo && req.top_logprobs >= 0) {
    fail("echo", "echo with logprobs (prompt logprobs) is not supported");
  }
  return req;
}

nlohmann::json Usage::to_json() const {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"prompt_cache_hit_tokens", cache_hit_tokens},
          {"prompt_cache_miss_tokens", prompt_tokens - cache_hit_tokens},
          {"prompt_tokens_details", {{"cached_tokens", cache_hit_tokens}}},
          {"completion_tokens_details", {{"reasoning_tokens", reasoning_tokens}}}};
}

namespace {

json envelope(const std::string& id, const char* object, int64_t created,
              const std::string& model) {
  return {{"id", id},
          {"object", object},
          {"created", created},
          {"model", model},
          {"system_fingerprint", "whale"}};
}

json finish_or_null(const std::string& finish_reason) {
  return finish_reason.empty() ? json(nullptr) : json(finish_reason);
}

}  // namespace

nlohmann::json chat_response(const std::string& id, int64_t created, const std::string& model,
                             const std::string& content,
                             const std::optional<std::string>& reasoning_content,
                             const std::string& finish_reason, const Usage& usage,
                             nlohmann::json logprobs, const std::vector<ToolCall>& tool_calls) {
  json message = {{"role", "assistant"}, {"content", content}};
  if (reasoning_content) message["reasoning_content"] = *reasoning_content;
  if (!tool_calls.empty()) {
    if (content.empty()) message["content"] = nullptr;
    json calls = json::array();
    for (const ToolCall& c : tool_calls)
      calls.push_back({{"id", c.id},
                       {"type", "function"},
                       {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    message["tool_calls"] = std::move(calls);
  }
  json j = envelope(id, "chat.completion", created, model);
  j["choices"] = json::array({{{"index", 0},
                               {"message", std::move(message)},
                               {"logprobs", std::move(logprobs)},
                               {"finish_reason", finish_reason}}});
  j["usage"] = usage.to_json();
  return j;
}

nlohmann::json completion_response(const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, const std::string& finish_reason,
                                   const Usage& usage, nlohmann::json logprobs) {
  json j = envelope(id, "text_completion", created, model);
  j["choices"] = json::array({{{"index", 0},
                               {"text", text},
                               {"logprobs", std::move(logprobs)},
                               {"finish_reason", finish_reason}}});
  j["usage"] = usage.to_json();
  return j;
}

nlohmann::json chat_chunk(const std::string& id, int64_t created, const std::string& model,
                          const ChatDelta& delta, const std::string& finish_reason,
                          nlohmann::json logprobs) {
  json d = json::object();
  if (delta.role) d["role"] = "assistant";
  if (delta.content) d["content"] = *delta.content;
  if (delta.reasoning_content) d["reasoning_content"] = *delta.reasoning_content;
  if (!delta.tool_calls.empty()) {
    json calls = json::array();
    for (const ChatDelta::CallFragment& f : delta.tool_calls) {
      json c = {{"index", f.index}};
      if (!f.id.empty()) {
        c["id"] = f.id;
        c["type"] = "function";
        c["function"] = {{"name", f.name}, {"arguments", f.arguments}};
      } else {
        c["function"] = {{"arguments", f.arguments}};
      }
      calls.push_back(std::move(c));
    }
    d["tool_calls"] = std::move(calls);
  }
  json j = envelope(id, "chat.completion.chunk", created, model);
  j["choices"] = json::array({{{"index", 0},
                               {"delta", std::move(d)},
                               {"logprobs", std::move(logprobs)},
                               {"finish_reason", finish_or_null(finish_reason)}}});
  return j;
}

nlohmann::json completion_chunk(const std::string& id, int64_t created, const std::string& model,
                                const std::string& text, const std::string& finish_reason,
                                nlohmann::json logprobs) {
  json j = envelope(id, "text_completion", created, model);
  j["choices"] = json::array({{{"index", 0},
                               {"text", text},
                               {"logprobs", std::move(logprobs)},
                               {"finish_reason", finish_or_null(finish_reason)}}});
  return j;
}

namespace {

json token_bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

}  // namespace

nlohmann::json chat_logprobs(const std::vector<LogprobEntry>& entries) {
  json content = json::array();
  for (const LogprobEntry& e : entries) {
    json top = json::array();
    for (const auto& [t, lp] : e.top)
      top.push_back({{"token", t}, {"logprob", lp}, {"bytes", token_bytes(t)}});
    content.push_back({{"token", e.token},
                       {"logprob", e.logprob},
                       {"bytes", token_bytes(e.token)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}};
}

nlohmann::json completion_logprobs(const std::vector<LogprobEntry>& entries, size_t offset) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const LogprobEntry& e : entries) {
    tokens.push_back(e.token);
    lps.push_back(e.logprob);
    json top = json::object();
    for (const auto& [t, lp] : e.top) top[t] = lp;
    tops.push_back(std::move(top));
    offsets.push_back(offset);
    offset += e.token.size();
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(lps)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

nlohmann::json usage_chunk(const std::string& id, int64_t created, const std::string& model,
                           bool chat, const Usage& usage) {
  json j = envelope(id, chat ? "chat.completion.chunk" : "text_completion", created, model);
  j["choices"] = json::array();
  j["usage"] = usage.to_json();
  return j;
}

std::string sse_event(const nlohmann::json& j) {
  // Generated text can end inside a UTF-8 sequence: replace such bytes with U+FFFD rather than
  // throw.
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

std::string sse_done() {
  return "data: [DONE]\n\n";
}

// A byte-level automaton; see the class comment. States: before the reasoning (leading
// whitespace and a possible "<think>"), in the reasoning (a run of whitespace and a partial
// "</think>" held), in the content (leading whitespace dropped).
void ReasoningStream::feed(char c, Piece& out) {
  if (done_) {
    if (content_started_ || !is_space(c)) {
      content_started_ = true;
      out.content += c;
    }
    return;
  }
  if (!opened_) {
    if (matched_ == 0 && is_space(c)) return;
    if (c == kThink[matched_]) {
      if (++matched_ == kThink.size()) {
        opened_ = true;
        matched_ = 0;
      }
      return;
    }
    // Not "<think>": the bytes matched so far are ordinary reasoning; replay them.
    const size_t n = matched_;
    opened_ = true;
    matched_ = 0;
    for (size_t i = 0; i < n; ++i) feed(kThink[i], out);
    feed(c, out);
    return;
  }
  if (matched_ > 0) {
    if (c == kThinkEnd[matched_]) {
      if (++matched_ == kThinkEnd.size()) {
        done_ = true;
        held_.clear();  // whitespace at the end of the reasoning
      }
      return;
    }
    // The partial "</think>" contains no other '<', so no later match can start inside it.
    out.reasoning += held_;
    out.reasoning += kThinkEnd.substr(0, matched_);
    held_.clear();
    matched_ = 0;
  }
  if (c == '<') {
    started_ = true;
    matched_ = 1;
  } else if (is_space(c)) {
    if (started_) held_ += c;
  } else {
    started_ = true;
    out.reasoning += held_;
    out.reasoning += c;
    held_.clear();
  }
}

ReasoningStream::Piece ReasoningStream::push(std::string_view text) {
  utf8_.append(text);
  const size_t ready = utf8_.size() - incomplete_utf8_tail(utf8_);
  Piece out;
  for (size_t i = 0; i < ready; ++i) feed(utf8_[i], out);
  utf8_.erase(0, ready);
  return out;
}

ReasoningStream::Piece ReasoningStream::flush() {
  Piece out;
  for (char c : utf8_) feed(c, out);
  utf8_.clear();
  if (!opened_) {
    out.reasoning += kThink.substr(0, matched_);  // an unfinished "<think>" is reasoning text
  } else if (!done_ && matched_ > 0) {
    out.reasoning += held_;  // not trailing: the partial "</think>" follows it
    out.reasoning += kThinkEnd.substr(0, matched_);
  }
  // Otherwise held_ is whitespace at the end of the reasoning: dropped.
  held_.clear();
  matched_ = 0;
  opened_ = true;
  return out;
}

}  // namespace whale::serve
