#include "serve/json_schema.h"

#include <algorithm>
#include <bit>
#include <map>

namespace whale::serve {

using json = nlohmann::json;

// ------------------------------------------------------------------ compiling

class SchemaCompiler {
 public:
  explicit SchemaCompiler(const json& root) : root_(root) {}

  std::shared_ptr<const JsonSchema> run() {
    out_ = std::make_shared<JsonSchema>();
    out_->nodes_.push_back(JsonSchema::Node{});  // kAnyNode: any value, any keys, any items
    out_->root_ = compile(root_, "");
    return out_;
  }

 private:
  static constexpr size_t kMaxNodes = 4096;
  static constexpr int kMaxNesting = 64;
  using Node = JsonSchema::Node;

  [[noreturn]] static void fail(const std::string& path, const std::string& msg) {
    throw SchemaError(path, msg);
  }
  static std::string at(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  int add(Node n, const std::string& path) {
    if (out_->nodes_.size() >= kMaxNodes) fail(path, "the schema has more than 4096 nodes");
    out_->nodes_.push_back(std::move(n));
    return int(out_->nodes_.size() - 1);
  }

  // "#", "#/$defs/NAME", "#/definitions/NAME".
  const json& resolve(const std::string& ref, const std::string& path) {
    if (ref == "#") return root_;
    for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
      const std::string p = prefix;
      if (!ref.starts_with(p)) continue;
      const std::string name = ref.substr(p.size());
      const std::string defs = p.substr(2, p.size() - 3);
      const auto d = root_.find(defs);
      if (d != root_.end() && d->is_object() && d->contains(name)) return (*d)[name];
      fail(path, "$ref '" + ref + "' names no definition");
    }
    fail(path,
         "$ref '" + ref + "' is not supported (only '#', '#/$defs/...', '#/definitions/...')");
  }

  static uint8_t type_bit(const json& t, const std::string& path) {
    if (!t.is_string()) fail(path, "a type must be a string");
    const std::string& s = t.get_ref<const std::string&>();
    if (s == "object") return JsonSchema::kObject;
    if (s == "array") return JsonSchema::kArray;
    if (s == "string") return JsonSchema::kString;
    if (s == "number") return JsonSchema::kNumber;
    if (s == "integer") return JsonSchema::kInteger;
    if (s == "boolean") return JsonSchema::kBoolean;
    if (s == "null") return JsonSchema::kNull;
    fail(path, "unknown type '" + s + "'");
  }

