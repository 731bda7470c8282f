"""``protocol: paper``: every switch of docs/fidelity.md on a small hand-made case, both behaviours side by side.

Each test states the paper's value as worked out by hand from the paper's code (the file and function that
docs/fidelity.md cites for its row), next to wow's.
"""

import numpy as np
import pytest
from wow import WowError, pairs, params, protocol, schema, tasks
from wow.align.evaluate import evaluate_model
from wow.analysis import acc_wow
from wow.backends import CachedEngine
from wow.backends.base import Completion, Engine
from wow.elicit import judge_prompts, scorers, verdicts
from wow.elicit.sampling import sample_answers
from wow.preferences import build_preferences
from wow.tasks.base import Question, format_options
from wow.tasks.extract import COT_INSTRUCTION

MC_QUERY = "Question: Which organ makes insulin?"
MC_OPTIONS = ["Pancreas", "Liver", "Heart", "Lung"]


def mc_messages(perm):
    text = COT_INSTRUCTION + MC_QUERY + "\n"
    return [{"role": "user", "content": text.rstrip() + "\n" + format_options([MC_OPTIONS[i] for i in perm])}]


def row(s, label, extracted=1, task="t", qid="q", perm=None, text=None, correct=False, gen="g"):
    return {
        "answer_id": f"{qid}|{gen}|{s}",
        "question_id": qid,
        "task": task,
        "split": "train",
        "generator": gen,
        "sample_index": s,
        "permutation": perm,
        "prompt_messages": mc_messages(perm) if perm is not None else [{"role": "user", "content": "Q?"}],
        "text": text or f"answer {s}",
        "n_tokens": 10 + s,
        "mean_logprob": -1.0,
        "extracted": extracted,
        "raw_label": label,
        "is_correct": correct,
    }


# -- the parameter -------------------------------------------------------------------------------------------------
def test_protocol_parameter_defaults_to_wow_and_takes_paper_only():
    assert params.validate({}).protocol == "wow"
    assert params.validate({"protocol": "paper"}).protocol == "paper"
    with pytest.raises(WowError, match="protocol"):
        params.validate({"protocol": "papr"})
    with pytest.raises(WowError, match="unknown protocol"):
        schema.check_protocol("papr")


# -- margins -------------------------------------------------------------------------------------------------------
def test_acc_wow_margin_paper_int_cut_keeps_all_pairs_when_it_is_zero():
    # 3 pairs, gaps 3, 1, 2; only the first is a hit (labels: a above b, a below b, a below b)
    pa, pb, la, lb = [3, 1, 2], [0, 0, 0], [1, -1, -1], [0, 0, 0]
    # M = 0.1: wow keeps max(1, floor(0.3)) = 1 pair, the largest gap (the hit); the paper int(0.3) = 0 -> [-0:] = all
    wow = acc_wow.acc_wow(pa, pb, la, lb, 0.1, n_boot=0)
    paper = acc_wow.acc_wow(pa, pb, la, lb, 0.1, n_boot=0, protocol="paper")
    assert (wow.n_pairs, wow.acc) == (1, 1.0)
    assert (paper.n_pairs, paper.acc) == (3, pytest.approx(1 / 3))
    # M = 0.5: both keep 1 pair (floor(1.5) = int(1.5) = 1)
    assert acc_wow.acc_wow(pa, pb, la, lb, 0.5, n_boot=0, protocol="paper").n_pairs == 1
    assert list(pairs.paper_margin_keep([3, 1, 2], 0.5)) == [0]
    assert list(pairs.paper_margin_keep([3, 1, 2], 0.1)) == [0, 1, 2]


