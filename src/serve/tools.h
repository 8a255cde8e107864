// Function calling: the tool list as the model reads it, the calls as the model writes them, and
// their OpenAI form.
//
// DeepSeek-V3 / R1 write calls as (the official chat templates render earlier calls this way):
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGUMENTS\n```
//   <｜tool▁call▁end｜>[\n<｜tool▁call▁begin｜>...<｜tool▁call▁end｜>]<｜tool▁calls▁end｜>
// (one line here split in two), and DeepSeek-V3.1 as
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGUMENTS<｜tool▁call▁end｜>...
//   <｜tool▁calls▁end｜>
// Both are read. The templates do not render the tool list itself; whale appends it to the system
// prompt (tools_prompt below): for V3 / R1 each function's name, description and JSON-schema
// parameters, then the call format above; for V3.1 the "## Tools" section of its model card (the
// same list, then its call format and rules).
//
// The parsers never fail: text that does not form well-made calls (unknown layout, arguments that
// are not a JSON object, a section cut off by max_tokens) is returned as plain content.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "run/chat.h"
#include "serve/json_schema.h"

namespace whale::serve {

// One entry of a request's `tools`.
struct ToolDef {
  std::string name, description;
  nlohmann::json parameters = nlohmann::json::object();  // a JSON schema
  bool strict = false;
  std::shared_ptr<const JsonSchema> schema;  // compiled parameters, when strict
};

// `tool_choice`: none (tools are neither shown nor parsed), auto (the model decides), required (a
// call is forced), or one named function (forced too).
struct ToolChoice {
  enum Kind { kNone, kAuto, kRequired, kNamed } kind = kAuto;
  std::string name;  // kNamed
};

// The system-prompt section that lists the tools and the call format of `style`.
std::string tools_prompt(const std::vector<ToolDef>& tools, ChatStyle style = ChatStyle::V3);

// The text the assistant turn starts with when a call is forced: the calls section opened (and,
// for a named function, the call's head up to its arguments, in `style`'s layout). The model
// continues from there; the forced text is part of the output the parsers read. Empty for none
// and auto. `think`: the prompt left a think block open, which is closed first.
std::string forced_call_prefix(const ToolChoice& choice, bool think,
                               ChatStyle style = ChatStyle::V3);

// What follows a forced named call's arguments in `style`'s layout, up to the calls section's end.
std::string forced_call_tail(ChatStyle style);

// A whole output (content after any reasoning) split into content and calls. Call ids are
// "call_" + `id_base` + "_" + index.
struct ParsedCalls {
  std::string content;  // text before the calls section (all of it when there are no calls)
  std::vector<ToolCall> calls;
};
ParsedCalls parse_tool_calls(std::string_view text, const std::string& id_base);

// The same, as the text arrives: content is released as soon as it cannot be the start of the
// calls section; each call when its end tag arrives and it is well made. Concatenating every
// event of push() and flush() gives parse_tool_calls(all text) (a malformed or unfinished call
// and everything after it come out as content).
class ToolCallStream {
 public:
  explicit ToolCallStream(std::string id_base) : id_base_(std::move(id_base)) {}
  struct Events {
    std::string content;          // content text released
    std::vector<ToolCall> calls;  // calls completed, in order
  };
  Events push(std::string_view text);
  Events flush();
  size_t calls_emitted() const { return emitted_; }

 private:
  // Emits the complete calls at the front of section_; `final`: no more text is coming.
  void drain(Events& out, bool final);
  void degrade(Events& out);  // the rest of the section is content after all

  std::string id_base_;
  std::string pending_;  // content that may be the start of kCallsBegin
  std::string section_;  // text of the calls section not yet emitted (after kCallsBegin)
  bool in_section_ = false, degraded_ = false, closed_ = false;
  size_t emitted_ = 0;
};

}  // namespace whale::serve
