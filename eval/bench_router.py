"""Why `lbt_dspy.models.router.RoutedEngine` and not litellm's ``Router``: client CPU per routed call.

Two local scripted OpenAI-compatible servers (the test suite's `tests/fake_openai.py`, answering at
once) serve one model. The same short requests are routed over both, sequentially, by

  (a) litellm's ``Router`` (routing_strategy "least-busy"): ``atext_completion`` (the path the embedded
      and vLLM models use: the chat template rendered by the client) and ``completion`` (chat);
  (b) lbt's ``RoutedEngine`` under a ``dspy.LM`` (DSPy's own call overhead included, cache off), with
      the ``completions`` and ``chat`` prefill modes.

Printed: CPU milliseconds per call of this process (the scripted servers' threads run in it too, so
both sides carry the same small server cost) and the ratio a/b. The completions path renders the chat
template with the embedded model's tokenizer (converted once, as for `make demo`).
On a machine whose cores also run the model, client CPU is taken from generation.

Usage: python eval/bench_router.py [-n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402

from lbt_dspy.models.embedded import checkpoint_path  # noqa: E402
from lbt_dspy.models.router import RoutedEngine  # noqa: E402

PROMPT = "Lily has 5 pens. Lily buys 3 more pens. How many pens does Lily have now?"


def cpu_per_call(fn, n: int) -> float:
    for _ in range(5):  # warm-up: imports, connection pools, tokenizer
        fn()
    t = time.process_time()
    for _ in range(n):
        fn()
    return 1000 * (time.process_time() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=300, help="calls per row")
    args = ap.parse_args()
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    from litellm import Router

    with FakeOpenAI() as a, FakeOpenAI() as b:
        bases = [a.api_base, b.api_base]
        router = Router(model_list=[{"model_name": "fake", "litellm_params": {
            "model": "openai/fake", "api_base": base, "api_key": "x"}} for base in bases],
            routing_strategy="least-busy", num_retries=0)
        loop = asyncio.new_event_loop()  # Router.text_completion (sync) fails on litellm 1.110: "LLM Provider
        # NOT provided"; its async twin works, driven here by one persistent loop
        rows = {
            "(a) litellm Router.atext_completion": lambda: loop.run_until_complete(router.atext_completion(
                model="fake", prompt=PROMPT, max_tokens=16)),
            "(a) litellm Router.completion (chat)": lambda: router.completion(
                model="fake", messages=[{"role": "user", "content": PROMPT}], max_tokens=16),
        }
        for mode in ("completions", "chat"):
            engine = RoutedEngine("fake", bases, api_key="x", prefill=mode,
                                  tokenizer=None if mode == "chat" else str(checkpoint_path()))
            lm = dspy.LM("openai/fake", engine=engine, cache=False, num_retries=0, max_tokens=16)
            rows[f"(b) lbt RoutedEngine under dspy.LM ({mode})"] = (
                lambda lm=lm: lm(PROMPT))
        results = {}
        for name, fn in rows.items():
            try:
                results[name] = cpu_per_call(fn, args.n)
                print(f"{name:48s} {results[name]:8.2f} ms CPU per call")
            except Exception as exc:  # a row that cannot run on this setup is reported, not hidden
                print(f"{name:48s} failed: {type(exc).__name__}: {str(exc)[:200]}")
        served = (len(a.requests), len(b.requests))
    print(f"requests per server: {served[0]} / {served[1]}")
    pairs = [("(a) litellm Router.atext_completion", "(b) lbt RoutedEngine under dspy.LM (completions)"),
             ("(a) litellm Router.completion (chat)", "(b) lbt RoutedEngine under dspy.LM (chat)")]
    for x, y in pairs:
        if x in results and y in results:
            print(f"ratio litellm / lbt, {y.split('(')[-1][:-1]} path: {results[x] / results[y]:.1f}x")


if __name__ == "__main__":
    main()
