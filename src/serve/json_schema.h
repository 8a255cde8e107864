// Structured outputs: generation constrained by a JSON schema (`response_format: {"type":
// "json_schema", ...}` and `strict` function arguments).
//
// JsonSchema compiles the schema into nodes; SchemaState is a byte-level automaton that accepts
// exactly the prefixes of JSON texts (RFC 8259, UTF-8) that are valid for it, optionally
// surrounded by whitespace. JsonTokenFilter (serve/json_mode.h) masks the tokens that would leave
// those prefixes, as it does for JSON mode.
//
// Supported keywords: type (one or a list of object, array, string, number, integer, boolean,
// null), properties, required, additionalProperties (false, true or a schema; absent means
// allowed), items, minItems, maxItems, enum, const, anyOf and oneOf (both read as anyOf: a value
// valid for several alternatives is accepted), $ref to "#", "#/$defs/NAME" or
// "#/definitions/NAME" (recursive schemas work), and the annotations title, description, default,
// examples, format, $schema, $id, $comment, $defs, definitions, which do not constrain. Any other
// keyword is a SchemaError naming it, rather than a constraint silently dropped.
//
// Limits (a schema beyond them is a SchemaError): 64 properties per object schema, 4096 nodes.
// Generation: nesting depth kMaxDepth; kMaxPaths alternatives alive at once (anyOf branches that
// share a prefix; later ones are dropped); a run of more than kMaxWhitespace whitespace bytes
// outside strings. Object keys that name a property must be written as the plain bytes of its
// name (no escapes); numbers follow the JSON grammar ("integer": no fraction or exponent).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace whale::serve {

struct SchemaError : std::runtime_error {
  std::string path;  // where in the schema, e.g. "properties.name.pattern"
  SchemaError(std::string path_, const std::string& message)
      : std::runtime_error((path_.empty() ? "" : path_ + ": ") + message), path(std::move(path_)) {}
};

class JsonSchema {
 public:
  // Throws SchemaError.
  static std::shared_ptr<const JsonSchema> compile(const nlohmann::json& schema);

  enum Type : uint8_t {
    kObject = 1,
    kArray = 2,
    kString = 4,
    kNumber = 8,  // any JSON number
    kInteger = 16,
    kBoolean = 32,
    kNull = 64,
    kAny = 127,
  };
  struct Node {
    uint8_t types = kAny;
    std::vector<std::string> literals;  // enum / const: the allowed values as compact JSON text
    std::vector<int> any_of;            // alternatives (node indices); then the rest is unused
    // object
    std::vector<std::string> names;
    std::vector<int> props;  // node of each property
    uint64_t required = 0;
    int additional = 0;  // node of other keys' values; -1: no other keys
    // array
    int items = 0;  // node of the items
    int64_t min_items = 0, max_items = -1;
  };
  const Node& node(int i) const { return nodes_[size_t(i)]; }
  static constexpr int kAnyNode = 0;  // node 0 is the unconstrained value
  int root() const { return root_; }

 private:
  friend class SchemaCompiler;
  std::vector<Node> nodes_;
  int root_ = 0;
};

class SchemaState {
 public:
  static constexpr int kMaxDepth = 16;
  static constexpr int kMaxPaths = 4;
  static constexpr int kMaxWhitespace = 16;

  SchemaState() = default;
  explicit SchemaState(const JsonSchema* schema);
  // Copies only the frames in use (the token filter copies states per byte).
  SchemaState(const SchemaState& o) { *this = o; }
  SchemaState& operator=(const SchemaState& o);

  bool push(uint8_t byte);            // false: no longer a valid prefix (the state is unusable)
  bool push(std::string_view bytes);  // all bytes, stops at the first invalid one
  // The text so far is a complete valid value (trailing whitespace may follow).
  bool complete() const;
  // The value has ended on its own closing byte ('}', ']', '"', or a delimiter after a number or
  // literal): nothing but whitespace can follow. (complete() is also true right after "12", which
  // might still become "123".)
  bool closed() const;
  // Every alive alternative is inside a string whose content is free (not a key, not an enum
  // value): plain string bytes leave the state as it is (JsonTokenFilter's fast path).
  bool in_free_string() const;

  // One open value being read (see json_schema.cpp for the kinds and modes).
  struct Frame {
    uint64_t cand = 0;       // key / literal candidates
    uint64_t seen = 0;       // object: properties seen
    uint16_t node = 0;       // schema node
    uint16_t count = 0;      // array items; key / literal bytes read
    uint16_t code = 0;       // string: \u escape value
    uint8_t kind = 0;        // Value, Object, Array, String, Number, Literal
    uint8_t mode = 0;        // per kind
    uint8_t aux = 0;         // string: hex digits / UTF-8 bytes left
    uint8_t lo = 0, hi = 0;  // string: range of the next UTF-8 continuation byte
    int8_t prop = -1;        // object: the property whose value is being read (-1: another key)
  };
  struct Path {
    Frame frames[kMaxDepth];
    uint8_t depth = 0;
    uint8_t ws = 0;  // whitespace run outside strings
    bool done = false;
    bool retry = false;  // push(): the current byte is still to be stepped
  };

 private:
  void expand();
  const JsonSchema* schema_ = nullptr;
  Path paths_[kMaxPaths];
  uint8_t n_ = 0;
};

}  // namespace whale::serve
