"""Model output is hostile input: the answer parser and math equivalence survive fuzzing, in bounded time."""

import random
import time

from lbt_dspy.scoring.math import answers_equivalent, extract_math_answer

PIECES = ["\\frac{", "}", "{", "\\boxed{", "\\sqrt", "^", "_", "$", "[[Final Answer]]:", "\\left(", "\\right)",
          "9" * 50, "\\text{", "\\\\", "\n", "x", "=", ",", "(", ")", "[", "]", "\\infty", "\\pi", "!", "\\cdot",
          "e", "10^{10^{10}}", "'''", "\\begin{pmatrix}", "\\end{pmatrix}", "&", "0.", "-", "+", "\\%", "\\circ"]


def fuzz_strings(n, seed=0):
    rng = random.Random(seed)
    for _ in range(n):
        yield "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 40)))
    yield "\\boxed{" * 5000 + "1" + "}" * 5000  # deeply nested braces
    yield "{" * 100000  # unbalanced
    yield "9" * 100000  # a huge number
    yield "\\frac{1}{0}"
    yield "2^{2^{2^{2^{2^{2^{2}}}}}}"


def test_parser_and_equivalence_survive_fuzzing_within_a_time_bound():
    worst = 0.0
    for text in fuzz_strings(300):
        t0 = time.monotonic()
        ans = extract_math_answer(text)
        assert isinstance(ans, str)
        assert answers_equivalent("42", ans) in (True, False)
        assert answers_equivalent(ans, "\\frac{1}{2}") in (True, False)
        worst = max(worst, time.monotonic() - t0)
    # math-verify's own timeouts (5 s per parse/verify) bound every call; none may run away
    assert worst < 25, worst
