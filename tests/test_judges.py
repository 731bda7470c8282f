"""wow.elicit.judges with a scripted fake engine: prompts, both orders, parsing, checks, rates, scores, subsampling."""

import math
import re

import pytest
from wow import WowError, pairs, schema
from wow.backends.base import ChatRequest, Completion, Engine, EngineError
from wow.elicit import judge_prompts, judges, verdicts


class FakeEngine(Engine):
    """Scripted replies: ``reply(request) -> text`` and ``choice(request, choices) -> {choice: logprob}``."""

    name = "fake"

    def __init__(self, model="fake-judge", reply=None, choice=None):
        super().__init__(model)
        self.reply, self.choice = reply, choice
        self.calls: list[list[ChatRequest]] = []

    def _generate(self, requests, progress):
        self.calls.append(requests)
        return [Completion(text=self.reply(r)) for r in requests]

    def _choice_logprobs(self, requests, choices):
        if self.choice is None:
            raise EngineError("no next-token distributions here.")
        self.calls.append(requests)
        return [self.choice(r, choices) for r in requests]


def answer(s, label, text=None, qid="q", gen="g", extracted=1, correct=False, prompt="Find the shortest path."):
    return {
        "answer_id": f"{qid}|{gen}|{s}",
        "question_id": qid,
        "task": "shortest_path",
        "generator": gen,
        "sample_index": s,
        "prompt_messages": [{"role": "user", "content": prompt}],
        "text": text or f"ANS{s}",
        "raw_label": label,
        "extracted": extracted,
        "is_correct": correct,
    }


def shown_order(request):
    """The answer texts (ANS<n>) in the order the prompt shows them."""
    return re.findall(r"\[Answer \d\]\n(ANS\d+)", request.messages[0]["content"])


# three wrong answers: labels -1 (ANS0), -3 (ANS1), -2 (ANS2); pairs (0,1) truth a, (0,2) truth a, (1,2) truth b.
ANSWERS = [answer(0, -1.0), answer(1, -3.0), answer(2, -2.0)]
SCRIPT = {
    ("ANS0", "ANS1"): "Answer 1 is closer.\nPreferred output: 1",  # prefers a (right)
    ("ANS1", "ANS0"): "Preferred output: 2",  # prefers a: consistent
    ("ANS0", "ANS2"): "Preferred output: 1",  # prefers a (right)
    ("ANS2", "ANS0"): "Preferred output: 1",  # prefers b: order flip
    ("ANS1", "ANS2"): "I cannot decide.",  # unparseable
    ("ANS2", "ANS1"): "Preferred output: 2",  # prefers a (wrong)
}


def scripted(request):
    return SCRIPT[tuple(shown_order(request))]


