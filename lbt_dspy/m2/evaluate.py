"""`lbt m2 eval`: greedy accuracy of the base teacher vs tuned teachers on held-out problems.

The paper evaluates M2 by greedy accuracy (MATH500). Here every model answers the problems of an
`lbt` config (its dataset, prompt format, scorer and ``greedy_sample_cfg``) through the same code as
the greedy stage of `lbt m1`: `Teacher` at temperature 0, the run's `exam_prompter`, the run's scorer.
The base model is the config's ``teacher_model_cfg``; each tuned model is the same entry with its
checkpoint swapped (``embedded``: ``model_cfg.checkpoint``; ``vllm``: ``model_cfg.model``). One model
is served at a time. Records land in ``OUTPUT/<name>/greedy.jsonl`` (resumable); ``report.md`` and
``eval_summary.json`` hold the table.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..errors import LbtError
from ..model_output import OutputCounts, answers_section, output_table

SPLITS = ("teaching", "bank", "all")


def resolve_checkpoint(path: str) -> str:
    """A checkpoint directory: `path` itself, or its ``merged/`` (a `lbt m2 train` output directory)."""
    p = Path(path).expanduser()
    if (p / "merged" / "config.json").is_file():
        return str((p / "merged").resolve())
    if (p / "config.json").is_file():
        return str(p.resolve())
    if p.exists():
        raise LbtError(f"--model {path}: neither a checkpoint (config.json) nor a `lbt m2 train` output (merged/)")
    return path  # a Hub id (vllm)


def fingerprint(checkpoint: str) -> str | None:
    """Names, sizes and mtimes of a local checkpoint's weight files, hashed: a retrained model in the same
    directory is another model (its old records must not be reused)."""
    import hashlib

    p = Path(checkpoint)
    if not p.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def swap_checkpoint(entry: dict, name: str, checkpoint: str | None, where: str = "teacher_model_cfg") -> dict:
    """A copy of a model entry that serves `checkpoint` under `name` (None keeps the entry's own model)."""
    entry = json.loads(json.dumps(entry))
    kind = entry.get("model_type", "embedded")
    cfg = dict(entry.get("model_cfg") or {})
    if checkpoint is not None:
        if kind == "embedded":
            cfg["checkpoint"] = checkpoint
        elif kind == "vllm":
            if cfg.get("api_base"):
                raise LbtError(f"{where}.model_cfg.api_base: m2 eval starts its own servers; drop api_base")
            cfg["model"] = checkpoint
            cfg.pop("tokenizer", None)
        else:
            raise LbtError(f"{where}.model_type: m2 eval swaps checkpoints of 'embedded' or 'vllm' entries, "
                           f"not {kind!r}")
    cfg["name"] = name
    entry["model_type"] = kind
    entry["model_cfg"] = cfg
    return entry


def eval_problems(data, split: str, limit: int | None) -> list[dict]:
    """The problems of a dataset's `split` (teaching, bank or all), the first `limit` of them."""
    if split not in SPLITS:
        raise LbtError(f"--split must be one of {', '.join(SPLITS)}")
    rows = {"teaching": data.teaching, "bank": data.exam_bank, "all": data.teaching + data.exam_bank}[split]
    rows = rows[:limit] if limit else rows
    if not rows:
        raise LbtError("eval: the config's dataset gives no problems")
    return rows


def training_questions(checkpoint: str) -> set[str] | None:
    """Questions of the pairs a `lbt m2 train` output was trained on (None when unknown)."""
    for d in (Path(checkpoint), Path(checkpoint).parent):
        summ = d / "train_summary.json"
        if summ.is_file():
            try:
                pairs = json.loads(summ.read_text()).get("pairs_path")
                from .pairs import load_pairs

                ds = load_pairs(pairs)
            except Exception:
                return None
            return set(ds["question"]) if "question" in ds.column_names else None
    return None


def run_eval(cfg, models: list[tuple[str, str]], output_path: str | Path, include_base: bool = True,
             split: str = "teaching", limit: int | None = None, progress: bool = True) -> dict:
    """Greedy accuracy of each model on the config's problems; returns the summary (also written)."""
    from ..components import build_components, build_teacher
    from ..counting import CallCounter
    from ..models import ModelPool
    from ..records import correct, grade, prediction_record
    from ..runner import Job, run_jobs
    from ..store import RunStore

    out = Path(output_path)
    parts = build_components(cfg)
    problems = eval_problems(parts.data, split, limit)
    scorer = parts.scorer
    names = [n for n, _ in models]
    if include_base:
        names = ["base"] + names
    if len(set(names)) != len(names):
        raise LbtError(f"--model: names must be distinct and not 'base' ({', '.join(names)})")
    if not names:
        raise LbtError("eval: no models (give --model NAME=PATH, or keep the base)")
    entries = []
    if include_base:
        entries.append(("base", swap_checkpoint(cfg.teacher_model_cfg, "base", None)))
    for name, path in models:
        entries.append((name, swap_checkpoint(cfg.teacher_model_cfg, name, resolve_checkpoint(path))))
    keys = [f"p{i:04d}" for i in range(len(problems))]

    def finish(item):  # a greedy answer -> its record, graded against the scorer's reference (code: its tests)
        reference = scorer.reference(item)

        def f(pred):
            return {**prediction_record(pred, question=item["question"], reference=str(item.get("answer", ""))),
                    **grade(scorer, pred.answer, reference)}
        return f

    results, calls = {}, CallCounter()
    for name, entry in entries:
        mcfg = dataclasses.replace(cfg, teacher_model_cfg=entry)
        run_cfg = {"model": entry, "greedy_sample_cfg": cfg.greedy_sample_cfg,
                   "teacher_sample_cfg": cfg.teacher_sample_cfg, "dataset_type": cfg.dataset_type,
                   "dataset_cfg": cfg.dataset_cfg, "exam_prompter_type": cfg.exam_prompter_type,
                   "exam_prompter_cfg": cfg.exam_prompter_cfg, "exam_scorer_type": cfg.exam_scorer_type,
                   "exam_scorer_cfg": cfg.exam_scorer_cfg, "split": split, "limit": limit,
                   "weights": fingerprint(_model_of(entry))}
        store = RunStore(out / name, run_cfg)
        # No response cache: a checkpoint retrained in place keeps its path, so cached answers would be stale
        # (the run store resumes an interrupted evaluation instead).
        with ModelPool(cache=False, num_retries=cfg.num_retries, log_dir=str(out / name)) as pool:
            greedy = build_teacher(mcfg, pool, parts.adapter, greedy=True)
            jobs = [Job(k, (lambda q=p["question"]: greedy.sample(q, 0)), finish(p)) for k, p in zip(keys, problems)]
            rep = run_jobs(store, "greedy", jobs, cfg.concurrency, f"greedy ({name})", progress)
            calls.add(f"greedy ({name})", rep.ran + rep.failed, failed=rep.failed,
                      error=rep.errors[0] if rep.errors else None)
        store.close()
        recs = store.load("greedy")
        results[name] = {"entry": entry, "scores": {k: correct(recs[k]) for k in keys if k in recs},
                         "answers": OutputCounts.of(recs.values()).as_dict()}
    summary = summarize_eval(results, keys, problems, seed=cfg.seed, resamples=getattr(cfg, "bootstrap_resamples", None))
    summary.update({"kind": "m2-eval", "split": split, "limit": limit, "failed_calls": calls.failed,
                    "calls": calls.snapshot(),
                    "dataset": {"dataset_type": cfg.dataset_type, "dataset_cfg": cfg.dataset_cfg}})
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    write_eval_report(out, summary)
    return summary


def summarize_eval_dir(out: str | Path) -> dict:
    """The summary of an `lbt m2 eval` directory recomputed from each model's ``greedy.jsonl`` (the models,
    their order, the split and the bootstrap settings as the run saved them); reads only."""
    from ..records import correct
    from ..store import RunStore

    out = Path(out)
    try:
        saved = json.loads((out / "eval_summary.json").read_text(encoding="utf-8"))
        names, n = [r["model"] for r in saved["rows"]], int(saved["num_problems"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LbtError(f"{out / 'eval_summary.json'}: unreadable ({exc}); rerun `lbt m2 eval` with the same "
                       "arguments") from None
    keys = [f"p{i:04d}" for i in range(n)]
    results, questions = {}, {}
    for name in names:
        store = RunStore(out / name)
        recs = store.load("greedy")
        questions.update({k: recs[k]["question"] for k in keys if k in recs})
        results[name] = {"entry": store.read_config()["model"],
                         "scores": {k: correct(recs[k]) for k in keys if k in recs},
                         "answers": OutputCounts.of(recs.values()).as_dict()}
    summary = summarize_eval(results, keys, [{"question": questions.get(k, "")} for k in keys],
                             seed=saved.get("seed", 0), resamples=saved.get("resamples"))
    summary.update({k: saved.get(k) for k in ("kind", "split", "limit", "failed_calls", "calls", "dataset")})
    return summary


def write_eval_report(out: str | Path, summary: dict) -> Path:
    """report.md and accuracy_by_model.png of an `lbt m2 eval` directory; returns report.md's path."""
    out = Path(out)
    draw_accuracy(summary, out / "accuracy_by_model.png")
    (out / "report.md").write_text(eval_report(summary), encoding="utf-8")
    return out / "report.md"


def draw_accuracy(summary: dict, path: Path) -> None:
    """Greedy accuracy per model with its 95% bootstrap interval over problems, as a bar chart."""
    from ..plotting import bars_with_intervals, figure, save
    from ..stats import Interval

    rows = summary["rows"]
    ivs = [Interval(r["accuracy"], r["ci95"][0], r["ci95"][1], r["n"]) for r in rows]
    fig, ax = figure(max(4.0, 1.4 * len(rows) + 1), 4)
    bars_with_intervals(ax, [r["model"] for r in rows], ivs, color=[f"C{i}" for i in range(len(rows))])
    ax.set_ylabel("greedy accuracy (%), 95% bootstrap CI")
    ax.set_ylim(0, 100)
    ax.set_title(f"M2: greedy accuracy on {summary['num_problems']} problems")
    save(fig, path)


def summarize_eval(results: dict, keys: list[str], problems: list[dict], seed: int = 0,
                   resamples: int | None = None) -> dict:
    """Accuracy with its 95% bootstrap interval over problems, wins/losses against the first model (the
    base), and the paired bootstrap interval of every model pair's difference (tuned - base, and tuned -
    tuned: e.g. LbT-DPO - correctness-DPO), all seeded."""
    from .. import stats
    from ..results import PairedComparison

    resamples = resamples or stats.RESAMPLES
    first = next(iter(results))
    rows = []
    qs = [p["question"] for p in problems]
    for name, r in results.items():
        sc = r["scores"]
        n = len(sc)
        k = sum(sc.values())
        iv = stats.bootstrap_mean([sc[x] for x in keys if x in sc], resamples=resamples, seed=seed)
        row = {"model": name, "checkpoint": _model_of(r["entry"]), "correct": k, "n": n,
               "accuracy": k / n if n else 0.0, "ci95": [iv.low, iv.high] if n else [0.0, 0.0]}
        if name != first:
            base = results[first]["scores"]
            both = [x for x in keys if x in sc and x in base]
            row["vs_base"] = {"wins": sum(1 for x in both if sc[x] > base[x]),
                              "losses": sum(1 for x in both if sc[x] < base[x]), "paired": len(both)}
            seen = training_questions(row["checkpoint"])
            if seen is not None:
                row["trained_on_eval_problems"] = sum(1 for q in qs if q in seen)
        rows.append(row)
    names = list(results)
    comparisons = []
    for i, a in enumerate(names):  # every later model against every earlier one: tuned - base, tuned - tuned
        for b in names[:i]:
            d = stats.paired_difference(results[a]["scores"], results[b]["scores"], resamples=resamples, seed=seed)
            comparisons.append(PairedComparison.of(a, b, d).to_dict())
    answers = {f"greedy: {name}": r["answers"] for name, r in results.items() if r.get("answers")}
    return {"num_problems": len(keys), "reference_model": first, "rows": rows, "comparisons": comparisons,
            "seed": seed, "resamples": resamples, "answers": answers}


def _model_of(entry: dict) -> str:
    cfg = entry.get("model_cfg") or {}
    if entry.get("model_type") == "embedded":
        if cfg.get("checkpoint"):
            return cfg["checkpoint"]
        from ..models.embedded import checkpoint_path

        return str(checkpoint_path())
    return str(cfg.get("model", ""))


def eval_table(summary: dict) -> str:
    """The markdown table."""
    ref = summary["reference_model"]
    lines = [f"| model ({summary['num_problems']} problems) | greedy accuracy | 95% CI | vs {ref} (+wins / -losses) | "
             "checkpoint |", "|---|---|---|---|---|"]
    for r in summary["rows"]:
        vs = r.get("vs_base")
        cell = f"+{vs['wins']} / -{vs['losses']}" if vs else "-"
        lo, hi = r["ci95"]
        lines.append(f"| {r['model']} | {100 * r['accuracy']:.1f}% ({r['correct']:g}/{r['n']}) | "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}] | {cell} | `{r['checkpoint']}` |")
    return "\n".join(lines) + "\n"


def comparison_table(summary: dict) -> str:
    """Paired differences of greedy accuracy: a - b over the problems both answered, with its interval
    (`lbt_dspy.tables.comparison_table`)."""
    from ..results import PairedComparison
    from ..tables import comparison_table as render

    return render([PairedComparison.from_dict(c) for c in summary.get("comparisons", [])],
                  f"comparison ({summary['num_problems']} problems)")


def console_text(summary: dict) -> str:
    """What `lbt m2 eval`, `lbt report` and `lbt select` print: accuracies with intervals, then the paired
    comparisons (tuned vs base, LbT-DPO vs correctness-DPO) when there are any."""
    text = eval_table(summary)
    if summary.get("comparisons"):
        text += "\n" + comparison_table(summary)
    if summary.get("answers"):
        text += "\n" + output_table(summary["answers"]) + "\n"
    return text


def eval_report(summary: dict) -> str:
    ds = summary["dataset"]
    notes = []
    for r in summary["rows"]:
        if r.get("trained_on_eval_problems"):
            notes.append(f"- {r['model']}: {r['trained_on_eval_problems']} of the {summary['num_problems']} eval "
                         "problems were among its training pairs' problems (not held out).")
        elif "trained_on_eval_problems" in r:
            notes.append(f"- {r['model']}: none of the eval problems were among its training problems.")
    if summary.get("failed_calls"):
        notes.append(f"- {summary['failed_calls']} call(s) failed and are missing; rerun the command to retry.")
    return (f"# M2 evaluation: greedy accuracy, base vs tuned\n\n"
            f"{summary['num_problems']} problems: dataset `{ds['dataset_type']}` {json.dumps(ds['dataset_cfg'])}, "
            f"split `{summary['split']}`" + (f", first {summary['limit']}" if summary.get("limit") else "") +
            ". Greedy decoding (the config's greedy_sample_cfg), the config's prompt format and scorer.\n\n"
            + eval_table(summary) + ("\n" + "\n".join(notes) + "\n" if notes else "")
            + (f"\n## Paired comparisons\n\n" + comparison_table(summary) if summary.get("comparisons") else "")
            + ("\n" + answers_section(summary["answers"]) if summary.get("answers") else "")
            + f"\nIntervals: 95% percentile bootstrap over the {summary['num_problems']} problems "
            f"({summary.get('resamples', 2000)} resamples, seed {summary.get('seed', 0)}); differences are paired "
            "(the same resampled problems for both models). wins / losses / ties: problems where the first model is "
            "right and the second wrong / the reverse / both the same.\n"
            + "\n![accuracy by model](accuracy_by_model.png)\n")
