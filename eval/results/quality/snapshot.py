"""Copy the finished teaching problems of an M1 run (possibly still running) into a new run directory.

A problem is finished when its greedy answer, all of its TR-TA pairs and every pair's whole exam are
recorded. `lbt m1` queues exams problem by problem, so while a run is going the finished problems are a
prefix of its problems; a report on the copy is a report on those problems only (say so). The source is
only read (`RunStore` reader); the destination must not exist yet.

Usage: python eval/results/quality/snapshot.py runs/quality /tmp/quality_snapshot
       lbt report /tmp/quality_snapshot --a6-pairs 4
"""

from __future__ import annotations

import sys
from pathlib import Path

from lbt_dspy.components import build_components
from lbt_dspy.config import M1Config
from lbt_dspy.m1.results import pair_index, tp_key
from lbt_dspy.store import RunStore


def snapshot(src: str, dst: str) -> tuple[int, int]:
    """Copy the finished problems of run `src` into new run `dst`; returns (finished, all) problems."""
    if Path(dst).exists():
        raise SystemExit(f"{dst}: exists; give a new directory")
    store = RunStore(src)
    raw = store.read_config()
    cfg = M1Config.from_dict(raw, f"{src}/config.yaml")
    parts = build_components(cfg)
    greedy, teach, exam = store.load("greedy"), store.load("teach"), store.load("exam")
    students = len(cfg.student_model_cfgs)
    num_pairs = getattr(cfg, "num_pairs", None) or cfg.num_rationales  # the key was renamed
    keys = [tp_key(tp, n) for n, tp in enumerate(parts.data.teaching)]
    slots = {k: len(parts.exam_maker.make_exam_questions([tp])) for k, tp in zip(keys, parts.data.teaching)}
    per_pair: dict[str, int] = {}
    for rec in exam.values():
        key = f"{rec['tp']}/{pair_index(rec)}"
        per_pair[key] = per_pair.get(key, 0) + 1
    done = [k for k in keys if k in greedy and all(f"{k}/{i}" in teach and per_pair.get(f"{k}/{i}", 0) == slots[k] * students
                                                   for i in range(num_pairs))]
    out = RunStore(dst, raw)
    keep = set(done)
    for stage, recs in (("greedy", greedy), ("teach", teach), ("exam", exam)):
        for rec in recs.values():
            if rec["tp"] in keep:
                out.append(stage, rec)
    out.close()
    return len(done), len(keys)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    n, total = snapshot(sys.argv[1], sys.argv[2])
    print(f"{n} of {total} problems finished; copied to {sys.argv[2]}")
