"""Several endpoints of one model (data-parallel server replicas) behind one DSPy engine.

`RoutedEngine` keeps one `OpenAICompatEngine` per endpoint, so every request still takes the one
client path (same prefill modes, same error translation); it only chooses where a request goes:

- **affinity** (a request with a key): requests that share a prompt prefix carry one key (`affinity`: a TR-TA
  pair's demo for its exam problems; unset, the turns before the last user turn, a few-shot program's demos)
  and go to one replica, whose prefix cache then holds that prefix. A key's first request goes to the least
  loaded replica, its *home*; the key's later requests go home while it is live and has fewer than
  ``load_factor`` x the mean requests in flight (bounded loads), else to the least loaded, the key's new home.
  Loads count every `RoutedEngine` of the process (a run's teacher and students share the replicas' batches),
  and so do homes (both students of a pair meet its demo on one replica);
- **least loaded** (a request without a key, or ``routing="least_loaded"``): the live endpoint with the fewest
  requests in flight (ties rotate);
- **a dead endpoint is taken out**: after `allowed_fails` consecutive failures it cools down for
  `cooldown` seconds (doubling while it keeps failing, up to `max_cooldown`); then one request
  probes it, and a success puts it back in the rotation;
- **no request is lost**: a request whose endpoint could not be reached or dropped the connection
  (`TransportError`, `TimeoutError`) is sent at once to another live endpoint it has not tried;
  when none is left the error goes to DSPy, whose retries (with backoff) route it again.
- **all dead stops the run**: each endpoint's engine has its circuit breaker (`engine.CircuitBreaker`);
  an endpoint whose breaker is open fails over at once, and only when every endpoint's breaker is open
  does a request fail with `BackendDown` naming them all (not retried: the run stops).
  Server errors (5xx), rate limits and bad requests are not failed over: DSPy retries them as
  for a single endpoint.

Why not litellm's ``Router``: ``python eval/bench_router.py`` routes the same calls over two local
scripted servers. On this project's 2-core machine (litellm 1.110) the Router's synchronous
``text_completion`` — the ``/v1/completions`` path that the embedded and vLLM models use — fails
("LLM Provider NOT provided"); its async twin and ``completion`` (chat) cost 7-9 ms of client CPU per
call, against ~1.5 ms for this engine *including* DSPy's own call overhead (about 5x less). At the request
rates of a few vLLM replicas (hundreds per second) that difference is whole cores taken from the client.
"""

from __future__ import annotations

import collections
import contextvars
import hashlib
import itertools
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import dspy.lm15 as lm15_errors

from ..errors import BackendDown
from .engine import OpenAICompatEngine

# Errors after which the request certainly did not produce an answer on that endpoint.
FAILOVER_ERRORS = (lm15_errors.TransportError, lm15_errors.TimeoutError)
# Errors that count against an endpoint's health (a 4xx or a 429 says nothing about it being dead).
HEALTH_ERRORS = FAILOVER_ERRORS + (lm15_errors.ServerError,)


ROUTINGS = ("affinity", "least_loaded")

_AFFINITY: contextvars.ContextVar[str | None] = contextvars.ContextVar("lbt_affinity", default=None)


@contextmanager
def affinity(key: str | None):
    """LM calls made inside carry `key` (also the calls submitted from here to a `runner.CallPool`, which copies
    the submitter's context): a `RoutedEngine` sends the requests of one key to one replica, so its prefix cache
    holds what they share. None: no key of its own (the request's may still be derived, see `request_key`).

    Args:
        key: What the requests share, e.g. a TR-TA pair's demo (any string; hashed).

    Example:
        >>> with affinity("tp-3/pair-5"):
        ...     request_key(None)
        'tp-3/pair-5'
    """
    token = _AFFINITY.set(key)
    try:
        yield
    finally:
        _AFFINITY.reset(token)


def request_key(request) -> str | None:
    """The affinity key of a DSPy request: the one set by `affinity`, else the turns before its last user turn
    when there are any besides the system message (a few-shot program's demos, a conversation so far), else
    None (the request goes to the least-loaded replica).

    Example:
        >>> from dspy.lm15 import Message, Request
        >>> demo = [Message.user("2+2?"), Message.assistant("4"), Message.user("3+3?")]
        >>> request_key(Request(model="m", messages=demo)) is not None, request_key(Request(model="m", messages=demo[2:]))
        (True, None)
    """
    key = _AFFINITY.get()
    if key is not None or request is None:
        return key
    messages = list(getattr(request, "messages", None) or ())
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=0)
    if last_user == 0:
        return None
    system = request.system if isinstance(request.system, str) or request.system is None else \
        "".join(p.text for p in request.system)
    return "\x00".join([system or ""] + [f"{m.role}:{m.text or ''}" for m in messages[:last_user]])


