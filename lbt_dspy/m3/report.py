"""report.md, summary.json and PNGs of an `lbt m3` run directory (F1 per round, baselines, LM calls)."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

from ..errors import LbtError
from ..model_output import answers_section, output_table
from ..results import M3Round, PairedComparison
from ..store import RunStore
from ..tables import comparison_table
from .formats import YES, render_examples
from .metrics import summary as metric_summary

ROLE_COLUMNS = [("teacher_write", "teacher writes"), ("teacher_reflect", "teacher reflections"),
                ("student_exam", "student exams"), ("score", "scoring")]


def summarize(run_dir: str | Path) -> dict:
    """Everything the report shows, from the run directory's records."""
    store = RunStore(run_dir)
    cfg = store.read_config()
    data_file = store.path / "data.json"
    if not data_file.exists():
        raise LbtError(f"{store.path}: not an m3 run directory (no data.json)")
    data = json.loads(data_file.read_text())
    rounds = store.load("rounds")
    evals = store.load("eval")
    configs: dict[str, dict] = {}
    for rec in rounds.values():
        c = configs.setdefault(rec["config"], {"students": rec["students"], "rounds": {}})
        r = rec["record"]
        ev = {k.rsplit("/", 1)[1]: v for k, v in evals.items() if k.startswith(f"{rec['config']}/{r['round']}/")}
        c["rounds"][r["round"]] = M3Round.from_record(r, ev).to_dict()
    baselines: dict[str, dict] = {}
    zero = [e for k, e in evals.items() if k.startswith("baseline/zero_shot/")]
    for e in zero:
        baselines.setdefault(e["evaluator"], {})["zero-shot"] = _metrics(e)
    draws: dict[str, list] = {}
    for k, e in evals.items():
        if k.startswith("baseline/random"):
            draws.setdefault(e["evaluator"], []).append(e)
    for ev, es in draws.items():
        baselines.setdefault(ev, {})[f"random K ({len(es)} draw{'s' if len(es) > 1 else ''})"] = {
            "f1": mean(e["f1"] for e in es), "accuracy": mean(e["accuracy"] for e in es),
            "n": es[0]["n"], "predicted_yes": mean(e["predicted_yes"] for e in es),
            "calls": sum(e.get("calls", 0) for e in es),
            "cached": sum(e["cached"] for e in es) if all("cached" in e for e in es) else "–"}
    labels = data.get("test_labels", [])
    const = metric_summary(labels, [YES] * len(labels))
    baselines.setdefault("teacher", {})["always Yes (no LM)"] = {**_metrics(const), "calls": 0, "cached": 0}
    answers = answer_counts(evals, rounds)
    runs = list(store.load("invocations").values())
    return {"config": cfg, "task": data["task"], "invocations": runs, "question": data["question"], "train_size": data["train_size"],
            "test_size": data["test_size"], "configs": configs, "baselines": baselines,
            "self_is_lbt": bool(data.get("self_is_lbt")), "evidence": evidence(evals, labels, configs, cfg),
            "answers": answers}


def answer_counts(evals: dict, rounds: dict) -> dict:
    """Unparsed and cut-off answers (`OutputCounts` fields) per method and evaluator on the test set, and per
    optimized configuration during its rounds (students' exams and the teacher's calls). Runs recorded before
    these counts existed have none."""
    rows: dict[str, dict] = {}

    def add(label, n, unparsed, cut_off, empty):
        row = rows.setdefault(label, {"n": 0, "unparsed": 0, "cut_off": 0, "empty": 0, "flagged": 0})
        row["n"] += n
        row["unparsed"] += unparsed
        row["cut_off"] += cut_off
        row["empty"] += empty
        row["flagged"] += n
    for e in evals.values():
        if "unparsed" not in e:
            continue
        method = e.get("baseline") or e.get("config") or "?"
        add(f"test: {method} ({e['evaluator']})", e["n"], e["unparsed"], e.get("cut_off", 0), e.get("empty", 0))
    for rec in rounds.values():
        c = rec["record"].get("calls", {})
        if "unparsed" in c:
            add(f"optimizing: {rec['config']} (students, teacher)", c["total"] - c.get("failed", 0), c["unparsed"],
                c.get("cut_off", 0), c.get("empty", 0))
    return rows


