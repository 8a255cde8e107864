// The verifier of the reasoning tasks (task.h): how a completion is read, and when its answer is
// right. Pure functions of text; nothing here throws.
//
// A completion is the text generated after the prompt's "<think>\n" (eos excluded). A box is
// "\boxed" followed by "{" and the text up to the matching "}" (braces inside it must balance);
// every "\boxed" counts, even one inside another box or without its "{".
//
// formatted iff all of
//   - exactly one "</think>", and no "<think>" (the prompt opened the block);
//   - exactly one "\boxed" in the whole completion, after the "</think>", with its "{" and
//     matching "}";
//   - after that "}" only whitespace and the punctuation . , ; : ! ? ) ] " ' * _ ` $ (the end of
//     the box's sentence, e.g. "The answer is \boxed{42}."): the completion ends there.
//   Text before the box (after "</think>") is free.
// correct iff there is a "</think>", the text after the first one holds exactly one "\boxed",
// with its "{" and matching "}", and the box's content is right:
//   add_sub, mul  an integer equal to the result: surrounding whitespace, then an optional sign
//                 ('+', '-' or the Unicode minus U+2212), then digits only: no thousands
//                 separators, no decimal point. Leading zeros are allowed ("007" is 7) and "-0"
//                 is 0: the value is what counts.
//   countdown     an expression whose value, in exact rational arithmetic, is the target, that
//                 uses each of the three numbers exactly once (as a multiset) and no other number:
//                   answer := expr [ "=" integer ]     (the integer must be the target)
//                   expr   := term { ("+" | "-") term }
//                   term   := factor { ("*" | "/") factor }
//                   factor := integer | "(" expr ")"
//                 Also read as operators: "×" "·" "\times" "\cdot" for *, "÷" "\div" for /, "−"
//                 (U+2212) for -. Whitespace anywhere between tokens. Not accepted: signs before a
//                 number (-3 + ...), "x" for times, brackets, powers, decimals, implicit
//                 multiplication. Nesting deeper than 100 parentheses is rejected. Numerators and
//                 denominators are 64-bit; an overflow (or a number of more than 18 digits) makes
//                 the answer wrong, as does a division by zero.
// why (Score::why): the reason it is not correct, then, when different, the reason it is not
// formatted, joined by "; " ("" when both hold). Reasons, in the order they are checked:
//   format   "no </think>", "two </think>", "<think> in the completion", "no box after </think>",
//            "a box before </think>", "two boxes" (or "3 boxes", ...), "\boxed without {",
//            "unbalanced braces in the box", "text after the box: '...'"
//   correct  "no </think>", "no box after </think>", "two boxes", "\boxed without {",
//            "unbalanced braces in the box", then the content's:
//     integer    "empty box", "'5,106' is not an integer", "value 5105, not 5106"
//     countdown  "not an expression: ...", "states = 25, not 24", "uses 4 which is not given",
//                "uses 7 twice", "does not use 3", "division by zero", "overflow",
//                "value 26, not 24" (a fraction as "7/2")
// Quoted text is cut to 40 bytes (at a UTF-8 character boundary) with "..." after it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "reason/task.h"

namespace whale::reason {

// Task::score of every family: the rules above, reward = w.correct * correct + w.format *
// formatted. A problem of no known family (or with the wrong count of numbers) is never correct.
Score score_completion(const Problem& p, std::string_view completion, const RewardWeights& w);

// An exact fraction num/den, den > 0, in lowest terms. Operations return nullopt on an int64
// overflow (or a division by zero).
struct Rational {
  int64_t num = 0, den = 1;
  static std::optional<Rational> make(int64_t num, int64_t den);
  std::string str() const;  // "7" or "7/2", "-7/2"
  bool operator==(const Rational&) const = default;
};
std::optional<Rational> add(Rational a, Rational b);
std::optional<Rational> sub(Rational a, Rational b);
std::optional<Rational> mul(Rational a, Rational b);
std::optional<Rational> div(Rational a, Rational b);

// A countdown answer read with the grammar above.
struct Expression {
  std::string error;              // "" or the syntax problem ("unexpected 'x'", ...)
  std::vector<int64_t> numbers;   // the integers in the expression, left to right (-1: > 18 digits)
  std::optional<int64_t> equals;  // the integer after "=", when there is one (-1: > 18 digits)
  std::optional<Rational> value;  // nullopt on an error, a division by zero or an overflow
  std::string eval_error;         // "division by zero" or "overflow" ("" otherwise)
};
Expression parse_expression(std::string_view text);

// How a completion is laid out (the rules above).
struct Completion {
  size_t think_ends = 0, think_opens = 0;
  size_t first_think_end = std::string_view::npos;  // offset of the first "</think>"
  struct Box {
    size_t begin = 0;  // offset of "\boxed"
    size_t end = 0;    // offset after its "}" (closed) or of the end of the text
    bool has_brace = false;
    bool closed = false;  // its "{" found its matching "}"
    std::string_view content;
  };
  std::vector<Box> boxes;
};
Completion read_completion(std::string_view completion);

// The content's verdicts: "" when right, else the reason (the lists above).
std::string check_integer(std::string_view boxed, int64_t expected);
std::string check_countdown(std::string_view boxed, const std::vector<int64_t>& given,
                            int64_t target);

// `text` quoted for a reason: at most 40 bytes, cut at a character boundary, "..." when cut.
std::string quote(std::string_view text);

}  // namespace whale::reason