  int compile(const json& j, const std::string& path) {
    // Nesting is bounded (a hostile schema must not exhaust the stack); so is generation's.
    struct Depth {
      int& d;
      explicit Depth(int& d_) : d(d_) { ++d; }
      ~Depth() { --d; }
    } depth(depth_);
    if (depth_ > kMaxNesting) fail(path, "the schema nests deeper than 64 levels");
    if (j.is_boolean()) {
      if (j.get<bool>()) return JsonSchema::kAnyNode;
      fail(path, "the schema false (nothing valid) is not supported");
    }
    if (!j.is_object()) fail(path, "a schema must be an object");
    if (const auto r = j.find("$ref"); r != j.end()) {
      if (!r->is_string()) fail(at(path, "$ref"), "must be a string");
      for (const auto& [k, v] : j.items())
        if (k != "$ref" && !annotation(k))
          fail(at(path, k), "'" + k + "' beside $ref is not supported");
      const std::string ref = r->get<std::string>();
      if (const auto it = refs_.find(ref); it != refs_.end()) return it->second;
      const int idx = add(Node{}, path);  // filled below; recursive references point here
      refs_[ref] = idx;
      const int target = compile(resolve(ref, at(path, "$ref")), ref);
      out_->nodes_[size_t(idx)] = out_->nodes_[size_t(target)];
      return idx;
    }
    Node n;
    for (const auto& [key, v] : j.items()) {
      const std::string p = at(path, key);
      if (annotation(key)) continue;
      if (key == "type") {
        n.types = 0;
        if (v.is_array()) {
          if (v.empty()) fail(p, "must not be empty");
          for (const json& t : v) n.types |= type_bit(t, p);
        } else {
          n.types = type_bit(v, p);
        }
      } else if (key == "enum" || key == "const") {
        const json values = key == "const" ? json::array({v}) : v;
        if (!values.is_array() || values.empty()) fail(p, "must be a non-empty array");
        if (values.size() > 64) fail(p, "at most 64 values are supported");
        for (const json& e : values) n.literals.push_back(e.dump());
      } else if (key == "anyOf" || key == "oneOf") {
        if (!v.is_array() || v.empty()) fail(p, "must be a non-empty array of schemas");
        for (size_t i = 0; i < v.size(); ++i)
          n.any_of.push_back(compile(v[i], p + "[" + std::to_string(i) + "]"));
      } else if (key == "properties") {
        if (!v.is_object()) fail(p, "must be an object");
        if (v.size() > 64) fail(p, "at most 64 properties are supported");
        for (const auto& [name, sub] : v.items()) {
          n.names.push_back(name);
          n.props.push_back(compile(sub, at(p, name)));
        }
      } else if (key == "required") {
        if (!v.is_array()) fail(p, "must be an array of property names");
      } else if (key == "additionalProperties") {
        n.additional = v.is_boolean() ? (v.get<bool>() ? JsonSchema::kAnyNode : -1) : compile(v, p);
      } else if (key == "items") {
        if (v.is_array()) fail(p, "tuple items (an array) are not supported");
        n.items = compile(v, p);
      } else if (key == "minItems" || key == "maxItems") {
        if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
          fail(p, "must be a non-negative integer");
        (key == "minItems" ? n.min_items : n.max_items) = v.get<int64_t>();
      } else {
        fail(p, "keyword '" + key + "' is not supported");
      }
    }
    if (const auto r = j.find("required"); r != j.end()) {
      for (const json& name : *r) {
        if (!name.is_string()) fail(at(path, "required"), "must be an array of property names");
        size_t i = 0;
        while (i < n.names.size() && n.names[i] != name.get_ref<const std::string&>()) ++i;
        if (i == n.names.size())
          fail(at(path, "required"), "'" + name.get<std::string>() + "' is not in properties");
        n.required |= uint64_t(1) << i;
      }
    }
    if (!n.any_of.empty() &&
        (n.types != JsonSchema::kAny || !n.literals.empty() || !n.names.empty()))
      fail(path, "anyOf beside other constraints is not supported; move them into the branches");
    if (n.max_items >= 0 && n.min_items > n.max_items) fail(path, "minItems > maxItems");
    return add(std::move(n), path);
  }

  static bool annotation(const std::string& k) {
    return k == "title" || k == "description" || k == "default" || k == "examples" ||
           k == "format" || k == "$schema" || k == "$id" || k == "$comment" || k == "$defs" ||
           k == "definitions";
  }

