"""M2 preference pairs: TR-TA samples of M1 runs, scored, paired into a DPO dataset.

Each TR-TA sample of a teaching problem (TP) gets ``score = correctness_weight x correctness +
lbt_weight x LbT score`` (the paper: 0.5 / 0.5; the "Correctness-DPO" baseline: correctness alone).
Two samples of the same TP make a pair when their scores differ by MORE than `threshold` (a difference
<= threshold, ties included, makes no pair); the higher-scored one is ``chosen``. At most
`max_pairs_per_problem` pairs are kept per TP.

Which pairs when more qualify (the paper leaves it open), ``selection: gap`` (default, deterministic):
largest score gap first; among equal gaps, the pair whose two samples were used least by the pairs
already kept (so the cap spreads over samples instead of pairing one best sample with everything),
then the lowest (chosen, rejected) sample indices. ``selection: random``: a seeded random subset.

Records are TRL's conversational preference format: ``prompt`` is the teacher's own chat prompt (the
run's ``exam_prompter_cfg`` with no demos, as `lbt m1` sent it) without the assistant prefill;
``chosen`` / ``rejected`` are one assistant message each that starts with that prefill, then the
rationale and answer rendered as the run's ``demo_template`` renders them (the answer block is what a
student was taught with). The tuned model's chat template renders them at training time, so one pair
file serves any model.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from ..adapter import ROLE_SWITCH
from ..config import dataclass_from_dict
from ..config import help_field as _help
from ..errors import LbtError
from ..signatures import SolveProblem

SELECTIONS = ("gap", "random")
_EPS = 1e-9  # float slack: 0.5 * (2/3) - 0.5 * (1/3) must not beat a threshold of 1/6 by rounding




@dataclass
class PairConfig:
    """How M1 samples become preference pairs (fields carry their help text, TRL style).

    Example:
        >>> PairConfig().weights()
        (0.5, 0.5)
        >>> PairConfig(correctness_only=True).weights()
        (1.0, 0.0)
    """

    correctness_weight: float = _help("Weight of the sample's correctness (0/1) in its score (the paper: 0.5).", 0.5)
    lbt_weight: float = _help("Weight of the sample's LbT score (students' exam accuracy) in its score (the paper: "
                              "0.5).", 0.5)
    correctness_only: bool = _help("The Correctness-DPO baseline: score = correctness alone (weights 1 and 0).",
                                   False)
    threshold: float = _help("Two samples pair only when their scores differ by more than this (the paper: 0.3); "
                             "a difference <= threshold, ties included, makes no pair.", 0.3)
    max_pairs_per_problem: int = _help("Pairs kept per teaching problem at most (the paper: 8); 0: no cap.", 8)
    selection: str = _help("Which pairs under the cap: 'gap' (largest score gap first, then least-used samples, "
                           "then lowest indices; deterministic) or 'random' (seeded).", "gap")
    student: str = _help("Whose exam gives the LbT score: a student name from the run, or 'combined' (mean over "
                         "students).", "combined")
    skip_identical: bool = _help("Drop pairs whose chosen and rejected texts are identical.", True)
    seed: int = _help("Seed of 'random' selection.", 0)

    def __post_init__(self):
        if self.selection not in SELECTIONS:
            raise LbtError(f"key 'selection' must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        for key in ("threshold", "correctness_weight", "lbt_weight"):
            if not isinstance(getattr(self, key), (int, float)) or getattr(self, key) < 0:
                raise LbtError(f"key {key!r} must be a number >= 0, got {getattr(self, key)!r}")
        if not isinstance(self.max_pairs_per_problem, int) or self.max_pairs_per_problem < 0:
            raise LbtError(f"key 'max_pairs_per_problem' must be an integer >= 0 (0: no cap), got "
                           f"{self.max_pairs_per_problem!r}")
        if not self.student:
            raise LbtError("key 'student' is empty (a student name, or 'combined')")

    def weights(self) -> tuple[float, float]:
        """(correctness weight, LbT weight) in effect."""
        return (1.0, 0.0) if self.correctness_only else (float(self.correctness_weight), float(self.lbt_weight))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "pairs") -> "PairConfig":
        return dataclass_from_dict(cls, raw, source)


@dataclass
class ScoredPair:
    """One TR-TA pair of a problem, with its parts of the preference score: correctness, LbT score, and their
    weighted sum (`score_pairs`)."""

    index: int
    rationale: str
    answer: str
    correct: float
    lbt: float | None
    score: float | None = None


# --- pair choice (pure, testable on hand-made samples) -----------------------------------------------
def choose_pairs(samples: list[ScoredPair], config: PairConfig, rng_key: str = "") -> tuple[list[tuple], int]:
    """The (chosen, rejected) sample pairs of one problem, and how many qualified before the cap.

    `samples` must carry their `score`. Pairs whose score difference is <= `config.threshold` are never
    made; the rest are capped at `config.max_pairs_per_problem` as the module docstring describes.
    """
    qualifying = []
    ordered = sorted(samples, key=lambda s: s.index)
    for a_pos, a in enumerate(ordered):
        for b in ordered[a_pos + 1:]:
            gap = a.score - b.score
            if abs(gap) - config.threshold <= _EPS:
                continue  # within the threshold (ties included): no preference
            hi, lo = (a, b) if gap > 0 else (b, a)
            if config.skip_identical and _same_text(hi, lo):
                continue
            qualifying.append((hi, lo))
    cap = config.max_pairs_per_problem or len(qualifying)
    if len(qualifying) <= cap:
        return sorted(qualifying, key=_order), len(qualifying)
    if config.selection == "random":
        rng = random.Random(f"{config.seed}/{rng_key}")
        kept = rng.sample(sorted(qualifying, key=lambda p: (p[0].index, p[1].index)), cap)
        return sorted(kept, key=_order), len(qualifying)
    uses: dict[int, int] = defaultdict(int)
    left, kept = list(qualifying), []
    while left and len(kept) < cap:
        best = min(left, key=lambda p: (-_gap(p), uses[p[0].index] + uses[p[1].index], p[0].index, p[1].index))
        left.remove(best)
        kept.append(best)
        uses[best[0].index] += 1
        uses[best[1].index] += 1
    return kept, len(qualifying)


def _gap(pair: tuple) -> float:
    return round(pair[0].score - pair[1].score, 9)


def _order(pair: tuple) -> tuple:
    return (-_gap(pair), pair[0].index, pair[1].index)


def _same_text(a: ScoredPair, b: ScoredPair) -> bool:
    return a.rationale.strip() == b.rationale.strip() and a.answer.strip() == b.answer.strip()


def score_pairs(samples: list[ScoredPair], config: PairConfig) -> list[ScoredPair]:
    """Fill in each sample's score; samples without an LbT score are dropped when the LbT weight is > 0."""
    wc, wl = config.weights()
    out = []
    for s in samples:
        if wl > 0 and s.lbt is None:
            continue
        s.score = wc * s.correct + wl * (s.lbt or 0.0)
        out.append(s)
    return out


