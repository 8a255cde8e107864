// The teacher: worked solutions (the synthetic reasoning traces), byte for byte those of
// scripts/reason_traces.py (its docstring describes the formats; tests/fixtures/reason/traces.json,
// written by its `fixture` mode, checks the match).
//
//   add_sub  the column scratchpad, one line per digit ("1+5+0=6, 472+38, c0, r6"); a borrow left
//            at the end of a subtraction means a < b, and the trace subtracts the other way round.
//   mul      the longer operand (the first when equally long) times each digit of the other, the
//            partial products shifted and added with the same scratchpad.
//   countdown for each number c in the prompt's order: the values the other pair would need, the
//            values it makes, and the first match ("found 7*5=35, 35-3=32").
// The content is always "The answer is \boxed{ANSWER}.".
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "reason/task.h"

namespace whale::reason {

// Operands are non-negative; op is '+' or '-'.
Trace add_sub_trace(int64_t a, char op, int64_t b);
Trace mul_trace(int64_t a, int64_t b);
// nullopt when no expression with integer intermediates reaches t (for x, y, z in 1..25 and a
// reachable t in 1..100 the teacher always finds one: a test checks every case).
std::optional<Trace> countdown_trace(int64_t x, int64_t y, int64_t z, int64_t t);

// "The answer is \boxed{ANSWER}." and back ("" when `content` is not of that form).
std::string answer_content(const std::string& answer);
std::string content_answer(const std::string& content);

}  // namespace whale::reason
