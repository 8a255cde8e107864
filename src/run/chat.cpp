#include "run/chat.h"

namespace whale {
namespace {

constexpr std::string_view kUser = "<｜User｜>";
constexpr std::string_view kAssistant = "<｜Assistant｜>";
constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
constexpr std::string_view kOutputsBegin = "<｜tool▁outputs▁begin｜>";
constexpr std::string_view kOutputsEnd = "<｜tool▁outputs▁end｜>";
constexpr std::string_view kOutputBegin = "<｜tool▁output▁begin｜>";
constexpr std::string_view kOutputEnd = "<｜tool▁output▁end｜>";

// Both templates: every system message, in order, joined by "\n\n".
std::string system_prompt(const std::vector<ChatMessage>& messages) {
  std::string out;
  bool first = true;
  for (const ChatMessage& m : messages) {
    if (m.role != "system") continue;
    if (!first) out += "\n\n";
    out += m.content;
    first = false;
  }
  return out;
}

// R1 history: `content.split('</think>')[-1]`, i.e. the text after the last "</think>".
std::string_view drop_reasoning(std::string_view content) {
  const size_t end = content.rfind(kThinkEnd);
  return end == std::string_view::npos ? content : content.substr(end + kThinkEnd.size());
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view trim(std::string_view s, bool front, bool back) {
  while (front && !s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (back && !s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// "<｜tool▁calls▁begin｜>...<｜tool▁calls▁end｜>" for an assistant turn's calls.
std::string render_calls(const std::vector<ToolCall>& calls) {
  std::string out(kCallsBegin);
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i > 0) out += '\n';
    out.append(kCallBegin).append(calls[i].type).append(kToolSep).append(calls[i].name);
    out.append("\n```json\n").append(calls[i].arguments).append("\n```").append(kCallEnd);
  }
  return out.append(kCallsEnd);
}

// DeepSeek-V3.1's form of an assistant turn's calls: no type, no code block, no separator.
std::string render_calls_v31(const std::vector<ToolCall>& calls) {
  std::string out(kCallsBegin);
  for (const ToolCall& c : calls)
    out.append(kCallBegin).append(c.name).append(kToolSep).append(c.arguments).append(kCallEnd);
  return out.append(kCallsEnd);
}

// The opening of the assistant turn right after a user turn: V3.1 closes an empty think block,
// or (thinking mode, the turn the model writes) opens one.
std::string v31_opening(bool open_think) {
  return std::string(kAssistant) + (open_think ? "<think>" : "</think>");
}

// DeepSeek-V3.1's template (see chat.h); `system` already has the tool list.
std::string render_v31(const std::vector<ChatMessage>& messages, std::string out,
                       bool add_generation_prompt, bool thinking) {
  bool last_user = false;  // ns.is_last_user: the next assistant turn opens with <｜Assistant｜>
  bool is_tool = false;    // ns.is_tool: right after tool outputs
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      is_tool = false;
      last_user = true;
      out.append(kUser).append(m.content);
    } else if (m.role == "assistant" && m.prefix) {
      // Continued by the model, so left open (only the last message can be a prefix).
      if (last_user) out += v31_opening(thinking);
      if (last_user && thinking) {
        out += m.reasoning_content;
        if (!m.content.empty()) out.append(kThinkEnd);
      }
      return out.append(m.content);
    } else if (m.role == "assistant") {
      if (last_user) out += v31_opening(false);
      last_user = false;
      if (!m.tool_calls.empty()) {
        out.append(m.content).append(render_calls_v31(m.tool_calls));
      } else if (is_tool) {
        out += m.content;
      } else {
        // content.split('</think>', 1)[1]: the text after the first "</think>".
        const size_t end = m.content.find(kThinkEnd);
        out += end == std::string::npos
                   ? std::string_view(m.content)
                   : std::string_view(m.content).substr(end + kThinkEnd.size());
      }
      is_tool = false;
      out.append(kEos);
    } else if (m.role == "tool") {
      last_user = false;
      is_tool = true;
      out.append(kOutputBegin).append(m.content).append(kOutputEnd);
    }
  }
  if (add_generation_prompt && last_user && !is_tool) out += v31_opening(thinking);
  return out;
}

}  // namespace

ChatStyle detect_chat_style(std::string_view chat_template) {
  if (chat_template.find("<｜Assistant｜></think>") != std::string_view::npos)
    return ChatStyle::V31;
  return chat_template.find("<｜Assistant｜><think>") != std::string_view::npos ? ChatStyle::R1
                                                                                : ChatStyle::V3;
}

const char* chat_style_name(ChatStyle style) {
  switch (style) {
    case ChatStyle::R1:
      return "R1";
    case ChatStyle::V31:
      return "V3.1";
    case ChatStyle::V3:
      break;
  }
  return "V3";
}

std::string render_chat(const std::vector<ChatMessage>& messages, ChatStyle style,
                        const std::string& bos_token, bool add_generation_prompt,
                        const std::string& tools_prompt, bool thinking) {
  std::string system = system_prompt(messages);
  if (!tools_prompt.empty()) system += (system.empty() ? "" : "\n\n") + tools_prompt;
  if (style == ChatStyle::V31)
    return render_v31(messages, bos_token + system, add_generation_prompt, thinking);
  std::string out = bos_token + system;
  bool in_tool_outputs = false;   // ns.is_tool
  bool first_tool_output = true;  // ns.is_output_first (never reset, as in the templates)
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      in_tool_outputs = false;
      out.append(kUser).append(m.content);
    } else if (m.role == "assistant" && m.prefix) {
      // Continued by the model, so left open (only the last message can be a prefix).
      out.append(in_tool_outputs ? kOutputsEnd : kAssistant);
      in_tool_outputs = false;
      if (style == ChatStyle::R1) {
        out.append("<think>\n").append(m.reasoning_content);
        if (!m.content.empty()) out.append("\n</think>\n\n");
      }
      out.append(m.content);
      return out;
    } else if (m.role == "assistant") {
      const std::string_view content =
          style == ChatStyle::R1 ? drop_reasoning(m.content) : std::string_view(m.content);
      if (in_tool_outputs) {
        // After tool results the turn goes on without "<｜Assistant｜>" (the templates' form; an
        // R1 answer here keeps its text as is).
        out.append(kOutputsEnd).append(m.content);
        in_tool_outputs = false;
      } else {
        out.append(kAssistant).append(content);
      }
      if (!m.tool_calls.empty()) out += render_calls(m.tool_calls);
      out.append(kEos);
    } else if (m.role == "tool") {
      in_tool_outputs = true;
      if (first_tool_output) {
        out.append(kOutputsBegin);
        first_tool_output = false;
      } else if (style == ChatStyle::V3) {
        out += '\n';
      }
      out.append(kOutputBegin).append(m.content).append(kOutputEnd);
    }
  }
  if (in_tool_outputs) out.append(kOutputsEnd);
  if (add_generation_prompt && !in_tool_outputs) {
    out.append(kAssistant);
    if (style == ChatStyle::R1) out += "<think>\n";
  }
  return out;
}

