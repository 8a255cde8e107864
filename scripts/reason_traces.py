#!/usr/bin/env python3
"""Independent Python implementation of whale's reasoning tasks (src/reason/tasks.cpp): the
teacher's worked solutions (the synthetic reasoning traces) and the reachable countdown targets.

Used to write the fixture the C++ teacher must reproduce byte for byte
(tests/fixtures/reason/traces.json) and by the recipe experiments. Formats, for a tiny model that
reads digit by digit (the bundled tokenizer splits numbers into single digits):

add  (a + b): the column scratchpad. Each line consumes the LAST digit of the operands left on
     the previous line, so the digits to add are always at a fixed place:
        4721+385
        1+5+0=6, 472+38, c0, r6
        2+8+0=10, 47+3, c1, r06
        7+3+1=11, 4+, c1, r106
        4+0+1=5, +, c0, r5106
        4721+385=5106
sub  (a - b): the same with borrows ("-4, +10=6" when a column goes negative). A borrow left at
     the end means a < b: the trace says so and subtracts the other way round.
mul  (a * b): the longer operand times each digit of the other (the same column scratchpad with
     carries), shifted ("47*30=1410"), then the partial products added as above.
countdown (x, y, z -> t): every expression of three numbers combines a pair with the third one,
     so for each number c (in the prompt's order) the trace lists the values the pair would need
     (t-c, t+c, c-t, t*c, t/c, c/t, the valid ones) and the values the pair makes (a+b, a-b,
     a*b, a/b, larger first for - and /), and stops at the first pair value that is needed.
"""
import fractions
import itertools
import json
import sys

CONTENT = "The answer is \\boxed{%s}."


def add_lines(a, b):
    """Column addition of non-negative a + b; returns (lines, result)."""
    A, B = str(a), str(b)
    lines = [f"{A}+{B}"]
    c, r = 0, ""
    while A or B or c:
        x = int(A[-1]) if A else 0
        y = int(B[-1]) if B else 0
        A, B = A[:-1], B[:-1]
        s = x + y + c
        c = s // 10
        r = str(s % 10) + r
        lines.append(f"{x}+{y}+{s - x - y}={s}, {A}+{B}, c{c}, r{r}")
    res = int(r) if r else 0
    lines.append(f"{a}+{b}={res}")
    return lines, res


def sub_lines(a, b):
    """Column subtraction a - b of non-negative numbers; returns (lines, result)."""
    A, B = str(a), str(b)
    lines = [f"{A}-{B}"]
    bw, r = 0, ""
    while A or B:
        x = int(A[-1]) if A else 0
        y = int(B[-1]) if B else 0
        A, B = A[:-1], B[:-1]
        d = x - y - bw
        head = f"{x}-{y}-{bw}={d}"
        if d < 0:
            d += 10
            bw = 1
            head += f", +10={d}"
        else:
            bw = 0
        r = str(d) + r
        lines.append(f"{head}, {A}-{B}, b{bw}, r{r}")
    if bw:
        lines.append(f"b1 left, so {a}-{b}=-({b}-{a})")
        more, res = sub_lines(b, a)
        lines += more
        lines.append(f"{a}-{b}={-res}")
        return lines, -res
    res = int(r)
    lines.append(f"{a}-{b}={res}")
    return lines, res


def mul_digit_lines(top, d):
    """top * d for a single digit d; returns (lines, result)."""
    T = str(top)
    lines = [f"{top}*{d}:"]
    c, r = 0, ""
    while T or c:
        x = int(T[-1]) if T else 0
        T = T[:-1]
        p = x * d + c
        lines.append(f"{x}*{d}+{c}={p}, {T}, c{p // 10}, r{p % 10}{r}")
        c = p // 10
        r = str(p % 10) + r
    res = int(r)
    lines.append(f"{top}*{d}={res}")
    return lines, res


def mul_lines(a, b):
    top, bot = (a, b) if len(str(a)) >= len(str(b)) else (b, a)
    lines = [f"{a}*{b}"]
    partials = []
    for k, ch in enumerate(reversed(str(bot))):
        more, p = mul_digit_lines(top, int(ch))
        lines += more
        if k:
            p *= 10 ** k
            lines.append(f"{top}*{ch}{'0' * k}={p}")
        partials.append(p)
    total = partials[0]
    for p in partials[1:]:
        more, total = add_lines(total, p)
        lines += more
    lines.append(f"{a}*{b}={a * b}")
    return lines, a * b


def add_sub_trace(a, op, b):
    lines, res = add_lines(a, b) if op == "+" else sub_lines(a, b)
    return "\n".join(lines), CONTENT % res


def mul_trace(a, b):
    lines, res = mul_lines(a, b)
    return "\n".join(lines), CONTENT % res


