"""Preference builders on a hand-made answer set; every expected count below was worked out by hand."""

import pytest
from wow import WowError, io
from wow.preferences import build_preferences, load_preferences, question_ids, save_preferences


def ans(qid, gen, idx, label, correct=False, parsed=True, split="train", text=None, prompt=None):
    """One answers.jsonl row; ``label`` is the raw label (-|answer - gold|)."""
    return {
        "answer_id": f"{qid}|{gen}|{idx}",
        "question_id": qid,
        "task": "shortest_path",
        "split": split,
        "generator": gen,
        "sample_index": idx,
        "prompt_messages": [{"role": "user", "content": prompt or f"What is the answer to {qid}?"}],
        "text": text if text is not None else f"{gen} says {label} for {qid} (sample {idx})",
        "extracted": (10 + label) if parsed else None,
        "raw_label": label if parsed else None,
        "correctness": 1.0 if correct else 0.0,
        "is_correct": correct,
        "mean_logprob": -1.0,
    }


@pytest.fixture
def answers():
    """Train questions q1, q2 (generator A), q1 (generator B); q3 validation and q4 test questions.

    A/q1: labels -3, -2, -2, 0 (correct), unparsed -> oracle pairs (-3,-2) x2 = 2; row pairs 0 vs 3 wrong = 3.
    A/q2: labels -5, -1, -4, all wrong -> oracle 3 pairs; row 0.
    B/q1: labels -1, -7 -> oracle 1 pair; row 0.
    """
    return [
        ans("q1", "A", 0, -3),
        ans("q1", "A", 1, -2),
        ans("q1", "A", 2, -2),
        ans("q1", "A", 3, 0, correct=True),
        ans("q1", "A", 4, None, parsed=False),
        ans("q2", "A", 0, -5),
        ans("q2", "A", 1, -1),
        ans("q2", "A", 2, -4),
        ans("q1", "B", 0, -1),
        ans("q1", "B", 1, -7),
        ans("q3", "A", 0, -1, split="validation"),
        ans("q3", "A", 1, -6, split="validation"),
        ans("q4", "A", 0, -2, split="test"),
        ans("q4", "A", 1, -9, split="test"),
    ]


def pairs(ds):
    """All rows of both splits."""
    return list(ds["train"]) + list(ds["validation"])


def ids(ds):
    return {(r["chosen_id"], r["rejected_id"]) for r in pairs(ds)}


def test_oracle_self_counts_and_order(answers):
    ds = build_preferences(answers, "oracle", source="self", generators=["A"], val_fraction=0.0)
    assert len(ds["train"]) == 5 and len(ds["validation"]) == 0
    assert ids(ds) == {
        ("q1|A|1", "q1|A|0"),
        ("q1|A|2", "q1|A|0"),
        ("q2|A|1", "q2|A|0"),
        ("q2|A|2", "q2|A|0"),
        ("q2|A|1", "q2|A|2"),
    }
    for r in pairs(ds):
        assert r["chosen_label"] > r["rejected_label"]
        assert r["source_method"] == "oracle" and r["pref_type"] == "oracle"


def test_training_prompt_is_the_answers_prompt_and_format_is_conversational(answers):
    ds = build_preferences(answers, "oracle", generators=["A"], val_fraction=0.0)
    by_id = {a["answer_id"]: a for a in answers}
    for r in pairs(ds):
        assert r["prompt"] == by_id[r["chosen_id"]]["prompt_messages"]
        assert r["chosen"] == [{"role": "assistant", "content": by_id[r["chosen_id"]]["text"]}]
        assert r["rejected"] == [{"role": "assistant", "content": by_id[r["rejected_id"]]["text"]}]


def test_mix_never_pairs_across_generators(answers):
    ds = build_preferences(answers, "oracle", source="mix", val_fraction=0.0)
    assert len(ds["train"]) == 6  # 5 (A) + 1 (B)
    for r in pairs(ds):
        assert r["chosen_id"].split("|")[:2] == [r["question_id"], r["generator"]]
        assert r["rejected_id"].split("|")[:2] == [r["question_id"], r["generator"]]
    assert ("q1|B|0", "q1|B|1") in ids(ds)


def test_only_train_questions_go_in(answers):
    ds = build_preferences(answers, "oracle", source="mix", val_fraction=0.0)
    assert question_ids([ds]) == {"q1", "q2"}  # q3 (validation) and q4 (test) have wrong pairs but stay out


def test_self_with_several_generators_needs_a_name(answers):
    with pytest.raises(WowError, match="generators=\\[<that model>\\]"):
        build_preferences(answers, "oracle", source="self")


def test_row_pairs_right_over_wrong(answers):
    ds = build_preferences(answers, "row", generators=["A"], val_fraction=0.0)
    assert ids(ds) == {("q1|A|3", "q1|A|0"), ("q1|A|3", "q1|A|1"), ("q1|A|3", "q1|A|2")}  # unparsed one excluded


