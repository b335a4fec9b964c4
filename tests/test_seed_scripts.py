"""The seed's downstream scripts read `lbt exam`'s output unmodified and print what they print on the seed's
own output for the same model answers.

The seed's output (tests/fixtures/seed/seed_output, seed_numbers.json) was recorded by running the seed's own
scripts/exam.py and scripts/code_exam.py against the scripted server (make_seed_outputs.py); here `lbt exam`
runs the same configs against the same scripted server, and the seed's scripts (verbatim copies in
tests/fixtures/seed/scripts) run on both outputs in a subprocess. The configs get ``concurrency: 1``: the
scripted server varies its answer to a repeated prompt by arrival order, and the seed asks one at a time.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lbt_dspy.cli import main

SEED = Path(__file__).parent / "fixtures" / "seed"
sys.path.insert(0, str(SEED))
import scripted  # noqa: E402

NUMBERS = json.loads((SEED / "seed_numbers.json").read_text())


def seed_script(work: Path, script: str, *args) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SEED / "lib"), str(SEED / "lib" / "stubs")])}
    done = subprocess.run([sys.executable, str(SEED / "scripts" / script), *map(str, args)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def lbt_exam(tmp_path, rel, out, exam, teaching=None):
    cfg = yaml.safe_load((SEED / "config" / rel).read_text())
    cfg["concurrency"] = 1
    cfg_file = tmp_path / f"{Path(rel).stem}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    args = ["exam", str(cfg_file), "--output-path", str(out), "--exam-dataset-file", str(exam), "-q"]
    assert main(args + (["--teaching-dataset-file", str(teaching)] if teaching else [])) == 0


@pytest.fixture
def scripted_azure(fake_server, monkeypatch):
    import fake_openai

    monkeypatch.setattr(fake_openai, "scripted_answer", scripted.scripted_answer)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", fake_server.api_base.removesuffix("/v1"))
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "test-key")
    return fake_server


def _rows(path):
    from datasets import load_from_disk

    return load_from_disk(str(path)).to_list()


def test_math_prepare_teaching_dataset_and_search_rationale_print_the_seeds_numbers(tmp_path, scripted_azure):
    work = tmp_path / "lbt"
    split = work / "examples/datasets/math/math_splits/math200_r2s0"
    snapshots = work / "examples/datasets/math/snapshots"
    scripted.save(scripted.math_split(), split)
    scripted.save([dict(r) for r in scripted.MATH_SNAPSHOTS], snapshots)
    # Step 1 of the seed's README: TR-TA pairs from the teacher (no demo), then the teaching dataset
    lbt_exam(tmp_path, "math/chatgpt4o_trgen.yaml", work / "outputs/T/rationales/math200_r2s0", split)
    seed_script(work, "math/prepare_teaching_dataset.py", "--outputs", "outputs", "--teacher_exp", "T",
                "--teacher_name", "chatgpt4o", "--num_rationales", "2")
    # Step 2: every TR-TA pair teaches the student, who takes the exam of the TP's MATH() variants
    lbt_exam(tmp_path, "math/chatgpt4o-mini_exam.yaml", work / "outputs/S/T_exams/math200_r2s0", snapshots,
             teaching=work / "outputs/T/teaching/math200_r2s0")
    search = ["--outputs", "outputs", "--teacher_exp", "T", "--teacher_name", "chatgpt4o", "--student_exp", "S",
              "--student_name", "chatgpt4o-mini", "--num_rationales", "2"]
    printed = [ln for ln in seed_script(work, "math/search_rationale.py", *search).splitlines()
               if ln[:4] in ("MAJ:", "MAX:", "SUM:", "AVG:")]

    # the same script on the seed's own output
    seed_work = tmp_path / "seed"
    shutil.copytree(work / "examples", seed_work / "examples")
    shutil.copytree(SEED / "seed_output/math_outputs", seed_work / "outputs")
    seed_printed = [ln for ln in seed_script(seed_work, "math/search_rationale.py", *search).splitlines()
                    if ln[:4] in ("MAJ:", "MAX:", "SUM:", "AVG:")]
    assert seed_printed == NUMBERS["math_search_rationale"]
    assert printed == seed_printed and len(printed) == 4

    # and the outputs agree row for row: questions, references, whole rationales, answers, scores
    for sub in ("T/rationales/math200_r2s0", "T/teaching/math200_r2s0", "S/T_exams/math200_r2s0"):
        assert _rows(work / "outputs" / sub) == _rows(seed_work / "outputs" / sub), sub


def test_code_search_rationale_writes_the_seeds_visible_scores(tmp_path, scripted_azure):
    work = tmp_path / "lbt"
    scripted.save(scripted.code_bank(), work / "bank")
    lbt_exam(tmp_path, "code/chatgpt35_trgen.yaml", work / "trgen/bs-run/0", work / "bank")
    seed_script(work, "code/prepare_teaching_datasets.py", "--input", "trgen/bs-run", "--output", "teaching/bs-run",
                "--freq", "1")
    for m in range(len(scripted.code_bank())):
        lbt_exam(tmp_path, "code/chatgpt35_exam.yaml", work / f"exams/pipeline-1/{m}", work / "bank",
                 teaching=work / f"teaching/bs-run/{m}")
    seed_script(work, "code/search_rationale.py", "--input", "exams/pipeline-1")
    got = [json.loads(x) for x in (work / "exams/pipeline-1/results-visible.jsonl").read_text().splitlines()]

    seed_work = tmp_path / "seed"
    shutil.copytree(SEED / "seed_output/code_exams", seed_work / "exams")
    seed_script(seed_work, "code/search_rationale.py", "--input", "exams/pipeline-1")
    seed = [json.loads(x) for x in (seed_work / "exams/pipeline-1/results-visible.jsonl").read_text().splitlines()]
    assert seed == NUMBERS["code_results_visible"]
    assert got == seed
    assert {r["t_score"] for r in got} == {0.0, 1.0}  # a wrong teacher program scores 0, a right one 1

    # the one difference on purpose: the seed stored its extracted code with an import header (and, for a
    # failing program, an error comment) prepended; lbt stores the code as extracted
    seed_tr = _rows(SEED / "seed_output/code_trgen/bs-run/0")[0]["exam_details"]
    ours_tr = _rows(work / "trgen/bs-run/0")[0]["exam_details"]
    assert all("from typing import List\nfrom collections import Counter\n" in a[0]
               for a in next(iter(seed_tr.values()))["answers"])
    assert all(a[0].startswith("class Solution") for a in next(iter(ours_tr.values()))["answers"])
    assert next(iter(seed_tr.values()))["scores"] == next(iter(ours_tr.values()))["scores"]

    # rows agree with the seed's: task ids, questions, whole rationales and scores
    for m in range(len(scripted.code_bank())):
        ours, theirs = _rows(work / f"exams/pipeline-1/{m}"), _rows(seed_work / f"exams/pipeline-1/{m}")
        for a, b in zip(ours, theirs, strict=True):
            for key in ("exam_questions", "task_id", "exam_gt_answers", "scores"):
                assert a[key] == b[key], key
            drop = lambda items: [{k: v for k, v in it.items() if k != "answer"} for it in items]  # noqa: E731
            assert drop(a["teaching_items"]) == drop(b["teaching_items"])
            (name,) = a["exam_details"]
            for key in ("rationales", "scores"):
                assert a["exam_details"][name][key] == b["exam_details"][name][key], key
