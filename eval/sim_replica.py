"""Simulated vLLM replicas on loopback: a batch limit, a prefix cache, and sleep-based costs.

Each `SimReplica` is an OpenAI-compatible HTTP server (``/v1/completions``, ``/v1/chat/completions``,
``/metrics`` with vLLM's prefix-cache counters, ``/health``, ``/v1/models``) that behaves like one vLLM
replica as far as throughput goes:

- **a batch limit**: at most `capacity` requests run at once (vLLM's ``--max-num-seqs``); the rest wait in
  first-come-first-served order;
- **a prefix cache**: the prompt is cut into blocks of `block_tokens` tokens (a token is `chars_per_token`
  characters here, no tokenizer), each block hashed together with every block before it (as vLLM's
  automatic prefix caching does), and the blocks kept in an LRU of `cache_blocks`. A request's prefix is
  looked up when it is admitted to the batch: the leading blocks found are hits, the rest are computed and
  inserted;
- **costs**: a request holds its batch slot for ``prefill_s * uncached prompt tokens + decode_s *
  generated tokens`` seconds, slept (not computed), so the client's CPU, not the simulation's, is what the
  client pays for.

The answer is the test suite's scripted arithmetic answer (`tests/fake_openai.scripted_answer`), padded to
`gen_tokens` tokens with words that differ per sample, so a teacher's pairs have rationales of a realistic
length that differ from each other (each pair's exam prompts then share a demo of their own).

Run as a script it serves N replicas in one process and prints their ``api_base`` URLs as one JSON line
(the benchmark starts it so that the replicas' threads do not share the client's interpreter):

    python eval/sim_replica.py --replicas 4 --capacity 8

Example:
    >>> costs = ReplicaCosts(capacity=8, prefill_s=0.0005, decode_s=0.002)  # doctest: +SKIP
    >>> with SimReplicas(4, costs) as sim:  # doctest: +SKIP
    ...     sim.api_bases, sim.stats()
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_openai import scripted_answer  # noqa: E402


@dataclass(frozen=True)
class ReplicaCosts:
    """What one simulated replica can do, and what a request costs it.

    Args:
        capacity: Requests processed at once (vLLM's ``--max-num-seqs``); the rest are queued.
        prefill_s: Seconds per prompt token not found in the prefix cache.
        decode_s: Seconds per generated token.
        gen_tokens: Tokens generated per request (capped by the request's ``max_tokens``).
        cache_blocks: Blocks the prefix cache holds (LRU).
        block_tokens: Tokens per cache block (vLLM: 16).
        chars_per_token: Characters counted as one token.

    Example:
        >>> ReplicaCosts(capacity=8).service_s(uncached_tokens=100, gen_tokens=10)
        0.42
    """

    capacity: int = 8
    prefill_s: float = 0.003
    decode_s: float = 0.012
    gen_tokens: int = 96
    cache_blocks: int = 4096
    block_tokens: int = 16
    chars_per_token: int = 4

    def service_s(self, uncached_tokens: int, gen_tokens: int) -> float:
        """Seconds a request holds its batch slot."""
        return round(self.prefill_s * uncached_tokens + self.decode_s * gen_tokens, 9)


class PrefixCache:
    """An LRU of prompt-prefix blocks, each keyed by a hash of its text and of every block before it.

    Args:
        capacity: Blocks kept.
        block_chars: Characters per block.

    Example:
        >>> cache = PrefixCache(capacity=100, block_chars=4)
        >>> cache.admit("abcdefgh"), cache.admit("abcdefgX"), cache.admit("abcdefgh")
        (0, 1, 2)
    """

    def __init__(self, capacity: int, block_chars: int):
        self.capacity = capacity
        self.block_chars = block_chars
        self._blocks: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def hashes(self, prompt: str) -> list[int]:
        """The chained hashes of the prompt's full blocks (a partial last block is never cached)."""
        out, h, step = [], 0, self.block_chars
        for i in range(0, len(prompt) - step + 1, step):
            h = hash((h, prompt[i:i + step]))
            out.append(h)
        return out

    def admit(self, prompt: str) -> int:
        """Look up the prompt's leading blocks, then insert (or refresh) all of them; returns the blocks hit."""
        hashes = self.hashes(prompt)
        with self._lock:
            hit = 0
            for h in hashes:
                if h not in self._blocks:
                    break
                hit += 1
            for h in hashes:
                self._blocks[h] = None
                self._blocks.move_to_end(h)
            while len(self._blocks) > self.capacity:
                self._blocks.popitem(last=False)
        return hit


class BatchSlots:
    """At most `capacity` holders at once; the others wait in first-come-first-served order.

    Example:
        >>> slots = BatchSlots(1)
        >>> slots.acquire(); slots.release()
    """

    def __init__(self, capacity: int):
        self.free = capacity
        self._waiting: deque = deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            if self.free > 0 and not self._waiting:
                self.free -= 1
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the releaser hands its slot over

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self.free += 1

    @property
    def queued(self) -> int:
        return len(self._waiting)


_SAMPLES_LOCK = threading.Lock()


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


class SimReplica:
    """One simulated replica (see the module docstring); `stats()` gives its counters.

    Args:
        costs: Its batch limit, cache and costs.
        samples: A counter shared by the replicas of one run, so a prompt sampled again (a teacher's pairs) gets
            a different answer wherever it goes.
    """

    def __init__(self, costs: ReplicaCosts, samples: dict | None = None):
        self.costs = costs
        self.cache = PrefixCache(costs.cache_blocks, costs.block_tokens * costs.chars_per_token)
        self.slots = BatchSlots(costs.capacity)
        self.samples = samples if samples is not None else {}
        self.spans: list[tuple[float, float]] = []  # (admitted, done) wall-clock times of each request
        self.counts = {"requests": 0, "prompt_tokens": 0, "hit_tokens": 0, "busy_s": 0.0, "max_queued": 0,
                       "renders": 0}
        self._lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "SimReplica":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def stats(self) -> dict:
        with self._lock:
            return dict(self.counts)

    def answer(self, prompt: str, max_tokens: int | None) -> tuple[str, int, int]:
        """Serve one prompt: wait for a batch slot, look the prefix up, sleep its cost. Returns the text, the
        prompt tokens and the generated tokens."""
        c = self.costs
        with _SAMPLES_LOCK:  # the counter is shared by the replicas of a run
            nth = self.samples.get(prompt, 0)
            self.samples[prompt] = nth + 1
        with self._lock:
            self.counts["max_queued"] = max(self.counts["max_queued"], self.slots.queued + 1)
        gen = min(c.gen_tokens, max_tokens or c.gen_tokens)
        text = padded(scripted_answer(prompt, nth), gen * c.chars_per_token, f"{nth}#{prompt[-200:]}")
        tokens = len(prompt) // c.chars_per_token
        self.slots.acquire()
        try:
            start = time.time()
            hit = min(tokens, self.cache.admit(prompt) * c.block_tokens)
            cost = c.service_s(tokens - hit, gen)
            time.sleep(cost)
        finally:
            self.slots.release()
        with self._lock:
            self.spans.append((start, time.time()))
            self.counts["requests"] += 1
            self.counts["prompt_tokens"] += tokens
            self.counts["hit_tokens"] += hit
            self.counts["busy_s"] += cost
        return text, tokens, gen

    def _handler(self):
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real server

            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/metrics"):
                    s = replica.stats()
                    body = (f"vllm:prefix_cache_queries_total {s['prompt_tokens']}\n"
                            f"vllm:prefix_cache_hits_total {s['hit_tokens']}\n"
                            f"vllm:num_requests_running {replica.costs.capacity - replica.slots.free}\n"
                            f"vllm:num_requests_waiting {replica.slots.queued}\n")
                    self._send(200, body.encode(), "text/plain")
                elif self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "sim", "object": "model"}]})
                elif self.path.endswith("/stats") or self.path.endswith("/stats?spans=1"):
                    self._json(200, {**replica.stats(), **({"spans": list(replica.spans)} if "spans" in self.path
                                                            else {})})
                else:  # /health, /get_server_info, ...
                    self._json(200, {"status": "ok"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                chat = "prompt" not in body
                prompt = body.get("prompt") if not chat else render_chat(body.get("messages") or [])
                if isinstance(prompt, list):
                    prompt = prompt[0] if prompt else ""
                if self.path.rstrip("/").endswith("/render"):  # vLLM's render API (vllm-router's cache_aware asks)
                    with replica._lock:
                        replica.counts["renders"] += 1
                    self._json(200, {"request_id": "sim", "model": body.get("model"), "sampling_params": {},
                                     "token_ids": token_ids(str(prompt), replica.costs.chars_per_token)})
                    return
                text, tokens, gen = replica.answer(str(prompt), body.get("max_tokens"))
                if chat:
                    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                else:
                    choice = {"index": 0, "text": text, "finish_reason": "stop"}
                self._json(200, {"id": "sim", "object": "chat.completion" if chat else "text_completion",
                                 "created": 0, "model": body.get("model"), "choices": [choice],
                                 "usage": {"prompt_tokens": tokens, "completion_tokens": gen,
                                           "total_tokens": tokens + gen}})

            def _json(self, status, obj):
                self._send(status, json.dumps(obj).encode(), "application/json")

            def _send(self, status, raw, ctype):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler


def render_chat(messages: list[dict]) -> str:
    """A chat request as one prompt text (a stand-in for a chat template: role tags, then contents)."""
    return "".join(f"<|{m.get('role')}|>\n{m.get('content') or ''}\n" for m in messages)


def token_ids(prompt: str, chars_per_token: int) -> list[int]:
    """Stand-in token ids: one per `chars_per_token` characters (a hash of them), for the render API."""
    return [hash(prompt[i:i + chars_per_token]) & 0xFFFF for i in range(0, len(prompt), chars_per_token)] or [0]


_WORDS = ("so", "then", "we", "add", "take", "the", "count", "first", "next", "check", "result", "again",
          "numbers", "step", "each", "value", "carry", "total", "left", "right")


def padded(answer: str, chars: int, seed: str) -> str:
    """`answer` with reasoning words (chosen by `seed`) put before it, to about `chars` characters."""
    need = chars - len(answer)
    if need <= 0:
        return answer
    h = hashlib.sha256(seed.encode()).digest()
    words, i = [], 0
    while sum(len(w) + 1 for w in words) < need:
        words.append(_WORDS[h[i % len(h)] % len(_WORDS)])
        i += 1
        if i % len(h) == 0:
            h = hashlib.sha256(h).digest()
    return " ".join(words)[:need - 1] + " " + answer


class SimReplicas:
    """N `SimReplica`s in this process (a context manager); `api_bases` lists them.

    Args:
        n: How many replicas.
        costs: Each one's batch limit, cache and costs.
    """

    def __init__(self, n: int, costs: ReplicaCosts):
        samples: dict = {}
        self.replicas = [SimReplica(costs, samples) for _ in range(n)]

    @property
    def api_bases(self) -> list[str]:
        return [r.api_base for r in self.replicas]

    def stats(self) -> list[dict]:
        return [r.stats() for r in self.replicas]

    def __enter__(self) -> "SimReplicas":
        for r in self.replicas:
            r.start()
        return self

    def __exit__(self, *exc) -> None:
        for r in self.replicas:
            r.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--costs", default="{}", help="ReplicaCosts fields as JSON")
    args = ap.parse_args()
    costs = ReplicaCosts(**json.loads(args.costs))
    with SimReplicas(args.replicas, costs) as sim:
        print(json.dumps({"api_bases": sim.api_bases, "costs": asdict(costs)}), flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin


if __name__ == "__main__":
    main()