def test_row_oracle_is_a_50_50_mix(answers):
    ds = build_preferences(answers, "row_oracle", generators=["A"], cap=4, val_fraction=0.0)
    methods = [r["source_method"] for r in pairs(ds)]
    assert sorted(methods) == ["oracle", "oracle", "row", "row"]  # n = min(4 // 2, 5, 3) = 2 each
    uncapped = build_preferences(answers, "row_oracle", generators=["A"], cap=None, val_fraction=0.0)
    assert sorted(r["source_method"] for r in pairs(uncapped)) == ["oracle"] * 3 + ["row"] * 3
    assert {r["pref_type"] for r in pairs(uncapped)} == {"row_oracle"}


def judgement(a, b, fwd, rev, qid="q2", gen="A"):
    return {
        "pair_id": f"{a}~{b}",
        "question_id": qid,
        "generator": gen,
        "answer_a": a,
        "answer_b": b,
        "forward": {"verdict": fwd, "raw": "..."},
        "reverse": {"verdict": rev, "raw": "..."},
    }


@pytest.fixture
def judgements():
    return [
        judgement("q2|A|0", "q2|A|1", 2, 1),  # consistent: answer_b (label -1) preferred in both orders
        judgement("q2|A|0", "q2|A|2", 1, 1),  # flipped: position 1 both times
        judgement("q2|A|1", "q2|A|2", None, 2),  # forward unparsed
        judgement("q3|A|0", "q3|A|1", 1, 2, qid="q3"),  # validation question: never used
        judgement("q1|A|3", "q1|A|0", 1, 2, qid="q1"),  # a correct answer: not wrong-over-wrong
    ]


def test_direct_with_consistency_check(answers, judgements):
    ds = build_preferences(
        answers, "direct", generators=["A"], judgements=judgements, both_orders=True, val_fraction=0.0
    )
    assert ids(ds) == {("q2|A|1", "q2|A|0")}
    assert pairs(ds)[0]["source_method"] == "direct_both_orders"


def test_direct_without_check_uses_the_forward_verdict(answers, judgements):
    ds = build_preferences(
        answers, "direct", generators=["A"], judgements=judgements, both_orders=False, val_fraction=0
    )
    assert ids(ds) == {("q2|A|1", "q2|A|0"), ("q2|A|0", "q2|A|2")}  # the judge may prefer the worse answer


def test_direct_with_nothing_usable_says_why(answers):
    bad = [judgement("q2|A|0", "q2|A|1", None, None)]
    with pytest.raises(WowError, match="1 unparsed in an order"):
        build_preferences(answers, "direct", generators=["A"], judgements=bad)


@pytest.fixture
def scores():
    # A/q1 wrong parsed: 0:-3 (s2), 1:-2 (s3), 2:-2 (s5); A/q2: 0:-5 (s1), 1:-1 (s4), 2:-4 (s1)
    # candidate pairs (label-distinct): q1 (0,1) gap 1, (0,2) gap 3; q2 (0,1) gap 3, (0,2) gap 0, (1,2) gap 3
    return {"q1|A|0": 2, "q1|A|1": 3, "q1|A|2": 5, "q1|A|3": 5, "q2|A|0": 1, "q2|A|1": 4, "q2|A|2": 1}


def test_score_margin_keeps_largest_gaps_and_drops_ties(answers, scores):
    full = build_preferences(answers, "score", generators=["A"], scores=scores, margin=1.0, val_fraction=0.0)
    assert len(full["train"]) == 4  # 5 candidates, one tie dropped
    top = build_preferences(answers, "score", generators=["A"], scores=scores, margin=0.4, val_fraction=0.0)
    assert len(top["train"]) == 2  # round(5 * 0.4) = 2, both of gap 3
    assert ids(top) <= {("q1|A|2", "q1|A|0"), ("q2|A|1", "q2|A|0"), ("q2|A|1", "q2|A|2")}
    # the score, not the label, orders a pair: q1 (0,1) has s=2 vs 3 -> answer 1 chosen
    assert ("q1|A|1", "q1|A|0") in ids(full)


def test_row_score_mix(answers, scores):
    ds = build_preferences(answers, "row_score", generators=["A"], scores=scores, margin=1.0, cap=None, val_fraction=0)
    assert sorted(r["source_method"] for r in pairs(ds)) == ["row"] * 3 + ["score"] * 3  # min(4, 3) each


def test_dedup_drops_identical_triples_and_identical_texts():
    answers = [
        ans("q1", "A", 0, -3, text="eight"),
        ans("q1", "A", 1, -2, text="seven"),
        ans("q1", "A", 2, -1, text="seven"),  # same text as sample 1
    ]
    # pairs: (1 over 0) and (2 over 0) are the same triple -> one kept; (2 over 1) has identical texts -> dropped
    ds = build_preferences(answers, "oracle", val_fraction=0.0)
    assert len(ds["train"]) == 1


