"""M3 head to head: LbTOptimizer against DSPy's own optimizers, same data, same LMs, same budget of LM calls.

For every task (liar, fallacy from data/, and the seeded topic task of `lbt_dspy.data.classify_gen`) one
split is drawn (train pool, validation set, test set) and every method optimises the same program with the
same teacher and task LMs:

- zero-shot (the program as it is), always-majority-label (no LM)
- ``dspy.LabeledFewShot`` (K random train examples; no LM call)
- ``dspy.BootstrapFewShotWithRandomSearch``, ``dspy.MIPROv2(auto="light")``, ``dspy.GEPA``, ``dspy.COPRO``
  (those the installed DSPy has), teacher LM as their teacher / prompt / reflection model
- ``LbTOptimizer`` with the configured students (students != teacher), and with the classifying teacher as
  its own only student

Each optimiser is sized to ``budget`` LM calls (its own knobs: candidates, trials, breadth, rounds...). One
DSPy callback counts every LM call of every LM (the response cache is off, so every call reaches a server);
the table reports the calls each method really used, its wall time, and test accuracy and F1 (binary F1 of
Yes for Yes/No tasks, macro F1 otherwise) with 95% percentile-bootstrap intervals over test items.

    python eval/bench_m3.py configs/m3_bench_embedded.yaml            # the embedded SmolLM2-135M
    python eval/bench_m3.py CFG --tasks topics --methods zero-shot,LbT --out /tmp/m3

Writes ``<out>/bench_m3.md`` (the table), ``bench_m3.png`` and ``bench_m3.json`` (every prediction).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dspy  # noqa: E402

from lbt_dspy.counting import CountingCallback  # noqa: E402
from lbt_dspy.runner import map_calls  # noqa: E402
from lbt_dspy.config import EMBEDDED, dataclass_from_dict, help_field, load_yaml  # noqa: E402
from lbt_dspy.errors import LbtError  # noqa: E402
from lbt_dspy.m3 import (ClassifierAdapter, LbTOptimizer, TaskFields, TeacherAdapter, TurnsAdapter,  # noqa: E402
                         WithAdapter, make_classifier)
from lbt_dspy.m3.fields import title  # noqa: E402
from lbt_dspy.m3.metrics import accuracy, binary_f1, macro_f1  # noqa: E402

METHODS = ("zero-shot", "majority", "LabeledFewShot", "BootstrapFewShotWithRandomSearch", "MIPROv2", "GEPA", "COPRO",
           "LbT", "LbT (teacher as student)")
TASKS = ("liar", "fallacy", "topics")


@dataclass
class BenchM3Config:
    """The benchmark's settings (YAML keys). Checked in ``__post_init__``."""

    teacher_model_cfg: dict = help_field("The teacher (writes examples, proposes instructions, reflects): "
                                         "model_type + model_cfg.", default_factory=lambda: dict(EMBEDDED))
    teacher_sample_cfg: dict = help_field("Teacher sampling when it writes.",
                                          default_factory=lambda: {"temperature": 0.7, "max_new_tokens": 160})
    task_model_cfg: dict = help_field("The LM the program runs on (every method's task model; LbT's scorer).",
                                      default_factory=lambda: dict(EMBEDDED))
    classify_sample_cfg: dict = help_field("Sampling of the program's calls.",
                                           default_factory=lambda: {"do_sample": False, "max_new_tokens": 4})
    student_model_cfgs: list = help_field("LbT's students (an entry's sample_cfg overrides classify_sample_cfg).",
                                          default_factory=lambda: [dict(EMBEDDED)])
    adapter: str = help_field("The program's prompt, the same for every method: turns (`TurnsAdapter`: demos as "
                              "chat turns, for small models), plain (the patch's one-message prompt, "
                              "`ClassifierAdapter`) or chat (DSPy's ChatAdapter).", default="turns")
    tasks: list = help_field("Tasks: liar, fallacy, topics.", default_factory=lambda: list(TASKS))
    methods: list = help_field("Methods (see METHODS).", default_factory=lambda: list(METHODS))
    train_size: int = help_field("Training pool per task.", default=64)
    val_size: int = help_field("Validation examples (drawn from the training data, disjoint from the pool).",
                               default=16)
    test_size: int = help_field("Test examples per task.", default=48)
    budget: int = help_field("LM calls each optimiser is sized to.", default=200)
    num_examples: int = help_field("K, demos per program (every method).", default=4)
    classifier_prefill: bool = help_field("Prefill the program's answer with '<Output>:' (turns/plain adapters).",
                                          default=False)
    teacher_prefill: bool = help_field("Start LbT's teacher answers with '<START>\\n<Input>:' / '<START>' (steers small "
                                       "models, as `lbt m3`'s teacher_prefill).", default=False)
    lbt_cfg: dict = help_field("LbTOptimizer hyperparameters (LbTOptimizerConfig fields) overriding those sized from the "
                               "budget.", default_factory=dict)
    concurrency: int = help_field("LM calls in flight.", default=8)
    num_retries: int = help_field("Retries of a failed call.", default=3)
    seed: int = help_field("Seed of the split and of every optimiser.", default=0)

    def __post_init__(self):
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"tasks: unknown task {t!r}; known: {', '.join(TASKS)}")
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"methods: unknown method {m!r}; known: {', '.join(METHODS)}")
        if self.adapter not in ("turns", "plain", "chat"):
            raise ValueError(f"adapter must be turns, plain or chat, got {self.adapter!r}")
        for key in ("train_size", "val_size", "test_size", "budget", "num_examples", "concurrency"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be an integer >= 1")


# --- data ------------------------------------------------------------------------------------------------
def load_split(task: str, cfg: BenchM3Config):
    """(program, fields, train, val, test) for `task`; the same split for every method."""
    rng = random.Random(f"{cfg.seed}/{task}")
    if task == "topics":
        from lbt_dspy.data.classify_gen import topic_program, topic_task

        pool, test = topic_task(cfg.train_size + cfg.val_size, cfg.test_size, seed=cfg.seed)
        pool = rng.sample(pool, len(pool))
        program = topic_program()
    else:
        from lbt_dspy.m3.tasks import load_task

        data = load_task(task)
        pool = rng.sample(data.train, cfg.train_size + cfg.val_size)
        test = rng.sample(data.test, min(cfg.test_size, len(data.test)))
        program = make_classifier(data.question)
    train, val = pool[: cfg.train_size], pool[cfg.train_size:]
    fields = TaskFields.from_program(program, train)
    train, val, test = ([fields.example(e) for e in xs] for xs in (train, val, test))
    if cfg.adapter != "chat":  # every method tunes and runs the program under this adapter
        prefill = f"{title(fields.output)}:" if cfg.classifier_prefill else ""
        adapter = TurnsAdapter if cfg.adapter == "turns" else ClassifierAdapter
        program = WithAdapter(program, adapter(prefill=prefill).bind(fields))
    return program, fields, train, val, test


# --- each method, sized to the budget ---------------------------------------------------------------------
def lbt_sizes(cfg: BenchM3Config, n_students: int) -> dict:
    """LbTOptimizer settings whose worst-case LM calls fit the budget (scoring the val set each round)."""
    k, s = cfg.num_examples, cfg.val_size
    base = dict(num_examples=k, init_method="train", beam_size=2, minibatch_size=8, reflections_per_set=2,
                failures_per_reflection=3, expansion_factor=2, score_sample_size=s, seed=cfg.seed)
    base.update(cfg.lbt_cfg)

    def calls(rounds):
        total, beam = s, 1
        for _ in range(rounds):
            new = min(beam * base["reflections_per_set"], beam * base["expansion_factor"])
            total += beam * n_students * base["minibatch_size"] + 2 * beam * base["reflections_per_set"] + (beam + new) * s
            beam = min(base["beam_size"], beam + new)
        return total

    rounds = base.get("rounds")
    if rounds is None:
        rounds = 1
        while calls(rounds + 1) <= cfg.budget:
            rounds += 1
    base["rounds"] = rounds
    base["_estimate"] = calls(rounds)
    return base


def run_method(name, program, fields, train, val, lms, cfg: BenchM3Config):
    """The compiled program of method `name` (None for the majority baseline) and notes on its sizing."""
    def metric(example, pred, trace=None):
        return fields.same(example[fields.output], pred[fields.output])

    k, budget, threads = cfg.num_examples, cfg.budget, cfg.concurrency
    if name == "zero-shot":
        return program.deepcopy(), ""
    if name == "majority":
        return None, ""
    if name == "LabeledFewShot":
        return dspy.LabeledFewShot(k=k).compile(program.deepcopy(), trainset=train, sample=True), f"k={k}"
    if name == "BootstrapFewShotWithRandomSearch":
        n = max(1, budget // len(val) - 4)  # (n + 3) val evaluations + bootstrapping
        opt = dspy.BootstrapFewShotWithRandomSearch(
            metric, teacher_settings=dict(lm=lms["teacher_classify"]), max_bootstrapped_demos=k // 2,
            max_labeled_demos=k, num_candidate_programs=n, num_threads=threads)
        return opt.compile(program.deepcopy(), trainset=train, valset=val), f"{n} candidate programs"
    if name == "MIPROv2":
        opt = dspy.MIPROv2(metric, prompt_model=lms["teacher"], task_model=lms["task"], auto="light",
                           teacher_settings=dict(lm=lms["teacher_classify"]), num_threads=threads, seed=cfg.seed,
                           verbose=False)
        return opt.compile(program.deepcopy(), trainset=train, valset=val, max_bootstrapped_demos=k // 2,
                           max_labeled_demos=k), "auto=light"
    if name == "GEPA":
        def gepa_metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
            return float(metric(gold, pred))

        calls = max(len(val), budget - 20)  # metric calls are task-LM calls; ~20 left for reflections
        opt = dspy.GEPA(metric=gepa_metric, max_metric_calls=calls, reflection_lm=lms["teacher"],
                        num_threads=threads, seed=cfg.seed)
        return opt.compile(program.deepcopy(), trainset=train, valset=val), f"max_metric_calls={calls}"
    if name == "COPRO":
        depth = 2  # about breadth x depth evaluations of the val set
        breadth = max(2, budget // (depth * len(val)))
        # The teacher's own temperature (0.7 in the configs), as every other method's teacher samples: at COPRO's
        # default 1.4 the 135M model writes JSON strings that never close (AdapterParseError on every task).
        temp = (lms["teacher"].kwargs or {}).get("temperature", 0.7) or 0.7
        opt = dspy.COPRO(prompt_model=lms["teacher"], metric=metric, breadth=breadth, depth=depth, init_temperature=temp)
        return (opt.compile(program.deepcopy(), trainset=val, eval_kwargs=dict(num_threads=threads, display_progress=False)),
                f"breadth={breadth}, depth={depth}, init_temperature={temp:g}")
    if name.startswith("LbT"):
        students = None if "teacher as student" in name else lms["students"]
        sizes = lbt_sizes(cfg, 1 if students is None else len(students))
        estimate = sizes.pop("_estimate")
        prefills = ({"examples": f"<START>\n{title(fields.inputs[0])}:", "reasons": "<START>"}
                    if cfg.teacher_prefill else None)
        opt = LbTOptimizer(metric, students=students, teacher_classifier=lms["task"], num_threads=threads,
                           teacher_adapter=TeacherAdapter(prefills), **sizes)
        tuned = opt.compile(program.deepcopy(), trainset=train, teacher=lms["teacher"], valset=val)
        return tuned, f"{sizes['rounds']} rounds, beam {sizes['beam_size']}, minibatch {sizes['minibatch_size']} (<= {estimate} calls)"
    raise ValueError(name)


# --- evaluation ---------------------------------------------------------------------------------------------
def predict_all(program, test, fields, lm, threads: int) -> list:
    def one(ex):
        try:
            with dspy.context(lm=lm):
                return fields.label_of(program(**fields.inputs_of(ex))[fields.output])
        except Exception:  # a failed or unparseable call is a wrong answer
            return None
    return map_calls(one, test, num_threads=threads)


def scores(ys, ps, fields) -> tuple[float, float]:
    ps = [p if p is not None else "(failed)" for p in ps]
    f1 = binary_f1(ys, ps) if fields.yes_no else macro_f1(ys, ps, fields.labels)
    return accuracy(ys, ps), f1


def with_intervals(ys, ps, fields) -> dict:
    """Accuracy and F1 with 95% percentile-bootstrap intervals over test items (`lbt_dspy.stats`)."""
    from lbt_dspy.stats import bootstrap_metric

    ps = [p if p is not None else "(failed)" for p in ps]
    out = {}
    for key, fn in (("accuracy", lambda y, p: scores(y, p, fields)[0]), ("f1", lambda y, p: scores(y, p, fields)[1])):
        iv = bootstrap_metric(fn, ys, ps)
        out[key], out[f"{key}_ci"] = iv.estimate, [iv.low, iv.high]
    return out


def run(cfg: BenchM3Config, out: Path, resume: bool = False, on_row=None, method_major: bool = False,
        meta: dict | None = None) -> list[dict]:
    from tqdm.auto import tqdm

    from lbt_dspy.models import ModelPool

    counter = CountingCallback()
    dspy.configure(callbacks=[counter])
    rows = []
    (out / "logs").mkdir(parents=True, exist_ok=True)  # the servers' logs (not part of the results)
    done = {}
    saved = out / "bench_m3.json"
    if resume and saved.exists():  # rows of an interrupted run with the same config are kept, not rerun
        old = json.loads(saved.read_text())
        if old["config"] != asdict(cfg):
            raise LbtError(f"{saved}: written with another config; use another --out or drop --resume")
        done = {(r["task"], r["method"]): r for r in old["rows"]}
        meta = old.get("meta") or meta  # the first run's command and start time stay the table's
    with ModelPool(cache=False, num_retries=cfg.num_retries, log_dir=str(out / "logs")) as pool:
        lms = {"teacher": pool.lm(cfg.teacher_model_cfg, cfg.teacher_sample_cfg, "teacher_model_cfg"),
               "teacher_classify": pool.lm(cfg.teacher_model_cfg, cfg.classify_sample_cfg, "teacher_model_cfg"),
               "task": pool.lm(cfg.task_model_cfg, cfg.classify_sample_cfg, "task_model_cfg"),
               "students": [pool.lm(e, cfg.classify_sample_cfg, f"student_model_cfgs[{i}]")
                            for i, e in enumerate(cfg.student_model_cfgs)]}
        dspy.configure(lm=lms["task"])
        jobs = ([(t, m) for m in cfg.methods for t in cfg.tasks] if method_major
                else [(t, m) for t in cfg.tasks for m in cfg.methods])
        bar = tqdm(jobs, desc="bench_m3", dynamic_ncols=True)
        split = {}
        for task, method in bar:
            bar.set_postfix_str(f"{task}: {method}")
            if (task, method) in done:
                rows.append(done[(task, method)])
                continue
            if task not in split:
                split[task] = load_split(task, cfg)
            program, fields, train, val, test = split[task]
            ys = [e[fields.output] for e in test]
            t0, c0 = time.monotonic(), counter.n
            row = {"task": task, "method": method, "train": len(train), "val": len(val), "test": len(test)}
            try:
                tuned, note = run_method(method, program, fields, train, val, lms, cfg)
                row["optimizer_calls"] = counter.n - c0
                if tuned is None:  # always the training set's majority label
                    major = Counter(e[fields.output] for e in train).most_common(1)[0][0]
                    ps, note = [major] * len(test), f"always {major!r}"
                else:
                    ps = predict_all(tuned, test, fields, lms["task"], cfg.concurrency)
                row.update(note=note, **with_intervals(ys, ps, fields), failed=sum(p is None for p in ps),
                           predicted=dict(Counter(ps).most_common()), preds=ps)
            except Exception as exc:  # one method's failure is a row of the table, not the end of the run
                row.update(error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
                           optimizer_calls=counter.n - c0)
            row["calls"] = counter.n - c0
            row["seconds"] = round(time.monotonic() - t0, 1)
            rows.append(row)
            tqdm.write(line(row))
            tmp = saved.with_suffix(".json.tmp")
            tmp.write_text(json.dumps({"config": asdict(cfg), "meta": meta or {}, "rows": rows}, indent=1))
            tmp.replace(saved)
            if on_row is not None:
                on_row(rows)
    return rows


# --- report -------------------------------------------------------------------------------------------------
def line(row) -> str:
    if "error" in row:
        return f"{row['task']:8s} {row['method']:34s} FAILED after {row['calls']} calls: {row['error']}"
    return (f"{row['task']:8s} {row['method']:34s} acc {100 * row['accuracy']:5.1f} F1 {100 * row['f1']:5.1f} "
            f"calls {row['optimizer_calls']:5d} (+{row['calls'] - row['optimizer_calls']} test) {row['seconds']:7.1f} s")


def table(rows, cfg: BenchM3Config) -> str:
    def ci(r, key):
        lo, hi = r[f"{key}_ci"]
        return f"{100 * r[key]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

    out = ["| task | method | test accuracy % [95% CI] | test F1 % [95% CI] | optimizer LM calls (budget "
           f"{cfg.budget}) | wall s | sizing |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['task']} | {r['method']} | failed | failed | {r['calls']} | {r['seconds']} | "
                       f"{r['error'][:120]} |")
        else:
            out.append(f"| {r['task']} | {r['method']} | {ci(r, 'accuracy')} | {ci(r, 'f1')} | {r['optimizer_calls']} | "
                       f"{r['seconds']} | {r.get('note', '')} |")
    return "\n".join(out) + "\n"


def comparisons(rows, cfg: BenchM3Config) -> list:
    """Per task: each LbT row minus every other finished method, paired over the same test items: accuracy then
    F1 (`lbt_dspy.stats.paired_metric_difference`), as `lbt_dspy.results.PairedComparison`s grouped by task."""
    from lbt_dspy.results import PairedComparison
    from lbt_dspy.stats import paired_metric_difference

    out, labels = [], {}
    for task in dict.fromkeys(r["task"] for r in rows):
        done = [r for r in rows if r["task"] == task and "error" not in r]
        lbt = [r for r in done if r["method"].startswith("LbT")]
        for i, a in enumerate(lbt):
            for b in (r for r in done if r is not a and r not in lbt[:i]):  # each pair of LbT rows once
                if task not in labels:  # the split is seeded: the same test labels the rows were scored on
                    _, fields, _, _, test = load_split(task, cfg)
                    labels[task] = (fields, [e[fields.output] for e in test])
                fields, ys = labels[task]
                pa, pb = ([p if p is not None else "(failed)" for p in r["preds"]] for r in (a, b))
                for metric, i in (("accuracy", 0), ("F1", 1)):
                    d = paired_metric_difference(lambda y, p, i=i: scores(y, p, fields)[i], ys, pa, pb)
                    out.append(PairedComparison.of(a["method"], b["method"], d, metric=metric, group=task))
    return out


def comparison_table(comps: list) -> str:
    """The paired comparisons: one row per task and pair of methods, accuracy and F1 differences."""
    from lbt_dspy.tables import comparison_table as render

    return render(comps, "comparison", group="task", wins="wins / losses / ties (items)", paired=False,
                  differences=[("accuracy", "accuracy difference (points)"), ("F1", "F1 difference (points)")])


def plot(rows, path: Path) -> None:
    """Test accuracy (top) and F1 (bottom) per task with 95% intervals; a failed method is drawn as "failed"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 8), squeeze=False)
    for j, task in enumerate(tasks):
        rs = [r for r in rows if r["task"] == task]
        names = [r["method"] for r in rs]
        colors = ["tab:red" if n.startswith("LbT") else "tab:gray" if n in ("zero-shot", "majority") else "tab:blue"
                  for n in names]
        for ax, key in zip(axes[:, j], ("accuracy", "f1")):
            ok = ["error" not in r for r in rs]
            vals = [100 * r[key] if k else 0.0 for r, k in zip(rs, ok)]
            err = [[100 * (r[key] - r[f"{key}_ci"][0]) if k else 0.0 for r, k in zip(rs, ok)],
                   [100 * (r[f"{key}_ci"][1] - r[key]) if k else 0.0 for r, k in zip(rs, ok)]]
            ax.barh(range(len(rs)), vals, xerr=err, color=colors, capsize=3)
            for i, k in enumerate(ok):
                if not k:
                    ax.text(1, i, "failed", va="center", fontsize=8)
            ax.set_yticks(range(len(rs)), names, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlim(0, 100)
            ax.set_xlabel(f"test {'accuracy' if key == 'accuracy' else 'F1'} % (95% bootstrap CI)")
            ax.set_title(f"{task} ({rs[0]['test']} test items)" if rs else task)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows, cfg: BenchM3Config, command: str, started: str, state: str, final: bool = False) -> str:
    """bench_m3.md: the setting, the table, and (for a finished run) each LbT row's paired comparisons."""
    md = (f"# M3 head to head (eval/bench_m3.py)\n\n`{command}`, started {started}, {state}.\n\n"
          f"Split per task: {cfg.train_size} train, {cfg.val_size} validation, {cfg.test_size} test; K = "
          f"{cfg.num_examples}; every optimiser sized to {cfg.budget} LM calls (calls used are counted by one "
          f"callback over all LMs, cache off); {cfg.adapter} adapter. F1: binary (Yes) for liar/fallacy, "
          f"macro for topics; 95% percentile-bootstrap intervals over test items.\n\n" + table(rows, cfg))
    comps = comparisons(rows, cfg) if final else []
    if comps:
        md += ("\n## Paired comparisons (the same test items; 2,000 resamples, seed 0)\n\n" + comparison_table(comps)
               + "\nwins / losses / ties: test items only the first / only the second method labels right / "
               "both or neither.\n")
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="YAML with BenchM3Config keys (e.g. configs/m3_bench_embedded.yaml)")
    ap.add_argument("--out", default="eval/results/m3", help="where the table, PNG and JSON go")
    ap.add_argument("--tasks", help="comma-separated subset of the config's tasks")
    ap.add_argument("--methods", help="comma-separated subset of the config's methods")
    ap.add_argument("--resume", action="store_true", help="keep the rows an interrupted run with this config wrote")
    ap.add_argument("--report", action="store_true",
                    help="only rewrite bench_m3.md and the PNG from <out>/bench_m3.json (no LM call)")
    ap.add_argument("--method-major", action="store_true",
                    help="run each method on every task before the next method (default: task by task)")
    args = ap.parse_args(argv)
    try:
        raw = load_yaml(args.config)
        if args.tasks:
            raw["tasks"] = args.tasks.split(",")
        if args.methods:
            raw["methods"] = args.methods.split(",")
        cfg = dataclass_from_dict(BenchM3Config, raw, args.config)
    except LbtError as exc:
        print(f"bench_m3: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.monotonic()
    command = "python eval/bench_m3.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def write(rows, final=False):  # after every row, so an interrupted run leaves its table
        state = f"{time.monotonic() - t0:.0f} s in all" if final else f"partial: {len(rows)} rows so far"
        (out / "bench_m3.md").write_text(markdown(rows, cfg, command, started, state, final=final))
        plot(rows, out / "bench_m3.png")

    if args.report:  # rewrite the table and PNG from bench_m3.json; no LM call
        saved = out / "bench_m3.json"
        if not saved.is_file():
            print(f"bench_m3: {saved}: no such file (run the benchmark first)", file=sys.stderr)
            return 2
        old = json.loads(saved.read_text())
        if old["config"] != asdict(cfg):
            print(f"bench_m3: {saved}: written with another config than {args.config}", file=sys.stderr)
            return 2
        rows = old["rows"]
        wall = sum(r.get("seconds", 0) for r in rows)
        meta = old.get("meta") or {"command": command.replace(" --report", ""), "started": "(not recorded)"}
        (out / "bench_m3.md").write_text(markdown(rows, cfg, meta["command"], meta["started"],
                                                  f"{wall:.0f} s summed over the rows", final=True))
        plot(rows, out / "bench_m3.png")
        print(table(rows, cfg), end="")
        return 0

    try:
        rows = run(cfg, out, resume=args.resume, on_row=write, method_major=args.method_major,
                   meta={"command": command, "started": started})
    except LbtError as exc:
        print(f"bench_m3: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    write(rows, final=True)
    print(table(rows, cfg), end="")
    print(f"wrote {out / 'bench_m3.md'}, {out / 'bench_m3.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