def test_score_preferences_paper_round_cut_keeps_ties_with_the_later_answer_chosen():
    # one question, three wrong answers with distinct labels; scores 5, 5, 1 -> pairs (0,1) tie, (0,2) gap 4,
    # (1,2) gap 4
    answers = [row(0, -1.0), row(1, -2.0), row(2, -3.0)]
    scores = {"q|g|0": 5, "q|g|1": 5, "q|g|2": 1}

    def chosen_rejected(ds):
        return sorted((r["chosen_id"][-1], r["rejected_id"][-1]) for r in ds["train"])

    kw = dict(scores=scores, cap=None, val_fraction=0.0)
    # M = 1.0: wow drops the tie (2 pairs); the paper keeps round(3) = 3 pairs, the tie with j = 1 chosen over 0
    assert chosen_rejected(build_preferences(answers, "score", margin=1.0, **kw)) == [("0", "2"), ("1", "2")]
    paper = build_preferences(answers, "score", margin=1.0, protocol="paper", **kw)
    assert chosen_rejected(paper) == [("0", "2"), ("1", "0"), ("1", "2")]
    # M = 0.5: wow keeps floor(1.5) = 1 pair (largest gap, earlier first: (0,2)); the paper round(1.5) = 2 pairs,
    # the two gap-4 pairs (stable sort by gap descending)
    assert chosen_rejected(build_preferences(answers, "score", margin=0.5, **kw)) == [("0", "2")]
    assert chosen_rejected(build_preferences(answers, "score", margin=0.5, protocol="paper", **kw)) == [
        ("0", "2"),
        ("1", "2"),
    ]


def test_medmcqa_tied_wrong_pairs_enter_paper_score_sets_only():
    # three wrong MedMCQA answers: one-hot labels all 0.0, so wow has no wrong-over-wrong pair at all
    answers = [row(s, 0.0, extracted=s + 1, task="medmcqa") for s in range(3)]
    scores = {"q|g|0": 3, "q|g|1": 2, "q|g|2": 1}
    with pytest.raises(WowError, match="no scored"):
        build_preferences(answers, "score", scores=scores, margin=1.0, cap=None, val_fraction=0.0)
    # the paper: all 3 pairs (round(3 * 1.0)), the higher score chosen
    ds = build_preferences(answers, "score", scores=scores, margin=1.0, cap=None, val_fraction=0.0, protocol="paper")
    got = sorted((r["chosen_id"][-1], r["rejected_id"][-1]) for r in ds["train"])
    assert got == [("0", "1"), ("0", "2"), ("1", "2")]
    assert protocol.allows_tied_pairs("paper", "medmcqa", "row_score")
    assert not protocol.allows_tied_pairs("paper", "medmcqa", "oracle")
    assert not protocol.allows_tied_pairs("wow", "medmcqa", "score")


# -- grading -------------------------------------------------------------------------------------------------------
def test_graph_correctness_paper_divides_by_longest_minus_gold():
    sp = tasks.get("shortest_path")
    q = Question("sp/x", "shortest_path", "test", "p", 6, meta={"normaliser": 8})
    # answer 5: wow 1 - 1 / max(8 - 6, 6) = 5/6; the paper 1 - 1 / (8 - 6) = 0.5
    assert sp.grade(q, 5).correctness == pytest.approx(5 / 6)
    g = protocol.paper_grade(sp, q, 5)
    assert (g.correctness, g.raw_label, g.is_correct) == (0.5, -1.0, False)
    # answer 3: the paper clips 1 - 3/2 to 0; wow keeps 1 - 3/6 = 0.5
    assert protocol.paper_grade(sp, q, 3).correctness == 0.0 and sp.grade(q, 3).correctness == 0.5
    # max flow: the paper's normaliser is 2 * gold (gold 4: 1 - |e - 4| / 4), answer 1 -> 0.25 under both
    mf = tasks.get("max_flow")
    q4 = Question("mf/x", "max_flow", "test", "p", 4, meta={"normaliser": 8})
    assert protocol.paper_grade(mf, q4, 1).correctness == 0.25 == mf.grade(q4, 1).correctness


def _nlgraph_question(tmp_path, edges, gold):
    import json

    lines = ",\n".join(f"an edge between node {u} and node {v} with weight {w}" for u, v, w in edges)
    record = {
        "question": f"In an undirected graph, the nodes are numbered from 0 to 2, and the edges are:\n{lines}.\n"
        "Q: Give the shortest path from node 0 to node 2.\nA:",
        "answer": f"The shortest path from node 0 to node 2 is 0,1,2 with a total weight of {gold}",
    }
    path = tmp_path / "sp.json"
    path.write_text(json.dumps({"0": record}))
    sp = tasks.get("shortest_path", path=str(path))
    return sp, sp.load_nlgraph(str(path))[0]


