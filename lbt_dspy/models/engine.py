"""One client path for every backend: an OpenAI-compatible DSPy engine with assistant prefill.

DSPy owns caching, retries (honouring Retry-After) and history; this engine performs exactly one
attempt per call with the `openai` client and translates its errors into DSPy's LM errors.

The paper's prompts end with an assistant *prefill* ("[[Solution]]: Let's think step by step.") that
the model must continue. Servers differ in how that is expressed, hence `prefill`:

- ``"continue"``: chat request with ``continue_final_message`` (vLLM).
- ``"completions"``: the chat template is rendered here with the model's tokenizer and the prefill
  appended; the raw prompt goes to ``/v1/completions`` (`transformers serve`, vLLM).
- ``"assistant"``: chat with the prefill kept as a trailing assistant message (OpenAI, Azure: what the
  seed sends; the API answers after it, the prefill is not repeated in the answer).
- ``"chat"``: plain chat; the prefill is dropped and the model answers freely.

Each engine has a `CircuitBreaker`: after a few consecutive failures that say the server is gone
(connection refused or reset, 5xx), calls fail at once with `BackendDown` instead of each being
retried with backoff, so a run learns within seconds that its server died. A timeout does not count:
a server that accepted the connection is alive, only slow (an embedded model on a loaded CPU takes
minutes per batch), and the per-request timeout already bounds a hung one.
"""

from __future__ import annotations

import threading
import time
from functools import cached_property

from dspy.lm15 import Message, Response, TextPart, Usage
import dspy.lm15 as lm15_errors

from ..errors import BackendDown

PREFILL_MODES = ("chat", "assistant", "continue", "completions")


# Failures that say nothing answered: the endpoint may be gone. A 4xx or a 429 is an answer (the server is up);
# a timeout is a slow server, not a dead one (on a loaded CPU, 16 requests in flight all time out together).
DOWN_ERRORS = (lm15_errors.TransportError, lm15_errors.ServerError)


class CircuitBreaker:
    """Fail fast on a dead endpoint: after `failures` consecutive failed calls (`DOWN_ERRORS`, counted across
    all calls, in flight or retried) the breaker opens and every call fails at once with `BackendDown`,
    which DSPy does not retry. After `reset_after` seconds one call is let through as a probe; its success
    closes the breaker (a replica back in service), its failure keeps it open.

    Args:
        endpoint: The endpoint's name in messages (its ``api_base``).
        failures: Consecutive failures that open the breaker.
        reset_after: Seconds the breaker stays open before it lets one probe call through.

    Example:
        >>> breaker = CircuitBreaker("http://127.0.0.1:8000/v1", failures=2)
        >>> for _ in range(2):
        ...     breaker.record(breaker.before_call(), lm15_errors.TransportError("connection refused"))
        >>> breaker.is_open
        True
    """

    def __init__(self, endpoint: str, failures: int = 5, reset_after: float = 30.0):
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures!r}")
        self.endpoint = endpoint
        self.failures = int(failures)
        self.reset_after = float(reset_after)
        self.consecutive = 0
        self.opened_at: float | None = None
        self.last_error = ""
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def error(self) -> BackendDown:
        return BackendDown(self.endpoint, self.consecutive, self.last_error)

    def before_call(self) -> bool:
        """Raise `BackendDown` when open; return whether this call is the probe of a half-open breaker."""
        with self._lock:
            if self.opened_at is None:
                return False
            if self._probing or time.monotonic() - self.opened_at < self.reset_after:
                raise self.error()
            self._probing = True
            return True

    def record(self, probe: bool, exc: BaseException | None) -> None:
        """The outcome of a call: None (an answer, or an error that is an answer, like a 4xx) or its error."""
        with self._lock:
            if probe:
                self._probing = False
            if exc is None or not isinstance(exc, DOWN_ERRORS):
                self.consecutive = 0
                self.opened_at = None
                return
            self.consecutive += 1
            self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            if self.consecutive >= self.failures and (self.opened_at is None or probe):
                self.opened_at = time.monotonic()


