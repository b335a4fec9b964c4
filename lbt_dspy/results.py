"""What runs produce, as small frozen dataclasses (in the manner of GEPA's results).

- `PairExam`: one TR-TA pair of a problem and the exam its students took on it (M1's records).
- `MethodAccuracy`: a method's accuracy in one student view (or the same in every view), with its 95% interval.
- `CodeScore`: a code method's mean hidden-test S-score (the paper's Table 3 rows), over problems or on one.
- `PairedComparison`: a − b on the same problems (or test items): the paired difference, its interval and
  wins / losses / ties.
- `Fig4Point`: SC and M1 at one point of Fig. 4: with k pairs per problem, or on one difficulty level.
- `TableA6`: Table A6: M1 with k pairs per problem against SC with all of them.
- `M3Round`: one round of an M3 configuration, as its report shows it.

Method and student view are separate fields, never one composite string. Each type has ``to_dict()``
(JSON-ready: what summary.json holds) and ``from_dict()``, which also reads the layout that report files
had before these types (``"SC(all)"``, ``"M1 SUM(k)"``, ``"diff M1 SUM"``, ``"rel M1 SUM"`` keys): a run
directory written by an older version still renders the same tables. `lbt_dspy.tables` renders them.

Example:
    >>> from lbt_dspy.stats import paired_difference
    >>> c = PairedComparison.of("M1 SUM", "SC", paired_difference([1, 1, 0, 1], [0, 1, 0, 1]))
    >>> c.a, c.b, c.wins, c.losses, c.ties, c.text
    ('M1 SUM', 'SC', 1, 0, 3, '+25.0 pts [+0.0, +75.0]')
    >>> PairedComparison.from_dict(c.to_dict()) == c
    True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .stats import Difference, Interval

ALL = "all"  # the view key of a method that does not use the LbT score (the same in every student view)


def _fields(cls, d: Mapping) -> dict:
    """The entries of `d` that are fields of dataclass `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def interval_of(d: Mapping | Interval | None) -> Interval | None:
    """An `Interval` from its `to_dict` (None stays None)."""
    if d is None or isinstance(d, Interval):
        return d
    return Interval.from_dict(_fields(Interval, d))


def difference_of(d: Mapping | Difference | None) -> Difference | None:
    """A `Difference` from its `to_dict`, or from a comparison dict carrying one (extra keys are ignored)."""
    if d is None or isinstance(d, Difference):
        return d
    return Difference.from_dict(_fields(Difference, d))


@dataclass(frozen=True)
class PairExam:
    """One TR-TA pair of a teaching problem and the exam its students took on it.

    Args:
        tp: The teaching problem's key.
        index: The pair's index among the problem's pairs (records before the rename call it ``sample``).
        answer: The teacher's answer (TA); None or empty when nothing was parsed.
        score: The answer's score (math: 1.0 if correct; code: the V-score, visible tests).
        rationale: The teacher's rationale (TR).
        s_score: Code only: the hidden-test S-score.
        exam: Per student, the scores of the exam problems it took taught by this pair.

    Example:
        >>> p = PairExam("p0", 1, "4", 1.0, exam={"stu": (1.0, 0.0)})
        >>> p.index, p.exam["stu"], p.num_exam
        (1, (1.0, 0.0), 2)
    """

    tp: str
    index: int
    answer: str | None
    score: float
    rationale: str = ""
    s_score: float | None = None
    exam: Mapping[str, tuple] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: Mapping, exam: Mapping[str, Iterable[float]] | None = None) -> "PairExam":
        """The pair of a teacher record (``teach.jsonl``; ``pair`` or the older ``sample``) and its exam."""
        index = rec["pair"] if "pair" in rec else rec["sample"]
        return cls(rec["tp"], int(index), rec.get("answer"), rec["score"], rec.get("rationale") or "",
                   rec.get("s_score"), {s: tuple(v) for s, v in (exam or {}).items()})

    @property
    def num_exam(self) -> int:
        """Exam answers recorded for this pair, all students together."""
        return sum(len(v) for v in self.exam.values())


@dataclass(frozen=True)
class MethodAccuracy:
    """A method's accuracy over problems in one student view, with its 95% interval when computed.

    Args:
        method: e.g. ``"M1 SUM"``.
        view: The student view (a student, or ``"combined"``); None for methods that do not use the LbT
            score (Greedy, SC, AVG: the same in every view).
        accuracy: The mean per-problem score.
        correct: The sum of the per-problem scores (a count for 0/1 scores).
        n: Problems.
        interval: The percentile-bootstrap interval over problems, when computed.

    Example:
        >>> a = MethodAccuracy("M1 SUM", "stu", 0.75, 3, 4)
        >>> a.cell(), a.to_dict()["view"]
        ('75.0% (3/4)', 'stu')
    """

    method: str
    view: str | None
    accuracy: float
    correct: float
    n: int
    interval: Interval | None = None

    def cell(self, interval: Interval | None = None) -> str:
        """'acc% [95% interval] (correct/n)', or 'acc% (correct/n)' without an interval."""
        iv = interval or self.interval
        if iv is None:
            acc = f"{100 * self.accuracy:.1f}%"
        else:
            acc = "-" if iv.n == 0 or math.isnan(iv.estimate) else iv.text()
        return f"{acc} ({self.correct:.4g}/{self.n})"

    def to_dict(self) -> dict:
        return {"method": self.method, "view": self.view, "accuracy": self.accuracy, "correct": self.correct,
                "n": self.n, "interval": None if self.interval is None else self.interval.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "MethodAccuracy":
        return cls(d["method"], d.get("view"), d["accuracy"], d["correct"], d["n"], interval_of(d.get("interval")))

    @staticmethod
    def table(rows: Iterable["MethodAccuracy"]) -> dict:
        """summary.json's ``table``: {method: {view (``"all"`` for None): {accuracy, correct, n}}}."""
        out: dict = {}
        for r in rows:
            out.setdefault(r.method, {})[r.view or ALL] = {"accuracy": r.accuracy, "correct": r.correct, "n": r.n}
        return out

    @classmethod
    def from_table(cls, table: Mapping) -> list["MethodAccuracy"]:
        """The rows of summary.json's ``table`` (the inverse of `table`)."""
        return [cls(method, None if view == ALL else view, c["accuracy"], c["correct"], c["n"])
                for method, cells in table.items() for view, c in cells.items()]


@dataclass(frozen=True)
class CodeScore:
    """A code method's hidden-test S-score: its mean over the problems where it is defined (a row of the code
    table, the paper's Table 3), or its pick's on one problem (then ``pair`` says which TR-TA pair it took).

    Args:
        method: ``"Greedy"``, ``"Avg."`` (all TAs: a random pick) or ``"M1 MAX"``.
        view: The student view of an M1 pick (a student, or ``"combined"``); None for methods that use no
            LbT score.
        visible: Only among the TAs that pass all visible tests (the paper's "(V=1)" rows).
        s_score: The S-score (None: the method is defined on no problem, e.g. no TA with V-score 1).
        v_score: The V-score of the same picks.
        n: Problems where the method is defined; of: problems.
        pair: On one problem, the index of the pair the method picked (None for Greedy and Avg.).
        interval: The S-score's 95% bootstrap interval over the problems, when computed.

    Example:
        >>> row = CodeScore("M1 MAX", "stu", visible=True, s_score=0.6, v_score=1.0, n=3, of=4)
        >>> row.label(), row.label(views=2), CodeScore.from_dict(row.to_dict()) == row
        ('M1 MAX (V=1)', 'M1 MAX [stu] (V=1)', True)
    """

    method: str
    view: str | None = None
    visible: bool = False
    s_score: float | None = None
    v_score: float | None = None
    n: int = 0
    of: int = 0
    pair: int | None = None
    interval: Interval | None = None

    def label(self, views: int = 1) -> str:
        """The row's name as the tables print it: the method, its view in brackets when the run has several
        `views`, then " (V=1)" for `visible`."""
        view = f" [{self.view}]" if self.view is not None and views > 1 else ""
        return self.method + view + (" (V=1)" if self.visible else "")

    def same(self, other: "CodeScore") -> bool:
        """Whether `other` is the same method, view and visibility (another problem's or the table's row)."""
        return (self.method, self.view, self.visible) == (other.method, other.view, other.visible)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["interval"] = None if self.interval is None else self.interval.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "CodeScore":
        return cls(**{**_fields(cls, d), "interval": interval_of(d.get("interval"))})


def find_code_score(rows: Iterable[CodeScore], method: str, view: str | None = None,
                    visible: bool = False) -> CodeScore | None:
    """The row of `method` in `view` (None: methods without LbT score), `visible` or not; None if absent.

    Example:
        >>> rows = [CodeScore("Avg."), CodeScore("Avg.", visible=True, s_score=0.5)]
        >>> find_code_score(rows, "Avg.", visible=True).s_score
        0.5
    """
    return next((r for r in rows if (r.method, r.view, r.visible) == (method, view, visible)), None)


@dataclass(frozen=True)
class PairedComparison:
    """a − b on the same problems (or test items): the paired bootstrap of the difference.

    Args:
        a, b: What is compared (methods, models, M3 configurations and rounds).
        difference: The mean difference, its paired interval, wins / losses / ties (`stats.paired_difference`).
        text: The difference as the tables print it, e.g. '+25.0 pts [+0.0, +75.0]'.
        metric: What is compared when it is not the accuracy of the table it sits in (e.g. ``"F1"``).
        group: Where several groups share a table, the group (e.g. the task of `eval/bench_m3.py`).
    """

    a: str
    b: str
    difference: Difference
    text: str
    metric: str | None = None
    group: str | None = None

    @classmethod
    def of(cls, a: str, b: str, difference: Difference, *, metric: str | None = None, group: str | None = None,
           scale: float = 100.0, digits: int = 1, unit: str = " pts") -> "PairedComparison":
        """The comparison with its text (`Difference.text` with `scale`, `digits`, `unit`)."""
        return cls(a, b, difference, difference.text(scale=scale, digits=digits, unit=unit), metric, group)

    @property
    def wins(self) -> int:
        return self.difference.wins

    @property
    def losses(self) -> int:
        return self.difference.losses

    @property
    def ties(self) -> int:
        return self.difference.ties

    @property
    def n(self) -> int:
        return self.difference.n

    def excludes_zero(self) -> bool:
        return self.difference.excludes_zero()

    def to_dict(self) -> dict:
        """One flat dict: a, b, the difference's fields, text, excludes_zero (and metric, group when set)."""
        d = {"a": self.a, "b": self.b, **self.difference.to_dict(), "text": self.text,
             "excludes_zero": self.excludes_zero()}
        d.update({k: v for k, v in (("metric", self.metric), ("group", self.group)) if v is not None})
        return d

    @classmethod
    def from_dict(cls, d: Mapping, **defaults: Any) -> "PairedComparison":
        """From `to_dict`; `defaults` fill a, b (and metric, group) where `d` lacks them (older layouts)."""
        diff = difference_of(d)
        vals = {**defaults, **{k: d[k] for k in ("a", "b", "metric", "group") if k in d}}
        return cls(vals["a"], vals["b"], diff, d.get("text") or diff.text(), vals.get("metric"), vals.get("group"))


@dataclass(frozen=True)
class Fig4Point:
    """SC and M1 at one point of Fig. 4: `pairs` random pairs per problem (left panel), or the problems of
    one difficulty `level` with all their pairs (right panel).

    Args:
        n: Problems.
        accuracy: Per method (SC, M1 MAX, M1 SUM), the accuracy with its 95% bootstrap interval.
        relative: Per M1 method, M1 / SC − 1 with its paired interval (nan where SC is 0).
        difference: Per M1 method, M1 − SC with its paired interval (pairs only).
        pairs, level: Where the point is (one of the two).
    """

    n: int
    accuracy: Mapping[str, Interval]
    relative: Mapping[str, Interval]
    difference: Mapping[str, Difference] = field(default_factory=dict)
    pairs: int | None = None
    level: int | None = None

    def to_dict(self) -> dict:
        where = {"pairs": self.pairs} if self.pairs is not None else {"level": self.level}
        return {**where, "n": self.n, "accuracy": {m: iv.to_dict() for m, iv in self.accuracy.items()},
                "relative": {m: iv.to_dict() for m, iv in self.relative.items()},
                "difference": {m: d.to_dict() for m, d in self.difference.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Fig4Point":
        """From `to_dict`, or from the older flat row: ``{"pairs", "n", "SC": {...}, "rel M1 SUM": {...},
        "diff M1 SUM": {...}, ...}``."""
        if "accuracy" in d:
            acc, rel, diff = d["accuracy"], d["relative"], d.get("difference") or {}
        else:
            acc = {k: v for k, v in d.items() if k in ("SC", "M1 MAX", "M1 SUM")}
            rel = {k[4:]: v for k, v in d.items() if k.startswith("rel ")}
            diff = {k[5:]: v for k, v in d.items() if k.startswith("diff ")}
        return cls(d["n"], {m: interval_of(v) for m, v in acc.items()}, {m: interval_of(v) for m, v in rel.items()},
                   {m: difference_of(v) for m, v in diff.items()}, d.get("pairs"), d.get("level"))


@dataclass(frozen=True)
class SubsetAccuracy:
    """An accuracy over random subsets of the pairs: the mean and the sample std (ddof=1) over subsets."""

    mean: float
    std: float


@dataclass(frozen=True)
class TableA6:
    """Table A6: M1 (and SC) with only `k` TR-TA pairs per problem against SC with all of them.

    Args:
        k, subsets: Pairs per problem and random subsets of them (the paper: 24 and 10).
        n: Problems; pairs: the run's pairs per problem (all); view: the student view.
        greedy: Greedy accuracy (None without greedy records); sc_all: SC with all pairs.
        at_k: Per method (SC, M1 MAX, M1 SUM), the accuracy with k pairs over the subsets.
        comparisons: M1 MAX and M1 SUM with k pairs − SC with all, paired over problems (each problem's
            M1 score averaged over the subsets).
    """

    k: int
    subsets: int
    n: int
    pairs: int
    view: str
    greedy: float | None
    sc_all: float | None
    at_k: Mapping[str, SubsetAccuracy]
    comparisons: tuple[PairedComparison, ...] = ()

    def improvement(self, method: str) -> float:
        """The paper's "Improv.": the mean accuracy of `method` with k pairs − SC with all."""
        return self.at_k[method].mean - self.sc_all

    def comparison(self, method: str) -> PairedComparison:
        """`method` with k pairs − SC with all pairs."""
        return next(c for c in self.comparisons if c.a == method)

    def to_dict(self) -> dict:
        return {"k": self.k, "subsets": self.subsets, "n": self.n, "pairs": self.pairs, "view": self.view,
                "greedy": self.greedy, "sc_all": self.sc_all,
                "at_k": {m: dataclasses.asdict(v) for m, v in self.at_k.items()},
                "improvement": {c.a: self.improvement(c.a) for c in self.comparisons},
                "comparisons": [c.to_dict() for c in self.comparisons]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TableA6":
        """From `to_dict`, or from the older layout (``"Greedy"``, ``"SC(all)"``, ``"M1 SUM(k)"``,
        ``"Improv. M1 SUM"``, ``"diff M1 SUM"`` keys)."""
        head = (d["k"], d["subsets"], d["n"], d["pairs"], d["view"])
        if "at_k" in d:
            return cls(*head, d["greedy"], d["sc_all"], {m: SubsetAccuracy(**v) for m, v in d["at_k"].items()},
                       tuple(PairedComparison.from_dict(c) for c in d["comparisons"]))
        at_k = {k[:-3]: SubsetAccuracy(v["mean"], v["std"]) for k, v in d.items() if k.endswith("(k)")}
        comps = tuple(PairedComparison.from_dict(v, a=k[5:], b="SC") for k, v in d.items() if k.startswith("diff "))
        return cls(*head, d.get("Greedy"), d.get("SC(all)"), at_k, comps)


@dataclass(frozen=True)
class M3Round:
    """One round of an M3 configuration as its report shows it (from the round record and its test evals).

    Args:
        f1, accuracy, n_test: Per evaluator (the teacher, each student), test F1, accuracy and items answered.
        train_score: The best set's score on the training minibatch; beam_scores: the beam's.
        best_demos: The best set's demonstrations.
        calls: The round's LM calls by role; eval_calls: the test evaluations' calls; eval_cached: how many of
            those the response cache served (None for runs recorded before it was counted).
        seconds: The round's wall time (None when not recorded).
        candidates, new_sets: Sets scored, and new sets the teacher wrote; dropped: sets dropped, by reason.
        reflections, reasons: Reflections made and reasons they gave.
        failures: Per student, exam problems failed; exam_answered: exam answers given.
        init_fallback: How the first round's sets were made when the configured way failed (None: it did not).
    """

    f1: Mapping[str, float]
    accuracy: Mapping[str, float]
    n_test: Mapping[str, int]
    train_score: float
    beam_scores: list
    best_demos: list
    calls: Mapping
    eval_calls: int
    eval_cached: int | None
    seconds: float | None
    candidates: int
    new_sets: int
    dropped: Mapping
    reflections: int
    reasons: int
    failures: Mapping[str, int]
    exam_answered: int
    init_fallback: Any = None

    @classmethod
    def from_record(cls, record: Mapping, evals: Mapping[str, Mapping]) -> "M3Round":
        """The round of an ``rounds.jsonl`` record (its ``record`` field) and its test evaluations by evaluator."""
        r = record
        return cls(
            f1={name: e["f1"] for name, e in evals.items()},
            accuracy={name: e["accuracy"] for name, e in evals.items()},
            n_test={name: e["n"] for name, e in evals.items()},
            train_score=r["beam"][0]["score"],
            beam_scores=[b["score"] for b in r["beam"]],
            best_demos=r["beam"][0]["demos"],
            calls=r["calls"],
            eval_calls=sum(e.get("calls", 0) for e in evals.values()),
            eval_cached=(sum(e["cached"] for e in evals.values()) if all("cached" in e for e in evals.values())
                         else None),
            seconds=r.get("seconds"),
            candidates=len(r["candidates"]),
            new_sets=len(r.get("new", [])),
            dropped=r.get("dropped", {}),
            reflections=len(r.get("reflections", [])),
            reasons=sum(len(x["reasons"]) for x in r.get("reflections", [])),
            failures={x["student"]: len(x["failed"]) for x in r.get("exams", [])},
            exam_answered=sum(x["answered"] for x in r.get("exams", [])),
            init_fallback=r.get("init_fallback"),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "M3Round":
        return cls(**_fields(cls, d))
