"""wow.pairs, the one pair rule: candidate pairs, margins, and the same pairs for Acc_WoW and preference sets.

Every expected value below was worked out by hand.
"""

import pytest
from conftest import answer
from wow import WowError, pairs, schema
from wow.analysis import acc_wow_tables
from wow.elicit import scorers
from wow.preferences import build_preferences


# -- candidate pairs ----------------------------------------------------------------------------------------------
def test_candidate_pairs_keep_wrong_parsed_different_labels_in_sample_order():
    rows = [
        answer("q1", 4, -5.0, extracted=9),
        answer("q1", 1, 0.0, extracted=4, correct=True),
        answer("q1", 2, -2.0, extracted=2),
        answer("q1", 3, None, extracted=None),
        answer("q1", 0, -2.0, extracted=6),
        answer("q1", 0, -1.0, gen="h"),  # other generator: own group, no partner
    ]
    got = pairs.candidate_pairs(rows)
    assert [(a["sample_index"], b["sample_index"]) for a, b in got] == [(0, 4), (2, 4)]
    assert all(a["generator"] == b["generator"] == "g" for a, b in got)
    # with correct answers (the binned analysis): the correct sample 1 pairs with 0, 2 and 4 too
    with_correct = pairs.candidate_pairs(rows, include_correct=True)
    assert [(a["sample_index"], b["sample_index"]) for a, b in with_correct] == [
        (0, 1),
        (0, 4),
        (1, 2),
        (1, 4),
        (2, 4),
    ]


def test_candidate_pairs_never_cross_questions_or_generators():
    rows = [answer("q1", 0, -1.0), answer("q2", 0, -2.0), answer("q1", 1, -3.0, gen="h")]
    assert pairs.candidate_pairs(rows) == []


def test_ten_distinct_wrong_answers_give_45_pairs():
    rows = [answer("q", i, -float(i + 1)) for i in range(10)]
    assert len(pairs.candidate_pairs(rows)) == 45


def test_a_label_that_is_not_a_finite_number_is_unparsed():
    rows = [answer("q", 0, -1.0), answer("q", 1, float("nan")), answer("q", 2, -3.0)]
    assert [(a["sample_index"], b["sample_index"]) for a, b in pairs.candidate_pairs(rows)] == [(0, 2)]


def test_row_pairs_put_the_correct_answer_first():
    rows = [answer("q", 0, -2.0), answer("q", 1, 0.0, correct=True), answer("q", 2, -1.0), answer("q", 3, None, None)]
    got = [(a["sample_index"], b["sample_index"]) for a, b in pairs.row_pairs(rows)]
    assert got == [(1, 0), (1, 2)]


# -- margins ------------------------------------------------------------------------------------------------------
def test_margin_count_floor_but_at_least_one():
    assert pairs.margin_count(45, 0.1) == 4
    assert pairs.margin_count(10, 0.3) == 3  # 0.3 * 10 = 3.0000000000000004 in floats
    assert pairs.margin_count(5, 0.1) == 1  # int(0.5) == 0: keep the single largest gap
    assert pairs.margin_count(15, 0.5) == 7  # floor(7.5); the paper's finetune.py round(7.5) would keep 8
    assert pairs.margin_count(15, 0.1) == 1  # floor(1.5); round(1.5) would keep 2
    assert pairs.margin_count(1, 0.1) == 1
    assert pairs.margin_count(0, 0.5) == 0
    with pytest.raises(WowError, match=r"outside \(0, 1\]"):
        pairs.margin_count(3, 0.0)


def test_margin_pairs_drop_missing_scores_then_keep_the_largest_gaps():
    rows = [answer("q", i, -float(i + 1)) for i in range(4)]  # 6 pairs
    scores = {"q|g|0": 4.0, "q|g|1": None, "q|g|2": 1.0, "q|g|3": 0.0}
    kept, n_missing = pairs.margin_pairs(pairs.candidate_pairs(rows), scores, 0.5)
    # pairs with answer 1 are missing (3); left: (0,2) gap 3, (0,3) gap 4, (2,3) gap 1 -> floor(1.5) = 1: (0,3)
    assert n_missing == 3
    assert [(a["sample_index"], b["sample_index"]) for a, b in kept] == [(0, 3)]