# --- the prompt format ---------------------------------------------------------------------------
def teacher_prompt(adapter, question: str) -> tuple[list[dict], str]:
    """The teacher's chat messages for `question` (as `lbt m1` sends them) and the assistant prefill."""
    messages = adapter.format(SolveProblem, [], {"question": question})
    if messages and messages[-1]["role"] == "assistant":
        return [dict(m) for m in messages[:-1]], messages[-1]["content"]
    return [dict(m) for m in messages], ""


def render_completion(adapter, question: str, rationale: str, answer: str, prefill: str) -> str:
    """The assistant turn of a sample: the prefill, then rationale and answer as the run's demo_template
    renders them (from where the prefill starts in it); without a match, the paper's answer block."""
    values = {"question": question, "rationale": rationale, "answer": answer}
    tpl = adapter.demo_template
    if adapter.use_multi_round_conv and ROLE_SWITCH in tpl:
        tail = tpl.partition(ROLE_SWITCH)[2]
        text = tail.format(**values)
        return text if text.startswith(prefill) else prefill + text
    if prefill and prefill in tpl:
        return tpl[tpl.index(prefill):].format(**values)
    marker = adapter.answer_marker or "[[Final Answer]]"
    return f"{prefill}{rationale}\n\n{marker}:\n{answer}\n"