# -- verdict parsing ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, verdict",
    [
        ("Reasoning...\nPreferred output: 2", 2),
        ("**Preferred output:** 1.", 1),
        ("Preferred Output: Output 2", 2),
        ("So the preferred output is 1", 1),
        ('Preferred output: "2"', 2),
        ("Preferred output: 1\nOn reflection, Preferred output: 2", 2),
        ("Preferred output: 1 or 2.", None),
        ('Write "Preferred output: 1" if answer 1 is better, or "Preferred output: 2" if answer 2 is.', None),
        ("Preferred output: 2 (answer 2 is closer)", 2),
        ("Preferred output: 1\nI will now restate the preferred output.", None),
        ("Preferred output: 12", None),
        ("Preferred output: 1.5", None),
        ("Output 1 is better.", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_verdict(text, verdict):
    assert verdicts.parse_verdict(text) == verdict


# -- score parsing ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, k, scores, error",
    [
        ("ok\nScore for answer 1: 3\nScore for answer 2: 0", 2, [3, 0], None),
        ("Score for answer 1: 1\nScore for answer 2: 2\nFinal:\nScore for answer 1: 4", 2, [4, 2], None),
        ("Score for response 2: **5**\nScore for response 1: 0", 2, [0, 5], None),
        ("Score: 4", 1, [4], None),
        ("Score for answer 1: 3", 2, None, "no score for answer(s) [2]"),
        ("Score for answer 1: 3\nScore for answer 2: 3\nScore for answer 3: 1", 2, None, "beyond"),
        ("Score for answer 1: 7\nScore for answer 2: 3", 2, None, "out of range"),
        ("Score: 3.5", 1, None, "not an integer"),
        ("Score: -1", 1, None, "not an integer"),
        ("Score: 2\nScore: 3", 1, None, "found 2 score line(s), expected 1"),
        ("I like both.", 2, None, "found 0 score line(s), expected 2"),
    ],
)
def test_parse_scores(text, k, scores, error):
    got, why = verdicts.parse_scores(text, k)
    assert got == scores
    if error is None:
        assert why is None
    else:
        assert error in why


# -- pairwise judge -----------------------------------------------------------------------------------------------
def test_pairwise_asks_both_orders_in_one_batch_with_versioned_greedy_requests():
    engine = FakeEngine(reply=scripted)
    rows = judges.judge_pairwise(engine, ANSWERS, judge="j")
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 6
    orders = [tuple(shown_order(r)) for r in engine.calls[0]]
    assert orders[:2] == [("ANS0", "ANS1"), ("ANS1", "ANS0")]
    req = engine.calls[0][0]
    assert (
        req.template_version == judge_prompts.PAIRWISE_PROMPT_VERSION
        and req.temperature == 0.0
        and req.prefill is None
    )
    content = req.messages[0]["content"]
    assert "[Task]\nFind the shortest path." in content and "Preferred output: 1" in content
    assert [r["pair_id"] for r in rows] == ["q|g|0&q|g|1", "q|g|0&q|g|2", "q|g|1&q|g|2"]
    assert [r["truth"] for r in rows] == ["a", "a", "b"]
    first = rows[0]
    assert (first["forward"]["verdict"], first["forward"]["prefers"]) == (1, "a")
    assert (first["reverse"]["verdict"], first["reverse"]["prefers"]) == (2, "a")
    assert first["forward"]["raw"] == SCRIPT[("ANS0", "ANS1")]
    assert rows[2]["forward"]["verdict"] is None and rows[2]["forward"]["raw"] == "I cannot decide."


def test_pairwise_accuracy_without_and_with_the_order_check():
    rows = judges.judge_pairwise(FakeEngine(reply=scripted), ANSWERS, judge="j")
    hits, gaps, kept = verdicts.pairwise_outcomes(rows, "none")
    assert hits.tolist() == [True, True, False] and gaps is None and len(kept) == 3  # unparseable = miss
    hits, _, kept = verdicts.pairwise_outcomes(rows, "both_orders")
    assert hits.tolist() == [True] and [r["pair_id"] for r in kept] == ["q|g|0&q|g|1"]
    with pytest.raises(WowError):
        verdicts.pairwise_outcomes(rows, "forward_only")


def test_pairwise_parse_failure_and_flip_rates_and_examples():
    rows = judges.judge_pairwise(FakeEngine(reply=scripted), ANSWERS, judge="j")
    rates = judges.pairwise_rates(rows)
    assert (rates["n_replies"], rates["n_unparsed"]) == (6, 1)
    assert rates["parse_fail_rate"] == pytest.approx(1 / 6)
    assert (rates["n_both_parsed"], rates["n_flips"], rates["flip_rate"]) == (2, 1, 0.5)
    assert rates["first_position_rate"] == pytest.approx(3 / 5)
    [ex] = judges.unparsed_examples(rows)
    assert ex["id"] == "q|g|1&q|g|2" and ex["pass"] == "forward" and ex["raw"] == "I cannot decide."


def test_pairwise_logprob_mode_reads_p1_p2_after_the_prefill():
    labels = {a["text"]: a["raw_label"] for a in ANSWERS}

    def choice(request, choices):
        first, second = (labels[t] for t in shown_order(request))
        return {"1": first, "2": second}  # P(1) : P(2) = e^label1 : e^label2 -> always right

    engine = FakeEngine(choice=choice)
    rows = judges.judge_pairwise(engine, ANSWERS, judge="j", mode="logprob")
    assert engine.calls[0][0].prefill == judge_prompts.VERDICT_PREFILL
    fwd = rows[0]["forward"]  # labels -1 vs -3
    assert fwd["p1"] == pytest.approx(1 / (1 + math.exp(-2))) and fwd["verdict"] == 1
    assert fwd["raw"] == {"1": -1.0, "2": -3.0}
    for check in schema.CHECKS:
        hits, gaps, _ = verdicts.pairwise_outcomes(rows, check)
        assert hits.all() and len(hits) == 3 and gaps is not None
    assert judges.pairwise_rates(rows)["parse_fail_rate"] == 0.0


def test_position_biased_judge_scores_chance_without_check_and_nothing_with_it():
    engine = FakeEngine(choice=lambda r, c: {"1": math.log(0.7), "2": math.log(0.3)})
    rows = judges.judge_pairwise(engine, ANSWERS, judge="j", mode="logprob")
    hits, _, _ = verdicts.pairwise_outcomes(rows, "none")
    assert hits.tolist() == [True, True, False]
    hits, _, kept = verdicts.pairwise_outcomes(rows, "both_orders")
    assert len(hits) == 0 and kept == []
    assert judges.pairwise_rates(rows)["flip_rate"] == 1.0


def test_logprob_mode_on_an_engine_without_distributions_is_a_clear_error():
    with pytest.raises(WowError, match="mode='text'"):
        judges.judge_pairwise(FakeEngine(), ANSWERS, mode="logprob")


def test_judge_sees_each_answers_own_prompt_when_option_orders_differ():
    a = answer(0, -1.0, prompt="Pick one.\nOptions:\nA. x\nB. y\n")
    b = answer(1, -2.0, prompt="Pick one.\nOptions:\nA. y\nB. x\n")
    content = judge_prompts.pairwise_messages(a, b)[0]["content"]
    assert "[Task, as shown to the author of answer 1]\nPick one.\nOptions:\nA. x\nB. y" in content
    assert "[Task, as shown to the author of answer 2]\nPick one.\nOptions:\nA. y\nB. x" in content


def test_subsampling_gives_every_judge_the_same_pairs():
    many = [answer(i, -float(i + 1)) for i in range(8)] + [answer(i, -float(i + 1), gen="h") for i in range(3)]
    reply = lambda r: "Preferred output: 1"  # noqa: E731
    rows_a = judges.judge_pairwise(FakeEngine("judge-a", reply=reply), many, max_pairs=5, seed=7)
    rows_b = judges.judge_pairwise(FakeEngine("judge-b", reply=reply), many, max_pairs=5, seed=7)
    ids = [r["pair_id"] for r in rows_a]
    assert ids == [r["pair_id"] for r in rows_b]
    assert {r["judge"] for r in rows_a} == {"judge-a"}
    assert sum(r["generator"] == "g" for r in rows_a) == 5  # 28 pairs capped at 5
    assert sum(r["generator"] == "h" for r in rows_a) == 3  # 3 pairs, under the cap: all kept
    all_pairs = pairs.candidate_pairs(many)
    order = [pairs.pair_id(a, b) for a, b in all_pairs]
    assert ids == sorted(ids, key=order.index)  # original order kept
    other = pairs.subsample_pairs(all_pairs, 5, seed=8)
    assert [pairs.pair_id(a, b) for a, b in other] != ids


def test_judgement_filenames():
    assert (
        judges.checked_judgement_filename("pairwise", "meta-llama/Llama 3", "text")
        == "pairwise_meta-llama-Llama-3_text.jsonl"
    )
    assert judges.checked_judgement_filename("score", "gpt-4o", "logprob", k=1) == "score_gpt-4o_k1_logprob.jsonl"
    with pytest.raises(WowError):
        judges.checked_judgement_filename("score", "j", "text")
    with pytest.raises(WowError):
        judges.checked_judgement_filename("pairwise", "j", "greedy")


# -- score judge --------------------------------------------------------------------------------------------------
def test_score_groups_cut_in_sample_order_with_a_smaller_last_group():
    rows = [answer(i, -float(i)) for i in (4, 0, 3, 1, 2)]
    groups = pairs.score_groups(rows, 2)
    assert [[a["sample_index"] for a in g] for g in groups] == [[0, 1], [2, 3], [4]]
    assert [[a["sample_index"] for a in g] for g in pairs.score_groups(rows, 10)] == [[0, 1, 2, 3, 4]]


def test_score_judge_records_bad_replies_as_unparseable_groups():
    rows_in = [answer(i, -float(i + 1)) for i in range(5)]
    replies = {
        ("ANS0", "ANS1"): "Score for answer 1: 4\nScore for answer 2: 2",
        ("ANS2", "ANS3"): "Score for answer 1: 4",  # too few
        ("ANS4",): "Score: 9",  # out of range
    }
    engine = FakeEngine(reply=lambda r: replies[tuple(shown_order(r))])
    rows = judges.judge_scores(engine, rows_in, judge="j", k=2)
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 3
    assert engine.calls[0][0].template_version == judge_prompts.SCORE_PROMPT_VERSION
    assert "Score for answer i: n" in engine.calls[0][0].messages[0]["content"]
    assert 'exactly "Score: n"' in engine.calls[0][2].messages[0]["content"]  # the last group has one answer
    assert [r["scores"] for r in rows] == [[4, 2], None, None]
    assert rows[1]["raw"] == "Score for answer 1: 4" and "no score for answer(s) [2]" in rows[1]["parse_error"]
    assert rows[0]["answer_ids"] == ["q|g|0", "q|g|1"] and rows[0]["labels"] == [-1.0, -2.0]
    smap = verdicts.score_map(rows)
    assert smap == {"q|g|0": 4, "q|g|1": 2, "q|g|2": None, "q|g|3": None, "q|g|4": None}
    assert judges.score_parse_rate(rows) == {"n_groups": 3, "n_unparsed": 2, "parse_fail_rate": 2 / 3}
    assert [e["id"] for e in judges.unparsed_examples(rows)] == ["q|g|k2|2", "q|g|k2|4"]


def test_score_logprob_mode_gives_the_expected_score():
    probs = [0.0, 0.1, 0.2, 0.3, 0.4, 0.0]

    def choice(request, choices):
        return {c: (math.log(p) if p else -math.inf) for c, p in zip(choices, probs, strict=True)}

    engine = FakeEngine(choice=choice)
    rows = judges.judge_scores(engine, [answer(0, -1.0)], judge="j", k=1, mode="logprob")
    assert engine.calls[0][0].prefill == judge_prompts.SCORE_PREFILL
    assert rows[0]["scores"] == [pytest.approx(0.1 + 0.4 + 0.9 + 1.6)]
    assert rows[0]["probs"][0] == pytest.approx(probs)
    with pytest.raises(WowError, match="k=1"):
        judges.judge_scores(engine, [answer(0, -1.0)], k=2, mode="logprob")


def test_logprob_mode_warns_when_the_choices_get_little_probability(caplog):
    engine = FakeEngine(choice=lambda r, c: {"1": math.log(0.002), "2": math.log(0.001)})
    with caplog.at_level("WARNING", logger="wow.elicit.judges"):
        rows = judges.judge_pairwise(engine, ANSWERS, judge="j", mode="logprob")
    assert "only 0.003" in caplog.text
    assert rows[0]["forward"]["p1"] == pytest.approx(2 / 3)  # still renormalised over the two choices
