"""The VLM study's questions and answer parsers on crafted answers (expected labels worked out by hand
from SurgRec's rules, vlm_eval/run_qwen3_vlm_test.py extract_pred_label, and from the strict rules)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unisurg.vlm.parsing import normalise, parse_strict, parse_surgrec
from unisurg.vlm.prompts import (
    DEFAULT_PROMPTS,
    TEMPLATES,
    PromptError,
    build_prompt,
    build_prompts,
    display_name,
    option_order,
)

CLASSES = ("Preparation", "calot_triangle_dissection", "Clipping-Cutting", "dissection", "3 Gallbladder Packaging")


def test_display_names_follow_surgrec_cleaning():
    assert [display_name(c) for c in CLASSES] == ["Preparation", "calot triangle dissection", "Clipping Cutting",
                                                  "dissection", "Gallbladder Packaging"]
    assert display_name("12") == "unknown"
    assert normalise("Reach for needle (G1)") == "reach for needle g1"


def test_surgrec_baseline_prompt_text_and_options():
    p = build_prompt("baseline", CLASSES)
    lines = p.text.split("\n")
    assert lines[:3] == TEMPLATES["baseline"]["lines"] and lines[3] == "Multiple-choice options:"
    assert lines[4:] == ["A. Preparation", "B. calot triangle dissection", "C. Clipping Cutting", "D. dissection",
                         "E. Gallbladder Packaging"]
    assert p.letter_to_label == {"A": 0, "B": 1, "C": 2, "D": 3, "E": 4}
    assert "SurgRec-open-source" in TEMPLATES["stability_v1"]["source"]


def test_option_orders():
    assert option_order("rev", 4) == [3, 2, 1, 0]
    perm = option_order("perm1", 6)
    assert sorted(perm) == list(range(6)) and perm == option_order("perm1", 6) and perm != option_order("perm2", 6)
    p = build_prompt("para_short@rev", CLASSES)
    assert p.name == "para_short@rev" and p.text.split("\n")[-1] == "E. Preparation"
    assert p.letter_to_label["A"] == 4
    assert build_prompt("baseline@as", CLASSES).name == "baseline"
    with pytest.raises(PromptError, match="option order"):
        build_prompt("baseline@shuffle", CLASSES)
    with pytest.raises(PromptError, match="unknown template"):
        build_prompt("baseline_v2", CLASSES)
    with pytest.raises(PromptError, match="twice"):
        build_prompts(["baseline", "baseline@as"], CLASSES)
    assert len(build_prompts(list(DEFAULT_PROMPTS), CLASSES)) == len(DEFAULT_PROMPTS)


@pytest.mark.parametrize("answer, label, rule", [
    ("B", 1, "letter"),
    ("The answer is C.", 2, "letter"),
    ("b", 1, "letter"),                              # upper-cased before the letter search
    ("a dissection", 0, "letter"),                   # SurgRec quirk: the article "a" is option A
    ("I think D", None, None),                       # first standalone letter "I" is no option; no name, no int
    ("I think dissection", 3, "name"),               # ... then the class name
    ("calot triangle dissection", 1, "name"),        # longest name wins over "dissection"
    ("Calot-Triangle_Dissection!", 1, "name"),       # normalised before matching
    ("gallbladder packaging", 4, "name"),
    ("class 3", 3, "integer"),                       # integer as label id
    ("label 17", 17, "integer"),                     # even one that is no class (valid but wrong)
    ("Clipping/cutting", 2, "name"),
    ("", None, None),
    ("no idea", None, None),
])
def test_surgrec_rules(answer, label, rule):
    res = parse_surgrec(answer, build_prompt("baseline", CLASSES))
    assert (res.label, res.rule) == (label, rule)


def test_surgrec_letters_follow_the_option_order():
    p = build_prompt("baseline@rev", CLASSES)  # A = label 4, ..., E = label 0
    assert parse_surgrec("A", p).label == 4 and parse_surgrec("E.", p).label == 0
    assert parse_surgrec("dissection", p).label == 3  # names do not depend on the order


def test_surgrec_name_tie_goes_to_larger_label_id():
    p = build_prompt("baseline", ("cut", "cut"))
    assert parse_surgrec("cut it", p).label == 1


@pytest.mark.parametrize("answer, label", [
    ("B", 1), (" (B) ", 1), ("B.", 1), ('"C"', 2), ("**D**", 3),
    ("dissection", 3), ("Calot triangle dissection.", 1),
    ("B. calot triangle dissection", 1),
    ("B. dissection", None),                          # letter and name disagree
    ("The answer is C.", None), ("b", None), ("a dissection", None), ("BC", None), ("3", None), ("", None),
])
def test_strict_parser(answer, label):
    assert parse_strict(answer, build_prompt("baseline", CLASSES)).label == label


def test_strict_parser_refuses_names_when_two_classes_share_one():
    p = build_prompt("baseline", ("cut", "cut", "clip"))
    assert parse_strict("cut", p).label is None and parse_strict("clip", p).label == 2 and parse_strict("B", p).label == 1


def test_surgrec_parser_matches_their_code_on_random_answers():
    """tests/fixtures/surgrec_parse_cases.json: the labels SurgRec's own parser gave (see its _source)."""

    data = json.loads((Path(__file__).parent / "fixtures" / "surgrec_parse_cases.json").read_text())
    prompts = {k: build_prompt("baseline", tuple(v)) for k, v in data["label_maps"].items()}
    got = [parse_surgrec(c["answer"], prompts[c["map"]]).label for c in data["cases"]]
    assert got == [c["surgrec_label"] for c in data["cases"]]
    assert len(data["cases"]) == 360 and sum(g is None for g in got) > 50 and sum(g is not None for g in got) > 150
