"""Text formats of M3: labels, rendered examples and failure cases, and parsing the teacher's answers.

Rendering follows the LbT patch of ProTeGi: demos as ``### Example j`` / ``**Text:**`` / ``**Label:**``, failure
cases as ``## Failure Case i`` / ``Text: "..."`` / ``Label:`` / ``Prediction:``; the teacher wraps its
answers in ``<START>`` / ``<END>``.
"""

from __future__ import annotations

import re

import dspy

from .fields import NO, TEXT_LABEL, YES, answer_is_yes, parse_label_word, title, to_label  # noqa: F401  (re-exported)

START, END = "<START>", "<END>"


def _fields(fields):
    return TEXT_LABEL if fields is None else fields


def render_examples(demos, fields=None) -> str:
    """Demos as the patch's example section (``### Example j``, ``**Text:**``, ``**Label:**``); other programs'
    fields appear the same way under their own names (`fields`, default the paper's text/label)."""
    f = _fields(fields)
    names = (*f.inputs, f.output)
    return "\n\n".join(f"### Example {j}\n" + "\n".join(f"**{title(n)}:** {d[n]}" for n in names)
                       for j, d in enumerate(demos, 1))


def render_failures(failures, fields=None) -> str:
    """Failure cases as in the patch: ``## Failure Case i`` / ``Text: "..."`` / ``Label:`` / ``Prediction:``.

    A case is a dict with ``pred`` and the example's fields (or the example under ``example``)."""
    f = _fields(fields)
    out = []
    for i, case in enumerate(failures, 1):
        row = case.get("example", case)
        lines = [f'{title(n)}: "{row[n]}"' for n in f.inputs]
        lines += [f"{title(f.output)}: {row[f.output]}", f"Prediction: {case['pred']}"]
        out.append(f"## Failure Case {i}\n" + "\n".join(lines))
    return "\n\n".join(out)


def tagged_segments(text: str) -> list[str]:
    """Every ``<START>...<END>`` segment; an unterminated last one (cut by max_tokens) counts too."""
    out = []
    for part in (text or "").split(START)[1:]:
        seg = part.split(END)[0].strip()
        if seg:
            out.append(seg)
    return out


def last_tagged(text: str) -> str:
    """The patch's ``parse_tagged_text_for_icl``: the text after the last ``<START>`` up to ``<END>``.

    Without any ``<START>`` the whole answer is used (small models often forget the tags).
    """
    text = text or ""
    if START not in text:
        return text.split(END)[0].strip()
    return text.rsplit(START, 1)[1].split(END)[0].strip()


def parse_reasons(text: str, min_words: int = 6) -> list[str]:
    """Reasons from a reflection: tagged segments with more than 5 words, as the patch keeps them."""
    return [r for r in tagged_segments(text) if len(r.split()) >= min_words]


_EXAMPLE = re.compile(
    r"(?:\*\*)?\bText(?:\*\*)?\s*:\s*(?:\*\*)?(?P<text>.*?)\s*(?:\*\*)?\bLabel(?:\*\*)?\s*:\s*(?:\*\*)?\s*"
    r"[\"'`(]*(?P<label>[A-Za-z0-9]+)", re.S)
_HEADER = re.compile(r"\n?\s*#+\s*Example\s*\d*\s*$", re.I)


def _clean(body: str) -> str:
    body = _HEADER.sub("", body).strip().strip("*").strip()
    if len(body) >= 2 and body[0] == body[-1] and body[0] in "\"'":
        body = body[1:-1].strip()
    return body


def _example_pattern(fields) -> re.Pattern:
    parts = [rf"(?:\*\*)?\b{re.escape(title(n))}(?:\*\*)?\s*:\s*(?:\*\*)?(?P<f{i}>.*?)\s*"
             for i, n in enumerate(fields.inputs)]
    parts.append(rf"(?:\*\*)?\b{re.escape(title(fields.output))}(?:\*\*)?\s*:\s*(?:\*\*)?[ \t]*(?P<out>[^\n]*)")
    return re.compile("".join(parts), re.S | re.I)


def parse_examples(text: str, limit: int | None = None, fields=None) -> list[dspy.Example]:
    """The examples a teacher wrote (``Text: ...`` then ``Label: Yes|No``) as demos; junk is skipped.

    Args:
        text: The teacher's answer; only its last ``<START>...<END>`` section is read (see `last_tagged`).
        limit: Keep at most this many (the first ones), i.e. K.
        fields: The program's `TaskFields` (default: the paper's ``text`` -> Yes/No ``label``). Other programs'
            examples are ``Name: ...`` lines in field order; an output that is not one of the labels is junk.

    Example:
        >>> [(e.text, e.label) for e in parse_examples("<START>Text: a cat\\nLabel: yes\\n\\nText: a dog\\nLabel: No<END>")]
        [('a cat', 'Yes'), ('a dog', 'No')]
    """
    section = last_tagged(text)
    f = _fields(fields)
    out = []
    if f.yes_no and f.inputs == ("text",) and f.output == "label":  # the patch's format, parsed as it always was
        for m in _EXAMPLE.finditer(section):
            label = parse_label_word(m.group("label"))
            body = _clean(m.group("text"))
            if label is None or not body:
                continue
            out.append(dspy.Example(text=body, label=label).with_inputs("text"))
            if limit is not None and len(out) >= limit:
                break
        return out
    for m in _example_pattern(f).finditer(section):
        values = [_clean(m.group(f"f{i}")) for i in range(len(f.inputs))]
        raw = m.group("out").strip().strip("*\"'`").strip()
        if f.yes_no:
            label = parse_label_word(raw.split()[0] if raw.split() else "")
        elif f.labels:
            label = f.label_of(raw)
            label = label if label in f.labels else None
        else:
            label = raw or None
        if label is None or not all(values):
            continue
        out.append(dspy.Example(**dict(zip(f.inputs, values)), **{f.output: label}).with_inputs(*f.inputs))
        if limit is not None and len(out) >= limit:
            break
    return out