def test_graph_correctness_paper_divides_by_the_true_longest_path_the_task_stores(tmp_path, caplog):
    # a path 0 -2- 1 -4- 2 and a direct edge 0 -9- 2: gold 6, longest simple path 9 (stored as it is)
    sp, q = _nlgraph_question(tmp_path, [(0, 1, 2), (1, 2, 4), (0, 2, 9)], 6)
    assert (q.gold, q.meta["longest_path"], q.meta["normaliser"]) == (6, 9, 9)
    # answer 5: the paper 1 - 1 / (9 - 6) = 2/3; wow 1 - 1 / max(9 - 6, 6) = 5/6
    assert protocol.paper_grade(sp, q, 5).correctness == pytest.approx(2 / 3)
    assert sp.grade(q, 5).correctness == pytest.approx(5 / 6)


def test_graph_correctness_paper_on_a_single_path_graph_keeps_wow_and_logs_it(tmp_path, caplog):
    # the graph 0 -2- 1 -4- 2 has one path: gold 6 = longest 6; the task's own normaliser is raised to 7
    sp, q = _nlgraph_question(tmp_path, [(0, 1, 2), (1, 2, 4)], 6)
    assert (q.meta["longest_path"], q.meta["normaliser"]) == (6, 7)
    # the paper divides |5 - 6| by 6 - 6 = 0 (a ZeroDivisionError in evaluate.py's calculate_metrics): not
    # reproducible, so the grade stays wow's 1 - 1 / max(7 - 6, 6) = 5/6 and a warning says so (dividing by the
    # raised normaliser, 7 - 6 = 1, would give 0.0 silently)
    with caplog.at_level("WARNING", logger="wow.protocol"):
        g = protocol.paper_grade(sp, q, 5)
    assert g.correctness == pytest.approx(5 / 6) == sp.grade(q, 5).correctness
    assert "division by zero" in caplog.text and q.id in caplog.text


def test_science_paper_truncates_the_gold_in_labels():
    sci = tasks.get("science")
    q = Question("science/x", "science", "train", "p", 2.9)
    # answer 2.0: wow rel. error 0.9 / 2.9 -> raw label -0.3103, wrong
    wow = sci.grade(q, 2.0)
    assert wow.raw_label == pytest.approx(-0.9 / 2.9) and not wow.is_correct
    # the paper: int(2.9) = 2 -> label -|2.0 - 2| = 0, "correct" (e == int(gold)); evaluation's 5 % rule: 0.9 >= 0.145
    paper = protocol.paper_grade(sci, q, 2.0)
    assert (paper.raw_label, paper.is_correct, paper.correctness) == (0.0, True, 0.0)
    # answer 2.95: within 5 % of 2.9 (strict <), but -|2.95 - 2| = -0.95 and not "correct" for the label
    near = protocol.paper_grade(sci, q, 2.95)
    assert (near.raw_label, near.is_correct, near.correctness) == (pytest.approx(-0.95), False, 1.0)


# -- self-consistency ----------------------------------------------------------------------------------------------
def test_consistency_paper_compares_the_letter_shown_not_the_option():
    # original option chosen: 0, 0, 1; shown as letters A (perm 0123), B (perm 1023), B (perm 0123)
    answers = [
        row(0, -1.0, extracted=0, perm=[0, 1, 2, 3]),
        row(1, -1.0, extracted=0, perm=[1, 0, 2, 3]),
        row(2, -2.0, extracted=1, perm=[0, 1, 2, 3]),
    ]
    assert scorers.consistency(answers) == {"q|g|0": 2 / 3, "q|g|1": 2 / 3, "q|g|2": 1 / 3}
    assert scorers.consistency(answers, "paper") == {"q|g|0": 1 / 3, "q|g|1": 2 / 3, "q|g|2": 2 / 3}


def test_length_paper_counts_llama3_tokenizer_ids_when_that_tokenizer_is_there():
    answers = [row(0, -1.0, text="one two three"), row(1, -2.0, text="one")]

    def words_plus_bos(text):  # stands in for the Llama-3 tokenizer: BOS + one id per word
        return {"input_ids": [0] + list(range(len(text.split())))}

    wow = {r["answer_id"]: r["length"] for r in scorers.score_answers(answers)}
    paper = {
        r["answer_id"]: r["length"] for r in scorers.score_answers(answers, protocol="paper", tokenizer=words_plus_bos)
    }
    assert wow == {"q|g|0": 10.0, "q|g|1": 11.0}  # generated tokens
    assert paper == {"q|g|0": 4.0, "q|g|1": 2.0}


