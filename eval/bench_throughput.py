"""P1: does `lbt m1`'s exam stage keep the inference server as busy as a plain client can?

The same exam prompts (the demo's arithmetic task; each TR-TA pair's exams sent together, so the
server's prefix cache sees the shared demo) are sent

  (a) straight to the server with the plain `openai` client from a thread pool, at the best
      concurrency found by a short sweep, and
  (b) through `run_m1`'s exam stage (DSPy Predict + adapter + engine + runner + scoring + store; the
      run directory is pre-filled with TR-TA pairs, so only the exam stage runs; DSPy cache off),

and the generated tokens/s of each are printed with the ratio b/a. Passes run in cycles a, b, b, a, so
that drift on a shared machine (and a warm prefix cache) favours neither; each cycle gives a ratio and
the median over cycles is the result. Target: b/a >= 0.90.

By default a vLLM server of the embedded model (`VLLMServer`) is started and stopped here; ``--api-base``
points at a running server instead (``--prefill continue`` for chat with continue_final_message,
``completions`` for raw prompts).

Usage:
    python eval/bench_throughput.py [--families 8 --pairs 4] [--concurrency 8,16,32]
    python eval/bench_throughput.py --api-base http://gpu:8000/v1 --model meta-llama/Meta-Llama-3-8B-Instruct \
        --prefill continue --families 60 --pairs 8 --concurrency 64,128,256
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("BENCH_API_KEY", "EMPTY")

import dspy  # noqa: E402
import openai  # noqa: E402
import yaml  # noqa: E402

from lbt_dspy.components import build_components  # noqa: E402
from lbt_dspy.config import M1Config  # noqa: E402
from lbt_dspy.m1 import run_m1, tp_key  # noqa: E402
from lbt_dspy.models import OpenAICompatEngine, normalize_sample_cfg  # noqa: E402
from lbt_dspy.models.engine import _tokenizer  # noqa: E402
from lbt_dspy.signatures import SolveProblem  # noqa: E402
from lbt_dspy.store import RunStore  # noqa: E402


class TokenCounter:
    """Generated tokens: the server's usage count, else the tokenizer's count of the text; and the span
    from the first request sent to the last answer received."""

    def __init__(self, tokenizer_name: str | None):
        self.tokenizer_name = tokenizer_name
        self.tokens = 0
        self.requests = 0
        self.first = self.last = None
        self.lock = threading.Lock()

    def started(self) -> None:
        with self.lock:
            if self.first is None:
                self.first = time.perf_counter()

    def add(self, usage_tokens, text: str) -> None:
        n = usage_tokens
        if not n:
            n = len(_tokenizer(self.tokenizer_name)[0](text or "", add_special_tokens=False)["input_ids"])
        with self.lock:
            self.tokens += n
            self.requests += 1
            self.last = time.perf_counter()

    def reset(self) -> None:
        self.tokens = self.requests = 0
        self.first = self.last = None

    @property
    def span(self) -> float:
        return self.last - self.first


def make_config(args, model: str, api_base: str) -> dict:
    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    model_cfg = {"model": model, "api_base": api_base, "api_key_env": "BENCH_API_KEY", "prefill": args.prefill,
                 "tokenizer": args.tokenizer or model, "timeout": 600}
    entry = {"model_type": "openai", "model_cfg": model_cfg}
    cfg.update(teacher_model_cfg=entry, student_model_cfgs=[entry], cache=False, num_retries=2,
               num_pairs=args.pairs, dataset_cfg={"num_families": args.families, "num_variants": 3, "seed": 0},
               exam_maker_cfg={"num_exam_questions": 3, "num_repetitions": 1})
    cfg["general_student_sample_cfg"] = {**cfg["general_student_sample_cfg"], "max_new_tokens": args.max_tokens}
    return cfg


def prefill_run_dir(cfg: M1Config, path: Path) -> None:
    """A run directory whose greedy and teach stages are done (TR-TA pairs written, no LM call)."""
    parts = build_components(cfg)
    store = RunStore(path, cfg.to_dict())
    for n, tp in enumerate(parts.data.teaching):
        k = tp_key(tp, n)
        store.append("greedy", {"key": k, "tp": k, "rationale": "", "answer": tp["answer"], "score": 1.0})
        for i in range(cfg.num_pairs):
            rationale = f"Pair {i}: read the numbers, apply the operation, check the result: {tp['answer']}."
            store.append("teach", {"key": f"{k}/{i}", "tp": k, "pair": i, "rationale": rationale,
                                   "answer": tp["answer"], "score": 1.0})
    store.close()


def exam_requests(cfg: M1Config, engine: OpenAICompatEngine) -> list[dict]:
    """The exam stage's requests, in its order (pair by pair), as the engine would send them."""
    parts = build_components(cfg)
    exams = {tp_key(tp, n): parts.exam_maker.make_exam_questions([tp]) for n, tp in enumerate(parts.data.teaching)}
    out = []
    for n, tp in enumerate(parts.data.teaching):
        k = tp_key(tp, n)
        for i in range(cfg.num_pairs):
            rationale = f"Pair {i}: read the numbers, apply the operation, check the result: {tp['answer']}."
            demo = dspy.Example(question=tp["question"], rationale=rationale, answer=tp["answer"])
            for ep in exams[k]:
                msgs = parts.adapter.format(SolveProblem, [demo], {"question": ep["question"]})
                if engine.prefill == "completions":
                    out.append({"prompt": engine.render_prompt(msgs)})
                elif engine.prefill == "continue" and msgs[-1]["role"] == "assistant":
                    out.append({"messages": msgs, "extra_body": {"continue_final_message": True,
                                                                  "add_generation_prompt": False}})
                else:
                    out.append({"messages": msgs[:-1] if msgs[-1]["role"] == "assistant" else msgs})
    return out