bool continues_reasoning(const std::vector<ChatMessage>& messages, ChatStyle style, bool thinking) {
  const bool open_prefix =
      messages.empty() || !messages.back().prefix || messages.back().content.empty();
  // After tool outputs the templates add no generation prompt: no think block is open.
  if (!messages.empty() && messages.back().role == "tool") return false;
  if (style == ChatStyle::R1) return open_prefix;
  if (style != ChatStyle::V31 || !thinking) return false;
  // V3.1 opens a think block only in the turn right after a user turn.
  bool last_user = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") last_user = true;
    if (m.role == "assistant" && !(m.prefix && i + 1 == messages.size())) last_user = false;
    if (m.role == "tool") last_user = false;
  }
  return last_user && open_prefix;
}

ReasoningSplit split_reasoning(std::string_view generated) {
  ReasoningSplit split;
  std::string_view reasoning = generated;
  const size_t end = generated.find(kThinkEnd);
  if (end != std::string_view::npos) {
    reasoning = generated.substr(0, end);
    split.content = trim(generated.substr(end + kThinkEnd.size()), true, false);
    split.thinking_done = true;
  }
  reasoning = trim(reasoning, true, false);
  if (reasoning.starts_with("<think>")) reasoning.remove_prefix(7);
  split.reasoning = trim(reasoning, true, true);
  return split;
}

}  // namespace whale