# -- prompts of judges and training sets -------------------------------------------------------------------------
def test_paper_query_drops_the_instruction_and_the_options():
    assert protocol.paper_query(mc_messages([2, 0, 1, 3]), [2, 0, 1, 3]) == MC_QUERY
    # a free-form prompt keeps everything but the instruction
    msgs = [{"role": "user", "content": COT_INSTRUCTION + "Find the path.\n"}]
    assert protocol.paper_query(msgs) == "Find the path."


def test_judge_prompts_paper_show_the_query_only():
    a = row(0, -1.0, extracted=0, perm=[0, 1, 2, 3], text="A, the pancreas.")
    b = row(1, -2.0, extracted=1, perm=[1, 0, 2, 3], text="B.")
    wow = judge_prompts.pairwise_messages(a, b)[0]["content"]
    paper = judge_prompts.pairwise_messages(a, b, "paper")[0]["content"]
    assert "A. Pancreas" in wow and COT_INSTRUCTION.strip() in wow
    assert "Pancreas" not in paper and "step by step" not in paper and paper.count(MC_QUERY) == 1
    score = judge_prompts.score_messages([a, b], "paper")[0]["content"]
    assert "Pancreas" not in score and score.count(MC_QUERY) == 1


def test_training_prompts_paper_are_the_query_only():
    answers = [
        row(0, -1.0, extracted=0, perm=[0, 1, 2, 3], text="A"),
        row(1, -2.0, extracted=1, perm=[1, 0, 2, 3], text="B"),
    ]
    wow = build_preferences(answers, "oracle", cap=None, val_fraction=0.0)
    paper = build_preferences(answers, "oracle", cap=None, val_fraction=0.0, protocol="paper")
    assert wow["train"][0]["prompt"] == mc_messages([0, 1, 2, 3])
    # the paper's oracle (and score, row) prompt is its whole query, which ends with the "Options:" header
    assert paper["train"][0]["prompt"] == [{"role": "user", "content": MC_QUERY + "\nOptions:"}]
    # its direct prompt is the pairwise file's query[:-9], without the header
    judged = [{"answer_a": "q|g|0", "answer_b": "q|g|1", "forward": {"verdict": 1}, "reverse": {"verdict": 2}}]
    direct = build_preferences(answers, "direct", judgements=judged, cap=None, val_fraction=0.0, protocol="paper")
    assert direct["train"][0]["prompt"] == [{"role": "user", "content": MC_QUERY}]


# -- judged pairs and evaluation samples -------------------------------------------------------------------------
def test_pair_cap_paper_applies_10000_to_gpt4o_only():
    assert protocol.judge_pair_cap("wow", "smollm2-135m", 500) == 500
    assert protocol.judge_pair_cap("wow", "gpt-4o", None) is None
    assert protocol.judge_pair_cap("paper", "gpt-4o", 500) == 10_000
    assert protocol.judge_pair_cap("paper", "smollm2-135m", 500) is None


class ScriptedEngine(Engine):
    """First turn: a fixed answer; extraction turn: ``free`` (no prefill) or the number after a prefill."""

    name = "scripted"
    supports_prefill = True

    def __init__(self, first="The total weight of the shortest path is 7.", free="the total weight is 7"):
        super().__init__("scripted")
        self.first, self.free, self.requests = first, free, []

    def _generate(self, requests, progress=False, on_result=None):
        out = []
        for i, r in enumerate(requests):
            self.requests.append(r)
            extraction = r.messages[-1]["role"] == "user" and len(r.messages) > 1
            text = (" 7" if r.prefill else self.free) if extraction else self.first
            c = Completion(text, [-0.5, -0.5], 5, 2, "stop")
            out.append(c)
            if on_result is not None:
                on_result(i, c)
        return out


def test_bio_evaluation_paper_uses_three_samples(monkeypatch):
    bio = tasks.task_class("bio_generation")
    seen = {}

    def fake_sample(task, qs, engine, generator, n_samples, **kw):
        seen[kw.get("protocol")] = n_samples
        return []

    monkeypatch.setattr("wow.elicit.sampling.sample_answers", fake_sample)
    monkeypatch.setattr("wow.align.evaluate.summarize", lambda rows: {})
    monkeypatch.setattr("wow.align.evaluate._short", lambda s: "")
    task = bio.__new__(bio)
    q = Question("bio_generation/x", "bio_generation", "test", "Tell me a bio of X.", None)
    for p in ("wow", "paper"):
        evaluate_model(task, [q], ScriptedEngine(), n_samples=10, generator="g", protocol=p)
    assert seen == {"wow": 10, "paper": 3}
    assert protocol.eval_samples("paper", "shortest_path", 10) == 10