# -- one rule for Acc_WoW and preference sets ---------------------------------------------------------------------
#: One question, six wrong answers with distinct labels: 15 candidate pairs. The scores make every gap distinct
#: (1, 3, 7, 15, 31, 2, 6, 14, 30, 4, 12, 28, 8, 24, 16), so the margin cut has no ties.
LABELS = [-2.0, -5.0, -4.0, -3.0, -6.0, -1.0]
SCORES = [0, 1, 3, 7, 15, 31]
JUDGE_COLUMN = schema.judge_score_column("j", 5)


@pytest.fixture
def fifteen_pairs():
    rows = []
    for i, (lab, _) in enumerate(zip(LABELS, SCORES, strict=True)):
        rows.append(
            {
                **answer("q1", i, lab, extracted=10 + lab, gen="A"),
                "task": "shortest_path",
                "split": "train",
                "prompt_messages": [{"role": "user", "content": "What is the shortest path?"}],
                "text": f"answer {i}",
                "n_tokens": 10,
                "mean_logprob": -1.0,
            }
        )
    scores = {f"q1|A|{i}": s for i, s in enumerate(SCORES)}
    return rows, scores


@pytest.mark.parametrize(
    ("margin", "n_pairs", "n_hits"),
    [
        (1.0, 15, 8),  # a pair is a hit when the higher-scored (later) answer has the higher label: 8 of 15
        (0.5, 7, 5),  # gaps 31, 30, 28, 24, 16 (all with answer 5, label -1: hits), 15 and 14 (answer 4, -6: misses)
        (0.1, 1, 1),  # the largest gap, 31: answers 0 and 5, a hit
    ],
)
def test_a_score_set_trains_on_exactly_the_pairs_acc_wow_scores(fifteen_pairs, margin, n_pairs, n_hits):
    answers, scores = fifteen_pairs
    table = acc_wow_tables.acc_wow_table(
        answers, scorers.score_answers(answers, {JUDGE_COLUMN: scores}), margins=[margin], split="train", n_boot=0
    )
    row = table[table.method == "score_k5"].iloc[0]
    assert (row.n_candidates, row.n_pairs, row.n_hits) == (15, n_pairs, n_hits)

    ds = build_preferences(answers, "score", generators=["A"], scores=scores, margin=margin, cap=None, val_fraction=0)
    train = list(ds["train"])
    assert len(train) == n_pairs  # the paper's round(n * M) would train on 8 (M = 0.5) and 2 (M = 0.1) pairs
    assert sum(r["chosen_label"] > r["rejected_label"] for r in train) == n_hits
    kept, _ = pairs.margin_pairs(pairs.candidate_pairs(answers), scores, margin)
    assert {frozenset((r["chosen_id"], r["rejected_id"])) for r in train} == {
        frozenset((a["answer_id"], b["answer_id"])) for a, b in kept
    }


def test_the_m50_set_by_hand(fifteen_pairs):
    answers, scores = fifteen_pairs
    ds = build_preferences(answers, "score", generators=["A"], scores=scores, margin=0.5, cap=None, val_fraction=0)
    got = {(r["chosen_id"].rsplit("|", 1)[1], r["rejected_id"].rsplit("|", 1)[1]) for r in ds["train"]}
    assert got == {("5", "0"), ("5", "1"), ("5", "2"), ("5", "3"), ("5", "4"), ("4", "0"), ("4", "1")}


def test_a_tie_is_a_miss_for_acc_wow_and_no_preference_for_the_set(fifteen_pairs):
    answers, scores = fifteen_pairs
    scores = {**scores, "q1|A|4": 31}  # answers 4 and 5 now tie at the top
    table = acc_wow_tables.acc_wow_table(
        answers, scorers.score_answers(answers, {JUDGE_COLUMN: scores}), margins=[1.0], split="train", n_boot=0
    )
    row = table[table.method == "score_k5"].iloc[0]
    ds = build_preferences(answers, "score", generators=["A"], scores=scores, margin=1.0, cap=None, val_fraction=0)
    assert (row.n_pairs, len(ds["train"])) == (15, 14)  # the same 15 pairs, less the tie (4, 5)
    assert row.n_hits == sum(r["chosen_label"] > r["rejected_label"] for r in ds["train"])
