"""Model entries -> `dspy.LM`: the seed's `model_type` + `model_cfg` + `sample_cfg`, one client path.

Types: ``openai`` (any OpenAI-compatible server), ``azure_openai``, ``vllm`` (a running vLLM server, or one lbt
launches), ``embedded`` (SmolLM2-135M-Instruct, served locally by vLLM) and ``huggingface`` (a local checkpoint).
Servers that lbt starts live in a `ModelPool`, which stops them on exit.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from dataclasses import dataclass, field

import dspy

from ..errors import LbtError
from ..registry import Registry, check_kwargs
from .engine import OpenAICompatEngine

model_types = Registry("model")

# Seed sample_cfg keys (HF-pipeline style) and what they become on an OpenAI-compatible request.
SAMPLE_KEYS = {"temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "do_sample",
               "num_return_sequences", "batch_size", "seed", "stop",
               # OpenAI's penalties (vLLM takes both): a weak model's constrained JSON can loop until max_tokens
               "frequency_penalty", "presence_penalty",
               # the seed's HF generate() keys: eos ids go to servers that take stop ids (vLLM); padding is a
               # batching detail of a local pipeline and means nothing over HTTP
               "eos_token_id", "pad_token_id"}


def normalize_sample_cfg(cfg: dict, where: str) -> dict:
    """Seed-style sampling settings as request kwargs; ``do_sample: false`` means greedy. Values are checked
    here, when a config is loaded, so a bad one is a one-line error before any call (not a failure of every
    call): an unknown key, a wrong type, ``temperature < 0``, ``top_p`` outside [0, 1] (0 as the OpenAI API and the seed's configs allow), ``top_k < -1``,
    ``max_tokens``/``max_new_tokens < 1``."""
    if not isinstance(cfg, dict):
        raise LbtError(f"{where}: expected a mapping of sampling settings, got {type(cfg).__name__}")
    for key in cfg:
        if key not in SAMPLE_KEYS:
            from ..registry import did_you_mean
            raise LbtError(f"{where}.{key}: unknown sampling key{did_you_mean(key, SAMPLE_KEYS)}")
    _check_sample_values(cfg, where)
    out = {}
    for key in ("temperature", "top_p", "top_k", "seed", "stop", "frequency_penalty", "presence_penalty"):
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    if cfg.get("max_new_tokens") is not None or cfg.get("max_tokens") is not None:
        out["max_tokens"] = cfg["max_tokens"] if cfg.get("max_tokens") is not None else cfg["max_new_tokens"]
    if cfg.get("do_sample") is False:
        out["temperature"] = 0.0
        out.pop("top_k", None)
        out.pop("top_p", None)
    return out


def _check_sample_values(cfg: dict, where: str) -> None:
    import math

    def number(key, integer=False):
        val = cfg.get(key)
        if val is None:
            return None
        kinds = int if integer else (int, float)
        if isinstance(val, bool) or not isinstance(val, kinds) or (isinstance(val, float) and not math.isfinite(val)):
            raise LbtError(f"{where}.{key}: expected {'an integer' if integer else 'a number'}, got {val!r}")
        return val

    checks = [("temperature", False, lambda v: v >= 0, ">= 0"), ("top_p", False, lambda v: 0 <= v <= 1, "in [0, 1]"),
              ("top_k", True, lambda v: v >= -1, ">= -1 (-1: off)"), ("max_tokens", True, lambda v: v >= 1, ">= 1"),
              ("max_new_tokens", True, lambda v: v >= 1, ">= 1"), ("num_return_sequences", True, lambda v: v >= 1, ">= 1"),
              ("batch_size", True, lambda v: v >= 1, ">= 1"), ("seed", True, lambda v: True, ""),
              ("frequency_penalty", False, lambda v: -2 <= v <= 2, "in [-2, 2]"),
              ("presence_penalty", False, lambda v: -2 <= v <= 2, "in [-2, 2]")]
    for key, integer, ok, rule in checks:
        val = number(key, integer)
        if val is not None and not ok(val):
            raise LbtError(f"{where}.{key}: must be {rule}, got {val!r}")
    if cfg.get("do_sample") is not None and not isinstance(cfg["do_sample"], bool):
        raise LbtError(f"{where}.do_sample: expected true or false, got {cfg['do_sample']!r}")
    stop = cfg.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(x, str) for x in stop))):
        raise LbtError(f"{where}.stop: expected a string or a list of strings, got {stop!r}")

class LbtLM(dspy.LM):
    """A `dspy.LM` that tells lbt's adapters why each answer ended: ``finish_reason == "length"`` is a cut-off
    answer, recorded as ``cut_off`` (`lbt_dspy.model_output`), fresh or from DSPy's cache alike."""

    def update_history(self, entry):
        from ..model_output import note_finish_reasons

        note_finish_reasons(entry)
        super().update_history(entry)


@dataclass
class ModelEntry:
    """A resolved model entry: a name for reports, the endpoint, and sampling defaults."""

    name: str
    model: str
    api_base: str | list | None  # a list: data-parallel replicas of the model (see models/router.py)
    api_key_env: str | None = None
    prefill: str = "chat"
    tokenizer: str | None = None
    extra_body: dict = field(default_factory=dict)
    azure_api_version: str | None = None
    send_top_k: bool = False
    timeout: float = 600.0
    routing: str | None = None  # replicas: "affinity" or "least_loaded" (models/router.py); None: its default


class ModelPool:
    """Builds `dspy.LM`s from config entries and owns the servers it starts.

    Args:
        cache: Use DSPy's response cache.
        num_retries: Retries per call (DSPy's backoff, honouring Retry-After).
        log_dir: Where started servers write their logs.

    Example:
        >>> with ModelPool() as pool:  # doctest: +SKIP
        ...     lm = pool.lm({"model_type": "embedded"}, {"temperature": 0.7})
    """

    def __init__(self, cache: bool = True, num_retries: int = 5, log_dir: str | None = None):
        self.cache = cache
        self.num_retries = num_retries
        self.log_dir = log_dir
        self._stack = ExitStack()
        self._servers: dict = {}

    def __enter__(self) -> "ModelPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        self._servers.clear()

    def prefix_cache(self) -> dict:
        """The prefix-cache counters of each vLLM server this pool started, by ``api_base``: prompt tokens so
        far (``{"hits", "queries"}``), or None for one not answering (`vllm_server.PrefixCacheWatch` reads it)."""
        return {s.api_base: s.prefix_cache() for s in self._servers.values() if hasattr(s, "prefix_cache")}

    def shared_server(self, key, factory):
        """Start (once per key) a server that this pool stops on close."""
        return self.shared_servers([(key, factory)])[0]

    def shared_servers(self, items: list) -> list:
        """Start (once per key) the servers of ``[(key, factory), ...]`` together, each in a thread; this pool
        stops them on close. If one cannot start, the others are stopped and its error is raised, naming its
        endpoint when there are several."""
        new = [(key, factory()) for key, factory in items if key not in self._servers]
        for _, server in new:
            self._stack.callback(server.stop)
        if len(new) == 1:
            new[0][1].start()
        elif new:
            _start_together([server for _, server in new])
        self._servers.update(new)
        return [self._servers[key] for key, _ in items]

    def lm(self, entry: dict, default_sample_cfg: dict | None = None, where: str = "model") -> dspy.LM:
        """A `dspy.LM` for a config entry (``model_type``, ``model_cfg``, ``sample_cfg``)."""
        if not isinstance(entry, dict):
            raise LbtError(f"{where}: expected a mapping with model_type/model_cfg")
        for key in entry:
            if key not in ("model_type", "model_cfg", "sample_cfg"):
                from ..registry import did_you_mean
                raise LbtError(f"{where}.{key}: unknown key{did_you_mean(key, ['model_type', 'model_cfg', 'sample_cfg'])}")
        sample = {**(default_sample_cfg or {}), **(entry.get("sample_cfg") or {})}
        kwargs = normalize_sample_cfg(sample, f"{where}.sample_cfg")
        resolved = self.resolve(entry, kwargs, where)
        _apply_eos_token_ids(sample, resolved, where)
        engine_kwargs = dict(api_key=_api_key(resolved, where), prefill=resolved.prefill, tokenizer=resolved.tokenizer,
                             extra_body=resolved.extra_body, send_top_k=resolved.send_top_k, timeout=resolved.timeout)
        bases = _api_bases(resolved.api_base, where)
        if len(bases) > 1:  # data-parallel replicas: the router picks one per request
            from .router import ROUTINGS, RoutedEngine

            if resolved.routing not in (None, *ROUTINGS):
                raise LbtError(f"{where}.model_cfg.routing: one of {', '.join(ROUTINGS)}, got {resolved.routing!r}")
            engine = RoutedEngine(resolved.model, bases, **({"routing": resolved.routing} if resolved.routing else {}),
                                  **engine_kwargs)
        else:
            engine = OpenAICompatEngine(resolved.model, api_base=bases[0], azure_api_version=resolved.azure_api_version,
                                        **engine_kwargs)
        top_k = kwargs.pop("top_k", None)
        lm = LbtLM("openai/" + resolved.name, engine=engine, cache=self.cache, num_retries=self.num_retries,
                     **kwargs, **({"top_k": top_k} if top_k is not None else {}))
        lm.lbt_name = resolved.name
        return lm

    def resolve(self, entry: dict, sample_kwargs: dict, where: str) -> ModelEntry:
        cfg = entry.get("model_cfg") or {}
        if not isinstance(cfg, dict):
            raise LbtError(f"{where}.model_cfg: expected a mapping")
        factory = model_types.get(entry.get("model_type", "embedded"))
        check_kwargs(factory, cfg, f"{where}.model_cfg")
        try:
            return factory(pool=self, sample_kwargs=sample_kwargs, **cfg)
        except TypeError as exc:
            raise LbtError(f"{where}.model_cfg: {exc}") from None


def _start_together(servers: list) -> None:
    """`start` each server in a thread of its own. The first that cannot start (or a Ctrl-C) cancels the others'
    starts; all are stopped and its one-line error raised, prefixed with its endpoint."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    failed = None
    with ThreadPoolExecutor(len(servers), thread_name_prefix="lbt-server-start") as ex:
        futures = {ex.submit(server.start): server for server in servers}
        try:
            for fut in as_completed(futures):
                if fut.exception() is not None and failed is None:
                    failed = (futures[fut], fut.exception())
                    for server in servers:
                        server.cancel()
        except BaseException:
            for server in servers:
                server.cancel()
            raise
    if failed is not None:
        for server in servers:
            server.stop()
        server, exc = failed
        if isinstance(exc, LbtError):
            raise type(exc)(f"{server.api_base}: {exc}") from None
        raise exc


def _api_bases(api_base, where: str) -> list:
    """`api_base` as a list: one URL (or None: the provider's default), or several replicas' URLs."""
    if isinstance(api_base, (list, tuple)):
        if not api_base or not all(isinstance(b, str) and b for b in api_base):
            raise LbtError(f"{where}.model_cfg.api_base: expected a URL or a non-empty list of URLs")
        if len(set(api_base)) != len(api_base):
            raise LbtError(f"{where}.model_cfg.api_base: an endpoint is listed twice")
        return list(api_base)
    if api_base is not None and not isinstance(api_base, str):
        raise LbtError(f"{where}.model_cfg.api_base: expected a URL or a list of URLs")
    return [api_base]


def _apply_eos_token_ids(sample: dict, resolved: ModelEntry, where: str) -> None:
    """The seed's ``eos_token_id`` (HF generate): vLLM's ``stop_token_ids``; elsewhere the served checkpoint's
    own generation_config decides where a generation ends, and a warning says so."""
    eos = sample.get("eos_token_id")
    if eos is None:
        return
    ids = [eos] if isinstance(eos, int) else list(eos) if isinstance(eos, (list, tuple)) else None
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise LbtError(f"{where}.sample_cfg.eos_token_id: expected a token id or a list of ids, got {eos!r}")
    if resolved.send_top_k:  # a vLLM server
        resolved.extra_body.setdefault("stop_token_ids", ids)
    else:
        import logging

        logging.getLogger(__name__).warning(
            "%s.sample_cfg.eos_token_id: this server takes no stop token ids; the checkpoint's generation_config "
            "eos ids apply", where)


def _api_key(entry: ModelEntry, where: str) -> str | None:
    if entry.api_key_env is None:
        return None
    key = os.environ.get(entry.api_key_env)
    if key is None:
        raise LbtError(f"{where}.model_cfg.api_key_env: environment variable {entry.api_key_env} is not set")
    return key


@model_types.register("openai")
def openai_entry(pool, sample_kwargs, model: str, api_base: str | list | None = None, name: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", api_key: str | None = None, prefill: str = "assistant",
                 tokenizer: str | None = None, extra_body: dict | None = None, fastchat: bool = True,
                 timeout: float = 600.0, routing: str | None = None) -> ModelEntry:
    """Any OpenAI-compatible endpoint. The key comes from `api_key_env` (or, discouraged, `api_key`);
    `timeout` is seconds per request. A list of `api_base` URLs: replicas, spread by `routing` (models/router.py)."""
    if api_key is not None:  # seed configs put keys inline; keep them out of saved configs (redacted)
        os.environ.setdefault(api_key_env, api_key)
    return ModelEntry(name or model, model, api_base, api_key_env, prefill, tokenizer, extra_body or {},
                      timeout=float(timeout), routing=routing)


@model_types.register("azure_openai")
def azure_entry(pool, sample_kwargs, model: str, name: str | None = None, api_endpoint: str | None = None,
                api_key: str | None = None, api_version: str = "2024-02-15-preview", fastchat: bool = True) -> ModelEntry:
    """Azure OpenAI, as in the seed: endpoint/key from `AZURE_OPENAI_ENDPOINT` / `AZURE_OPENAI_API_KEY`."""
    endpoint = api_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
    if not endpoint:
        raise LbtError("model_cfg.api_endpoint: not set and AZURE_OPENAI_ENDPOINT is empty")
    if api_key is not None:
        os.environ.setdefault("AZURE_OPENAI_API_KEY", api_key)
    # the prefill goes as a trailing assistant message, as the seed sends it
    return ModelEntry(name or "azure_" + model, model, endpoint, "AZURE_OPENAI_API_KEY", prefill="assistant",
                      azure_api_version=api_version)


SERVERS = ("vllm", "transformers")


def local_endpoints(pool, checkpoint: str, sample_kwargs: dict, where: str = "model_cfg", server: str = "vllm",
                    serve_args: list | None = None, replicas: int = 1, enforce_eager: bool = True) -> tuple:
    """Start (once per pool and setting) the server(s) for a local checkpoint; returns their ``api_base`` (a list
    for `replicas` > 1, spread by the router: `models.router`) and the model name requests carry.

    ``server: vllm`` (the engine; one server takes every sampling setting) or ``transformers`` (the explicit
    fallback for a platform with no vLLM wheel: one server per sampling setting, see `TransformersServer`)."""
    if server not in SERVERS:
        raise LbtError(f"{where}.server: one of {', '.join(SERVERS)}, got {server!r}")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise LbtError(f"{where}.replicas: expected an integer >= 1, got {replicas!r}")
    if serve_args is not None and not (isinstance(serve_args, list) and all(isinstance(a, (str, int, float))
                                                                             for a in serve_args)):
        raise LbtError(f"{where}.serve_args: expected a list of command-line arguments")
    if server == "transformers" and serve_args:
        raise LbtError(f"{where}.serve_args: vLLM flags; the transformers fallback takes none")
    items = []  # the replicas, started together (`ModelPool.shared_servers`)
    for r in range(replicas):
        log = os.path.join(pool.log_dir, f"server-{len(pool._servers) + r}.log") if pool.log_dir else None
        if server == "vllm":
            from .vllm_server import VLLMServer

            key = ("vllm", checkpoint, tuple(map(str, serve_args or ())), bool(enforce_eager), r)
            items.append((key, lambda log=log: VLLMServer(checkpoint, serve_args=serve_args, log_path=log,
                                                          enforce_eager=enforce_eager)))
        else:
            from .embedded import TransformersServer

            # its continuous batching takes the first request's sampling settings: one server per setting
            key = ("transformers", checkpoint, json.dumps(sample_kwargs, sort_keys=True), r)
            greedy = sample_kwargs.get("temperature") == 0
            items.append((key, lambda log=log: TransformersServer(checkpoint, log_path=log, do_sample=not greedy)))
    servers = pool.shared_servers(items)
    bases = [srv.api_base for srv in servers]
    srv = servers[-1]
    return (bases[0] if replicas == 1 else bases), srv.model


def _local_entry(name: str, checkpoint: str, api_base, server: str, timeout: float = 600.0,
                 served: str | None = None, routing: str | None = None) -> ModelEntry:
    """The entry of a served local checkpoint. The prompt is rendered here with the checkpoint's chat template and
    the prefill appended, then continued on ``/v1/completions``: byte for byte the seed's prompt (a server's
    ``continue_final_message`` strips the prefill's trailing whitespace). vLLM takes ``top_k`` and JSON schemas
    there too; the transformers fallback is asked for the model it serves (`served`: its sampling view)."""
    if server == "vllm":
        return ModelEntry(name, served or checkpoint, api_base, None, "completions", checkpoint,
                          send_top_k=True, timeout=float(timeout), routing=routing)
    return ModelEntry(name, served or checkpoint, api_base, None, "completions", checkpoint, timeout=float(timeout),
                      routing=routing)


@model_types.register("vllm")
def vllm_entry(pool, sample_kwargs, model: str, api_base: str | list | None = None, name: str | None = None,
               api_key_env: str | None = None, serve_args: list | None = None, prefill: str = "continue",
               tokenizer: str | None = None, timeout: float = 600.0, enforce_eager: bool = True,
               replicas: int = 1, routing: str | None = None) -> ModelEntry:
    """A vLLM server: a running one (`api_base`, or a list of replicas on one or many machines: each request
    goes to a live one by `routing`), or, without `api_base`, one lbt starts for `model` (`VLLMServer`: the
    CPU build where there is no GPU, the CUDA build where there is; `serve_args` adds flags such as
    ``["--tensor-parallel-size", "2"]``; `replicas` starts that many). `routing`: how requests are spread over
    replicas, ``affinity`` or ``least_loaded`` (`models.router.RoutedEngine`)."""
    if api_base is None:
        api_base, _ = local_endpoints(pool, model, sample_kwargs, "model_cfg", "vllm", serve_args, replicas,
                                      enforce_eager)
    return ModelEntry(name or model.rstrip("/").split("/")[-1], model, api_base, api_key_env, prefill,
                      tokenizer or model, send_top_k=True, timeout=float(timeout), routing=routing)


@model_types.register("embedded")
def embedded_entry(pool, sample_kwargs, name: str = "smollm2-135m", checkpoint: str | None = None,
                   api_base: str | list | None = None, replicas: int = 1, server: str = "vllm",
                   serve_args: list | None = None, enforce_eager: bool = True, routing: str | None = None) -> ModelEntry:
    """SmolLM2-135M-Instruct (or `checkpoint`), served on loopback by vLLM (`VLLMServer`).

    `server: transformers` selects the fallback for a platform with no vLLM wheel (`TransformersServer`).
    `replicas: N` starts N servers and spreads requests over them (`routing`; worth it with cores to spare).
    """
    from .embedded import checkpoint_path

    ckpt = str(checkpoint or checkpoint_path())
    served = ckpt
    if api_base is None:
        api_base, served = local_endpoints(pool, ckpt, sample_kwargs, "model_cfg", server, serve_args, replicas,
                                           enforce_eager)
    elif server not in SERVERS:
        raise LbtError(f"model_cfg.server: one of {', '.join(SERVERS)}, got {server!r}")
    return _local_entry(name, ckpt, api_base, server, served=served, routing=routing)