# -- extraction ----------------------------------------------------------------------------------------------------
def test_extraction_paper_free_turn_strict_regex_no_fallback_even_on_a_local_engine():
    sp = tasks.get("shortest_path")
    qs = sp.questions(1, seed=0)
    kw = dict(n_samples=1, max_tokens=16, progress=False)
    # wow on a prefill engine: prefilled "The total weight is" + " 7" -> 7
    engine = ScriptedEngine()
    wow = sample_answers(sp, qs, engine, "g", **kw)[0]
    assert (wow["extraction_method"], wow["extracted"]) == ("prefill", 7)
    # the paper: free 32-token turn, no prefill; "the total weight is 7" (lower case) misses the case-sensitive
    # "The total weight is (\d+)" -> None, and the reasoning answer's "... is 7." is NOT used as a fallback
    engine = ScriptedEngine()
    paper = sample_answers(sp, qs, engine, "g", protocol="paper", **kw)[0]
    ext = [r for r in engine.requests if len(r.messages) > 1]
    assert ext and all(r.prefill is None and r.max_tokens == 32 for r in ext)
    assert (paper["extraction_method"], paper["extracted"], paper["raw_label"]) == ("free", None, None)
    # wow's free turn reads the same reply with its tolerant parser
    assert sample_answers(sp, qs, ScriptedEngine(), "g", extraction="free", **kw)[0]["extracted"] == 7
    # a reply the paper's regex matches
    ok = sample_answers(sp, qs, ScriptedEngine(free="The total weight is 7."), "g", protocol="paper", **kw)[0]
    assert ok["extracted"] == 7
    with pytest.raises(WowError, match="free turn"):
        sample_answers(sp, qs, ScriptedEngine(), "g", protocol="paper", extraction="prefill", **kw)


@pytest.mark.parametrize(
    ("reply", "paper", "wow"),
    [
        ("B", 0, 0),  # shown order 1, 0, 2, 3: letter B is original option 0
        ("B. Liver", 0, 0),
        ("(B)", None, 0),  # the paper's end anchor rejects the closing parenthesis
        ("The answer is option C", 2, 2),
        ("None", None, None),
    ],
)
def test_mc_extraction_paper_regex(reply, paper, wow):
    mc = tasks.task_class("medmcqa").__new__(tasks.task_class("medmcqa"))
    q = Question("medmcqa/x", "medmcqa", "train", "p", 0, options=MC_OPTIONS, option_labels=[1, 0, 0, 0])
    perm = [1, 0, 2, 3]
    assert protocol.paper_parse(mc, reply, q, perm) == paper
    assert mc.parse(reply, q, perm) == wow


def test_mc_extraction_paper_asks_for_the_letter_alone():
    mc = tasks.get("medmcqa")
    q = Question("medmcqa/x", "medmcqa", "train", MC_QUERY + "\n", 0, options=MC_OPTIONS, option_labels=[1, 0, 0, 0])
    perm = mc.permutation(q, 0, 0)
    kw = dict(n_samples=1, max_tokens=16, progress=False)
    # the paper's turn asks for the letter alone; wow's for "The answer is option X"
    engine = ScriptedEngine(first="I pick B.", free="B")
    paper = sample_answers(mc, [q], engine, "g", protocol="paper", **kw)[0]
    (ask,) = [r for r in engine.requests if len(r.messages) > 1]
    assert ask.messages[-1]["content"] == protocol.paper_extraction_instruction(mc)
    assert "The answer is option" not in ask.messages[-1]["content"] and "letter" in ask.messages[-1]["content"]
    assert paper["extracted"] == perm[1]  # "B" is the option shown second
    engine = ScriptedEngine(first="I pick B.", free="B")
    sample_answers(mc, [q], engine, "g", extraction="free", **kw)
    assert "The answer is option" in engine.requests[-1].messages[-1]["content"]
    # a reply in wow's form: the paper's end-anchored regex finds no letter in "option B) Liver"
    reply = "The answer is option B) Liver"
    assert sample_answers(mc, [q], ScriptedEngine(free=reply), "g", protocol="paper", **kw)[0]["extracted"] is None
    assert sample_answers(mc, [q], ScriptedEngine(free=reply), "g", extraction="free", **kw)[0]["extracted"] == perm[1]
    # graph tasks keep their instruction (it already asks for the paper's prefix)
    sp = tasks.get("shortest_path")
    assert protocol.paper_extraction_instruction(sp) == sp.extraction.instruction