# --- from run directories ------------------------------------------------------------------------
def load_run_samples(run_dir: str | Path, config: PairConfig) -> tuple[list[dict], object]:
    """Per TP of an M1 run: its question, reference answer and samples (correctness + LbT score)."""
    from ..components import build_components
    from ..lbt_score import lbt_scores
    from ..m1.results import COMBINED, load_run, tp_key

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise LbtError(f"{run_dir}: not an M1 run directory (no config.yaml)")
    cfg, problems = load_run(run_dir)
    parts = build_components(cfg)
    tps = {tp_key(tp, n): tp for n, tp in enumerate(parts.data.teaching)}
    out = []
    for key, prob in sorted(problems.items()):
        tp = tps.get(key)
        if tp is None:
            raise LbtError(f"{run_dir}/teach.jsonl: problem {key!r} is not in the run's dataset (config.yaml "
                           "dataset_type/dataset_cfg changed?)")
        samples = []
        for i, pair in sorted(prob["pairs"].items()):
            per, combined = lbt_scores(pair.exam)  # the aggregation the M1 module and results use
            lbt = combined if config.student == COMBINED else per.get(config.student)
            samples.append(ScoredPair(int(i), pair.rationale or "", pair.answer or "", float(pair.score), lbt))
        students = sorted({s for pair in prob["pairs"].values() for s in pair.exam})
        out.append({"tp": key, "question": tp["question"], "reference": str(tp.get("answer", "")),
                    "samples": samples, "students": students})
    if config.student != COMBINED:
        seen = {s for p in out for s in p["students"]}
        if seen and config.student not in seen:
            raise LbtError(f"{run_dir}: pairs student {config.student!r} is not in the run (students: "
                           f"{', '.join(sorted(seen))})")
    return out, parts.adapter


def build_pairs(run_dirs: list[str | Path], config: PairConfig | None = None) -> tuple[list[dict], dict]:
    """Preference records from M1 run directories, and a summary of the counts.

    Problems are grouped by (TP key, rendered prompt): the same problem in several runs with the same
    prompt format pools its samples (the cap applies to the pool); another prompt format is another
    problem.
    """
    config = config or PairConfig()
    if not run_dirs:
        raise LbtError("pairs: no run directories given")
    groups: dict[tuple, dict] = {}
    per_run = {}
    for run_dir in run_dirs:
        problems, adapter = load_run_samples(run_dir, config)
        per_run[str(run_dir)] = {"problems": len(problems), "samples": sum(len(p["samples"]) for p in problems)}
        for prob in problems:
            prompt, prefill = teacher_prompt(adapter, prob["question"])
            gkey = (prob["tp"], json.dumps(prompt, sort_keys=True))
            g = groups.setdefault(gkey, {"tp": prob["tp"], "question": prob["question"], "prompt": prompt,
                                         "samples": [], "runs": []})
            for s in prob["samples"]:  # unique indices across pooled runs
                text = render_completion(adapter, prob["question"], s.rationale, s.answer, prefill)
                g["samples"].append((ScoredPair(len(g["samples"]), s.rationale, s.answer, s.correct, s.lbt),
                                     text, str(run_dir), s.index))
            g["runs"].append(str(run_dir))
    records, per_problem = [], []
    wc, wl = config.weights()
    for (tp, _), g in sorted(groups.items(), key=lambda kv: kv[0]):
        meta = {s.index: (text, run, orig) for s, text, run, orig in g["samples"]}
        samples = score_pairs([s for s, *_ in g["samples"]], config)
        kept, qualifying = choose_pairs(samples, config, rng_key=tp)
        per_problem.append({"tp": tp, "samples": len(g["samples"]), "scored": len(samples),
                            "qualifying": qualifying, "kept": len(kept)})
        for hi, lo in kept:
            (ct, crun, ci), (rt, rrun, ri) = meta[hi.index], meta[lo.index]
            records.append({
                "prompt": g["prompt"],
                "chosen": [{"role": "assistant", "content": ct}],
                "rejected": [{"role": "assistant", "content": rt}],
                "score_chosen": hi.score, "score_rejected": lo.score,
                "tp": tp, "question": g["question"],
                "chosen_run": crun, "chosen_sample": ci, "rejected_run": rrun, "rejected_sample": ri,
                "chosen_correct": hi.correct, "rejected_correct": lo.correct,
                "chosen_lbt": hi.lbt, "rejected_lbt": lo.lbt,
            })
    summary = {
        "config": asdict(config), "weights": {"correctness": wc, "lbt": wl}, "runs": per_run,
        "problems": len(per_problem), "problems_with_pairs": sum(1 for p in per_problem if p["kept"]),
        "samples": sum(p["samples"] for p in per_problem),
        "samples_dropped_no_exam": sum(p["samples"] - p["scored"] for p in per_problem),
        "qualifying_pairs": sum(p["qualifying"] for p in per_problem), "pairs": len(records),
        "per_problem": per_problem,
    }
    return records, summary


