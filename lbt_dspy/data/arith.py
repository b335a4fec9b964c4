"""A seeded generator of one-step arithmetic word problems in families of functional variants.

Each family is a teaching problem (TP) and `num_variants` exam problems (EPs): the same story with
other numbers. This is the demo task: the embedded 135M model solves roughly a fifth to a third of
them, so LbT selection has something to select.
"""

from __future__ import annotations

import random

NAMES = ["Ava", "Ben", "Cleo", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jade", "Kai", "Lena", "Milo", "Nora",
         "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Vic", "Wes", "Yara", "Zoe"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells", "cards", "balloons"]
TEMPLATES = {
    "add": ("{name} has {a} {item}. {name} buys {b} more {item}. How many {item} does {name} have now?",
            lambda a, b: a + b, (2, 30), (2, 30)),
    "sub": ("{name} has {a} {item}. {name} gives away {b} {item}. How many {item} does {name} have left?",
            lambda a, b: a - b, (12, 40), (2, 11)),
    "mul": ("{name} has {a} boxes with {b} {item} in each box. How many {item} does {name} have in total?",
            lambda a, b: a * b, (2, 9), (2, 9)),
}


def make_families(num_families: int = 24, num_variants: int = 3, seed: int = 0,
                  ops: tuple = ("add", "sub", "mul")) -> tuple[list[dict], list[dict]]:
    """Teaching problems and their exam bank.

    Args:
        num_families: Number of TPs.
        num_variants: EPs per TP (same story, other numbers).
        seed: Random seed; the same seed gives the same problems.
        ops: Operations to draw from, in rotation.

    Returns:
        ``(teaching, exam_bank)``: rows with ``unique_id``, ``question``, ``answer``, ``subject``.

    Example:
        >>> tps, eps = make_families(2, 3, seed=0)
        >>> len(tps), len(eps), eps[0]["unique_id"] == tps[0]["unique_id"]
        (2, 6, True)
    """
    rng = random.Random(seed)
    teaching, bank = [], []
    for f in range(num_families):
        op = ops[f % len(ops)]
        template, fn, ra, rb = TEMPLATES[op]
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        seen = set()
        rows = []
        while len(rows) < num_variants + 1:
            a, b = rng.randint(*ra), rng.randint(*rb)
            if (a, b) in seen:
                continue
            seen.add((a, b))
            rows.append({"unique_id": f"arith/{f:03d}", "question": template.format(name=name, item=item, a=a, b=b),
                         "answer": str(fn(a, b)), "subject": op})
        teaching.append(rows[0])
        bank.extend(rows[1:])
    return teaching, bank