  const json& root_;
  std::shared_ptr<JsonSchema> out_;
  std::map<std::string, int> refs_;
  int depth_ = 0;
};

std::shared_ptr<const JsonSchema> JsonSchema::compile(const nlohmann::json& schema) {
  return SchemaCompiler(schema).run();
}

// ------------------------------------------------------------------ the automaton
//
// A path is a stack of frames, one per value being read, innermost last:
//   kValue    before a value's first byte (whitespace skipped); its first byte picks the kind
//   kObject   mode: 0 after '{', 1 after ',', 3 before ':', 4 reading a value, 5 after a value
//             (a kKey frame on top reads a key: cand/count follow the property names it may be)
//   kArray    mode: 0 after '[', 1 after ',', 2 after a value; count: items so far
//   kString / kKey  mode: 0 content, 1 after '\', 2 \u hex digits, 3 UTF-8 continuation bytes,
//             4/5 the '\' and 'u' of a low surrogate, 6 its hex digits
//   kNumber   mode: 0 "-", 1 "-?0", 2 integer digits, 3 ".", 4 fraction, 5 "e", 6 "e±", 7 exponent
//   kLiteral  mode 0: one of the node's enum texts (cand, count); 1/2/3: true/false/null
// A value's end pops its frame and tells the one below; the root's end sets `done`.

namespace {

enum Kind : uint8_t { kValue, kObject, kArray, kString, kKey, kNumber, kLiteral };
constexpr std::string_view kWords[4] = {"", "true", "false", "null"};

bool is_ws(uint8_t b) {
  return b == ' ' || b == '\t' || b == '\n' || b == '\r';
}
bool is_digit(uint8_t b) {
  return b >= '0' && b <= '9';
}
int hex_value(uint8_t b) {
  if (is_digit(b)) return b - '0';
  if (b >= 'a' && b <= 'f') return b - 'a' + 10;
  if (b >= 'A' && b <= 'F') return b - 'A' + 10;
  return -1;
}

using Frame = SchemaState::Frame;
using Path = SchemaState::Path;

bool number_accepting(const Frame& f) {
  return f.mode == 1 || f.mode == 2 || f.mode == 4 || f.mode == 7;
}

bool literal_complete(const JsonSchema& s, const Frame& f) {
  if (f.mode != 0) return f.count == kWords[f.mode].size();
  const auto& lits = s.node(f.node).literals;
  for (size_t i = 0; i < lits.size(); ++i)
    if ((f.cand >> i & 1) && lits[i].size() == f.count) return true;
  return false;
}

class Stepper {
 public:
  Stepper(const JsonSchema& s, Path& p) : s_(s), p_(p) {}

  // 1: b taken; 0: invalid; 2: not taken yet, a value with alternatives starts (the caller
  // splits the path, then steps again).
  int step(uint8_t b) {
    for (;;) {
      if (p_.depth == 0) return p_.done && ws(b);
      Frame& f = p_.frames[p_.depth - 1];
      switch (f.kind) {
        case kValue:
          return value(f, b);
        case kObject:
          return object(f, b);
        case kArray:
          return array(f, b);  // may be 2
        case kString:
        case kKey:
          return string(f, b);
        case kNumber: {
          const int r = number(f, b);
          if (r >= 0) return r;
          break;  // the number ended before b: b goes to the frame below
        }
        case kLiteral: {
          const int r = literal(f, b);
          if (r >= 0) return r;
          break;
        }
      }
    }
  }

 private:
  bool ws(uint8_t b) {
    if (!is_ws(b)) return false;
    return ++p_.ws <= SchemaState::kMaxWhitespace;
  }

  bool push(Frame f) {
    if (p_.depth >= SchemaState::kMaxDepth) return false;
    p_.frames[p_.depth++] = f;
    return true;
  }

  // The value on top ended: pop it and move the frame below on.
  void end_value() {
    --p_.depth;
    if (p_.depth == 0) {
      p_.done = true;
      return;
    }
    Frame& parent = p_.frames[p_.depth - 1];
    if (parent.kind == kObject) {
      parent.mode = 5;
    } else {  // kArray
      parent.mode = 2;
      ++parent.count;
    }
  }

  // The first byte of a value for node f.node (f is a kValue frame, replaced in place).
  bool value(Frame& f, uint8_t b) {
    if (is_ws(b)) return ws(b);
    p_.ws = 0;
    const JsonSchema::Node& n = s_.node(f.node);
    const uint16_t node = f.node;
    if (!n.literals.empty()) {
      f = Frame{};
      f.kind = kLiteral;
      f.node = node;
      f.cand = n.literals.size() == 64 ? ~uint64_t(0) : (uint64_t(1) << n.literals.size()) - 1;
      return literal(f, b) == 1;
    }
    f = Frame{};
    f.node = node;
    if (b == '{' && (n.types & JsonSchema::kObject)) {
      f.kind = kObject;
      return true;
    }
    if (b == '[' && (n.types & JsonSchema::kArray)) {
      if (n.max_items == 0 && n.min_items > 0) return false;
      f.kind = kArray;
      return true;
    }
    if (b == '"' && (n.types & JsonSchema::kString)) {
      f.kind = kString;
      return true;
    }
    if ((b == '-' || is_digit(b)) && (n.types & (JsonSchema::kNumber | JsonSchema::kInteger))) {
      f.kind = kNumber;
      f.mode = b == '-' ? 0 : b == '0' ? 1 : 2;
      return true;
    }
    const uint8_t word = (b == 't' || b == 'f') && (n.types & JsonSchema::kBoolean)
                             ? (b == 't' ? 1 : 2)
                         : b == 'n' && (n.types & JsonSchema::kNull) ? 3
                                                                     : 0;
    if (word == 0) return false;
    f.kind = kLiteral;
    f.mode = word;
    f.count = 1;
    return true;
  }