def test_cap_is_a_seeded_sample(answers):
    a = build_preferences(answers, "oracle", source="mix", cap=4, seed=1, val_fraction=0.0)
    b = build_preferences(answers, "oracle", source="mix", cap=4, seed=1, val_fraction=0.0)
    assert len(a["train"]) == 4
    assert list(a["train"]["chosen_id"]) == list(b["train"]["chosen_id"])


def test_validation_split_is_by_question():
    answers = [ans(f"q{i}", "A", j, -j - 1) for i in range(10) for j in range(3)]  # 3 pairs per question
    ds = build_preferences(answers, "oracle", val_fraction=0.2, seed=3)
    train_q, val_q = set(ds["train"]["question_id"]), set(ds["validation"]["question_id"])
    assert len(val_q) == 2 and len(train_q) == 8 and not train_q & val_q
    assert len(ds["validation"]) == 6 and len(ds["train"]) == 24


def test_zero_pairs_is_an_error_that_says_why():
    answers = [ans("q1", "A", i, 0, correct=True) for i in range(3)]
    with pytest.raises(WowError, match="no wrong-over-wrong pairs.*all answers are correct or unparsed"):
        build_preferences(answers, "oracle")
    with pytest.raises(WowError, match="no right-over-wrong pairs"):
        build_preferences(answers, "row")


def test_no_train_answers_is_an_error(answers):
    test_only = [a for a in answers if a["split"] == "test"]
    with pytest.raises(WowError, match="train-split"):
        build_preferences(test_only, "oracle")


def test_unknown_type_lists_the_valid_ones(answers):
    with pytest.raises(WowError, match="oracle, direct, score, row, row_oracle"):
        build_preferences(answers, "best")


def test_drop_options_uses_the_question_text():
    shown = "Which is heavier?\nOptions:\nA. feather\nB. brick\n"
    answers = [ans("q1", "A", 0, -3, prompt=shown), ans("q1", "A", 1, -1, prompt=shown)]
    questions = [{"id": "q1", "prompt": "Which is heavier?"}]
    ds = build_preferences(answers, "oracle", drop_options=True, questions=questions, val_fraction=0.0)
    assert ds["train"][0]["prompt"] == [{"role": "user", "content": "Which is heavier?"}]
    with pytest.raises(WowError, match="needs `questions`"):
        build_preferences(answers, "oracle", drop_options=True)


def test_save_and_load_roundtrip(tmp_path, answers):
    ds = build_preferences(answers, "oracle", source="mix", val_fraction=0.5, seed=0)
    folder = save_preferences(ds, tmp_path / "prefs", info={"source": "mix"})
    meta = io.read_json(folder / "meta.json")
    assert meta["n_pairs"] == {"train": len(ds["train"]), "validation": len(ds["validation"])}
    assert sum(meta["n_pairs"].values()) == 6 and meta["info"] == {"source": "mix"}
    back = load_preferences(folder)
    assert list(back["train"]) == list(ds["train"])
    assert question_ids([folder]) == {"q1", "q2"}
    with pytest.raises(WowError, match="not a saved preference set"):
        load_preferences(tmp_path / "missing")


def test_pairs_per_question_keeps_the_largest_label_gaps_and_the_arms_flip_exactly_those():
    """#31's label-bearing pairs: the k pairs of largest label gap of each train question (ties in sample order),
    chosen before the flips, so oracle, noisy and random train on the same pairs."""
    from wow.preferences import preference_pairs

    def answer(q, i, c):
        return {"question_id": q, "generator": "g", "answer_id": f"{q}|{i}", "sample_index": i, "raw_label": c}

    pool = [answer("q", 0, 0.9), answer("q", 1, 0.1), answer("q", 2, 0.5), answer("q", 3, 0.5)]
    pairs = [{"chosen": a, "rejected": b} for a, b in ((pool[0], pool[1]), (pool[2], pool[1]), (pool[3], pool[1]),
                                                       (pool[0], pool[2]), (pool[0], pool[3]))]  # fmt: skip
    # gaps 0.8, 0.4, 0.4, 0.4, 0.4: the 0.8 pair, then the first 0.4 pair in order
    assert preference_pairs.largest_gap_pairs(pairs, 2) == pairs[:2]
    assert preference_pairs.largest_gap_pairs(pairs, 9) == pairs
    with pytest.raises(WowError, match="pairs_per_question"):
        preference_pairs.largest_gap_pairs(pairs, 0)


