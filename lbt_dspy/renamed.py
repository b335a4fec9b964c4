"""Earlier names of renamed things: still importable, each with a one-line `DeprecationWarning` naming the new
name (docs/names.md lists them all). No lbt_dspy imports: any layer may use it.

Example:
    >>> import warnings
    >>> __getattr__ = renamed(__name__, {"OldName": ("NewName", lambda: int)})
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     __getattr__("OldName") is int, str(seen[0].message)
    (True, 'OldName is now NewName (lbt_dspy.renamed.OldName still works; docs/names.md)')
"""

from __future__ import annotations

import warnings
from typing import Any, Callable


def renamed(module: str, names: dict[str, tuple[str, Callable[[], Any]]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that resolves earlier names: ``{old: (new, lambda: the_object)}``."""

    def __getattr__(name: str) -> Any:
        if name in names:
            new, get = names[name]
            warnings.warn(f"{name} is now {new} ({module}.{name} still works; docs/names.md)", DeprecationWarning,
                          stacklevel=2)
            return get()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def renamed_argument(owner: str, old: str, new: str) -> None:
    """The one-line warning for an earlier keyword argument name."""
    warnings.warn(f"{owner}({old}=...) is now {owner}({new}=...) (docs/names.md)", DeprecationWarning, stacklevel=3)