# Requests in flight per server (api_base) from this process, over every RoutedEngine (a run's teacher and
# students are engines of their own over the same replicas); each affinity key's home (its digest -> api_base,
# the most recently used MAX_HOMES); and the lock every routing decision takes.
_IN_FLIGHT: collections.Counter = collections.Counter()
_HOMES: collections.OrderedDict = collections.OrderedDict()
MAX_HOMES = 1 << 16
_LOCK = threading.Lock()


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass
class Endpoint:
    """One replica: its engine and what the router knows of it."""

    api_base: str
    engine: OpenAICompatEngine
    in_flight: int = 0
    consecutive_fails: int = 0
    down_until: float = 0.0       # monotonic time until which it is out of the rotation
    down_for: float = 0.0         # the current cooldown (doubles while it keeps failing)
    probing: bool = False         # a probe request is in flight after a cooldown
    served: int = 0
    failed: int = 0

    def up(self, now: float) -> bool:
        return now >= self.down_until


class RoutedEngine:
    """A DSPy LM engine over several OpenAI-compatible endpoints serving the same model.

    Args:
        model: The model name the servers expect in requests.
        api_bases: The endpoints' ``/v1`` URLs (data-parallel replicas; one or many machines).
        routing: ``"affinity"`` (a request with a key goes to its key's replica while that one has room, the
            others to the least loaded) or ``"least_loaded"`` (every request to the least loaded).
        load_factor: With affinity, a replica takes a key's request while it has fewer than ``load_factor`` x
            the mean requests in flight (>= 1; higher: more cache hits, less balance).
        allowed_fails: Consecutive failures after which an endpoint is taken out.
        cooldown: Seconds an endpoint stays out before a probe request tries it again.
        max_cooldown: Upper bound of the cooldown, which doubles while the endpoint keeps failing.
        **engine_kwargs: Passed to each endpoint's `OpenAICompatEngine` (api_key, prefill, tokenizer,
            extra_body, timeout, send_top_k).

    Example:
        >>> engine = RoutedEngine("meta-llama/Meta-Llama-3-8B-Instruct",  # doctest: +SKIP
        ...                       ["http://gpu1:8000/v1", "http://gpu2:8000/v1"], prefill="continue")
        >>> lm = dspy.LM("openai/meta-llama/Meta-Llama-3-8B-Instruct", engine=engine)  # doctest: +SKIP
    """

    def __init__(self, model: str, api_bases: list[str], routing: str = "affinity", load_factor: float = 1.25,
                 allowed_fails: int = 1, cooldown: float = 5.0, max_cooldown: float = 120.0, **engine_kwargs):
        if not api_bases:
            raise ValueError("RoutedEngine needs at least one api_base")
        if len(set(api_bases)) != len(api_bases):
            raise ValueError(f"api_base lists an endpoint twice: {api_bases}")
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        if not load_factor >= 1:
            raise ValueError(f"load_factor must be >= 1, got {load_factor!r}")
        self.model = model
        self.routing = routing
        self.load_factor = float(load_factor)
        self.allowed_fails = max(1, int(allowed_fails))
        self.cooldown = float(cooldown)
        self.max_cooldown = max(float(max_cooldown), self.cooldown)
        self.endpoints = [Endpoint(b, OpenAICompatEngine(model, api_base=b, **engine_kwargs)) for b in api_bases]
        for ep in self.endpoints:  # made here, once: the first requests' threads would each make one (no lock in
            _ = ep.engine.client   # cached_property), ~40 ms of CPU apiece (TLS context) while the run starts
        self._turn = itertools.count()  # the endpoints share one tokenizer (engine._tokenizer)

    def __deepcopy__(self, memo):
        # Copies of a program (DSPy deep-copies them) share the endpoints and their health.
        return self

    @property
    def api_base(self) -> list[str]:
        return [ep.api_base for ep in self.endpoints]

    @property
    def prefill(self) -> str:
        return self.endpoints[0].engine.prefill

    @property
    def supports_response_schema(self) -> bool:  # the replicas serve one model with one server kind
        return self.endpoints[0].engine.supports_response_schema

    @property
    def supported_params(self) -> frozenset:
        return self.endpoints[0].engine.supported_params

    def __repr__(self) -> str:
        return f"RoutedEngine(model={self.model!r}, api_bases={self.api_base!r}, prefill={self.prefill!r})"

    # --- routing ---------------------------------------------------------------------------------
    def _load(self, ep: Endpoint) -> int:
        """Requests in flight on `ep`'s server from this process: every `RoutedEngine` that routes to it (a run's
        teacher and students share the replicas' batches)."""
        return _IN_FLIGHT[ep.api_base]

    def _by_key(self, key: str, live: list[Endpoint]) -> Endpoint:
        """`key`'s home if it is live and has fewer than ``load_factor`` x the mean in flight over the live
        endpoints (this request counted); else the least loaded, which becomes the key's home."""
        digest = _digest(key)
        home = _HOMES.get(digest)
        total = sum(self._load(ep) for ep in live) + 1
        bound = math.ceil(self.load_factor * total / len(live))
        ep = next((e for e in live if e.api_base == home), None)
        if ep is None or self._load(ep) >= bound:
            ep = min(live, key=self._load)  # ties: the rotation order
            _HOMES[digest] = ep.api_base
            if len(_HOMES) > MAX_HOMES:
                _HOMES.popitem(last=False)
        _HOMES.move_to_end(digest)
        return ep

    def _pick(self, tried: set[int], key: str | None = None) -> tuple[Endpoint | None, bool]:
        """Among the endpoints not yet tried by this request: a live one, by its key (`_by_key`) or the least
        loaded; else the one due back first. Also whether this request is the probe of an endpoint back from its
        cooldown."""
        now = time.monotonic()
        with _LOCK:
            n = len(self.endpoints)
            start = next(self._turn) % n
            order = [self.endpoints[(start + k) % n] for k in range(n)]
            candidates = [ep for ep in order if id(ep) not in tried]
            if not candidates:
                return None, False
            live = [ep for ep in candidates if ep.up(now) and not ep.probing]
            if live:
                if key is not None and self.routing == "affinity":
                    ep = self._by_key(key, live)
                else:
                    ep = min(live, key=self._load)  # ties: the rotation order
            else:
                # Every untried endpoint is out: probe the one whose cooldown ends first (one probe at a time).
                due = [ep for ep in candidates if ep.up(now) and ep.probing]
                waiting = [ep for ep in candidates if not ep.up(now)]
                if due:  # its probe is still running; send there too rather than fail
                    ep = min(due, key=self._load)
                else:
                    ep = min(waiting, key=lambda e: e.down_until)
            probe = ep.consecutive_fails >= self.allowed_fails and ep.up(now) and not ep.probing
            if probe:
                ep.probing = True  # the first request after the cooldown is the probe
            ep.in_flight += 1
            _IN_FLIGHT[ep.api_base] += 1
            return ep, probe

    def _done(self, ep: Endpoint, probe: bool, ok: bool, counts: bool) -> None:
        with _LOCK:
            ep.in_flight -= 1
            _IN_FLIGHT[ep.api_base] -= 1
            if probe:
                ep.probing = False
            if ok:
                ep.served += 1
                ep.consecutive_fails = 0
                ep.down_for = 0.0
                ep.down_until = 0.0
            elif counts:
                ep.failed += 1
                ep.consecutive_fails += 1
                now = time.monotonic()
                # Out of the rotation once; the requests that were in flight and fail with it do not
                # lengthen the cooldown. It doubles when the endpoint fails again after coming back.
                if ep.consecutive_fails >= self.allowed_fails and ep.up(now):
                    ep.down_for = min(self.max_cooldown, ep.down_for * 2 if ep.down_for else self.cooldown)
                    ep.down_until = now + ep.down_for

    # --- the engine protocol -----------------------------------------------------------------------
    def complete(self, request):
        tried: set[int] = set()
        last_error: Exception | None = None
        key = request_key(request) if self.routing == "affinity" else None
        while True:
            ep, probe = self._pick(tried, key)
            if ep is None:  # every endpoint failed this request over: DSPy's retry routes it again
                if all(e.engine.breaker.is_open for e in self.endpoints):
                    raise self._all_down()
                if isinstance(last_error, BackendDown):  # one replica is down, not all: retryable
                    raise lm15_errors.TransportError(str(last_error))
                raise last_error
            tried.add(id(ep))
            try:
                response = ep.engine.complete(request)
            except BackendDown as exc:  # that endpoint's breaker is open: no request was sent
                self._done(ep, probe, ok=False, counts=True)
                last_error = exc
                continue
            except HEALTH_ERRORS as exc:
                self._done(ep, probe, ok=False, counts=True)
                if not isinstance(exc, FAILOVER_ERRORS):
                    raise
                last_error = exc
                continue
            except BaseException:
                self._done(ep, probe, ok=False, counts=False)
                raise
            self._done(ep, probe, ok=True, counts=True)
            return response

    def _all_down(self) -> BackendDown:
        breakers = [e.engine.breaker for e in self.endpoints]
        return BackendDown(", ".join(b.endpoint for b in breakers), min(b.consecutive for b in breakers),
                           breakers[-1].last_error)

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def render_prompt(self, messages: list[dict]) -> str:
        return self.endpoints[0].engine.render_prompt(messages)

    def status(self) -> list[dict]:
        """Per endpoint: requests in flight, served, failed, and whether it is in the rotation now."""
        now = time.monotonic()
        with _LOCK:
            return [{"api_base": ep.api_base, "in_flight": ep.in_flight, "served": ep.served, "failed": ep.failed,
                     "up": ep.up(now), "down_for_s": round(max(0.0, ep.down_until - now), 2)}
                    for ep in self.endpoints]

    def close(self) -> None:
        for ep in self.endpoints:
            ep.engine.close()
