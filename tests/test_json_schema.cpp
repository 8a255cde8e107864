// Structured outputs (serve/json_schema.h): the schema compiler's errors; the automaton against an
// independent validator written here over parsed values (every prefix of a valid text accepted,
// mutated texts accepted only when nlohmann parses them and the validator agrees); the token mask
// against brute force over the real DeepSeek-V3 vocabulary.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "formats/tokenizer.h"
#include "serve/json_mode.h"
#include "serve/json_schema.h"
#include "test_util.h"

using namespace whale;
using namespace whale::serve;
using json = nlohmann::json;

namespace {

// The reference: JSON Schema semantics for the supported keywords, on parsed values.
bool valid(const json& v, const json& schema, const json& root) {
  if (schema.is_boolean()) return schema.get<bool>();
  if (schema.contains("$ref")) {
    const std::string ref = schema["$ref"];
    if (ref == "#") return valid(v, root, root);
    const std::string defs = ref.starts_with("#/$defs/") ? "$defs" : "definitions";
    return valid(v, root[defs][ref.substr(ref.find('/', 2) + 1)], root);
  }
  for (const char* k : {"anyOf", "oneOf"})
    if (schema.contains(k)) {
      for (const json& alt : schema[k])
        if (valid(v, alt, root)) return true;
      return false;
    }
  if (schema.contains("const") && v != schema["const"]) return false;
  if (schema.contains("enum")) {
    bool any = false;
    for (const json& e : schema["enum"]) any = any || e == v;
    if (!any) return false;
  }
  if (schema.contains("type")) {
    const json types = schema["type"].is_array() ? schema["type"] : json::array({schema["type"]});
    bool ok = false;
    for (const json& t : types) {
      const std::string s = t;
      ok = ok || (s == "object" && v.is_object()) || (s == "array" && v.is_array()) ||
           (s == "string" && v.is_string()) || (s == "number" && v.is_number()) ||
           (s == "integer" && (v.is_number_integer() || v.is_number_unsigned())) ||
           (s == "boolean" && v.is_boolean()) || (s == "null" && v.is_null());
    }
    if (!ok) return false;
  }
  if (v.is_object()) {
    const json props = schema.value("properties", json::object());
    for (const json& r : schema.value("required", json::array()))
      if (!v.contains(r.get<std::string>())) return false;
    for (const auto& [k, x] : v.items()) {
      if (props.contains(k)) {
        if (!valid(x, props[k], root)) return false;
      } else if (schema.contains("additionalProperties")) {
        if (!valid(x, schema["additionalProperties"], root)) return false;
      }
    }
  }
  if (v.is_array()) {
    if (schema.contains("minItems") && v.size() < schema["minItems"].get<size_t>()) return false;
    if (schema.contains("maxItems") && v.size() > schema["maxItems"].get<size_t>()) return false;
    if (schema.contains("items"))
      for (const json& x : v)
        if (!valid(x, schema["items"], root)) return false;
  }
  return true;
}

// Pushes `text`; -1 when every byte was taken, else the index of the byte that was refused.
long refused_at(SchemaState& s, const std::string& text) {
  for (size_t i = 0; i < text.size(); ++i)
    if (!s.push(uint8_t(text[i]))) return long(i);
  return -1;
}

const json kPerson = json::parse(R"({
  "type": "object",
  "properties": {
    "name": {"type": "string"},
    "age": {"type": "integer"},
    "height": {"type": "number"},
    "role": {"enum": ["admin", "user", 3, null]},
    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
    "address": {"type": "object", "properties": {"city": {"type": "string"},
                "zip": {"type": ["string", "null"]}}, "required": ["city"],
                "additionalProperties": false},
    "pet": {"anyOf": [{"type": "object", "properties": {"kind": {"const": "cat"},
                       "lives": {"type": "integer"}}, "required": ["kind", "lives"],
                       "additionalProperties": false},
                      {"type": "object", "properties": {"kind": {"const": "dog"},
                       "good": {"type": "boolean"}}, "required": ["kind"],
                       "additionalProperties": false}]},
    "next": {"$ref": "#"}
  },
  "required": ["name", "age"],
  "additionalProperties": false
})");