  bool object(Frame& f, uint8_t b) {
    const JsonSchema::Node& n = s_.node(f.node);
    if (is_ws(b)) return ws(b);
    p_.ws = 0;
    switch (f.mode) {
      case 0:
      case 1:
        if (b == '}' && f.mode == 0) {
          if (n.required != 0) return false;
          end_value();
          return true;
        }
        if (b != '"') return false;
        {
          // Candidates: the properties not seen yet.
          uint64_t cand = 0;
          for (size_t i = 0; i < n.names.size(); ++i)
            if (!(f.seen >> i & 1)) cand |= uint64_t(1) << i;
          if (cand == 0 && n.additional < 0) return false;
          f.cand = cand;
          f.count = 0;
          f.mode = 3;  // after the key
          Frame k;
          k.kind = kKey;
          k.node = f.node;
          return push(k);
        }
      case 3:
        if (b != ':') return false;
        f.mode = 4;
        {
          Frame v;
          v.kind = kValue;
          v.node = uint16_t(f.prop >= 0 ? n.props[size_t(f.prop)] : n.additional);
          return push(v);
        }
      case 5:
        if (b == '}') {
          if ((f.seen & n.required) != n.required) return false;
          end_value();
          return true;
        }
        if (b != ',') return false;
        // Another key must be possible.
        if (n.additional < 0 && std::popcount(f.seen) == int(n.names.size())) return false;
        f.mode = 1;
        return true;
      default:
        return false;
    }
  }

  int array(Frame& f, uint8_t b) {
    const JsonSchema::Node& n = s_.node(f.node);
    if (is_ws(b)) return ws(b);
    p_.ws = 0;
    if (f.mode == 2) {
      if (b == ']') {
        if (f.count < n.min_items) return false;
        end_value();
        return true;
      }
      if (b != ',' || (n.max_items >= 0 && f.count >= n.max_items)) return false;
      f.mode = 1;
      return true;
    }
    if (b == ']' && f.mode == 0) {
      if (n.min_items > 0) return false;
      end_value();
      return true;
    }
    if (n.max_items >= 0 && f.count >= n.max_items) return false;
    Frame v;
    v.kind = kValue;
    v.node = uint16_t(n.items);
    if (!push(v)) return false;
    if (!s_.node(n.items).any_of.empty()) return 2;
    return value(p_.frames[p_.depth - 1], b);
  }

  // A key's raw byte: narrows the object's candidates.
  bool key_byte(uint8_t b) {
    Frame& obj = p_.frames[p_.depth - 2];
    const JsonSchema::Node& n = s_.node(obj.node);
    uint64_t cand = 0;
    for (size_t i = 0; i < n.names.size(); ++i)
      if ((obj.cand >> i & 1) && n.names[i].size() > obj.count &&
          uint8_t(n.names[i][obj.count]) == b)
        cand |= uint64_t(1) << i;
    obj.cand = cand;
    ++obj.count;
    return cand != 0 || n.additional >= 0;
  }

  bool key_end() {
    Frame& obj = p_.frames[p_.depth - 2];
    const JsonSchema::Node& n = s_.node(obj.node);
    obj.prop = -1;
    for (size_t i = 0; i < n.names.size(); ++i)
      if ((obj.cand >> i & 1) && n.names[i].size() == obj.count) obj.prop = int8_t(i);
    if (obj.prop >= 0) {
      obj.seen |= uint64_t(1) << obj.prop;
    } else if (n.additional < 0) {
      return false;
    }
    --p_.depth;  // the key frame; the object is before its ':'
    return true;
  }

