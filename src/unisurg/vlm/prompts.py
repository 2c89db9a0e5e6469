"""The multiple-choice questions put to the vision-language models.

A prompt is a *template* (instruction lines, stored as data below) times an *option order*
(which class gets letter A, B, ...). Named ``TEMPLATE`` or ``TEMPLATE@ORDER``:

* templates: SurgRec's two, ``baseline`` and ``stability_v1`` (the texts of their release), and
  three paraphrases of ours (``para_short``, ``para_question``, ``para_surgeon``) that ask the same
  thing in other words;
* orders: ``as`` (label-id order, SurgRec's; the default), ``rev`` (reversed), ``permK`` (a
  random permutation drawn with seed K, the same for every sample).

The question lists the options as ``"A. <class name>"`` lines after the template's lines, as
SurgRec does; class names are the dataset label map's names cleaned the SurgRec way
(:func:`display_name`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

SURGREC_SOURCE = ("Siiichenggg/SurgRec-open-source @ 25d01e43b7b1676bae0f9a7262f6f391547e19c5, "
                  "vlm_eval/run_qwen3_vlm_test.py, make_prompt()")

# Each template: instruction lines, then the title line of the option list. SurgRec's texts are
# reproduced verbatim (they are the object of the study); the paraphrases are ours.
TEMPLATES: dict[str, dict] = {
    "baseline": {
        "source": SURGREC_SOURCE + " (variant 'baseline')",
        "lines": [
            "You are a medical video classifier.",
            "Given one representative frame from a short surgical/endoscopy clip, choose exactly one option.",
            "Return ONLY the option letter (A/B/C/...) or the exact class name.",
        ],
        "options_title": "Multiple-choice options:",
    },
    "stability_v1": {
        "source": SURGREC_SOURCE + " (variant 'stability_v1')",
        "lines": [
            "You are an expert medical visual classifier for surgical/endoscopy frames.",
            "You will receive one representative frame from a short procedure clip.",
            "Pick exactly one best-matching class from the options.",
            "Output strictly one token: either the option letter (A/B/C/...) or the exact class name.",
        ],
        "options_title": "Multiple-choice options:",
    },
    "para_short": {
        "source": "unisurg paraphrase",
        "lines": ["Classify this surgical image.", "Answer with the letter of one option."],
        "options_title": "Options:",
    },
    "para_question": {
        "source": "unisurg paraphrase",
        "lines": [
            "This picture was taken during a surgical or endoscopic procedure.",
            "Which of the following categories describes it best?",
            "Reply with a single option letter, or with the category name exactly as written.",
        ],
        "options_title": "Categories:",
    },
    "para_surgeon": {
        "source": "unisurg paraphrase",
        "lines": [
            "You are a surgeon reviewing a recording of an operation.",
            "Assign the frame you are shown to exactly one of the listed classes.",
            "Give only the letter of that class.",
        ],
        "options_title": "Classes:",
    },
}

SURGREC_PROMPTS = ("baseline", "stability_v1")
DEFAULT_PROMPTS = ("baseline", "stability_v1", "para_short", "para_question", "para_surgeon", "baseline@rev",
                   "baseline@perm1")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class PromptError(ValueError):
    """A prompt name that is not ``TEMPLATE`` or ``TEMPLATE@ORDER`` with a known template and order."""


def display_name(name: str) -> str:
    """A class name as SurgRec shows it: ``_`` and ``-`` become spaces, a leading number goes, spaces
    collapse (SurgRec ``clean_name``); an empty result is ``"unknown"``."""
    text = re.sub(r"^\d+\s*", "", name.replace("_", " ").replace("-", " "))
    text = re.sub(r"\s+", " ", text).strip()
    return text or "unknown"


def option_order(order: str, n_classes: int) -> list[int]:
    """Label ids in option order (A first) for order ``as`` / ``rev`` / ``permK``."""
    if order == "as":
        return list(range(n_classes))
    if order == "rev":
        return list(range(n_classes))[::-1]
    m = re.fullmatch(r"perm(\d+)", order)
    if m:
        return [int(i) for i in np.random.default_rng(int(m.group(1))).permutation(n_classes)]
    raise PromptError(f"option order {order!r}: use 'as', 'rev' or 'permK' (K = a seed, e.g. perm1)")


@dataclass(frozen=True)
class Prompt:
    """One question: its name, template, option order and the texts it was built from."""

    name: str
    template: str
    order: str
    text: str
    options: tuple[int, ...]  # label id of option A, B, ...
    names: tuple[str, ...]  # display name of every label id (index = label id)

    @property
    def letter_to_label(self) -> dict[str, int]:
        return {LETTERS[i]: lab for i, lab in enumerate(self.options)}


def parse_prompt_name(name: str) -> tuple[str, str]:
    template, _, order = name.partition("@")
    if template not in TEMPLATES:
        raise PromptError(f"prompt {name!r}: unknown template {template!r}; templates: {', '.join(TEMPLATES)}")
    return template, order or "as"


def build_prompt(name: str, class_names: tuple[str, ...] | list[str]) -> Prompt:
    """The question ``name`` for a dataset with these class names (label id = index)."""
    template, order = parse_prompt_name(name)
    n = len(class_names)
    if n > len(LETTERS):
        raise PromptError(f"{n} classes: a multiple-choice question has at most {len(LETTERS)} letter options")
    options = option_order(order, n)
    names = tuple(display_name(c) for c in class_names)
    t = TEMPLATES[template]
    lines = [*t["lines"], t["options_title"]]
    lines += [f"{LETTERS[i]}. {names[lab]}" for i, lab in enumerate(options)]
    canonical = template if order == "as" else f"{template}@{order}"
    return Prompt(canonical, template, order, "\n".join(lines), tuple(options), names)


def build_prompts(names: list[str] | tuple[str, ...], class_names) -> list[Prompt]:
    """Several prompts; a name given twice (also as ``X`` and ``X@as``) is an error."""
    out = [build_prompt(n, class_names) for n in names]
    seen = [p.name for p in out]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise PromptError(f"prompt(s) {dup} given twice")
    return out
