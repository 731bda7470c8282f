"""wow.elicit: the scalar scorers, scores.jsonl rows, the Acc_WoW table (oracle = 1.0) and the Figure 2/5 analysis."""

import math
import re

import pytest
from wow import WowError, elicit, judges
from wow.backends.base import Completion, Engine


def answer(s, label, extracted, qid="q", gen="g", task="t", correct=False, n_tokens=10, lp=-1.0):
    return {
        "answer_id": f"{qid}|{gen}|{s}",
        "question_id": qid,
        "task": task,
        "generator": gen,
        "sample_index": s,
        "prompt_messages": [{"role": "user", "content": "Q?"}],
        "text": f"ANS{s}",
        "n_tokens": n_tokens,
        "mean_logprob": lp,
        "extracted": extracted,
        "raw_label": label,
        "is_correct": correct,
        "correctness": 1.0 if correct else 0.0,
    }


# q: answers 0..4; 0 right; 1,2,3 wrong with labels -1, -3, -2; 4 unparsed.
# pairs (1,2) truth a, (1,3) truth a, (2,3) truth b.
ANSWERS = [
    answer(0, 0.0, 4, correct=True, n_tokens=50, lp=-0.1),
    answer(1, -1.0, 5, n_tokens=30, lp=-0.5),
    answer(2, -3.0, 7, n_tokens=10, lp=-0.2),
    answer(3, -2.0, 5, n_tokens=20, lp=-1.0),
    answer(4, None, None, n_tokens=90, lp=None),
]


def test_consistency_is_the_share_of_parsed_answers_with_the_same_answer():
    rows = [
        answer(0, -1.0, 3),
        answer(1, -1.0, 3.0),
        answer(2, -2.0, 5),
        answer(3, None, None),
        answer(0, -1.0, 3, gen="h"),
    ]
    cons = elicit.consistency(rows)
    assert cons == {"q|g|0": 2 / 3, "q|g|1": 2 / 3, "q|g|2": 1 / 3, "q|g|3": None, "q|h|0": 1.0}


def test_score_answers_rows():
    col = elicit.judge_score_column("gpt-4o", 5)
    rows = elicit.score_answers(ANSWERS, {col: {"q|g|1": 4, "q|g|2": None}})
    assert list(rows[1]) == ["answer_id", "question_id", "task", "generator", "length", "consistency", "logprob", col]
    assert (rows[1]["length"], rows[1]["consistency"], rows[1]["logprob"], rows[1][col]) == (30.0, 0.5, -0.5, 4)
    assert rows[4]["consistency"] is None and rows[4][col] is None and rows[4]["logprob"] is None
    with pytest.raises(WowError):
        elicit.score_answers(ANSWERS, {"gpt-4o": {}})


def test_judge_score_maps_name_one_column_per_judge_k_and_mode():
    rows = [
        {"judge": "j", "k": 2, "mode": "text", "answer_ids": ["q|g|1", "q|g|2"], "scores": [4, 1]},
        {"judge": "j", "k": 2, "mode": "text", "answer_ids": ["q|g|3"], "scores": None},
        {"judge": "j", "k": 1, "mode": "logprob", "answer_ids": ["q|g|1"], "scores": [2.5]},
    ]
    maps = elicit.judge_score_maps(rows)
    assert maps == {
        "judge_score:j:k2": {"q|g|1": 4, "q|g|2": 1, "q|g|3": None},
        "judge_score:j:k1:logprob": {"q|g|1": 2.5},
    }
    table = elicit.acc_wow_table(ANSWERS, elicit.score_answers(ANSWERS, maps), n_boot=0)
    assert {"score_k2", "score_k1_logprob"} <= set(table.method)


def test_judge_score_column_round_trip():
    col = elicit.judge_score_column("ollama:llama3", 1, "logprob")
    assert col == "judge_score:ollama:llama3:k1:logprob"
    assert elicit.parse_judge_score_column(col) == ("ollama:llama3", 1, "logprob")
    assert elicit.parse_judge_score_column("judge_score:j:k10") == ("j", 10, "text")


