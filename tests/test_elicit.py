"""wow.analysis.acc_wow_tables: the scalar scorers, scores.jsonl rows, the Acc_WoW table (oracle = 1.0) and the Figure 2/5 analysis."""

import math
import random
import re
import zlib

import pytest
from wow import WowError, schema, tasks
from wow.analysis import acc_wow_tables
from wow.backends.base import Completion, Engine
from wow.elicit import judge_prompts, judges, scorers
from wow.figures import plots


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
    cons = scorers.consistency(rows)
    assert cons == {"q|g|0": 2 / 3, "q|g|1": 2 / 3, "q|g|2": 1 / 3, "q|g|3": None, "q|h|0": 1.0}


def test_score_answers_rows():
    col = schema.judge_score_column("gpt-4o", 5)
    rows = scorers.score_answers(ANSWERS, {col: {"q|g|1": 4, "q|g|2": None}})
    assert list(rows[1]) == ["answer_id", "question_id", "task", "generator", "length", "consistency", "logprob", col]
    assert (rows[1]["length"], rows[1]["consistency"], rows[1]["logprob"], rows[1][col]) == (30.0, 0.5, -0.5, 4)
    assert rows[4]["consistency"] is None and rows[4][col] is None and rows[4]["logprob"] is None
    with pytest.raises(WowError):
        scorers.score_answers(ANSWERS, {"gpt-4o": {}})


def test_judge_score_maps_name_one_column_per_judge_k_and_mode():
    rows = [
        {"judge": "j", "k": 2, "mode": "text", "answer_ids": ["q|g|1", "q|g|2"], "scores": [4, 1]},
        {"judge": "j", "k": 2, "mode": "text", "answer_ids": ["q|g|3"], "scores": None},
        {"judge": "j", "k": 1, "mode": "logprob", "answer_ids": ["q|g|1"], "scores": [2.5]},
    ]
    maps = scorers.judge_score_maps(rows)
    assert maps == {
        "judge_score:j:k2": {"q|g|1": 4, "q|g|2": 1, "q|g|3": None},
        "judge_score:j:k1:logprob": {"q|g|1": 2.5},
    }
    table = acc_wow_tables.acc_wow_table(ANSWERS, scorers.score_answers(ANSWERS, maps), n_boot=0)
    assert {"score_k2", "score_k1_logprob"} <= set(table.method)


def test_judge_score_column_round_trip():
    col = schema.judge_score_column("ollama:llama3", 1, "logprob")
    assert col == "judge_score:ollama:llama3:k1:logprob"
    assert schema.parse_judge_score_column(col) == ("ollama:llama3", 1, "logprob")
    assert schema.parse_judge_score_column("judge_score:j:k10") == ("j", 10, "text")


