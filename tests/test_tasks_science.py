"""Science: the 5 % rule at its boundary, number parsing, generated golds recomputed, the SciBench loader."""

import json
import math
import re
from pathlib import Path

import pytest
import wow.tasks
from wow import WowError
from wow.tasks.base import UNPARSED, Question

F = Path(__file__).parent / "fixtures" / "tasks"


def _q(gold):
    return Question("science/x", "science", "test", "p", gold)


@pytest.mark.parametrize(
    "answer, correctness, raw, correct",
    [
        (100.0, 1.0, 0.0, True),
        (105.0, 1.0, -0.05, True),  # exactly 5 % above: inclusive
        (95.0, 1.0, -0.05, True),  # exactly 5 % below: inclusive
        (105.01, 1 - 0.0501, -0.0501, False),
        (94.99, 1 - 0.0501, -0.0501, False),
        (150.0, 0.5, -0.5, False),
        (300.0, 0.0, -2.0, False),  # correctness clipped at 0
        (-100.0, 0.0, -2.0, False),
    ],
)
def test_five_percent_rule_by_hand(answer, correctness, raw, correct):
    g = wow.tasks.get("science").grade(_q(100.0), answer)
    assert g.correctness == pytest.approx(correctness)
    assert g.raw_label == pytest.approx(raw) and g.is_correct is correct


def test_boundary_holds_for_golds_that_are_not_round():
    task = wow.tasks.get("science")
    assert task.grade(_q(3.0), 3.15).is_correct  # 0.15 / 3.0 is 0.04999... in floats
    assert task.grade(_q(0.7), 0.735).is_correct
    assert not task.grade(_q(0.7), 0.7351).is_correct
    assert task.grade(_q(-20.0), -21.0).is_correct


def test_zero_gold_uses_absolute_error_and_nonfinite_answers_are_unparsed():
    task = wow.tasks.get("science")
    assert task.grade(_q(0.0), 0.0).is_correct
    assert task.grade(_q(0.0), 0.5).raw_label == -0.5
    assert task.grade(_q(1.0), math.inf) == UNPARSED and task.grade(_q(1.0), None) == UNPARSED


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("The final answer is 12.5", 12.5),
        ("The final answer is -3", -3.0),
        ("The final answer is \u22124,500.5", -4500.5),
        ("The final answer is 1.2e-3", 0.0012),
        ("The final answer is 1.2 x 10^5", 120000.0),
        ("The final answer is 6.02 \u00d7 10^{23}", 6.02e23),
        ("The final answer is $3.5$", 3.5),
        ("The final answer is: 0.25 m/s", 0.25),
        ("The final answer is None", None),
        ("about seven", None),
    ],
)
def test_science_extraction(reply, expected):
    got = wow.tasks.get("science").parse(reply, _q(1.0))
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_science_direct_parse_takes_the_last_answer():
    task = wow.tasks.get("science")
    text = "First v = 3.0 m/s. The answer is 4.5. Checking units, the final answer is 4.2 m."
    assert task.parse_direct(text, _q(1.0)) == 4.2
    assert task.parse_direct("No number here.", _q(1.0)) is None


def test_generated_golds_follow_from_the_printed_values():
    qs = wow.tasks.get("science", templates=["kinematics", "ideal_gas", "free_fall"], digits=3).questions(30, seed=4)
    seen = set()
    for q in qs:
        nums = [
            float(x)
            for x in re.findall(r"(?<![\w^/])(\d+(?:\.\d+)?)(?![\w^])", q.prompt.split("Problem:")[1].split("\n")[0])
        ]
        kind = q.meta["template"]
        seen.add(kind)
        if kind == "kinematics":
            v0, a, t = nums
            expected, unit = v0 * t + 0.5 * a * t * t, "m"
        elif kind == "ideal_gas":
            n, temp, vol, r = nums
            expected, unit = n * r * temp / vol, "kPa"
        else:
            h, g = nums
            expected, unit = math.sqrt(2 * h / g), "s"
        assert q.gold == pytest.approx(expected, rel=1e-5)
        assert q.meta["unit"] == unit and f"Give the answer in {unit}." in q.prompt
    assert seen == {"kinematics", "ideal_gas", "free_fall"}


def test_unknown_template_is_refused():
    with pytest.raises(WowError, match="unknown template"):
        wow.tasks.get("science", templates=["alchemy"])


def test_scibench_loader_reads_numbers_with_commas_and_unicode_minus():
    qs = {q.id: q for q in wow.tasks.get("science", data_files=str(F / "scibench.jsonl")).questions(5, seed=0)}
    assert qs["science/atkins-2.4"].gold == -202.6
    assert qs["science/calc-3.7"].gold == 5_400_000.0
    q = qs["science/fund-1.1"]
    assert q.gold == 9.9 and q.meta["unit"] == "m/s" and "frictionless incline" in q.prompt


def test_scibench_bad_number_names_the_line(tmp_path):
    row = json.loads((F / "scibench.jsonl").read_text().splitlines()[0])
    row["answer_number"] = "about ten"
    bad = tmp_path / "sci.jsonl"
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(WowError, match=r"sci.jsonl:1: answer_number 'about ten'"):
        wow.tasks.get("science", data_files=str(bad)).questions(1)