const std::vector<std::string> kValid = {
    R"({"name": "Ada", "age": 36})",
    R"({"age":-5,"name":"x\"\\\u00e9\ud83d\ude00 é 😀"})",
    R"( {"name": "B", "age": 0, "height": 1.5e-3, "role": "admin", "tags": ["a"]} )",
    R"({"name": "C", "age": 7, "role": 3, "address": {"city": "Paris", "zip": null}})",
    R"({"name": "D", "age": 1, "role": null, "pet": {"kind": "cat", "lives": 9}})",
    R"({"name": "E", "age": 2, "pet": {"kind": "dog", "good": true}, "tags": ["x", "y", "z"]})",
    R"({"name": "F", "age": 3, "next": {"name": "G", "age": 4, "next": {"name": "H", "age": 5}}})",
};

const std::vector<std::string> kInvalid = {
    R"({"name": "Ada"})",                                         // age missing
    R"({"name": "Ada", "age": 1.5})",                             // not an integer
    R"({"name": "Ada", "age": 1, "extra": 2})",                   // additionalProperties false
    R"({"name": "Ada", "age": 1, "name": "again"})",              // duplicate key
    R"({"name": "A", "age": 1, "role": "root"})",                 // not in enum
    R"({"name": "A", "age": 1, "tags": []})",                     // minItems
    R"({"name": "A", "age": 1, "tags": ["a","b","c","d"]})",      // maxItems
    R"({"name": "A", "age": 1, "address": {"zip": "1"}})",        // city required
    R"({"name": "A", "age": 1, "pet": {"kind": "cat"}})",         // lives required for a cat
    R"({"name": "A", "age": 01})",                                // leading zero
    std::string(R"({"name": "A)") + char(1) + R"(", "age": 1})",  // a raw control character
    R"(["name"])",                                                // not an object
};

}  // namespace

