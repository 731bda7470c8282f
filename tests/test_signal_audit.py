"""The signal audit of base answers (#31), on hand-made answers whose every number is worked out below."""

import math

import pytest
from wow import WowError
from wow.analysis import signal_audit
from wow.pairs import candidate_pairs


def answer(q, i, correctness, extracted, text, *, correct=False, finish="stop", n_tokens=10, lp=-1.0, label=None):
    return {
        "question_id": q,
        "generator": "g",
        "answer_id": f"{q}|{i}",
        "sample_index": i,
        "split": "train",
        "correctness": correctness,
        "is_correct": correct,
        "extracted": extracted,
        "raw_label": label if label is not None else (None if extracted is None else -abs(extracted - 10)),
        "text": text,
        "finish_reason": finish,
        "n_tokens": n_tokens,
        "mean_logprob": lp,
    }


ANSWERS = [
    # q1 (gold 10): wrong answers 8 (0.8), 5 (0.5), an unparsed one cut at the budget
    answer("q1", 0, 0.8, 8, "The total weight is 8."),
    answer("q1", 1, 0.5, 5, "So the answer is five.", n_tokens=30),  # 5 is not written as "5"
    answer("q1", 2, 0.0, None, "Let me think step by step and", finish="length", n_tokens=64),
    # q2 (gold 10): right 10 (1.0), wrong 6 (0.6) and 4 (0.4)
    answer("q2", 0, 1.0, 10, "It is 10.", correct=True),
    answer("q2", 1, 0.6, 6, "I get 6."),
    answer("q2", 2, 0.4, 4, "Maybe 4."),
]


def test_audit_by_hand():
    result = signal_audit.audit([*ANSWERS, {**ANSWERS[0], "split": "test"}])  # the test answer is left out
    assert result["n_answers"] == 6 and result["n_questions"] == 2
    assert result["parse_rate"] == pytest.approx(5 / 6)
    assert result["answer_in_text"] == pytest.approx(4 / 5)  # "five" does not state 5
    assert result["cut_at_budget"] == pytest.approx(1 / 6)
    # wrong parsed correctness: q1 0.8, 0.5; q2 0.6, 0.4; mean 0.575
    # total SS = 0.225^2 + 0.075^2 + 0.025^2 + 0.175^2 = 0.0875; within = 2 * 0.15^2 + 2 * 0.1^2 = 0.065
    assert result["within_share"] == pytest.approx(0.065 / 0.0875)
    assert result["p_wrong"] == pytest.approx(0.575)
    assert result["ceiling_d_p_wrong"] == pytest.approx((0.8 + 0.6) / 2 - 0.575)  # best wrong per question
    assert result["n_pairs"] == 2  # (8, 5) and (6, 4)
    assert 0.0 <= result["probe_accuracy"] <= 1.0


def test_the_probe_finds_a_shortcut_on_held_out_questions_and_not_noise():
    """Longer answers less wrong on every question: the probe orders held-out pairs by length alone (1.0); with
    length unrelated to the labels (alternating), it cannot (0.5 here, by symmetry)."""
    rows = []
    for q in range(6):
        for i, c in enumerate((0.2, 0.5, 0.8)):
            rows.append(answer(f"q{q}", i, c, 10 - 8 + 3 * i, f"{i}", n_tokens=10 + 20 * i, lp=-1.0))
    pairs = candidate_pairs(rows)
    assert len(pairs) == 18 and signal_audit.probe_accuracy(pairs) == 1.0
    for r in rows:  # length now says nothing: the same for every answer
        r["n_tokens"], r["extracted"] = 10, 7
    assert signal_audit.probe_accuracy(candidate_pairs(rows)) == pytest.approx(0.5)
    assert math.isnan(signal_audit.probe_accuracy(pairs[:3]))  # one question: nothing held out


def test_decide_applies_the_stated_rules():
    ok, reasons = signal_audit.decide(signal_audit.audit(ANSWERS))
    # parse 0.833 passes; in text 0.8 passes; cut 0.167 passes; within 0.743 passes; ceiling 0.125 passes
    assert ok and reasons == []
    bad = {**signal_audit.audit(ANSWERS), "answer_in_text": 0.3, "ceiling_d_p_wrong": float("nan")}
    ok, reasons = signal_audit.decide(bad)
    assert not ok and [r.split()[0] for r in reasons] == ["answer_in_text", "ceiling_d_p_wrong"]
    with pytest.raises(WowError, match="no answers of split"):
        signal_audit.audit(ANSWERS, split="validation")
