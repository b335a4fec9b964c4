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


def scripted_answer(prompt: str) -> str:
    """Solve the last arithmetic question right or off by one, decided by a hash of the whole prompt."""
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


class FakeOpenAI:
    """Run with `with FakeOpenAI(delay=0.01) as srv: srv.api_base`.

    Args:
        delay: Seconds each request sleeps before answering.
        faults: A list consumed one per request: None (answer), an int HTTP status, "timeout" (sleep
            long), "truncated" (cut JSON), "empty" (no choices), "drop" (close the connection).
        retry_after: Retry-After header value sent with 429s.
    """

    def __init__(self, delay: float = 0.0, faults: list | None = None, retry_after: str | None = None):
        self.delay = delay
        self.faults = list(faults or [])
        self.retry_after = retry_after
        self.requests: list[dict] = []
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
                    choice = {"index": 0, "text": scripted_answer(prompt), "finish_reason": "stop"}
                else:
                    prompt = "\n".join(m.get("content") or "" for m in body.get("messages", []))
                    choice = {"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": scripted_answer(prompt)}}
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

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