TEST(JsonSchema, CompileErrorsNameTheKeyword) {
  auto error_path = [](const std::string& schema) {
    try {
      JsonSchema::compile(json::parse(schema));
    } catch (const SchemaError& e) {
      return e.path;
    }
    return std::string("(compiled)");
  };
  EXPECT_EQ(error_path(R"({"properties": {"name": {"type": "string", "pattern": "a+"}}})"),
            "properties.name.pattern");
  EXPECT_EQ(error_path(R"({"type": "number", "minimum": 3})"), "minimum");
  EXPECT_EQ(error_path(R"({"type": "strin"})"), "type");
  EXPECT_EQ(error_path(R"({"$ref": "#/$defs/missing"})"), "$ref");
  EXPECT_EQ(error_path(R"({"$ref": "http://x"})"), "$ref");
  EXPECT_EQ(error_path(R"({"properties": {"a": {}}, "required": ["b"]})"), "required");
  EXPECT_EQ(error_path(R"({"items": [{}, {}]})"), "items");
  EXPECT_EQ(error_path(R"({"allOf": [{}]})"), "allOf");
  EXPECT_EQ(error_path(R"({"type": "object", "anyOf": [{}]})"), "");
  EXPECT_EQ(error_path(R"({"title": "t", "description": "d", "format": "date", "$defs": {}})"),
            "(compiled)");
  // A hostile nesting depth is an error, not a stack overflow.
  std::string deep;
  for (int i = 0; i < 10000; ++i) deep += R"({"items": )";
  deep += "{}";
  deep.append(10000, '}');
  EXPECT_NE(error_path(deep), "(compiled)");
  // An alternative that refers back to itself expands to nothing rather than forever.
  const auto loop =
      JsonSchema::compile(json::parse(R"({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}},
                                          "$ref": "#/$defs/a"})"));
  SchemaState ls(loop.get());
  EXPECT_FALSE(ls.push("{"));
}

TEST(JsonSchema, AcceptsValidTextsAndEveryPrefix) {
  const auto schema = JsonSchema::compile(kPerson);
  for (const std::string& text : kValid) {
    ASSERT_TRUE(valid(json::parse(text), kPerson, kPerson)) << text;  // the reference agrees
    SchemaState s(schema.get());
    EXPECT_EQ(refused_at(s, text), -1) << text;
    EXPECT_TRUE(s.complete()) << text;
    EXPECT_TRUE(s.closed()) << text;
  }
}

TEST(JsonSchema, RefusesInvalidTexts) {
  const auto schema = JsonSchema::compile(kPerson);
  for (const std::string& text : kInvalid) {
    SchemaState s(schema.get());
    const long at = refused_at(s, text);
    EXPECT_TRUE(at >= 0 || !s.complete()) << text;
  }
  // Scalar roots end on the next byte or at the end of the text.
  const auto num = JsonSchema::compile(json::parse(R"({"type": "integer"})"));
  SchemaState n(num.get());
  EXPECT_TRUE(n.push("12"));
  EXPECT_TRUE(n.complete());
  EXPECT_FALSE(n.closed());
  EXPECT_FALSE(SchemaState(n).push("."));
  EXPECT_TRUE(n.push(" "));
  EXPECT_TRUE(n.closed());
}

// Random mutations of valid texts: whatever the automaton accepts as complete parses and is valid.
TEST(JsonSchema, MutatedTextsAreAcceptedOnlyWhenValid) {
  const auto schema = JsonSchema::compile(kPerson);
  std::mt19937 rng(11);
  const std::string alphabet = "{}[]:,\" \\0123456789.-eE+truefalsnlxyzabc\x80\xc3\xa9";
  int accepted = 0, checked = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::string t = kValid[rng() % kValid.size()];
    const int edits = 1 + int(rng() % 3);
    for (int e = 0; e < edits && !t.empty(); ++e) {
      const size_t at = rng() % t.size();
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          t[at] = c;
          break;
        case 1:
          t.insert(t.begin() + long(at), c);
          break;
        default:
          t.erase(at, 1);
      }
    }
    SchemaState s(schema.get());
    if (refused_at(s, t) >= 0 || !s.complete()) continue;
    ++accepted;
    const json v = json::parse(t, nullptr, false);
    ASSERT_FALSE(v.is_discarded()) << t;
    ASSERT_TRUE(valid(v, kPerson, kPerson)) << t;
    ++checked;
  }
  EXPECT_GT(accepted, 100);  // the mutations do reach accepted texts
  EXPECT_EQ(checked, accepted);
}

// The token mask equals brute force (a fresh state per token, all its bytes pushed) at positions
// along valid texts: structural, inside keys, enum values, free strings and numbers.
TEST(JsonSchema, TokenMaskMatchesBruteForce) {
  const Tokenizer tok = Tokenizer::load(whale::testing::kTokenizerDir);
  const JsonTokenFilter filter(tok, tok.eos_id());
  const auto schema = JsonSchema::compile(kPerson);
  const std::string text = kValid[3];
  for (size_t cut : {size_t(0), size_t(1), size_t(3), size_t(9), size_t(12), size_t(24), size_t(31),
                     size_t(40), text.size()}) {
    SchemaState s(schema.get());
    ASSERT_TRUE(s.push(std::string_view(text).substr(0, cut)));
    std::vector<float> logits(tok.vocab_size(), 0.0f);
    filter.mask(s, logits);
    size_t mismatches = 0, allowed = 0;
    for (size_t id = 0; id < tok.vocab_size(); ++id) {
      bool want = false;
      if (int32_t(id) == tok.eos_id()) {
        want = s.complete();
      } else if (!tok.is_added(int32_t(id)) && !tok.is_special(int32_t(id))) {
        const std::string t = tok.token_text(int32_t(id));
        SchemaState c = s;
        want = !t.empty() && c.push(t);
      }
      allowed += want;
      mismatches += want != (logits[id] == 0.0f);
    }
    EXPECT_EQ(mismatches, 0u) << "at byte " << cut << " of " << text;
    EXPECT_GT(allowed, 0u) << cut;
  }
}
