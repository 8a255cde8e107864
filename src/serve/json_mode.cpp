#include "serve/json_mode.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "serve/json_schema.h"

namespace whale::serve {

static_assert(std::is_trivially_copyable_v<JsonState>, "the filter copies states per token");
static_assert(sizeof(JsonState) <= 16, "keep the per-token copy small");

namespace {

bool is_ws(uint8_t b) {
  return b == ' ' || b == '\t' || b == '\n' || b == '\r';
}
bool is_digit(uint8_t b) {
  return b >= '0' && b <= '9';
}

int hex_value(uint8_t b) {
  if (b >= '0' && b <= '9') return b - '0';
  if (b >= 'a' && b <= 'f') return b - 'a' + 10;
  if (b >= 'A' && b <= 'F') return b - 'A' + 10;
  return -1;
}

constexpr std::string_view kLiterals[] = {"true", "false", "null"};
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace

bool JsonState::push(std::string_view bytes) {
  for (char c : bytes)
    if (!push(static_cast<uint8_t>(c))) return false;
  return true;
}

bool JsonState::complete() const {
  return mode_ == Mode::kDone;
}

bool JsonState::open(bool object) {
  if (depth_ >= kMaxDepth) return fail();
  const uint64_t bit = uint64_t{1} << depth_;
  stack_ = object ? (stack_ | bit) : (stack_ & ~bit);
  ++depth_;
  mode_ = object ? Mode::kObjFirst : Mode::kArrFirst;
  return true;
}

bool JsonState::close(bool object) {
  const bool top_is_object = (stack_ >> (depth_ - 1)) & 1;
  if (top_is_object != object) return fail();
  --depth_;
  end_value();
  return true;
}

bool JsonState::start_value(uint8_t byte) {
  switch (byte) {
    case '{':
      return open(true);
    case '[':
      return open(false);
    case '"':
      flags_ = 0;
      mode_ = Mode::kString;
      return true;
    case '-':
      mode_ = Mode::kMinus;
      return true;
    case '0':
      mode_ = Mode::kZero;
      return true;
    case 't':
    case 'f':
    case 'n':
      mode_ = byte == 't' ? Mode::kTrue : byte == 'f' ? Mode::kFalse : Mode::kNull;
      aux_ = 1;
      return true;
    default:
      if (byte >= '1' && byte <= '9') {
        mode_ = Mode::kInt;
        return true;
      }
      return fail();
  }
}

bool JsonState::push_structural(uint8_t byte) {
  if (is_ws(byte)) {
    if (ws_run_ >= kMaxWhitespace) return fail();
    ++ws_run_;
    return true;
  }
  ws_run_ = 0;
  switch (mode_) {
    case Mode::kStart:
      return byte == '{' ? open(true) : fail();
    case Mode::kObjFirst:
      if (byte == '}') return close(true);
      [[fallthrough]];
    case Mode::kObjKey:
      if (byte != '"') return fail();
      flags_ = kInKey;
      mode_ = Mode::kString;
      return true;
    case Mode::kColon:
      if (byte != ':') return fail();
      mode_ = Mode::kValue;
      return true;
    case Mode::kArrFirst:
      if (byte == ']') return close(false);
      [[fallthrough]];
    case Mode::kValue:
      return start_value(byte);
    case Mode::kAfterValue:
      if (byte == '}') return close(true);
      if (byte == ']') return close(false);
      if (byte != ',') return fail();
      mode_ = ((stack_ >> (depth_ - 1)) & 1) ? Mode::kObjKey : Mode::kValue;
      return true;
    default:  // kDone: only whitespace may follow
      return fail();
  }
}

bool JsonState::push(uint8_t byte) {
  switch (mode_) {
    case Mode::kString:
      if (byte >= 0x20 && byte < 0x80 && byte != '"' && byte != '\\') return true;
      if (byte == '"') {
        if (flags_ & kInKey) {
          mode_ = Mode::kColon;
        } else {
          end_value();
        }
        return true;
      }
      if (byte == '\\') {
        mode_ = Mode::kEscape;
        return true;
      }
      // A UTF-8 lead byte: the range of its first continuation byte excludes overlong forms (E0,
      // F0), UTF-16 surrogates (ED) and code points above U+10FFFF (F4).
      lo_ = 0x80;
      hi_ = 0xBF;
      if (byte >= 0xC2 && byte <= 0xDF) {
        aux_ = 1;
      } else if (byte >= 0xE0 && byte <= 0xEF) {
        aux_ = 2;
        if (byte == 0xE0) lo_ = 0xA0;
        if (byte == 0xED) hi_ = 0x9F;
      } else if (byte >= 0xF0 && byte <= 0xF4) {
        aux_ = 3;
        if (byte == 0xF0) lo_ = 0x90;
        if (byte == 0xF4) hi_ = 0x8F;
      } else {
        return fail();  // control character, continuation byte, C0, C1 or F5-FF
      }
      mode_ = Mode::kUtf8;
      return true;
    case Mode::kUtf8:
      if (byte < lo_ || byte > hi_) return fail();
      lo_ = 0x80;
      hi_ = 0xBF;
      if (--aux_ == 0) mode_ = Mode::kString;
      return true;
    case Mode::kEscape:
      switch (byte) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          mode_ = Mode::kString;
          return true;
        case 'u':
          mode_ = Mode::kHex;
          aux_ = 0;
          return true;
        default:
          return fail();
      }
    case Mode::kHex: {
      // A \u escape of a UTF-16 surrogate must be a high half (D800-DBFF) directly followed by a
      // \u escape of a low half (DC00-DFFF); the first two hex digits decide.
      const int v = hex_value(byte);
      if (v < 0) return fail();
      if (aux_ == 0) {
        if (flags_ & kLowHalf) {
          if (v != 0xD) return fail();
        } else if (v == 0xD) {
          flags_ |= kMaybeHigh;
        }
      } else if (aux_ == 1) {
        if (flags_ & kLowHalf) {
          if (v < 0xC) return fail();
        } else if (flags_ & kMaybeHigh) {
          if (v >= 0xC) return fail();  // a lone low half
          if (v >= 0x8) flags_ |= kHigh;
        }
      }
      if (++aux_ < 4) return true;
      if (flags_ & kHigh) {
        mode_ = Mode::kLowSlash;
        flags_ = (flags_ & kInKey) | kLowHalf;
      } else {
        mode_ = Mode::kString;
        flags_ &= kInKey;
      }
      return true;
    }
    case Mode::kLowSlash:
      if (byte != '\\') return fail();
      mode_ = Mode::kLowU;
      return true;
    case Mode::kLowU:
      if (byte != 'u') return fail();
      mode_ = Mode::kHex;
      aux_ = 0;
      return true;
    case Mode::kTrue:
    case Mode::kFalse:
    case Mode::kNull: {
      const std::string_view lit =
          kLiterals[static_cast<int>(mode_) - static_cast<int>(Mode::kTrue)];
      if (byte != static_cast<uint8_t>(lit[aux_])) return fail();
      if (++aux_ == lit.size()) end_value();
      return true;
    }
    case Mode::kMinus:
      if (byte == '0') {
        mode_ = Mode::kZero;
      } else if (byte >= '1' && byte <= '9') {
        mode_ = Mode::kInt;
      } else {
        return fail();
      }
      return true;
    case Mode::kInt:
      if (is_digit(byte)) return true;
      [[fallthrough]];
    case Mode::kZero:
      if (byte == '.') {
        mode_ = Mode::kDot;
        return true;
      }
      [[fallthrough]];
    case Mode::kFrac:
      if (byte == 'e' || byte == 'E') {
        mode_ = Mode::kExp;
        return true;
      }
      if (mode_ == Mode::kFrac && is_digit(byte)) return true;
      break;  // the number ended before this byte
    case Mode::kDot:
      if (!is_digit(byte)) return fail();
      mode_ = Mode::kFrac;
      return true;
    case Mode::kExp:
      if (byte == '+' || byte == '-') {
        mode_ = Mode::kExpSign;
        return true;
      }
      [[fallthrough]];
    case Mode::kExpSign:
      if (!is_digit(byte)) return fail();
      mode_ = Mode::kExpDigits;
      return true;
    case Mode::kExpDigits:
      if (is_digit(byte)) return true;
      break;  // the number ended before this byte
    case Mode::kFailed:
      return false;
    default:
      return push_structural(byte);
  }
  // A number ended. The top level is an object, so it was inside a container.
  mode_ = Mode::kAfterValue;
  return push_structural(byte);
}

JsonTokenFilter::JsonTokenFilter(const Tokenizer& tok, int32_t eos_id)
    : vocab_size_(tok.vocab_size()), eos_id_(eos_id) {
  if (eos_id < -1 || (eos_id >= 0 && static_cast<size_t>(eos_id) >= vocab_size_))
    throw std::invalid_argument("JSON mode: eos id " + std::to_string(eos_id) + " is not a token");
  std::vector<std::string> texts(vocab_size_);
  std::vector<int32_t> candidates;
  bool single_byte[256] = {};
  for (size_t i = 0; i < vocab_size_; ++i) {
    const auto id = static_cast<int32_t>(i);
    if (id == eos_id) continue;
    bool candidate = !tok.is_added(id) && !tok.is_special(id);
    if (candidate) {
      try {
        texts[i] = tok.token_text(id);
      } catch (const std::out_of_range&) {
        candidate = false;  // a gap in the ids
      }
      candidate = candidate && !texts[i].empty();
    }
    if (!candidate) {
      never_.push_back(id);
      continue;
    }
    candidates.push_back(id);
    if (texts[i].size() == 1) single_byte[static_cast<uint8_t>(texts[i][0])] = true;
  }

  // See the header: these single-byte tokens keep every reachable state from a dead end.
  std::string required = "{}[]:,\"\\/0123456789abcdefABCDEFtrulsn-+.";
  for (int b = 0x80; b <= 0xBF; ++b) required += static_cast<char>(b);
  for (char c : required) {
    const auto b = static_cast<uint8_t>(c);
    if (!single_byte[b]) {
      throw std::runtime_error("JSON mode needs a single-byte token for byte " + std::to_string(b) +
                               (b < 0x80 ? " '" + std::string(1, c) + "'" : "") +
                               " and the vocabulary has none (or only an added token)");
    }
  }

  std::sort(candidates.begin(), candidates.end(),
            [&](int32_t a, int32_t b) { return texts[a] < texts[b]; });
  entry_of_id_.assign(vocab_size_, -1);
  entries_.reserve(candidates.size());
  JsonState in_string;
  in_string.push("{\"");
  std::string_view prev;
  for (int32_t id : candidates) {
    const std::string& t = texts[id];
    const size_t n = std::min(prev.size(), t.size());
    const auto lcp = static_cast<uint32_t>(
        std::mismatch(prev.begin(), prev.begin() + n, t.begin()).first - prev.begin());
    // The automaton itself finds the plain run: as long as it stays in kString/kUtf8, the bytes
    // are string content; each return to kString ends a whole character.
    uint32_t plain = 0;
    JsonState s = in_string;
    for (uint32_t k = 0; k < t.size(); ++k) {
      if (!s.push(static_cast<uint8_t>(t[k]))) break;
      if (s.mode_ == JsonState::Mode::kString) {
        plain = k + 1;
      } else if (s.mode_ != JsonState::Mode::kUtf8) {
        break;
      }
    }
    entry_of_id_[id] = static_cast<int32_t>(entries_.size());
    entries_.push_back(
        {static_cast<uint32_t>(bytes_.size()), static_cast<uint32_t>(t.size()), lcp, plain, id});
    bytes_ += t;
    max_token_size_ = std::max(max_token_size_, t.size());
    prev = t;
  }
}

bool JsonTokenFilter::allowed(const JsonState& state, int32_t id) const {
  if (id < 0) return false;
  if (id == eos_id_) return state.complete();
  if (static_cast<size_t>(id) >= vocab_size_ || entry_of_id_[id] < 0) return false;
  const Entry& e = entries_[entry_of_id_[id]];
  JsonState s = state;
  return s.push(std::string_view(bytes_).substr(e.offset, e.size));
}

bool JsonTokenFilter::in_plain_string(const JsonState& state) {
  return state.mode_ == JsonState::Mode::kString;
}

bool JsonTokenFilter::in_plain_string(const SchemaState& state) {
  return state.in_free_string();
}

size_t JsonTokenFilter::mask(const JsonState& state, std::span<float> logits) const {
  return mask_any(state, logits);
}

size_t JsonTokenFilter::mask(const SchemaState& state, std::span<float> logits) const {
  return mask_any(state, logits);
}

template <class State>
size_t JsonTokenFilter::mask_any(const State& state, std::span<float> logits) const {
  if (logits.size() < vocab_size_) {
    throw std::invalid_argument("JSON mode: " + std::to_string(logits.size()) +
                                " logits for a vocabulary of " + std::to_string(vocab_size_));
  }
  size_t allowed_count =
      in_plain_string(state) ? mask_in_string(state, logits) : mask_walk(state, logits);
  for (int32_t id : never_) logits[id] = kNegInf;
  for (size_t id = vocab_size_; id < logits.size(); ++id) logits[id] = kNegInf;
  if (eos_id_ >= 0) {
    if (state.complete()) {
      ++allowed_count;
    } else {
      logits[eos_id_] = kNegInf;
    }
  }
  return allowed_count;
}

template <class State>
size_t JsonTokenFilter::mask_in_string(const State& state, std::span<float> logits) const {
  size_t allowed_count = 0;
  State s;
  for (const Entry& e : entries_) {
    if (e.plain != e.size) s = state;
    if (e.plain == e.size ||
        s.push(std::string_view(bytes_).substr(e.offset + e.plain, e.size - e.plain))) {
      ++allowed_count;
    } else {
      logits[e.id] = kNegInf;
    }
  }
  return allowed_count;
}

template <class State>
size_t JsonTokenFilter::mask_walk(const State& state, std::span<float> logits) const {
  // states[k]: `state` after the first k bytes of the current entry. `rejected`: the length of the
  // shortest prefix of the previous entry known to be rejected (none: larger than any token).
  std::vector<State> states(max_token_size_ + 1);
  states[0] = state;
  size_t rejected = std::numeric_limits<size_t>::max();
  size_t allowed_count = 0;
  const auto* bytes = reinterpret_cast<const uint8_t*>(bytes_.data());
  for (const Entry& e : entries_) {
    if (e.lcp >= rejected) {  // shares the rejected prefix
      logits[e.id] = kNegInf;
      continue;
    }
    rejected = std::numeric_limits<size_t>::max();
    const uint8_t* t = bytes + e.offset;
    for (size_t k = e.lcp; k < e.size; ++k) {
      states[k + 1] = states[k];
      if (!states[k + 1].push(t[k])) {
        rejected = k + 1;
        break;
      }
    }
    if (rejected <= e.size) {
      logits[e.id] = kNegInf;
    } else {
      ++allowed_count;
    }
  }
  return allowed_count;
}

}  // namespace whale::serve