class OpenAICompatEngine:
    """A DSPy LM engine for any OpenAI-compatible endpoint.

    Args:
        model: The model name the server expects in requests.
        api_base: The server's ``/v1`` URL (None: the OpenAI default).
        api_key: The key (never logged or saved).
        prefill: How a trailing assistant message is continued: ``chat``, ``continue`` or ``completions``.
        tokenizer: Tokenizer path/name whose chat template renders ``completions`` prompts.
        extra_body: Extra request fields the server accepts.
        send_top_k: Send ``top_k`` (vLLM takes it; OpenAI and `transformers serve` reject it with 4xx).
        structured_outputs: The server decodes to a JSON schema (``response_format``; vLLM, OpenAI): DSPy's
            JSONAdapter (and ChatAdapter's fallback to it) then sends its signature's schema, and the engine
            passes it through. None: vLLM and OpenAI's own API yes, others no.
        timeout: Seconds per request.
        azure_api_version: When set, talk to Azure OpenAI (``api_base`` is the Azure endpoint).
        breaker_failures: Consecutive failures (connection, 5xx; not timeouts) after which calls fail at once
            with `BackendDown` (see `CircuitBreaker`).
        breaker_reset: Seconds before an open breaker lets a probe call through.

    Example:
        >>> engine = OpenAICompatEngine("gpt-4o-mini", api_key="sk-...")  # doctest: +SKIP
        >>> lm = dspy.LM("openai/gpt-4o-mini", engine=engine)  # doctest: +SKIP
    """

    def __init__(self, model: str, api_base: str | None = None, api_key: str | None = None,
                 prefill: str = "chat", tokenizer: str | None = None, extra_body: dict | None = None,
                 timeout: float = 600.0, azure_api_version: str | None = None, send_top_k: bool = False,
                 breaker_failures: int = 5, breaker_reset: float = 30.0, structured_outputs: bool | None = None):
        if prefill not in PREFILL_MODES:
            raise ValueError(f"prefill must be one of {PREFILL_MODES}, got {prefill!r}")
        if prefill == "completions" and not tokenizer:
            raise ValueError("prefill 'completions' needs a tokenizer to render the chat template")
        self.model = model
        self.api_base = api_base
        self._api_key = api_key
        self.prefill = prefill
        self.tokenizer_name = tokenizer
        self.extra_body = dict(extra_body or {})
        self.timeout = timeout
        self.azure_api_version = azure_api_version
        self.send_top_k = send_top_k
        self.breaker = CircuitBreaker(api_base or "openai", breaker_failures, breaker_reset)
        self.structured_outputs = (send_top_k or api_base is None) if structured_outputs is None else structured_outputs

    # What DSPy asks of a custom engine before it plans a call (dspy.clients.capabilities).
    @property
    def supports_response_schema(self) -> bool:
        return self.structured_outputs

    @property
    def supported_params(self) -> frozenset:
        return frozenset({"response_format"} if self.structured_outputs else ())

    def __repr__(self) -> str:  # no key in reprs, logs or tracebacks
        return f"OpenAICompatEngine(model={self.model!r}, api_base={self.api_base!r}, prefill={self.prefill!r})"

    def __deepcopy__(self, memo):
        # DSPy deep-copies programs (Module.load, optimizers); a copy of a program talks to the same server
        # through the same client and connection pool (an openai client does not survive a deep copy).
        return self

    @cached_property
    def client(self):
        import openai

        if self.azure_api_version:
            return openai.AzureOpenAI(azure_endpoint=self.api_base, api_key=self._api_key,
                                      api_version=self.azure_api_version, max_retries=0, timeout=self.timeout)
        return openai.OpenAI(base_url=self.api_base, api_key=self._api_key or "EMPTY", max_retries=0,
                             timeout=self.timeout)

    @cached_property
    def _tokenizer_and_lock(self):
        return _tokenizer(self.tokenizer_name)  # looked up once per engine, not on every request

    # --- the engine protocol -------------------------------------------------------------------
    def complete(self, request) -> Response:
        probe = self.breaker.before_call()  # an open breaker: BackendDown at once, no request, no retry
        try:
            response = self._complete(request)
        except BaseException as exc:
            self.breaker.record(probe, exc if isinstance(exc, Exception) else None)
            if self.breaker.is_open and isinstance(exc, DOWN_ERRORS):
                raise self.breaker.error() from exc  # the failure that opened it is not retried either
            raise
        self.breaker.record(probe, None)
        return response

    def _complete(self, request) -> Response:
        messages = _to_openai_messages(request)
        params = _sampling(request.config)
        extra = dict(self.extra_body)
        if self.structured_outputs and request.config.response_format:  # in the body: both endpoints take it
            extra["response_format"] = _response_format(request.config.response_format)
        if self.send_top_k and request.config.top_k is not None:
            extra["top_k"] = request.config.top_k
        try:
            if self.prefill == "completions":
                prompt = self.render_prompt(messages)
                out = self.client.completions.create(model=self.model, prompt=prompt, extra_body=extra or None,
                                                     **params)
                choice = out.choices[0] if out.choices else None
                text = choice.text if choice else None
            else:
                if messages[-1]["role"] == "assistant":
                    if self.prefill == "continue":
                        extra.update(continue_final_message=True, add_generation_prompt=False)
                    elif self.prefill == "chat":
                        messages = messages[:-1]
                out = self.client.chat.completions.create(model=self.model, messages=messages,
                                                          extra_body=extra or None, **params)
                choice = out.choices[0] if out.choices else None
                text = choice.message.content if choice else None
        except Exception as exc:
            raise _translate(exc, self.api_base) from None
        if choice is None:  # a server fault (no answer at all), retried; never a model's answer
            raise lm15_errors.ServerError(f"{self.api_base or 'openai'}: response had no choices")
        # A choice with null or empty text is the model's answer: it said nothing (`lbt_dspy.model_output`).
        text = text if isinstance(text, str) else ""
        usage = getattr(out, "usage", None)
        return Response(
            id=getattr(out, "id", None), model=self.model, message=Message.assistant([TextPart(text)]),
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            usage=Usage(input_tokens=getattr(usage, "prompt_tokens", None),
                        output_tokens=getattr(usage, "completion_tokens", None)),
        )

    def render_prompt(self, messages: list[dict]) -> str:
        """The raw prompt for ``/v1/completions``: chat template, generation prompt, then the prefill."""
        prefill = ""
        if messages[-1]["role"] == "assistant":
            prefill = messages[-1]["content"]
            messages = messages[:-1]
        tokenizer, lock = self._tokenizer_and_lock
        with lock:  # HF tokenizers are not re-entrant across threads
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt + prefill

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