def by_method(table, method, margin=1.0, check="none"):
    sel = table[(table.method == method) & (table.margin == margin) & (table.check == check)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_acc_wow_table_scalar_methods_hand_computed():
    col = elicit.judge_score_column("j", 5)
    scores = elicit.score_answers(ANSWERS, {col: {"q|g|1": 3, "q|g|2": 3, "q|g|3": None}})
    table = elicit.acc_wow_table(ANSWERS, scores, n_boot=100)
    assert list(table.columns) == elicit.TABLE_COLUMNS
    # length 30, 10, 20: (1,2) hit, (1,3) hit, (2,3) 10 < 20 and -3 < -2: hit
    assert by_method(table, "length").acc_wow == 1.0
    # consistency 0.5, 0.25, 0.5: (1,2) hit, (1,3) tie = miss, (2,3) hit
    row = by_method(table, "consistency")
    assert (row.n_pairs, row.n_hits) == (3, 2)
    # logprob -0.5, -0.2, -1.0: (1,2) miss, (1,3) hit, (2,3) miss
    assert by_method(table, "logprob").n_hits == 1
    # margin 0.5 keeps floor(1.5) = 1 pair: logprob gaps 0.3, 0.5, 0.8 -> (2,3), a miss
    row = by_method(table, "logprob", 0.5)
    assert (row.n_pairs, row.acc_wow) == (1, 0.0)
    # judge score: only (1,2) has both scores, and it is a tie -> miss
    row = by_method(table, "score_k5")
    assert (row.judge, row.n_candidates, row.n_missing, row.n_pairs, row.acc_wow) == ("j", 3, 2, 1, 0.0)
    assert math.isnan(row.parse_fail_rate)


def test_oracle_is_exactly_one_wherever_there_are_pairs():
    rows = ANSWERS + [answer(0, -1.0, 3, qid="q2", task="u"), answer(1, -1.0, 3, qid="q2", task="u")]  # no pairs
    table = elicit.acc_wow_table(rows, elicit.score_answers(rows), n_boot=50)
    oracle = table[table.method == "oracle"]
    assert len(oracle) == 6
    with_pairs = oracle[oracle.n_pairs > 0]
    assert len(with_pairs) == 3 and (with_pairs.acc_wow == 1.0).all() and (with_pairs.ci_low == 1.0).all()
    empty = oracle[oracle.n_pairs == 0]
    assert empty.acc_wow.isna().all() and (empty.note == "no candidate pairs").all()


class ScriptedJudge(Engine):
    name = "fake"

    def __init__(self, replies):
        super().__init__("fake-judge")
        self.replies = replies

    def _generate(self, requests, progress):
        out = []
        for r in requests:
            order = tuple(re.findall(r"\[Answer \d\]\n(ANS\d+)", r.messages[0]["content"]))
            out.append(Completion(text=self.replies[order]))
        return out


def test_acc_wow_table_pairwise_rows_with_both_checks():
    replies = {
        ("ANS1", "ANS2"): "Preferred output: 1",  # a, right
        ("ANS2", "ANS1"): "Preferred output: 2",  # a: consistent
        ("ANS1", "ANS3"): "Preferred output: 2",  # b, wrong
        ("ANS3", "ANS1"): "Preferred output: 1",  # b: consistent, wrong
        ("ANS2", "ANS3"): "Preferred output: 2",  # b, right
        ("ANS3", "ANS2"): "no idea",  # unparseable
    }
    judgements = judges.judge_pairwise(ScriptedJudge(replies), ANSWERS, judge="j")
    table = elicit.acc_wow_table(ANSWERS, elicit.score_answers(ANSWERS), judgements, n_boot=50)
    none = by_method(table, "pairwise_text", check="none")
    assert (none.n_pairs, none.n_hits) == (3, 2)
    assert none.parse_fail_rate == pytest.approx(1 / 6) and none.flip_rate == 0.0
    both = by_method(table, "pairwise_text", check="both_orders")
    assert (both.n_candidates, both.n_missing, both.n_pairs, both.acc_wow) == (3, 1, 2, 0.5)
    assert table[table.method == "pairwise_text"].margin.tolist() == [1.0, 1.0]  # text verdicts: no margins


def test_acc_wow_table_rejects_a_bad_margin():
    with pytest.raises(WowError):
        elicit.acc_wow_table(ANSWERS, elicit.score_answers(ANSWERS), margins=(1.0, 0.0))


def test_task_accuracy_confidence():
    stats = elicit.task_accuracy_confidence(ANSWERS)
    row = stats.iloc[0]
    assert (row.task, row.generator, row.n_answers, row.n_confidence, row.n_wow_pairs) == ("t", "g", 5, 4, 3)
    assert row.accuracy == pytest.approx(0.2)
    expected = (math.exp(-0.1) + math.exp(-0.5) + math.exp(-0.2) + math.exp(-1.0)) / 4
    assert row.mean_confidence == pytest.approx(expected)


def test_acc_wow_correlations_across_task_generator_points():
    import pandas as pd

    table = pd.DataFrame(
        {
            "task": ["a", "b", "c", "d"],
            "generator": ["g"] * 4,
            "method": ["logprob"] * 4,
            "judge": [""] * 4,
            "check": ["none"] * 4,
            "margin": [1.0] * 4,
            "acc_wow": [1, 3, 2, 4],
        }
    )
    stats = pd.DataFrame(
        {"task": ["a", "b", "c", "d"], "generator": ["g"] * 4, "accuracy": [1, 2, 3, 4], "mean_confidence": [0.5] * 4}
    )
    corr = elicit.acc_wow_correlations(table, stats).set_index("x")
    assert corr.loc["accuracy", "r"] == pytest.approx(0.8) and corr.loc["accuracy", "n"] == 4
    assert math.isnan(corr.loc["mean_confidence", "r"]) and corr.loc["mean_confidence", "n"] == 4  # constant