def by_method(table, method, margin=1.0, check="none"):
    sel = table[(table.method == method) & (table.margin == margin) & (table.check == check)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_acc_wow_table_scalar_methods_hand_computed():
    col = schema.judge_score_column("j", 5)
    scores = scorers.score_answers(ANSWERS, {col: {"q|g|1": 3, "q|g|2": 3, "q|g|3": None}})
    table = acc_wow_tables.acc_wow_table(ANSWERS, scores, n_boot=100)
    assert list(table.columns) == acc_wow_tables.TABLE_COLUMNS
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
    table = acc_wow_tables.acc_wow_table(rows, scorers.score_answers(rows), n_boot=50)
    oracle = table[table.method == "oracle"]
    assert len(oracle) == 6
    with_pairs = oracle[oracle.n_pairs > 0]
    assert len(with_pairs) == 3 and (with_pairs.acc_wow == 1.0).all() and (with_pairs.ci_low == 1.0).all()
    empty = oracle[oracle.n_pairs == 0]
    assert empty.acc_wow.isna().all() and (empty.note == "no candidate pairs").all()


def test_acc_wow_table_resamples_whole_questions_unless_asked_for_pairs_and_says_which():
    """Two questions of three pairs each: length orders q1's pairs all right and q2's all wrong (Acc_WoW 0.5).
    Resampling questions draws q1 twice (1.0), q2 twice (0.0) or one of each (0.5): CI [0, 1]. Resampling the six
    pairs as if independent: 6 coin flips, P(0 of 6) = 1/64 < 2.5% < P(at most 1) = 7/64, so CI [1/6, 5/6]."""
    rows = []
    for qid, lengths in (("q1", (30, 20, 10)), ("q2", (10, 20, 30))):
        rows += [answer(i, -(i + 1.0), 5 + i, qid=qid, n_tokens=n) for i, n in enumerate(lengths)]
    scores = scorers.score_answers(rows)
    table = acc_wow_tables.acc_wow_table(rows, scores, margins=(1.0,), n_boot=4000)
    row = by_method(table, "length")
    assert (row.acc_wow, row.ci_low, row.ci_high, row.ci_resample) == (0.5, 0.0, 1.0, "question")
    pairs = by_method(
        acc_wow_tables.acc_wow_table(rows, scores, margins=(1.0,), n_boot=4000, resample="pair"), "length"
    )
    assert (pairs.ci_low, pairs.ci_high, pairs.ci_resample) == (pytest.approx(1 / 6), pytest.approx(5 / 6), "pair")
    assert by_method(acc_wow_tables.acc_wow_table(rows, scores, n_boot=0), "length").ci_resample == ""
    with pytest.raises(WowError, match="resampling unit 'answer'"):
        acc_wow_tables.acc_wow_table(rows, scores, resample="answer")


def test_a_margins_interval_redoes_the_cut_in_every_resample():
    """q1's two pairs have gaps 9 and 8 (both hits), q2's gaps 1 and 2 (both misses); M = 0.5 keeps the 2 largest
    gaps: q1's (Acc_WoW 1). A resample of {q2, q2} keeps q2's pairs (0), {q1, q1} or one of each keeps q1's (1):
    the CI is [0, 1], where the kept pairs alone (q1's) would give [1, 1]."""
    from wow.analysis import acc_wow

    res = acc_wow.acc_from_hits([1, 1, 0, 0], [9, 8, 1, 2], 0.5, n_boot=2000, seed=0, groups=["q1", "q1", "q2", "q2"])
    assert (res.acc, res.n_pairs, res.ci_low, res.ci_high, res.ci_resample) == (1.0, 2, 0.0, 1.0, "question")


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
    table = acc_wow_tables.acc_wow_table(ANSWERS, scorers.score_answers(ANSWERS), judgements, n_boot=50)
    none = by_method(table, "pairwise_text", check="none")
    assert (none.n_pairs, none.n_hits) == (3, 2)
    assert none.parse_fail_rate == pytest.approx(1 / 6) and none.flip_rate == 0.0
    both = by_method(table, "pairwise_text", check="both_orders")
    assert (both.n_candidates, both.n_missing, both.n_pairs, both.acc_wow) == (3, 1, 2, 0.5)
    assert table[table.method == "pairwise_text"].margin.tolist() == [1.0, 1.0]  # text verdicts: no margins


def test_acc_wow_table_rejects_a_bad_margin():
    with pytest.raises(WowError):
        acc_wow_tables.acc_wow_table(ANSWERS, scorers.score_answers(ANSWERS), margins=(1.0, 0.0))


def test_task_accuracy_confidence():
    stats = acc_wow_tables.task_accuracy_confidence(ANSWERS)
    row = stats.iloc[0]
    assert (row.task, row.generator, row.n_answers, row.n_confidence, row.n_wow_pairs) == ("t", "g", 5, 4, 3)
    assert row.accuracy == pytest.approx(0.2)
    expected = (math.exp(-0.1) + math.exp(-0.5) + math.exp(-0.2) + math.exp(-1.0)) / 4
    assert row.mean_confidence == pytest.approx(expected)


def test_task_accuracy_and_confidence_under_the_paper_protocol_are_sums_over_all_answers():
    """Rows 36 and 41 of docs/fidelity.md: the paper's code divides by every answer (no logprob counts 0
    confidence), and takes Bio's accuracy as the mean FActScore, not the share above 0.9."""
    paper = acc_wow_tables.task_accuracy_confidence(ANSWERS, "paper").iloc[0]
    assert paper.accuracy == pytest.approx(0.2)  # a graded task: the share correct, as under wow
    expected = (math.exp(-0.1) + math.exp(-0.5) + math.exp(-0.2) + math.exp(-1.0)) / 5  # 5 answers, 1 without
    assert paper.mean_confidence == pytest.approx(expected)
    bio = [
        {"task": "bio_generation", "generator": "g", "question_id": f"b{i}", "answer_id": f"b{i}", "sample_index": 0,
         "correctness": c, "is_correct": (c or 0) >= 0.9, "raw_label": c, "extracted": "text", "mean_logprob": -0.5}
        for i, c in enumerate([0.95, 0.5, 0.2, None])
    ]  # fmt: skip
    wow_row = acc_wow_tables.task_accuracy_confidence(bio).iloc[0]
    paper_row = acc_wow_tables.task_accuracy_confidence(bio, "paper").iloc[0]
    assert wow_row.accuracy == pytest.approx(0.25)  # 1 of 4 with FActScore >= 0.9
    assert paper_row.accuracy == pytest.approx((0.95 + 0.5 + 0.2 + 0.0) / 4)  # the mean FActScore, null as 0
    with pytest.raises(WowError):
        acc_wow_tables.task_accuracy_confidence(bio, "papers")


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
    corr = acc_wow_tables.acc_wow_correlations(table, stats).set_index("x")
    assert corr.loc["accuracy", "r"] == pytest.approx(0.8) and corr.loc["accuracy", "n"] == 4
    assert math.isnan(corr.loc["mean_confidence", "r"]) and corr.loc["mean_confidence", "n"] == 4  # constant


# -- no signal reads a label --------------------------------------------------------------------------------------
def test_bio_consistency_is_the_logprob_not_the_frequency_of_its_own_score():
    # for bio_generation the "extracted answer" is the FActScore: counting equal answers would count equal labels
    # (0.4 for the four zeros, 0.1 for the rest). The paper's code reuses the token-logprob signal instead.
    factscores = [0, 0, 0, 0, 0.35, 0.5, 0.6, 0.62, 0.7, 0.8]
    rows = [answer(i, fs, fs, task="bio_generation", lp=-0.1 * (i + 1)) for i, fs in enumerate(factscores)]
    assert scorers.consistency(rows) == {f"q|g|{i}": -0.1 * (i + 1) for i in range(10)}
    assert scorers.is_free_text("bio_generation") and not scorers.is_free_text("shortest_path")


class HashJudge(Engine):
    """Scores are a hash of the prompt: they change exactly when the prompt does."""

    name = "fake"

    def __init__(self):
        super().__init__("hash-judge")

    def _generate(self, requests, progress):
        out = []
        for r in requests:
            content = r.messages[0]["content"]
            h = zlib.crc32(content.encode())
            k = len(re.findall(r"^\[Answer \d+\]$", content, flags=re.M))
            lines = [f"Score for answer {i}: {(h >> i) % 6}" for i in range(1, k + 1)]
            out.append(Completion(text="\n".join(lines) if k > 1 else f"Score: {h % 6}"))
        return out


def _task_answers(task: str) -> list[dict]:
    """Three questions x six answers of ``task``, graded as the task grades (free-text: extracted = the score)."""
    rng = random.Random(task)
    rows = []
    for q in range(3):
        for s in range(6):
            if scorers.is_free_text(task):
                extracted = rng.choice([None, 0.0, 0.0, 0.35, 0.5, 0.9])
                label = extracted
            else:
                extracted = rng.choice([None, 1, 2, 2, 3])
                label = None if extracted is None else -float(rng.randint(0, 4))
            row = answer(s, label, extracted, qid=f"q{q}", task=task, n_tokens=rng.randint(5, 50), lp=-rng.random())
            row.update(correctness=max(0.0, 1.0 + (label or -1.0)), is_correct=label is not None and label >= 0.9)
            row["text"] = f"{task} answer {q}.{s}"
            rows.append(row)
    return rows


def _shuffle_labels(rows: list[dict], free_text: bool) -> list[dict]:
    """The same answers with their gold labels (graded correctness, raw label, is_correct; for free-text tasks the
    score, which is their extracted answer) permuted among them."""
    keys = ["correctness", "raw_label", "is_correct"] + (["extracted"] if free_text else [])
    out = [dict(r) for r in rows]
    who = [i for i, r in enumerate(out) if free_text or r["extracted"] is not None]  # parsed answers keep a label
    labels = [tuple(out[i][k] for k in keys) for i in who]
    random.Random(1).shuffle(labels)
    assert labels != [tuple(out[i][k] for k in keys) for i in who]
    for i, values in zip(who, labels, strict=True):
        out[i].update(zip(keys, values, strict=True))
    return out


def _signals(rows: list[dict]) -> tuple[list[dict], list]:
    """Every signal per answer (scores.jsonl rows, judge scores from k=1 and k=2 prompts), and the pairwise judge's
    requests for every pair of one question's answers in both orders (a greedy, cached verdict is a function of
    its request)."""
    engine = HashJudge()
    score_rows = judges.judge_scores(engine, rows, "j", k=2) + judges.judge_scores(engine, rows, "j", k=1)
    scores = scorers.score_answers(rows, scorers.judge_score_maps(score_rows))
    requests = [
        judge_prompts.pairwise_messages(a, b) for a in rows for b in rows if a["question_id"] == b["question_id"]
    ]
    return scores, requests


@pytest.mark.parametrize("task", tasks.names())
def test_shuffling_the_gold_labels_changes_no_elicitation_signal(task):
    rows = _task_answers(task)
    scores, requests = _signals(rows)
    shuffled_scores, shuffled_requests = _signals(_shuffle_labels(rows, scorers.is_free_text(task)))
    assert shuffled_scores == scores  # length, consistency, logprob and every judge score, per answer
    assert shuffled_requests == requests  # what the pairwise judge is asked, for every pair in both orders
    assert any(r[schema.judge_score_column("j", 2)] is not None for r in scores)


# -- the split, the bins ------------------------------------------------------------------------------------------
def test_acc_wow_table_counts_the_pairs_of_one_split_and_says_which():
    train = [dict(a, split="train") for a in ANSWERS]
    test = [dict(a, split="test", question_id="q2", answer_id=a["answer_id"].replace("q|", "q2|")) for a in ANSWERS]
    rows = train + test
    replies = {(f"ANS{i}", f"ANS{j}"): "Preferred output: 1" for i in range(5) for j in range(5)}
    judgements = judges.judge_pairwise(ScriptedJudge(replies), rows, judge="j")
    assert len(judgements) == 6  # 3 pairs per question
    table = acc_wow_tables.acc_wow_table(rows, scorers.score_answers(rows), judgements, split="train", n_boot=0)
    assert set(table.split) == {"train"}
    assert by_method(table, "oracle").n_pairs == 3  # q only
    assert by_method(table, "pairwise_text").n_candidates == 3  # the test question's judgements are left out
    everything = acc_wow_tables.acc_wow_table(rows, scorers.score_answers(rows), judgements, split="all", n_boot=0)
    assert by_method(everything, "oracle").n_pairs == 6 and set(everything.split) == {"all"}
    with pytest.raises(WowError, match="unknown split"):
        acc_wow_tables.acc_wow_table(rows, scorers.score_answers(rows), split="dev")


def test_acc_wow_bins_table_hand_computed():
    # labels 0 (correct), -2, -6, -8; d = 4: edges -8, -6, -4, -2, 0 -> bins 3, 3, 1, 0.
    # logprob -0.1, -0.5, -0.2, -1.0. Pairs (correct answer included), (bins), hit?
    # (0,1) (3,3) hit; (0,2) (1,3) hit; (0,3) (0,3) hit; (1,2) (1,3) miss; (1,3) (0,3) hit; (2,3) (0,1) hit.
    rows = [
        answer(0, 0.0, 4, correct=True, lp=-0.1),
        answer(1, -2.0, 5, lp=-0.5),
        answer(2, -6.0, 7, lp=-0.2),
        answer(3, -8.0, 8, lp=-1.0),
        answer(0, 0.0, 1, qid="r", task="u", correct=True),  # two labels only: nothing to bin
        answer(1, -1.0, 2, qid="r", task="u"),
    ]
    bins = acc_wow_tables.acc_wow_bins_table(rows, scorers.score_answers(rows), d=4)
    assert list(bins.columns) == acc_wow_tables.BINS_COLUMNS
    assert set(bins.task) == {"t"} and set(bins.method) == {"length", "consistency", "logprob"}
    lp = bins[bins.method == "logprob"]
    assert len(lp) == 10  # cells i <= j of 4 bins
    cells = {(r.bin_i, r.bin_j): (r.n_pairs, r.acc) for r in lp.itertuples() if r.n_pairs}
    assert cells == {(0, 1): (1, 1.0), (0, 3): (2, 1.0), (1, 3): (2, 0.5), (3, 3): (1, 1.0)}
    assert lp.iloc[0][["lo_i", "hi_i"]].tolist() == [-8.0, -6.0]
    fig = plots.fig_acc_wow_bins(bins)  # one heatmap per method; the cells below the diagonal stay empty
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["length", "consistency", "logprob"]
    texts = [t.get_text() for t in fig.axes[2].texts]
    assert "0.50\nn=2" in texts and "1.00\nn=1" in texts


def test_acc_wow_bins_under_the_paper_protocol_holds_its_three_margins():
    """Row 49: the paper printed the per-bin matrix at M = 1, 0.5 and 0.1, cutting int(n * M) pairs (0: all).
    logprob gaps of the 6 pairs: (0,3) 0.9, (2,3) 0.8, (1,3) 0.5, (0,1) 0.4, (1,2) 0.3, (0,2) 0.1."""
    rows = [
        answer(0, 0.0, 4, correct=True, lp=-0.1),
        answer(1, -2.0, 5, lp=-0.5),
        answer(2, -6.0, 7, lp=-0.2),
        answer(3, -8.0, 8, lp=-1.0),
    ]
    scores = scorers.score_answers(rows)
    assert set(acc_wow_tables.acc_wow_bins_tables(rows, scores, d=4).margin) == {1.0}  # wow: M = 1 only
    bins = acc_wow_tables.acc_wow_bins_tables(rows, scores, d=4, protocol="paper")
    assert list(bins.columns) == acc_wow_tables.BINS_COLUMNS and set(bins.margin) == {1.0, 0.5, 0.1}

    def cells(margin):
        lp = bins[(bins.method == "logprob") & (bins.margin == margin)]
        return {(r.bin_i, r.bin_j): (r.n_pairs, r.acc) for r in lp.itertuples() if r.n_pairs}

    # M = 0.5: int(3.0) = 3 pairs, (0,3) in cell (0,3), (2,3) in (0,1), (1,3) in (0,3): all hits
    assert cells(0.5) == {(0, 1): (1, 1.0), (0, 3): (2, 1.0)}
    # M = 0.1: int(0.6) = 0, which the paper's code reads as every pair: the M = 1 matrix
    assert cells(0.1) == cells(1.0) == {(0, 1): (1, 1.0), (0, 3): (2, 1.0), (1, 3): (2, 0.5), (3, 3): (1, 1.0)}