_TOKENIZERS: dict = {}
_TOKENIZERS_LOCK = threading.Lock()


def _tokenizer(name: str):
    """One tokenizer (and its lock) per process and name: engines of the same model (roles, replicas)
    share it instead of loading it again (seconds each)."""
    with _TOKENIZERS_LOCK:
        if name not in _TOKENIZERS:
            from transformers import AutoTokenizer

            _TOKENIZERS[name] = (AutoTokenizer.from_pretrained(name), threading.Lock())
        return _TOKENIZERS[name]


def _to_openai_messages(request) -> list[dict]:
    messages = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
    return messages


def _sampling(config) -> dict:
    params = {}
    for key in ("temperature", "top_p", "max_tokens", "seed", "frequency_penalty", "presence_penalty"):
        val = getattr(config, key, None)
        if val is not None:
            params[key] = val
    if config.stop:
        params["stop"] = list(config.stop)
    return params


def _response_format(fmt: dict) -> dict:
    """DSPy's canonical response format as the chat API's ``response_format`` (vLLM takes it on both endpoints)."""
    if fmt.get("type") != "json_schema":
        return {"type": fmt.get("type", "json_object")}
    inner = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
    if "strict" in fmt:
        inner["strict"] = fmt["strict"]
    return {"type": "json_schema", "json_schema": inner}


def _translate(exc: Exception, where: str | None) -> Exception:
    """An `openai` exception as the DSPy LM error DSPy knows how to retry (or not)."""
    import openai

    where = where or "openai"
    msg = f"{where}: {type(exc).__name__}: {str(exc)[:300]}"
    if isinstance(exc, openai.RateLimitError):
        retry_after = None
        try:
            retry_after = float(exc.response.headers.get("retry-after"))
        except (TypeError, ValueError, AttributeError):
            pass
        return lm15_errors.RateLimitError(msg, retry_after=retry_after)
    if isinstance(exc, openai.APITimeoutError):
        return lm15_errors.TimeoutError(msg)
    if isinstance(exc, openai.APIConnectionError):
        return lm15_errors.TransportError(msg)
    if isinstance(exc, openai.AuthenticationError):
        return lm15_errors.AuthError(msg)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return lm15_errors.ServerError(msg)
        return lm15_errors.InvalidRequestError(msg)
    if isinstance(exc, (ValueError, KeyError, TypeError)):  # malformed body
        return lm15_errors.ServerError(msg)
    return lm15_errors.TransportError(msg)