def _f1(labels, preds) -> float:  # the recorded metric, recomputed on resampled test items
    return metric_summary(labels, preds)["f1"]


def evidence(evals: dict, labels: list, configs: dict, cfg: dict) -> dict:
    """95% bootstrap intervals over test items of every teacher-classified test F1, and the paired bootstrap of
    each configuration's last round against round 0 and every baseline (wins / losses: items only one of
    the two classifies right). Needs the records' ``preds``; seeded by the config's seed."""
    from .. import stats

    seed, resamples = int(cfg.get("seed", 0)), int(cfg.get("bootstrap_resamples", stats.RESAMPLES))
    preds = {k.rsplit("/", 1)[0]: e["preds"] for k, e in evals.items()
             if e.get("evaluator") == "teacher" and isinstance(e.get("preds"), list) and len(e["preds"]) == len(labels)}
    if not preds or not labels:
        return {"n": len(labels), "intervals": {}, "comparisons": []}
    preds["always Yes"] = [YES] * len(labels)
    intervals = {k: stats.bootstrap_metric(_f1, labels, p, resamples=resamples, seed=seed).to_dict()
                 for k, p in preds.items()}
    refs = sorted(k for k in preds if k.startswith("baseline/") or k == "always Yes")
    comps = []
    for name, c in configs.items():
        last = max((r for r in c["rounds"] if f"{name}/{r}" in preds), default=None)
        if last is None:
            continue
        against = ([f"{name}/0"] if last > 0 and f"{name}/0" in preds else []) + refs
        for b in against:
            d = stats.paired_metric_difference(_f1, labels, preds[f"{name}/{last}"], preds[b], resamples=resamples,
                                               seed=seed)
            comps.append(PairedComparison.of(f"{name} round {last}", b.replace("baseline/", "").replace("/", " round "),
                                             d).to_dict())
    return {"n": len(labels), "seed": seed, "resamples": resamples, "intervals": intervals, "comparisons": comps}


def evidence_table(s: dict) -> str:
    """Markdown: the paired comparisons of `evidence` (test F1, the teacher classifies)."""
    ev = s.get("evidence") or {}
    return comparison_table([PairedComparison.from_dict(c) for c in ev.get("comparisons", [])],
                            f"comparison ({ev.get('n', 0)} test items)", differences=[("F1", "F1 difference (points)")],
                            paired=False)


def interval_table(s: dict) -> str:
    ev = s.get("evidence") or {}
    rows = [f"| test F1 of ({ev.get('n', 0)} test items) | F1 [95% CI] |", "|---|---|"]
    for k, iv in ev.get("intervals", {}).items():
        rows.append(f"| {k.replace('baseline/', '').replace('/', ' round ')} | "
                    f"{_pct(iv['estimate'])} [{_pct(iv['low'])}, {_pct(iv['high'])}] |")
    return "\n".join(rows) + "\n"


def console_text(s: dict) -> str:
    """What `lbt m3`, `lbt report` and `lbt select` print: test F1 per round, then test F1 with its 95% interval
    (the baselines and each round's best set), and the paired comparisons when there are any."""
    text = f1_table(s)
    ev = s.get("evidence") or {}
    if ev.get("intervals"):
        text += "\n" + interval_table(s)
    if ev.get("comparisons"):
        text += "\n" + evidence_table(s)
    if s.get("answers"):
        text += "\n" + output_table(s["answers"]) + "\n"
    return text


