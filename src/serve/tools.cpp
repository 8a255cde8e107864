#include "serve/tools.h"

namespace whale::serve {
namespace {

using json = nlohmann::json;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Length of the longest suffix of `s` that is a proper prefix of `tag`.
size_t partial_tag(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (tag.starts_with(s.substr(s.size() - n))) return n;
  return 0;
}

// One call at the front of a calls section.
struct Step {
  enum { kIncomplete, kMalformed, kCall, kEnd } what;
  ToolCall call;
  size_t used = 0;  // bytes of the section consumed (kCall, kEnd)
};

// The arguments of a call: a JSON object, kept as the model wrote it (trimmed).
std::optional<std::string> arguments(std::string_view body) {
  body = trim(body);
  const json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return std::string(body);
}

Step next_call(std::string_view s) {
  size_t p = 0;
  while (p < s.size() && is_space(s[p])) ++p;  // V3 puts "\n" between calls
  const std::string_view rest = s.substr(p);
  if (rest.starts_with(kCallsEnd)) return {Step::kEnd, {}, p + kCallsEnd.size()};
  if (!rest.starts_with(kCallBegin)) {
    const bool maybe = kCallBegin.starts_with(rest) || kCallsEnd.starts_with(rest);
    return {maybe ? Step::kIncomplete : Step::kMalformed, {}, 0};
  }
  const size_t end = rest.find(kCallEnd);
  if (end == std::string_view::npos) return {Step::kIncomplete, {}, 0};
  const std::string_view call = rest.substr(kCallBegin.size(), end - kCallBegin.size());
  const size_t sep = call.find(kToolSep);
  if (sep == std::string_view::npos) return {Step::kMalformed, {}, 0};
  const std::string_view head = trim(call.substr(0, sep));
  std::string_view body = call.substr(sep + kToolSep.size());
  ToolCall c;
  if (head == "function") {
    // V3 / R1: NAME "\n```json\n" ARGUMENTS "\n```".
    const size_t nl = body.find('\n');
    const size_t open = body.find("```");
    const size_t close = body.rfind("```");
    if (nl == std::string_view::npos || open == std::string_view::npos || close <= open)
      return {Step::kMalformed, {}, 0};
    c.name = std::string(trim(body.substr(0, std::min(nl, open))));
    std::string_view inner = body.substr(open + 3, close - open - 3);
    if (inner.starts_with("json")) inner.remove_prefix(4);
    if (!trim(body.substr(close + 3)).empty()) return {Step::kMalformed, {}, 0};
    body = inner;
  } else {
    c.name = std::string(head);  // V3.1: NAME <｜tool▁sep｜> ARGUMENTS
  }
  const auto args = arguments(body);
  if (c.name.empty() || !args) return {Step::kMalformed, {}, 0};
  c.arguments = *args;
  return {Step::kCall, std::move(c), p + end + kCallEnd.size()};
}

}  // namespace

// DeepSeek-V3.1's tool section, as its model card gives it.
std::string tools_prompt_v31(const std::vector<ToolDef>& tools) {
  std::string out = "## Tools\nYou have access to the following tools:\n";
  for (const ToolDef& t : tools) {
    out += "\n### " + t.name + "\nDescription: " + t.description +
           "\n\nParameters: " + t.parameters.dump() + "\n";
  }
  out.append("\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n")
      .append(kCallsBegin)
      .append(kCallBegin)
      .append("tool_call_name")
      .append(kToolSep)
      .append("tool_call_arguments")
      .append(kCallEnd)
      .append("{{additional_tool_calls}}")
      .append(kCallsEnd)
      .append(
          "\n\nWhere:\n\n- `tool_call_name` must be an exact match to one of the available tools\n"
          "- `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters "
          "Schema\n- For multiple tool calls, chain them directly without separators or spaces");
  return out;
}

std::string tools_prompt(const std::vector<ToolDef>& tools, ChatStyle style) {
  if (style == ChatStyle::V31) return tools_prompt_v31(tools);
  std::string out = "## Tools\nYou can call these functions:\n";
  for (const ToolDef& t : tools) {
    out += "\n### " + t.name + "\n";
    if (!t.description.empty()) out += "Description: " + t.description + "\n";
    out += "Parameters (JSON schema): " + t.parameters.dump() + "\n";
  }
  out +=
      "\nTo call functions, answer with exactly this, one "
      "<｜tool▁call▁begin｜>...<｜tool▁call▁end｜> "
      "per call:\n"
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>FUNCTION_NAME\n```json\n"
      "ARGUMENTS\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>\n"
      "FUNCTION_NAME is one of the functions above and ARGUMENTS a JSON object that follows its "
      "parameters schema. The results come back in the next message.";
  return out;
}

std::string forced_call_prefix(const ToolChoice& choice, bool think, ChatStyle style) {
  if (choice.kind != ToolChoice::kRequired && choice.kind != ToolChoice::kNamed) return "";
  const bool v31 = style == ChatStyle::V31;
  std::string out = !think ? "" : v31 ? std::string(kThinkEnd) : "\n</think>\n\n";
  out.append(kCallsBegin).append(kCallBegin);
  if (choice.kind == ToolChoice::kNamed && v31) out.append(choice.name).append(kToolSep);
  if (choice.kind == ToolChoice::kNamed && !v31)
    out.append("function").append(kToolSep).append(choice.name).append("\n```json\n");
  return out;
}

std::string forced_call_tail(ChatStyle style) {
  return (style == ChatStyle::V31 ? "" : "\n```") + std::string(kCallEnd) + std::string(kCallsEnd);
}

void ToolCallStream::degrade(Events& out) {
  degraded_ = true;
  // Calls made and the end tag missing (the model stopped right after its last call): nothing lost.
  if (emitted_ > 0 && trim(section_).empty()) return section_.clear();
  if (emitted_ == 0) out.content.append(kCallsBegin);
  out.content += section_;
  section_.clear();
}

void ToolCallStream::drain(Events& out, bool final) {
  while (in_section_ && !closed_ && !degraded_) {
    Step st = next_call(section_);
    if (st.what == Step::kIncomplete) {
      if (final) degrade(out);
      return;
    }
    if (st.what == Step::kMalformed) return degrade(out);
    section_.erase(0, st.used);
    if (st.what == Step::kEnd) {
      closed_ = true;
      out.content += section_;  // text after the section (normally none)
      section_.clear();
      return;
    }
    st.call.id = "call_" + id_base_ + "_" + std::to_string(emitted_++);
    out.calls.push_back(std::move(st.call));
  }
}

ToolCallStream::Events ToolCallStream::push(std::string_view text) {
  Events out;
  if (closed_ || degraded_) {
    out.content = text;
    return out;
  }
  if (in_section_) {
    section_.append(text);
    drain(out, false);
    return out;
  }
  pending_.append(text);
  if (const size_t at = pending_.find(kCallsBegin); at != std::string::npos) {
    out.content = pending_.substr(0, at);
    section_ = pending_.substr(at + kCallsBegin.size());
    pending_.clear();
    in_section_ = true;
    drain(out, false);
    return out;
  }
  const size_t keep = partial_tag(pending_, kCallsBegin);
  out.content = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

ToolCallStream::Events ToolCallStream::flush() {
  Events out;
  out.content = std::move(pending_);
  pending_.clear();
  drain(out, true);
  return out;
}

ParsedCalls parse_tool_calls(std::string_view text, const std::string& id_base) {
  ToolCallStream s(id_base);
  ToolCallStream::Events a = s.push(text), b = s.flush();
  ParsedCalls p{a.content + b.content, std::move(a.calls)};
  for (ToolCall& c : b.calls) p.calls.push_back(std::move(c));
  return p;
}

}  // namespace whale::serve
