"""The label vocabulary of M3: Yes/No, how datasets and models write them, and field names as shown."""

from __future__ import annotations

import re

YES, NO = "Yes", "No"

_YES_WORDS = {"yes", "true", "1", "positive"}
_NO_WORDS = {"no", "false", "0", "negative"}


def title(name: str) -> str:
    """A field name as shown to a model: ``text`` -> ``Text``, ``premise_text`` -> ``Premise text``."""
    name = name.replace("_", " ").strip()
    return name[:1].upper() + name[1:]


def to_label(value) -> str:
    """A dataset or model label as ``"Yes"``/``"No"``: 1/True/"yes"... -> Yes, everything else -> No.

    Example:
        >>> to_label(1), to_label("no"), to_label(" YES."), to_label(0)
        ('Yes', 'No', 'Yes', 'No')
    """
    if isinstance(value, bool):
        return YES if value else NO
    if isinstance(value, (int, float)):
        return YES if value == 1 else NO
    return parse_label_word(str(value)) or (YES if answer_is_yes(str(value)) else NO)


def answer_is_yes(completion: str) -> bool:
    """The patch's rule: the prediction is positive iff the answer starts with "YES" (after markup)."""
    return re.sub(r"^[\s\"'*`#:>\-\[\]]+", "", completion or "").upper().startswith("YES")


def parse_label_word(word: str) -> str | None:
    """A label written by the teacher ("Yes", "no", "True", "1"...), or None when it is not one."""
    w = re.sub(r"[^a-z0-9]", "", (word or "").lower())
    if w in _YES_WORDS:
        return YES
    if w in _NO_WORDS:
        return NO
    return None