  bool string(Frame& f, uint8_t b) {
    const bool key = f.kind == kKey;
    switch (f.mode) {
      case 0:
        if (b == '"') {
          if (key) return key_end();
          end_value();
          return true;
        }
        if (b < 0x20) return false;
        if (b == '\\') {
          f.mode = 1;
        } else if (b >= 0x80) {
          if (b >= 0xC2 && b <= 0xDF) {
            f.aux = 1, f.lo = 0x80, f.hi = 0xBF;
          } else if (b >= 0xE0 && b <= 0xEF) {
            f.aux = 2;
            f.lo = b == 0xE0 ? 0xA0 : 0x80;
            f.hi = b == 0xED ? 0x9F : 0xBF;
          } else if (b >= 0xF0 && b <= 0xF4) {
            f.aux = 3;
            f.lo = b == 0xF0 ? 0x90 : 0x80;
            f.hi = b == 0xF4 ? 0x8F : 0xBF;
          } else {
            return false;
          }
          f.mode = 3;
        }
        return !key || key_byte(b);
      case 1:
        if (b == 'u') {
          f.mode = 2, f.aux = 0, f.code = 0;
        } else if (b == '"' || b == '\\' || b == '/' || b == 'b' || b == 'f' || b == 'n' ||
                   b == 'r' || b == 't') {
          f.mode = 0;
        } else {
          return false;
        }
        return !key || key_byte(b);
      case 2:
      case 6: {
        const int h = hex_value(b);
        if (h < 0) return false;
        f.code = uint16_t(f.code << 4 | h);
        if (++f.aux == 4) {
          const bool high = f.code >= 0xD800 && f.code <= 0xDBFF;
          const bool low = f.code >= 0xDC00 && f.code <= 0xDFFF;
          if (f.mode == 6 ? !low : low) return false;
          f.mode = f.mode == 2 && high ? 4 : 0;
        }
        return !key || key_byte(b);
      }
      case 3:
        if (b < f.lo || b > f.hi) return false;
        f.lo = 0x80, f.hi = 0xBF;
        if (--f.aux == 0) f.mode = 0;
        return !key || key_byte(b);
      case 4:
        if (b != '\\') return false;
        f.mode = 5;
        return !key || key_byte(b);
      case 5:
        if (b != 'u') return false;
        f.mode = 6, f.aux = 0, f.code = 0;
        return !key || key_byte(b);
      default:
        return false;
    }
  }

  // 1: b taken, 0: invalid, -1: the number ended before b.
  int number(Frame& f, uint8_t b) {
    const bool integer = !(s_.node(f.node).types & JsonSchema::kNumber);
    const bool digit = is_digit(b);
    switch (f.mode) {
      case 0:
        if (!digit) return 0;
        f.mode = b == '0' ? 1 : 2;
        return 1;
      case 1:
      case 2:
        if (digit && f.mode == 2) return 1;
        if (digit) return 0;  // no leading zeros
        if (b == '.' && !integer) return f.mode = 3, 1;
        if ((b == 'e' || b == 'E') && !integer) return f.mode = 5, 1;
        break;
      case 3:
        return digit ? (f.mode = 4, 1) : 0;
      case 4:
        if (digit) return 1;
        if (b == 'e' || b == 'E') return f.mode = 5, 1;
        break;
      case 5:
        if (b == '+' || b == '-') return f.mode = 6, 1;
        return digit ? (f.mode = 7, 1) : 0;
      case 6:
        return digit ? (f.mode = 7, 1) : 0;
      case 7:
        if (digit) return 1;
        break;
    }
    if (!number_accepting(f)) return 0;
    end_value();
    return -1;
  }

  int literal(Frame& f, uint8_t b) {
    if (f.mode != 0) {
      const std::string_view w = kWords[f.mode];
      if (f.count < w.size()) return uint8_t(w[f.count]) == b ? (++f.count, 1) : 0;
      end_value();
      return -1;
    }
    const auto& lits = s_.node(f.node).literals;
    uint64_t cand = 0;
    for (size_t i = 0; i < lits.size(); ++i)
      if ((f.cand >> i & 1) && lits[i].size() > f.count && uint8_t(lits[i][f.count]) == b)
        cand |= uint64_t(1) << i;
    if (cand != 0) {
      f.cand = cand;
      ++f.count;
      return 1;
    }
    if (!literal_complete(s_, f) || f.count == 0) return 0;
    end_value();
    return -1;
  }