def test_pairs_per_question_reaches_the_oracle_arms_and_spares_judged_sets(answers):
    # A/q2: labels -5, -1, -4: pairs (-1 over -5) gap 4, (-4 over -5) gap 1, (-1 over -4) gap 3 -> k = 1 keeps gap 4
    one = build_preferences(answers, "oracle", generators=["A"], pairs_per_question=1, val_fraction=0.0)
    assert {r["question_id"] for r in pairs(one)} == {"q1", "q2"} and len(pairs(one)) == 2
    assert ("q2|A|1", "q2|A|0") in ids(one)
    flipped = build_preferences(answers, "random", generators=["A"], pairs_per_question=1, val_fraction=0.0)
    assert {frozenset(i) for i in ids(flipped)} == {frozenset(i) for i in ids(one)}  # the same pairs, some flipped


def test_gold_pairs_put_the_gold_sentence_over_the_most_wrong_answers(answers):
    """gold: per train question and generator, "The answer is <gold>." over its wrong parsed answers (k most wrong)."""
    for a, c in zip(answers[:8], [0.3, 0.6, 0.5, 1.0, 0.0, 0.2, 0.9, 0.4], strict=True):
        a["correctness"] = c
    questions = [{"id": "q1", "gold": 10}, {"id": "q2", "gold": 7.0}, {"id": "q3", "gold": 4}, {"id": "q4", "gold": 3}]
    ds = build_preferences(answers, "gold", source="mix", questions=questions, val_fraction=0.0, cap=None)
    rows = pairs(ds)
    # A/q1: 3 wrong parsed answers (the correct and the unparsed one never enter); A/q2: 3; B/q1: 2 -> 8 pairs
    assert len(rows) == 8
    assert {r["rejected_id"] for r in rows} == {"q1|A|0", "q1|A|1", "q1|A|2", "q2|A|0", "q2|A|1", "q2|A|2"} | {
        "q1|B|0",
        "q1|B|1",
    }
    chosen = {r["question_id"]: r["chosen"][0]["content"] for r in rows}
    assert chosen == {"q1": "The answer is 10.", "q2": "The answer is 7."}  # 7.0 written as 7
    assert {r["chosen_id"] for r in rows} == {"q1|A|gold", "q2|A|gold", "q1|B|gold"}
    assert all(r["source_method"] == "gold" and r["chosen_label"] is None for r in rows)
    # pairs_per_question 2: the two most wrong of each group: A/q1 correctness 0.3, 0.6, 0.5 -> samples 0 and 2;
    # A/q2 0.2, 0.9, 0.4 -> samples 0 and 2; B/q1 (correctness 0.0 twice, by hand above: untouched) -> both
    k2 = build_preferences(
        answers, "gold", source="mix", questions=questions, val_fraction=0.0, cap=None, pairs_per_question=2
    )
    assert {r["rejected_id"] for r in pairs(k2)} == {"q1|A|0", "q1|A|2", "q2|A|0", "q2|A|2", "q1|B|0", "q1|B|1"}
    with pytest.raises(WowError, match="need `questions`"):
        build_preferences(answers, "gold", source="mix")
    with pytest.raises(WowError, match="numeric gold"):
        build_preferences(
            answers, "gold", source="mix", questions=[{"id": "q1", "gold": "B"}, {"id": "q2", "gold": 1}]
        )


def test_pairs_from_stated_answers_keep_only_answers_whose_text_states_their_value(answers):
    """stated_only: an answer enters a pair only when its text writes the value it was graded on."""
    for a in answers:
        a["text"] = f"The weight is {a['extracted']}." if a["answer_id"] != "q2|A|1" else "It is a long path."
    everything = build_preferences(answers, "oracle", source="mix", val_fraction=0.0, cap=None)
    stated = build_preferences(answers, "oracle", source="mix", val_fraction=0.0, cap=None, stated_only=True)
    # A/q1's two (-2 over -3) pairs now have one text (a duplicate dropped): 1; A/q2: 3; B/q1: 1. A/q2's sample 1
    # (label -1) is unstated: of A/q2's 3 pairs only (-4 over -5) remains
    assert len(pairs(everything)) == 5 and len(pairs(stated)) == 3
    assert ("q2|A|2", "q2|A|0") in ids(stated) and not any("q2|A|1" in p for p in ids(stated))


def test_a_set_with_an_empty_validation_split_saves_and_loads(answers, tmp_path):
    """One question: every pair in train, none in validation; the empty split loads as an empty split."""
    one = [a for a in answers if a["question_id"] == "q2"]
    ds = build_preferences(one, "oracle", source="self", val_fraction=0.1)
    assert (ds["train"].num_rows, ds["validation"].num_rows) == (3, 0)
    loaded = load_preferences(save_preferences(ds, tmp_path / "set"))
    assert (loaded["train"].num_rows, loaded["validation"].num_rows) == (3, 0)
    assert loaded["validation"].features == ds["train"].features
    assert list(loaded["train"]["chosen_id"]) == list(ds["train"]["chosen_id"])
