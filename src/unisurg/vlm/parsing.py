"""From a model's free-text answer to a label id.

Two parsers; the raw answer is always kept beside their results (:mod:`unisurg.vlm.runner`).

``surgrec`` reproduces the rules of SurgRec's release (``extract_pred_label`` in
``vlm_eval/run_qwen3_vlm_test.py``), including their quirks:

1. the **first** standalone letter of the upper-cased answer (``\\b[A-Z]\\b``); used only if it is
   an option letter, otherwise the rule does not apply (so ``"I think B"`` fails rule 1 on "I",
   and a lower-case article ``"a"`` counts as option A);
2. else the class names contained in the normalised answer (lower case, non-alphanumerics as
   spaces), the longest one winning (a tie goes to the larger label id);
3. else the first integer in the answer, taken as a label id, even one that is not a class
   (SurgRec counts it as a valid answer; it is simply wrong).

``strict`` accepts only an unambiguous answer: the whole answer (trimmed, trailing punctuation
and a wrapping quote/bracket removed) is one option letter (``B``, ``B.``, ``(B)``), or one class
name, or ``"B. <that option's name>"``. Everything else is a parse failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unisurg.vlm.prompts import Prompt, display_name

PARSERS = ("surgrec", "strict")


@dataclass(frozen=True)
class Parsed:
    """``label``: the label id or None (unparsed); ``rule``: which rule decided
    (``letter``, ``name``, ``integer``, or None)."""

    label: int | None
    rule: str | None


NONE = Parsed(None, None)


def normalise(text: str) -> str:
    """SurgRec's ``normalize_text``: the display-name cleaning, lower case, non-alphanumerics as spaces."""
    text = display_name(text).lower()
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9\s]", " ", text)).strip()


def parse_surgrec(answer: str, prompt: Prompt) -> Parsed:
    """SurgRec's three rules in order (module docstring)."""
    text = (answer or "").strip()
    m = re.search(r"\b([A-Z])\b", text.upper())
    letters = prompt.letter_to_label
    if m and m.group(1) in letters:
        return Parsed(letters[m.group(1)], "letter")
    said = normalise(text)
    hits = [(len(n), lab) for lab, n in enumerate(normalise(x) for x in prompt.names) if n and n in said]
    if hits:
        return Parsed(max(hits)[1], "name")
    m = re.search(r"-?\d+", text)
    if m:
        return Parsed(int(m.group(0)), "integer")
    return NONE


_WRAP = re.compile(r"^[\s\"'`(\[*]+|[\s\"'`)\].,;:!*]+$")


def parse_strict(answer: str, prompt: Prompt) -> Parsed:
    """Only a whole-answer option letter, class name, or matching ``letter. name`` (module docstring)."""
    text = (answer or "").strip()
    prev = None
    while prev != text:  # peel wrapping quotes/brackets and trailing punctuation
        prev, text = text, _WRAP.sub("", text)
    letters = prompt.letter_to_label
    if text in letters:
        return Parsed(letters[text], "letter")
    owners: dict[str, list[int]] = {}
    for lab, n in enumerate(prompt.names):
        owners.setdefault(normalise(n), []).append(lab)
    names = {n: labs[0] for n, labs in owners.items() if len(labs) == 1}  # a name two classes share decides nothing
    said = normalise(text)
    if said in names:
        return Parsed(names[said], "name")
    m = re.fullmatch(r"([A-Z])\s*[.):]\s*(.+)", text)
    if m and m.group(1) in letters and names.get(normalise(m.group(2))) == letters[m.group(1)]:
        return Parsed(letters[m.group(1)], "letter")
    return NONE


def parse_answer(answer: str, prompt: Prompt, parser: str) -> Parsed:
    if parser == "surgrec":
        return parse_surgrec(answer, prompt)
    if parser == "strict":
        return parse_strict(answer, prompt)
    raise ValueError(f"parser {parser!r}: use one of {', '.join(PARSERS)}")
