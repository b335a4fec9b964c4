"""Component registries: the seed's `<name>_type` + `<name>_cfg` convention, kept.

A YAML section such as ``exam_maker_type: func`` / ``exam_maker_cfg: {num_exam_questions: 3}``
builds the class registered as ``func`` in the ``exam_maker`` registry with those keyword arguments.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

from .errors import LbtError


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry:
    """A named table of component classes.

    Args:
        name: The config prefix, e.g. ``"exam_maker"`` reads ``exam_maker_type`` / ``exam_maker_cfg``.
        key: The key that names a type, in error messages (default ``<name>_type``; ``task`` for tasks).

    Example:
        >>> exam_makers = Registry("exam_maker")
        >>> @exam_makers.register("fixed")
        ... class Fixed:
        ...     def __init__(self, exam_bank): self.exam_bank = exam_bank
        >>> exam_makers.build({"exam_maker_type": "fixed"}, exam_bank=[]).exam_bank
        []
    """

    def __init__(self, name: str, key: str | None = None):
        self.name = name
        self.key = key or f"{name}_type"  # the config key that names a type (errors name it)
        self._table: dict[str, Callable] = {}

    def register(self, type_name: str):
        def deco(cls):
            self._table[type_name] = cls
            return cls
        return deco

    def names(self) -> list[str]:
        return sorted(self._table)

    def get(self, type_name: str) -> Callable:
        if type_name not in self._table:
            raise LbtError(f"{self.key}: unknown type {type_name!r}{did_you_mean(type_name, self._table)}; "
                           f"known: {', '.join(self.names())}")
        return self._table[type_name]

    def build(self, section: dict, default_type: str | None = None, where: str = "", **extra: Any):
        """Instantiate from ``section[f"{name}_type"]`` and ``section[f"{name}_cfg"]`` plus ``extra`` kwargs."""
        type_key, cfg_key = f"{self.name}_type", f"{self.name}_cfg"
        type_name = section.get(type_key, default_type)
        prefix = f"{where}{type_key}" if where else type_key
        if type_name is None:
            raise LbtError(f"{prefix}: missing (known: {', '.join(self.names())})")
        cls = self.get(type_name)
        cfg = section.get(cfg_key) or {}
        if not isinstance(cfg, dict):
            raise LbtError(f"{where}{cfg_key}: expected a mapping, got {type(cfg).__name__}")
        check_kwargs(cls, cfg, f"{where}{cfg_key}")
        try:
            return cls(**cfg, **extra)
        except LbtError:
            raise
        except (TypeError, ValueError) as exc:
            raise LbtError(f"{where}{cfg_key}: {exc}") from exc


def check_kwargs(cls: Callable, cfg: dict, where: str) -> None:
    """Reject keys the constructor does not take, with a did-you-mean."""
    params = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    for key in cfg:
        if key not in params:
            raise LbtError(f"{where}.{key}: unknown key{did_you_mean(key, params)}")