  const JsonSchema& s_;
  Path& p_;
};

}  // namespace

SchemaState::SchemaState(const JsonSchema* schema) : schema_(schema), n_(1) {
  Frame root;
  root.kind = kValue;
  root.node = uint16_t(schema->root());
  paths_[0].frames[0] = root;
  paths_[0].depth = 1;
}

void SchemaState::expand() {
  // anyOf: a value about to start for a node with alternatives becomes one path per alternative.
  // An alternative that leads back to itself ({"anyOf": [{"$ref": "#"}]}) would expand forever:
  // past a bound the paths still expanding are dropped.
  int rounds = 0;
  for (int i = 0; i < n_;) {
    Path& p = paths_[i];
    Frame* top = p.depth > 0 ? &p.frames[p.depth - 1] : nullptr;
    if (!top || top->kind != kValue || schema_->node(top->node).any_of.empty()) {
      ++i;
      continue;
    }
    if (++rounds > 64) {
      paths_[i] = paths_[n_ - 1];
      --n_;
      continue;
    }
    const std::vector<int>& alts = schema_->node(top->node).any_of;
    const size_t d = p.depth - 1;
    for (size_t a = 1; a < alts.size() && n_ < kMaxPaths; ++a) {
      paths_[n_] = p;
      paths_[n_].frames[d].node = uint16_t(alts[a]);
      ++n_;
    }
    top->node = uint16_t(alts[0]);
    // Path i is examined again: its new node may have alternatives too.
  }
}

bool SchemaState::push(uint8_t byte) {
  for (int i = 0; i < n_; ++i) paths_[i].retry = true;
  for (int round = 0; round < kMaxDepth + 2; ++round) {
    expand();
    int kept = 0;
    bool again = false;
    for (int i = 0; i < n_; ++i) {
      Path& p = paths_[i];
      if (p.retry) {
        const int r = Stepper(*schema_, p).step(byte);
        if (r == 0) continue;
        p.retry = r == 2;
        again = again || p.retry;
      }
      if (kept != i) paths_[kept] = p;
      ++kept;
    }
    n_ = uint8_t(kept);
    if (!again) break;
  }
  for (int i = 0; i < n_; ++i)
    if (paths_[i].retry) return false;  // cannot happen: a round always takes the byte
  return n_ > 0;
}

bool SchemaState::push(std::string_view bytes) {
  for (char c : bytes)
    if (!push(uint8_t(c))) return false;
  return true;
}

SchemaState& SchemaState::operator=(const SchemaState& o) {
  schema_ = o.schema_;
  n_ = o.n_;
  for (int i = 0; i < n_; ++i) {
    Path& d = paths_[i];
    const Path& p = o.paths_[i];
    d.depth = p.depth, d.ws = p.ws, d.done = p.done, d.retry = p.retry;
    std::copy(p.frames, p.frames + p.depth, d.frames);
  }
  return *this;
}

bool SchemaState::closed() const {
  for (int i = 0; i < n_; ++i)
    if (paths_[i].done) return true;
  return false;
}

bool SchemaState::complete() const {
  for (int i = 0; i < n_; ++i) {
    const Path& p = paths_[i];
    if (p.done) return true;
    if (p.depth != 1) continue;
    const Frame& f = p.frames[0];
    if (f.kind == kNumber && number_accepting(f)) return true;
    if (f.kind == kLiteral && literal_complete(*schema_, f)) return true;
  }
  return false;
}

bool SchemaState::in_free_string() const {
  for (int i = 0; i < n_; ++i) {
    const Path& p = paths_[i];
    if (p.depth == 0) return false;
    const Frame& f = p.frames[p.depth - 1];
    if (f.kind != kString || f.mode != 0) return false;
  }
  return n_ > 0;
}

}  // namespace whale::serve
