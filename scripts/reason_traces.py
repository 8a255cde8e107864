#!/usr/bin/env python3
"""Independent Python implementation of whale's reasoning tasks (src/reason/tasks.cpp): the
teacher's worked solutions (the synthetic reasoning traces) and the reachable countdown targets.

Used to write the fixture the C++ teacher must reproduce byte for byte
(`python3 scripts/reason_traces.py fixture [PATH]` writes tests/fixtures/reason/traces.json: traces
of edge cases and random problems per family, the reachable targets of 30 triples, and verdicts on
countdown answers computed independently with ast + fractions.Fraction) and by the recipe
experiments; without arguments it prints a few examples. Formats, for a tiny model that
reads digit by digit (the bundled tokenizer splits numbers into single digits):

add  (a + b): the column scratchpad. Each line consumes the LAST digit of the operands left on
     the previous line, so the digits to add are always at a fixed place:
        4721+385
        1+5+0=6, 472+38, c0, r6
        2+8+0=10, 47+3, c1, r06
        7+3+1=11, 4+, c1, r106
        4+0+1=5, +, c0, r5106
        4721+385=5106
sub  (a - b): the same with borrows ("-4, +10=6" when a column goes negative). When a < b the
     trace says so first ("16<258, so 16-258=-(258-16)") and subtracts the other way round, so
     every number it copies is on the line above.
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
    if a < b:
        lines.append(f"{a}<{b}, so {a}-{b}=-({b}-{a})")
        more, res = sub_lines(b, a)
        lines += more
        lines.append(f"{a}-{b}={-res}")
        return lines, -res
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


# ---------------------------------------------------------------- the C++ test fixture

def _countdown_value(expr, t):
    """Independent verdict on a countdown answer: (numbers used, value) of `expr` (+ - * / and
    parentheses over integers, optionally "= t" at the end), or raises ValueError("syntax" |
    "target"). ZeroDivisionError comes from the evaluation, after the numbers are known."""
    import ast
    for alias, op in (("×", "*"), ("·", "*"), ("\\times", "*"), ("\\cdot", "*"), ("÷", "/"),
                      ("\\div", "/"), ("−", "-")):
        expr = expr.replace(alias, f" {op} ")
    text = " ".join(expr.split())
    if "=" in text:
        text, rhs = text.split("=", 1)
        if not rhs.strip().isdigit():
            raise ValueError("syntax")
        if int(rhs) != t:
            raise ValueError("target")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError("syntax")
    ops = {ast.Add: lambda p, q: p + q, ast.Sub: lambda p, q: p - q,
           ast.Mult: lambda p, q: p * q, ast.Div: lambda p, q: p / q}
    used = []

    def walk(node):  # checks the shape and lists the numbers, left to right
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
        elif isinstance(node, ast.BinOp) and type(node.op) in ops:
            walk(node.left)
            walk(node.right)
        else:
            raise ValueError("syntax")

    def value(node):
        if isinstance(node, ast.Constant):
            return fractions.Fraction(node.value)
        return ops[type(node.op)](value(node.left), value(node.right))

    walk(tree)
    return used, lambda: value(tree)


def countdown_verdict(x, y, z, t, expr):
    """{"correct", "value" ("p/q" or "n", None on an error), "error"} for an answer `expr`."""
    out = {"numbers": [x, y, z], "target": t, "expr": expr, "correct": False, "value": None,
           "error": None}
    try:
        used, value = _countdown_value(expr, t)
        if sorted(used) != sorted([x, y, z]):
            raise ValueError("numbers")
        v = value()
    except ValueError as e:
        out["error"] = str(e)
        return out
    except ZeroDivisionError:
        out["error"] = "division by zero"
        return out
    out["value"] = str(v)
    out["correct"] = v == t
    return out


def _fixture_add_sub(rng):
    edge = [(0, "-", 0), (0, "+", 0), (9999, "+", 9999), (1000, "-", 999), (999, "-", 1000),
            (9999, "-", 9999), (0, "-", 9999), (9999, "-", 0), (9999, "+", 1), (1, "+", 9999),
            (1, "-", 9999), (4721, "+", 385), (385, "-", 4721), (5, "-", 7), (7, "-", 5),
            (10, "-", 1), (1, "-", 10), (100, "-", 100), (9, "+", 9), (0, "+", 7), (7, "-", 0),
            (0, "-", 7), (5000, "-", 4999), (4999, "-", 5000), (1, "-", 1000), (10, "+", 990),
            (909, "-", 99), (99, "-", 909), (5555, "+", 4445), (1234, "-", 1243)]
    out = list(edge)
    while len(out) < 150:
        a, b = _number(rng, rng.randint(1, 4)), _number(rng, rng.randint(1, 4))
        out.append((a, rng.choice("+-"), b))
    return [dict(zip(("a", "op", "b", "reasoning", "content"), (a, op, b) + add_sub_trace(a, op, b)))
            for a, op, b in out]


def _fixture_mul(rng):
    edge = [(99, 99), (999, 9), (9, 999), (10, 10), (0, 100), (100, 0), (472, 0), (0, 472),
            (90, 10), (10, 90), (50, 20), (47, 38), (6, 472), (472, 6), (100, 1), (1, 100),
            (999, 1), (105, 3), (205, 4), (10, 99), (99, 10), (11, 11), (25, 40), (101, 9),
            (909, 9), (500, 2), (9, 100), (12, 34), (80, 80), (999, 0)]
    out = list(edge)
    while len(out) < 150:
        if rng.random() < 0.5:
            a, b = _number(rng, 2), _number(rng, 2)
        else:
            a, b = _number(rng, 3), _number(rng, 1)
            if rng.random() < 0.5:
                a, b = b, a
        out.append((a, b))
    return [dict(zip(("a", "b", "reasoning", "content"), (a, b) + mul_trace(a, b))) for a, b in out]


def _fixture_countdown(rng):
    """Edge cases (equal numbers, 1s, the first triple of every answer shape: each relation
    r+c r-c c-r r*c r/c c/r with each pair operation), then random problems."""
    import re
    out = [(7, 5, 3, 32), (1, 1, 1, 1), (1, 1, 1, 3), (25, 25, 25, 2), (25, 25, 25, 24),
           (25, 25, 25, 75), (5, 5, 5, 5), (5, 5, 5, 30), (2, 2, 2, 8), (1, 1, 25, 25),
           (1, 25, 1, 24), (25, 1, 1, 26), (13, 13, 1, 1), (4, 4, 8, 1), (24, 25, 1, 49)]
    shapes = set()
    for x, y, z in itertools.product(range(1, 26), repeat=3):
        for t in reachable_targets(x, y, z):
            c = countdown_trace(x, y, z, t)[1]
            shape = re.sub(r"\d+", "n", c)
            if shape not in shapes:
                shapes.add(shape)
                out.append((x, y, z, t))
    while len(out) < 150:
        x, y, z = (rng.randint(1, 25) for _ in range(3))
        ts = reachable_targets(x, y, z)
        if ts:
            out.append((x, y, z, rng.choice(ts)))
    cases = [{"numbers": [x, y, z], "target": t, "reasoning": r, "content": c}
             for x, y, z, t in out for r, c in [countdown_trace(x, y, z, t)]]
    assert all(c["content"] for c in cases), "a fixture target the teacher does not reach"
    return cases


def _fixture_reachable(rng):
    triples = [(1, 1, 1), (25, 25, 25), (7, 5, 3), (1, 2, 3), (2, 2, 2), (24, 25, 1), (1, 1, 25),
               (13, 17, 19), (5, 5, 1), (10, 10, 10)]
    while len(triples) < 30:
        triples.append(tuple(rng.randint(1, 25) for _ in range(3)))
    return [{"numbers": list(n), "targets": reachable_targets(*n)} for n in triples]


def _fixture_expressions():
    cases = [
        (7, 5, 3, 32, "(7 * 5) - 3"), (7, 5, 3, 32, "7*5-3"), (7, 5, 3, 32, "3 - 5 * 7"),
        (7, 5, 3, 32, "5 * 7 - 3 = 32"), (7, 5, 3, 32, "7 * 5 - 3 = 31"),
        (7, 5, 3, 32, "7 × 5 − 3"), (7, 5, 3, 32, "(7 + 5) * 3"), (7, 5, 3, 36, "(7 + 5) * 3"),
        (7, 5, 3, 36, "3 * (7 + 5)"), (7, 5, 3, 32, "7 * 5 - 3 - 0"), (7, 5, 3, 32, "7 * 5"),
        (7, 5, 3, 32, "7 * 7 - 3"), (7, 5, 3, 32, "7 * 5 - 4"), (7, 5, 3, 32, "7 * 5 3"),
        (7, 5, 3, 32, ""), (7, 5, 3, 32, "((7 * 5) - 3"), (7, 5, 3, 32, "(7 * 5)) - 3"),
        (7, 5, 3, 32, "7 * (5 - 3"), (7, 5, 3, 32, "-3 + 7 * 5"), (7, 5, 3, 32, "7 ** 5 - 3"),
        (7, 5, 3, 1, "7 - 5 - 3"), (7, 5, 3, 5, "7 - (5 - 3)"), (7, 5, 3, 21, "7 / 5 * 3"),
        (7, 5, 3, 21, "7 / (5 * 3)"), (7, 5, 3, 2, "(7 + 5) / 3 / 2"), (5, 5, 3, 1, "3 / (5 - 5)"),
        (5, 5, 3, 1, "(5 - 5) / 3"), (5, 5, 3, 15, "5 * 3 / (5 / 5)"), (4, 3, 2, 6, "4 / (2 / 3)"),
        (4, 3, 2, 6, "4 ÷ 2 × 3"), (4, 3, 2, 6, "4 \\div 2 \\cdot 3"), (7, 5, 3, 32, "7 \\times 5 - 3"),
        (7, 5, 3, 32, "7·5−3 =32"), (7, 5, 3, 32, "7 x 5 - 3"), (7, 5, 3, 32, "[7 * 5] - 3"),
        (7, 5, 3, 32, "7 * 5 - 3 = 32 = 32"), (7, 5, 3, 32, "7 * 5 - 3 ="),
        (7, 5, 3, 32, "7 * 5 - 3 = 032"), (5, 1, 5, 25, "5 / (1 / 5)"), (7, 5, 3, 1, "(7 - 5) / 3"),
        (3, 3, 8, 24, "8 / (3 - 8 / 3)"), (1, 5, 5, 24, "(5 - 1 / 5) * 5"),
        (1, 5, 5, 24, "5 * (5 - 1 / 5)"), (2, 5, 5, 24, "(5 - 1 / 5) * 5"),
        (25, 25, 25, 1, "25 / 25 * 25 / 25"), (25, 25, 25, 1, "(25 + 25) / 25"),
        (25, 25, 25, 2, "(25 + 25) / 25"), (25, 25, 25, 2, "( ( 25 + 25 ) / ( 25 ) )"),
        (1, 1, 1, 3, "1+1+1"), (1, 1, 1, 3, "1+1+1=3"), (1, 1, 1, 1, "1 * 1 * 1 = 1"),
        (9, 9, 9, 1, "9 / 9 / 9"), (12, 6, 2, 4, "12 / 6 * 2"), (12, 6, 2, 1, "12 / (6 * 2)"),
        (12, 6, 2, 12, "12 / 6 * 2 * 3"), (12, 6, 2, 12, "12 - 6 + 6"),
    ]
    return [countdown_verdict(*c) for c in cases]


def write_fixture(path):
    rng = __import__("random").Random(20250)
    data = {"add_sub": _fixture_add_sub(rng), "mul": _fixture_mul(rng),
            "countdown": _fixture_countdown(rng), "reachable": _fixture_reachable(rng),
            "expressions": _fixture_expressions()}
    with open(path, "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {path}: " + ", ".join(f"{len(v)} {k}" for k, v in data.items()))


if __name__ == "__main__":
    if sys.argv[1:2] == ["fixture"]:
        import os
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        write_fixture(sys.argv[2] if len(sys.argv) > 2 else
                      os.path.join(root, "tests/fixtures/reason/traces.json"))
        sys.exit(0)
    # Small self-check and examples.
    for case in [(4721, "+", 385), (385, "-", 4721), (1000, "-", 999), (9999, "+", 1), (0, "-", 0)]:
        r, c = add_sub_trace(*case)
        print(r, "\n", c, "\n", sep="")
    for case in [(47, 38), (6, 472), (90, 10)]:
        r, c = mul_trace(*case)
        print(r, "\n", c, "\n", sep="")
    print(*countdown_trace(7, 5, 3, 32), sep="\n")
    print(*countdown_trace(7, 5, 3, 24), sep="\n")