# -- which answers the judges see ------------------------------------------------------------------------------------
def test_judges_see_the_splits_later_stages_use_and_the_paper_its_train_files(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from wow.cli import estimate
    from wow.elicit import judges
    from wow.steps import elicitation
    from wow.steps.context import RunContext

    answers = []
    for task in ("com2", "knowledge_crosswords"):
        for split in ("train", "validation", "test"):
            answers.append({**row(0, -1.0, task=task, qid=f"{task}/{split}"), "split": split})
    seen = {}

    def capture(kind):
        def judge(engine, rows, *a, **k):
            seen[kind] = sorted(r["question_id"] for r in rows)
            return []

        return judge

    monkeypatch.setattr(RunContext, "engine", lambda run, m: SimpleNamespace(supports_prefill=False))
    monkeypatch.setattr(judges, "judge_pairwise", capture("pair"))
    monkeypatch.setattr(judges, "judge_scores", capture("score"))

    def judged(**values):
        P = params.validate({"output_root": str(tmp_path), "judge_modes": ["text"], "score_k": [5], **values})
        elicitation.judge_all(RunContext(P), answers)
        assert seen["pair"] == seen["score"]
        return seen["pair"]

    # wow: the train questions (preference sets, Acc_WoW), plus acc_wow_split's; the pair cap is drawn over these
    assert judged() == ["com2/train", "knowledge_crosswords/train"]
    assert judged(acc_wow_split="test") == ["com2/test", "com2/train", "knowledge_crosswords/test",
                                            "knowledge_crosswords/train"]  # fmt: skip
    assert len(judged(acc_wow_split="all")) == 6
    # the paper: its train files; Knowledge Crosswords' (and NLGraph's) held every question after patch.merge()
    assert judged(protocol="paper") == ["com2/train", "knowledge_crosswords/test", "knowledge_crosswords/train",
                                        "knowledge_crosswords/validation"]  # fmt: skip
    # wow estimate counts the same questions: 625 questions split 500 / 62 / 63
    P = params.validate({"tasks": ["com2", "knowledge_crosswords"], "n_questions": 625,
                         "split_fractions": [0.8, 0.1, 0.1]})  # fmt: skip
    assert [estimate.judged_questions(P, t) for t in P.tasks] == [500, 500]
    paper = P.model_copy(update={"protocol": "paper"})
    assert [estimate.judged_questions(paper, t) for t in P.tasks] == [500, 625]


# -- the cache -----------------------------------------------------------------------------------------------------
def test_cache_never_serves_a_wow_extraction_to_the_paper_protocol(tmp_path):
    sp = tasks.get("shortest_path")
    qs = sp.questions(2, seed=0)
    kw = dict(n_samples=2, max_tokens=16, progress=False)
    cached = CachedEngine(ScriptedEngine(), tmp_path / "cache.sqlite")
    sample_answers(sp, qs, cached, "g", **kw)
    assert cached.misses == 8  # 4 answers + 4 prefilled extractions
    again = CachedEngine(ScriptedEngine(), tmp_path / "cache.sqlite")
    rows = sample_answers(sp, qs, again, "g", protocol="paper", **kw)
    # the 4 first turns are the same requests (served); the 4 free extraction turns differ in prefill and
    # max_tokens, so their keys differ and the engine is asked again
    assert again.misses == 4 and len(again.engine.requests) == 4
    assert all(r.prefill is None for r in again.engine.requests)
    assert all(r["extraction_method"] == "free" for r in rows)


def test_paper_margin_keep_empty_and_numpy_order():
    assert len(pairs.paper_margin_keep(np.array([]), 0.5)) == 0


# -- judge replies ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "paper", "wow"),
    [
        ("Answer 2 is closer.\nPreferred output: 2", 2, 2),
        # an echo of the instruction first: the paper's first match reads 1; wow reads the last mention
        ('I must end with "Preferred output: 1 or 2". Output 2 is closer.\nPreferred output: 2', 1, 2),
        ("**Preferred output:** 2", None, 2),  # the paper's literal "Preferred output: " does not match
        ("Preferred output: 3", None, None),
    ],
)
def test_pairwise_verdict_paper_first_match(reply, paper, wow):
    assert verdicts.paper_parse_verdict(reply) == paper
    assert verdicts.parse_verdict(reply) == wow