# --- files ---------------------------------------------------------------------------------------
def check_pairs_output(out: Path) -> None:
    """Refuse an output path that is a file or already holds pairs: results are never overwritten."""
    if out.exists() and not out.is_dir():
        raise LbtError(f"{out}: output path exists and is not a directory")
    for name in ("pairs.jsonl", "pairs_summary.json", "dataset"):
        if (out / name).exists():
            raise LbtError(f"{out}: already holds pairs ({name}); choose another --output-path or remove it")


def save_pairs(records: list[dict], summary: dict, out_dir: str | Path) -> Path:
    """Write ``pairs.jsonl``, ``pairs_summary.json`` and the `datasets` dataset (``dataset/``)."""
    from datasets import Dataset

    out = Path(out_dir)
    check_pairs_output(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    (out / "pairs_summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    if records:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
        Dataset.from_list(records).save_to_disk(str(out / "dataset"))
    return out


def load_pairs(path: str | Path):
    """A preference `datasets.Dataset` from a `lbt m2 pairs` directory, its ``dataset/``, or a JSONL file."""
    from datasets import Dataset, load_from_disk

    from ..data.jsonl import read_jsonl

    path = Path(path)
    jsonl = path / "pairs.jsonl" if path.is_dir() else path
    if jsonl.is_file() and not jsonl.read_text(encoding="utf-8").strip():
        raise LbtError(f"{path}: holds no pairs (none qualified); lower the threshold or add runs")
    if path.is_dir() and (path / "dataset_info.json").exists():
        ds = load_from_disk(str(path))
    elif path.is_dir() and (path / "dataset" / "dataset_info.json").exists():
        ds = load_from_disk(str(path / "dataset"))
    elif path.is_dir() and (path / "pairs.jsonl").is_file():
        ds = Dataset.from_list(read_jsonl(path / "pairs.jsonl", required=("prompt", "chosen", "rejected")))
    elif path.is_file():
        ds = Dataset.from_list(read_jsonl(path, required=("prompt", "chosen", "rejected")))
    else:
        raise LbtError(f"{path}: no pairs here (expected a `lbt m2 pairs` directory or a JSONL file)")
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in ds.column_names]
    if missing:
        raise LbtError(f"{path}: pairs lack column(s) {', '.join(missing)}")
    if len(ds) == 0:
        raise LbtError(f"{path}: no pairs")
    return ds