def _metrics(e: dict) -> dict:
    return {"f1": e["f1"], "accuracy": e["accuracy"], "n": e["n"], "predicted_yes": e.get("predicted_yes"),
            "calls": e.get("calls", 0), "cached": e.get("cached", "–")}


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def f1_table(s: dict, evaluator: str = "teacher") -> str:
    """Markdown: one row per configuration, test F1 (%) of the best set after each round."""
    n_rounds = max((max(c["rounds"]) for c in s["configs"].values() if c["rounds"]), default=-1) + 1
    answered = [rr["n_test"].get(evaluator) for c in s["configs"].values() for rr in c["rounds"].values()]
    n = max((v for v in answered if v), default=None)  # the problem count every table states
    head = (f"| configuration ({n} test items) | students | " if n else "| configuration | students | ")
    head += " | ".join(f"round {r}" for r in range(n_rounds)) + " |\n"
    head += "|---|---|" + "---|" * n_rounds + "\n"
    rows = []
    for name, c in s["configs"].items():
        cells = [_pct(c["rounds"].get(r, {}).get("f1", {}).get(evaluator)) for r in range(n_rounds)]
        label = name + (" (= self)" if name == "LbT" and s["self_is_lbt"] else "")
        rows.append(f"| {label} | {', '.join(c['students'])} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def baseline_table(s: dict, evaluator: str = "teacher") -> str:
    rows = ["| baseline | test F1 | accuracy | answered | predicted Yes | LM calls (from cache) |",
            "|---|---|---|---|---|---|"]
    for name, m in s["baselines"].get(evaluator, {}).items():
        py = m.get("predicted_yes")
        rows.append(f"| {name} | {_pct(m['f1'])} | {_pct(m['accuracy'])} | {m['n']} | "
                    f"{'–' if py is None else f'{py:g}'} | {m.get('calls', 0)} ({m.get('cached', '–')}) |")
    return "\n".join(rows) + "\n"


def calls_table(s: dict) -> str:
    rows = ["| configuration | round | " + " | ".join(h for _, h in ROLE_COLUMNS) +
            " | test eval | total | answered by cache | failed | seconds (optimizer) |",
            "|---|---|" + "---|" * (len(ROLE_COLUMNS) + 5)]
    for name, c in s["configs"].items():
        for r, rr in sorted(c["rounds"].items()):
            calls = rr["calls"]
            total = calls["total"] + rr["eval_calls"]
            cached = ("–" if "cached" not in calls or rr["eval_cached"] is None
                      else calls["cached"] + rr["eval_cached"])
            rows.append(f"| {name} | {r} | " + " | ".join(str(calls.get(k, 0)) for k, _ in ROLE_COLUMNS) +
                        f" | {rr['eval_calls']} | {total} | {cached} | {calls.get('failed', 0)} | {rr['seconds']} |")
    return "\n".join(rows) + "\n"


def search_table(s: dict) -> str:
    rows = ["| configuration | round | sets scored | new sets | duplicates dropped | unparsed rewrites | "
            "reflections (reasons) | failures per student | beam train scores |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, c in s["configs"].items():
        for r, rr in sorted(c["rounds"].items()):
            d = rr["dropped"]
            fails = ", ".join(f"{k}: {v}" for k, v in rr["failures"].items()) or "–"
            scores = ", ".join("–" if x is None else f"{x:.3f}" for x in rr["beam_scores"])
            rows.append(f"| {name} | {r} | {rr['candidates']} | {rr['new_sets']} | {d.get('duplicates', 0)} | "
                        f"{d.get('unparsed', 0)} | {rr['reflections']} ({rr['reasons']}) | {fails} | {scores} |")
    return "\n".join(rows) + "\n"


def write_report(run_dir: str | Path, s: dict | None = None) -> Path:
    """Write report.md, summary.json and the F1-vs-round PNGs; returns report.md's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    s = s or summarize(run_dir)
    store = RunStore(run_dir)
    store.write_json("summary.json", s)
    cfg = s["config"]
    figures = []
    base = s["baselines"].get("teacher", {})

    def plot(names: list[str], file: str, title: str) -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in names:
            rs = sorted(s["configs"][name]["rounds"].items())
            pts = [(r, 100 * rr["f1"]["teacher"]) for r, rr in rs if "teacher" in rr["f1"]]
            if pts:
                ivs = (s.get("evidence") or {}).get("intervals", {})
                err = [[p[1] - 100 * ivs[f"{name}/{p[0]}"]["low"] if f"{name}/{p[0]}" in ivs else 0 for p in pts],
                       [100 * ivs[f"{name}/{p[0]}"]["high"] - p[1] if f"{name}/{p[0]}" in ivs else 0 for p in pts]]
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=err, marker="o", capsize=4, label=name)
        for (bname, m), style in zip(base.items(), ("--", ":", "-.", "--")):
            ax.axhline(100 * m["f1"], linestyle=style, color="gray", linewidth=1)
            ax.annotate(bname, (0, 100 * m["f1"]), fontsize=7, color="gray", va="bottom")
        ax.set_xlabel("round")
        ax.set_ylabel("test F1 (%), teacher classifies; 95% CI")
        ax.set_title(title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(run_dir / file, dpi=120)
        plt.close(fig)
        figures.append(file)

    names = list(s["configs"])
    if names:
        plot(names, "f1_vs_round.png", f"M3 on {s['task']}: F1 of the best set per round")
        for name in names:
            plot([name], f"f1_vs_round_{name}.png", f"M3 on {s['task']} ({name})")

    lines = [f"# M3 report: {s['task']}", ""]
    if cfg.get("description"):
        lines += [cfg["description"], ""]
    teacher = cfg["teacher_model_cfg"]
    lines += [
        f"- question: {s['question']}",
        f"- teacher: `{json.dumps(teacher)}`; students: "
        + ", ".join(f"`{json.dumps(e)}`" for e in cfg["student_model_cfgs"]),
        f"- K = {cfg['num_examples']}, init `{cfg['init_method']}`, rounds {cfg['rounds']}, beam {cfg['beam_size']}, "
        f"minibatch {cfg['minibatch_size']}, reflections/set {cfg['reflections_per_set']}, failures/reflection "
        f"{cfg['failures_per_reflection']}, reasons/reflection {cfg['reasons_per_reflection']}, expansion "
        f"{cfg['expansion_factor']}, dedupe {cfg['dedupe']}, scorer `{cfg['scorer']}` ({cfg['score_metric']}, "
        f"sample {cfg['score_sample_size'] or 'eval_budget/#candidates'}), seed {cfg['seed']}",
        f"- training pool {s['train_size']} texts, test {s['test_size']} texts",
    ]
    if s["self_is_lbt"]:
        lines.append("- the only student is the teacher itself (same model and settings), so the LbT run *is* the "
                     "self-reflection (APO-style) baseline; it was not run twice")
    lines += ["", "## Test F1 (%) of the best example set after each round (the teacher classifies, as in the paper)",
              "", f1_table(s)]
    students = sorted({ev for c in s["configs"].values() for rr in c["rounds"].values() for ev in rr["f1"]}
                      - {"teacher"})
    for ev in students:
        lines += [f"Test F1 (%) when student `{ev}` classifies:", "", f1_table(s, ev)]
    if (s.get("evidence") or {}).get("comparisons"):
        ev = s["evidence"]
        lines += [f"## Optimizer vs baselines: paired intervals ({ev['n']} test items, the teacher classifies)", "",
                  f"Test F1 with its 95% percentile bootstrap interval over the {ev['n']} test items ({ev['resamples']} "
                  f"resamples, seed {ev['seed']}); differences are paired (the same resampled items for both). "
                  "wins / losses / ties: items only the first / only the second / both or neither classify right.", "",
                  evidence_table(s), "", interval_table(s)]
    lines += ["## Baselines (test, the teacher classifies)", "", baseline_table(s)]
    for ev in students:
        if ev in s["baselines"]:
            lines += [f"Student `{ev}`:", "", baseline_table(s, ev)]
    lines += ["## LM calls per round", "",
              "Calls the optimizer needed per round and the test evaluation of the round's best set needed; "
              "\"answered by cache\" counts those answered without a request: by DSPy's cache (repeated prompts) "
              "or by the run's records (the calls a resumed run replays).", "", calls_table(s),
              "## Search per round", "", search_table(s)]
    if s.get("invocations"):
        lines += ["## Invocations of `lbt m3` on this directory", "",
                  "Only invocations that finished are listed; LM calls are the requests each made (those of runs "
                  "recorded before per-call records also count the calls answered by cache).", "",
                  "| started | wall time (s) | LM calls, optimizer | LM calls, test evaluation | answered by cache | "
                  "failed |", "|---|---|---|---|---|---|"]
        lines += [f"| {x['started']} | {x['seconds']} | {x['optimize']} | {x['eval']} | {x.get('cached', '–')} | "
                  f"{x['failed']} |" for x in s["invocations"]]
        lines.append("")
    for name, c in s["configs"].items():
        if c["rounds"]:
            last = max(c["rounds"])
            lines += [f"## Best example set ({name}, round {last})", "", "```",
                      render_examples(c["rounds"][last]["best_demos"]), "```", ""]
    if s.get("answers"):
        lines += [answers_section(s["answers"])]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return store.write_text("report.md", "\n".join(lines))