def plain_pass(client, model: str, requests: list[dict], params: dict, concurrency: int, counter: TokenCounter):
    def send(req):
        counter.started()
        if "prompt" in req:
            r = client.completions.create(model=model, prompt=req["prompt"], **params)
            text = r.choices[0].text
        else:
            r = client.chat.completions.create(model=model, messages=req["messages"],
                                               extra_body=req.get("extra_body"), **params)
            text = r.choices[0].message.content
        counter.add(getattr(r.usage, "completion_tokens", None) if r.usage else None, text)

    counter.reset()
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(send, requests))
    wall = time.perf_counter() - t
    return counter.tokens / wall, wall, counter.tokens, counter.span


def lbt_pass(cfg_dict: dict, concurrency: int, counter: TokenCounter):
    cfg = M1Config.from_dict({**cfg_dict, "concurrency": concurrency})
    with tempfile.TemporaryDirectory() as tmp:
        prefill_run_dir(cfg, Path(tmp) / "run")
        counter.reset()
        t = time.perf_counter()
        calls = run_m1(cfg, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - t
    if calls["failed"] or calls["teach"] or calls["greedy"]:
        raise SystemExit(f"unexpected calls: {calls}")
    return counter.span and counter.tokens / counter.span, wall, counter.tokens, counter.span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api-base", help="a running OpenAI-compatible server (default: start the embedded one)")
    ap.add_argument("--model", help="model name the server expects (default: the embedded checkpoint)")
    ap.add_argument("--tokenizer", help="tokenizer for the completions prefill (default: --model)")
    ap.add_argument("--prefill", default="completions", choices=["completions", "continue", "chat"])
    ap.add_argument("--families", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", default="8,16,32", help="plain-client concurrencies to sweep")
    ap.add_argument("--sweep-requests", type=int, default=48, help="requests per sweep point")
    ap.add_argument("--cycles", type=int, default=3,
                    help="a-b-b-a cycles; each gives a ratio from neighbouring passes (robust to drift), median printed")
    args = ap.parse_args()
    import logging

    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)  # truncated answers are normal here

    server = None
    if args.api_base is None:
        from lbt_dspy.models import VLLMServer, checkpoint_path

        args.model = str(checkpoint_path())
        server = VLLMServer(args.model).start()
        args.api_base = server.api_base
    try:
        cfg_dict = make_config(args, args.model, args.api_base)
        cfg = M1Config.from_dict(cfg_dict)
        engine = OpenAICompatEngine(args.model, api_base=args.api_base, prefill=args.prefill,
                                    tokenizer=args.tokenizer or args.model)
        requests = exam_requests(cfg, engine)
        params = normalize_sample_cfg(cfg.general_student_sample_cfg, "bench")
        params.pop("top_k", None)  # not sent to OpenAI-type entries (send_top_k off)
        client = openai.OpenAI(base_url=args.api_base, api_key=os.environ["BENCH_API_KEY"], max_retries=0,
                               timeout=600)
        counter = TokenCounter(args.tokenizer or args.model)
        # (b) counts the tokens of each response its engine returns, by the same rule as (a)
        plain_complete = OpenAICompatEngine.complete

        def counted(self, request):
            counter.started()
            resp = plain_complete(self, request)
            counter.add(resp.usage.output_tokens if resp.usage else None, resp.message.text)
            return resp
        OpenAICompatEngine.complete = counted
        sent: list[str] = []  # (b)'s raw prompts, to check that (a) sends the very same ones
        plain_render = OpenAICompatEngine.render_prompt

        def recorded_render(self, messages):
            prompt = plain_render(self, messages)
            sent.append(prompt)
            return prompt
        OpenAICompatEngine.render_prompt = recorded_render

        print(f"server {args.api_base} ({'embedded, started here' if server else 'external'}), prefill {args.prefill}")
        print(f"{len(requests)} exam requests ({args.families} problems x {args.pairs} pairs x 3 exam problems), "
              f"max_tokens {args.max_tokens}, sampling {params}")
        plain_pass(client, args.model, requests[:8], params, 8, counter)  # warm-up (first-request settings)
        best, best_c = 0.0, None
        for c in [int(x) for x in args.concurrency.split(",")]:
            tps = plain_pass(client, args.model, requests[:args.sweep_requests], params, c, counter)[0]
            print(f"  sweep: plain client, concurrency {c:4d}: {tps:8.1f} tok/s")
            if tps > best:
                best, best_c = tps, c
        print(f"best plain-client concurrency: {best_c}; lbt runs its exam stage with concurrency {best_c}\n")
        rows = {"a": [], "b": []}
        cycles = []
        for cycle in range(args.cycles):
            got = {"a": [], "b": []}
            for which in ("a", "b", "b", "a"):
                if which == "a":
                    res = plain_pass(client, args.model, requests, params, best_c, counter)
                else:
                    res = lbt_pass(cfg_dict, best_c, counter)
                got[which].append(res)
                rows[which].append(res)
                label = "(a) plain openai client" if which == "a" else "(b) lbt m1 exam stage  "
                print(f"  cycle {cycle + 1} {label}: {res[2]:6d} tokens in {res[3]:7.2f} s = {res[0]:8.1f} tok/s"
                      + ("" if which == "a" else f"   (run_m1 call with setup: {res[1]:7.2f} s)"))
            ratio = (sum(r[2] for r in got["b"]) / sum(r[3] for r in got["b"])) / (
                sum(r[2] for r in got["a"]) / sum(r[3] for r in got["a"]))
            cycles.append(ratio)
            print(f"  cycle {cycle + 1}: b/a = {ratio:.3f}")
        if args.prefill == "completions":
            same = sorted(sent) == sorted([r["prompt"] for r in requests] * 2 * args.cycles)
            print(f"(a) and (b) sent the same prompts: {'yes' if same else 'NO'} "
                  f"({len(sent)} sent by (b), retries included; {2 * args.cycles * len(requests)} expected)")
        a = sum(r[2] for r in rows["a"]) / sum(r[3] for r in rows["a"])
        b = sum(r[2] for r in rows["b"]) / sum(r[3] for r in rows["b"])
        b_whole = sum(r[2] for r in rows["b"]) / sum(r[1] for r in rows["b"])
        med = statistics.median(cycles)
        print(f"\n(a) plain client: {a:.1f} tok/s   (b) lbt m1 exam stage: {b:.1f} tok/s   overall b/a = {b / a:.3f}")
        print(f"    counting run_m1's setup too (config, data, models, store): b/a = {b_whole / a:.3f}")
        print(f"ratio b/a per a-b-b-a cycle: {', '.join(f'{r:.3f}' for r in cycles)}; median {med:.3f} "
              f"(target >= 0.90: {'met' if med >= 0.9 else 'NOT met'})")
        OpenAICompatEngine.complete = plain_complete
        OpenAICompatEngine.render_prompt = plain_render
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