def test_score_parse_paper_counts_plain_score_lines():
    # two "Score: n" lines for k = 2: both parse them; a score above 5 is kept by the paper, refused by wow
    assert verdicts.paper_parse_scores("Score: 3\nScore: 7", 2) == ([3, 7], None)
    assert verdicts.parse_scores("Score: 3\nScore: 7", 2)[0] is None
    # indexed lines: wow reads them, the paper's "Score: (\d+)" finds none
    assert verdicts.parse_scores("Score for answer 1: 3\nScore for answer 2: 0", 2) == ([3, 0], None)
    assert verdicts.paper_parse_scores("Score for answer 1: 3\nScore for answer 2: 0", 2)[0] is None
    # the paper's prompt asks for plain lines
    a, b = row(0, -1.0), row(1, -2.0)
    assert '"Score: n"' in judge_prompts.score_messages([a, b], "paper")[0]["content"]
    assert "Score for answer i" in judge_prompts.score_messages([a, b])[0]["content"]


# -- the run's reports state the protocol ----------------------------------------------------------------------------
def test_summary_and_html_report_state_the_protocol(tmp_path):
    import pandas as pd
    from wow.report import html_report, markdown_summary

    acc = pd.DataFrame(columns=["task", "generator", "method", "judge", "check", "margin", "n_pairs", "acc_wow"])
    empty = pd.DataFrame(columns=["setting", "task"])
    for p in ("wow", "paper"):
        P = params.validate({"protocol": p, "run_name": f"r_{p}", "output_root": str(tmp_path)})
        assert f"Protocol `{p}`" in markdown_summary.summary_markdown(P, acc, empty, empty)
        P.run_dir.mkdir()
        (P.run_dir / "run.yaml").write_text(f"run_name: r_{p}\nprotocol: {p}\n")
        page = html_report.write_report(P.run_dir).read_text()
        assert f"Protocol: <code>{p}</code>" in page


def test_science_evaluation_accuracy_paper_uses_the_strict_5_percent_rule(monkeypatch):
    sci = tasks.get("science")
    q = Question("science/x", "science", "test", "p", 2.9)
    answers = {2.0: None, 2.95: None}

    def fake_sample(task, qs, engine, generator, n_samples, protocol="wow", **kw):
        out = []
        for i, e in enumerate(answers):
            g = protocol_grade(task, q, e, protocol)
            out.append({"answer_id": str(i), "extracted": e, "correctness": g.correctness, "is_correct": g.is_correct})
        return out

    def protocol_grade(task, question, e, p):
        return protocol.paper_grade(task, question, e) if p == "paper" else task.grade(question, e)

    monkeypatch.setattr("wow.elicit.sampling.sample_answers", fake_sample)
    monkeypatch.setattr("wow.align.evaluate.summarize", lambda rows: {})
    monkeypatch.setattr("wow.align.evaluate._short", lambda s: "")
    # 2.0 against 2.9: wrong for wow (31 % off) and for the paper's evaluation (not < 5 %), although metric.py's
    # truncated label calls it correct; 2.95: within 5 % (1.7 % off), right for both
    wow = evaluate_model(sci, [q], ScriptedEngine(), n_samples=1, generator="g")
    paper = evaluate_model(sci, [q], ScriptedEngine(), n_samples=1, generator="g", protocol="paper")
    assert [r["is_correct"] for r in wow] == [False, True]
    assert [r["is_correct"] for r in paper] == [False, True]
    assert protocol.paper_grade(sci, q, 2.0).is_correct  # the elicitation label, for contrast


def test_preference_sets_paper_keep_duplicates_and_identical_texts():
    # answers 0 and 1 have the same text "same"; oracle pairs (0,1), (0,2), (1,2) by labels -1 > -2 > -3
    answers = [row(0, -1.0, text="same"), row(1, -2.0, text="same"), row(2, -3.0, text="other")]
    wow = build_preferences(answers, "oracle", cap=None, val_fraction=0.0)
    paper = build_preferences(answers, "oracle", cap=None, val_fraction=0.0, protocol="paper")
    # wow drops (0,1) (identical texts) and (1,2) (the same prompt, chosen and rejected as (0,2)): 1 pair
    assert len(wow["train"]) == 1
    assert len(paper["train"]) == 3