def _needs(t, c):
    """(value, relation) pairs a pair value r must equal for r (op) c or c (op) r to give t."""
    out = []
    if t - c >= 0:
        out.append((t - c, f"{t}-{c}", "r+c"))
    out.append((t + c, f"{t}+{c}", "r-c"))
    if c - t > 0:
        out.append((c - t, f"{c}-{t}", "c-r"))
    out.append((t * c, f"{t}*{c}", "r/c"))
    if t % c == 0:
        out.append((t // c, f"{t}/{c}", "r*c"))
    if c % t == 0:
        out.append((c // t, f"{c}/{t}", "c/r"))
    return out


def _pair_values(a, b):
    big, small = (a, b) if a >= b else (b, a)
    out = [(a + b, f"{a}+{b}", f"{a} + {b}"), (big - small, f"{big}-{small}", f"{big} - {small}"),
           (a * b, f"{a}*{b}", f"{a} * {b}")]
    if big % small == 0:
        out.append((big // small, f"{big}/{small}", f"{big} / {small}"))
    return out


def countdown_trace(x, y, z, t):
    """Returns (reasoning, content); content is None when no integer-intermediate solution."""
    nums = [x, y, z]
    lines = [f"{x} {y} {z} -> {t}"]
    for i, c in enumerate(nums):
        a, b = [n for j, n in enumerate(nums) if j != i]
        needs = _needs(t, c)
        pairs = _pair_values(a, b)
        need_txt = " ".join(f"{e}={v}" for v, e, _ in needs)
        pair_txt = " ".join(f"{e}={v}" for v, e, _ in pairs)
        found = None
        for v, e, expr in pairs:
            for nv, _, rel in needs:
                if nv == v and not (rel == "c/r" and v == 0):
                    found = (v, e, expr, rel)
                    break
            if found:
                break
        if not found:
            lines.append(f"{c}: {need_txt} | {pair_txt} | no")
            continue
        v, e, expr, rel = found
        if rel == "r+c":
            check, final = f"{v}+{c}={t}", f"({expr}) + {c}"
        elif rel == "r-c":
            check, final = f"{v}-{c}={t}", f"({expr}) - {c}"
        elif rel == "c-r":
            check, final = f"{c}-{v}={t}", f"{c} - ({expr})"
        elif rel == "r/c":
            check, final = f"{v}/{c}={t}", f"({expr}) / {c}"
        elif rel == "r*c":
            check, final = f"{v}*{c}={t}", f"({expr}) * {c}"
        else:
            check, final = f"{c}/{v}={t}", f"{c} / ({expr})"
        lines.append(f"{c}: {need_txt} | {pair_txt} | found {e}={v}, {check}")
        return "\n".join(lines), CONTENT % final
    return "\n".join(lines), None


def reachable_targets(x, y, z):
    """Targets 1..100 reachable from x, y, z (each once, + - * /, rationals allowed)."""
    F = fractions.Fraction
    def combine(p, q):
        out = [p + q, p - q, q - p, p * q]
        if q != 0:
            out.append(p / q)
        if p != 0:
            out.append(q / p)
        return out
    vals = set()
    nums = [F(x), F(y), F(z)]
    for i in range(3):
        a, b = [n for j, n in enumerate(nums) if j != i]
        for r in combine(a, b):
            for v in combine(r, nums[i]):
                if v.denominator == 1 and 1 <= v <= 100:
                    vals.add(int(v))
    return sorted(vals)


if __name__ == "__main__":
    # Small self-check and examples.
    for case in [(4721, "+", 385), (385, "-", 4721), (1000, "-", 999), (9999, "+", 1), (0, "-", 0)]:
        r, c = add_sub_trace(*case)
        print(r, "\n", c, "\n", sep="")
    for case in [(47, 38), (6, 472), (90, 10)]:
        r, c = mul_trace(*case)
        print(r, "\n", c, "\n", sep="")
    print(*countdown_trace(7, 5, 3, 32), sep="\n")
    print(*countdown_trace(7, 5, 3, 24), sep="\n")


# ---------------------------------------------------------------- problem sampling (experiments)

def _number(rng, digits):
    return rng.randint(0, 9) if digits == 1 else rng.randint(10 ** (digits - 1), 10 ** digits - 1)


def sample_problem(rng, family):
    """A random problem of a family as (prompt, reasoning, content)."""
    if family == "add_sub":
        a, b = _number(rng, rng.randint(1, 4)), _number(rng, rng.randint(1, 4))
        op = rng.choice("+-")
        return (f"What is {a} {op} {b}?",) + add_sub_trace(a, op, b)
    if family == "mul":
        if rng.random() < 0.5:
            a, b = _number(rng, 2), _number(rng, 2)
        else:
            a, b = _number(rng, 3), _number(rng, 1)
            if rng.random() < 0.5:
                a, b = b, a
        return (f"What is {a} * {b}?",) + mul_trace(a, b)
    while True:
        x, y, z = (rng.randint(1, 25) for _ in range(3))
        ts = reachable_targets(x, y, z)
        if ts:
            break
    t = rng.choice(ts)
    r, c = countdown_trace(x, y, z, t)
    return (f"Using the numbers {x}, {y}, {z}, make {t}.", r, c)
