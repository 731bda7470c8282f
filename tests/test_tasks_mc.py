"""Multiple-choice tasks: letter extraction, permutations, grading, knowledge crosswords, loaders and labelers."""

import csv
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import wow.tasks
from wow import WowError
from wow.tasks.base import UNPARSED, Question
from wow.tasks.com2 import conditions
from wow.tasks.embeddings import OpenAIEmbedder, similarity_labels
from wow.tasks.vera import VeraScorer, plausibility_labels, scores_from_hidden

F = Path(__file__).parent / "fixtures" / "tasks"


def _mc(n_options=4, labels=None):
    labels = labels or [1.0, 0.4, 0.4, 0.9][:n_options]
    return Question(
        "mc/x", "medmcqa", "test", "Q?", 0, options=[f"opt{i}" for i in range(n_options)], option_labels=labels
    )


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("The answer is option B", 0),
        ("The answer is option B.", 0),
        ("The answer is option (B)", 0),
        ("The answer is option B) because", 0),
        ("The answer is option **B**", 0),
        ("The answer is option: D", 1),
        ("B", 0),
        ("B.", 0),
        ("B)", 0),
        ("(B)", 0),
        ("A. opt2", 2),
        ("The answer is option E", None),  # beyond the 4 options shown
        ("The answer is option None", None),
        ("None", None),
        ("A good question.", None),
        ("", None),
    ],
)
def test_mc_extraction_maps_the_shown_letter_to_the_original_option(reply, expected):
    task = wow.tasks.get("medmcqa")
    assert task.parse(reply, _mc(), permutation=[2, 0, 3, 1]) == expected


def test_mc_letters_are_checked_against_the_number_of_options():
    task = wow.tasks.get("mmlu_pro")
    q = _mc(10, [1.0] + [0.5] * 9)
    assert task.parse("The answer is option J", q, list(range(10))) == 9
    assert task.parse("The answer is option K", q, list(range(10))) is None
    assert task.parse("(J)", q, None) == 9  # no permutation: options were shown in their original order


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("A is tempting, but C fits better. The answer is (C).", 2),
        ("Answer: D", 3),
        ("The best option is B, since A is wrong.", 1),
        ("Option A is wrong and option B is wrong.", None),
        ("Option E is the answer is E", None),
    ],
)
def test_mc_direct_parse_needs_an_explicit_choice(answer, expected):
    assert wow.tasks.get("medmcqa").parse_direct(answer, _mc(), [0, 1, 2, 3]) == expected


def test_permutation_is_seeded_per_sample_and_shown_in_order():
    task = wow.tasks.get("knowledge_crosswords")
    q = task.questions(1, seed=0)[0]
    perms = [task.permutation(q, i, seed=0) for i in range(10)]
    assert all(sorted(p) == [0, 1, 2, 3] for p in perms)
    assert len({tuple(p) for p in perms}) > 1
    assert perms == [task.permutation(q, i, seed=0) for i in range(10)]
    text = task.messages(q, perms[0])[0]["content"]
    shown = re.findall(r"(?m)^([A-D])\. (.+)$", text)
    assert [o for _, o in shown] == [q.options[i] for i in perms[0]]
    assert wow.tasks.get("shortest_path").permutation(q, 0, 0) is None


def test_mc_grade_by_hand_with_ties_and_bad_indices():
    task = wow.tasks.get("medmcqa")
    q = _mc(labels=[1.0, 0.4, 0.4, -0.2])
    assert task.grade(q, 0) == task.grade(q, 0) and task.grade(q, 0).is_correct
    assert task.grade(q, 1).raw_label == task.grade(q, 2).raw_label == 0.4  # a tie between two wrong answers
    assert task.grade(q, 1).correctness == 0.4 and not task.grade(q, 1).is_correct
    g = task.grade(q, 3)
    assert g.correctness == 0.0 and g.raw_label == -0.2
    assert task.grade(q, None) == UNPARSED and task.grade(q, 4) == UNPARSED
    both = _mc(labels=[0.9, 0.9, 0.1, 0.0])
    assert task.grade(both, 0).is_correct and task.grade(both, 1).is_correct


# -- knowledge crosswords ---------------------------------------------------------------------------------------


def _check_constraints(prompt, option):
    facts = set(re.findall(r"(?m)^\(([^,()]+), ([^,()]+), ([^,()]+)\)$", prompt.split("Constraints:")[0]))
    constraints = re.findall(r"(?m)^\(([^,()]+), ([^,()]+), ([^,()]+)\)$", prompt.split("Constraints:")[1])
    fill = dict(re.findall(r"(blank \d): ([^,]+)", option))
    return all((fill.get(s, s), r, fill.get(o, o)) in facts for s, r, o in constraints)


def test_generated_crossword_labels_count_gold_fillers_and_only_gold_solves_it():
    task = wow.tasks.get("knowledge_crosswords", noise_facts=8)
    for q in task.questions(20, seed=2):
        assert sorted(q.option_labels) == [0.0, 1 / 3, 2 / 3, 1.0]
        gold = q.meta["gold_fillers"]
        for opt, lab in zip(q.options, q.option_labels, strict=True):
            fill = re.findall(r"blank \d: ([^,]+)", opt)
            assert sum(f == g for f, g in zip(fill, gold, strict=True)) / 3 == lab
            assert _check_constraints(q.prompt, opt) == (lab == 1.0)
        assert q.option_labels[q.gold] == 1.0
        assert task.grade(q, q.gold).is_correct
        assert task.grade(q, q.option_labels.index(2 / 3)).correctness == pytest.approx(2 / 3)


def test_kc_loader_keeps_three_blank_rows_and_builds_graded_options():
    task = wow.tasks.get("knowledge_crosswords", path=str(F / "kc.jsonl"))
    qs = sorted(task.questions(10, seed=0), key=lambda q: q.id)
    assert [q.id for q in qs] == ["knowledge_crosswords/kc-line1", "knowledge_crosswords/kc-line3"]
    q = qs[0]
    assert q.meta["gold_fillers"] == ["Ilsa Marnow", "Tavren", "Ostria"]
    assert q.options[q.gold] == "blank 1: Ilsa Marnow, blank 2: Tavren, blank 3: Ostria"
    assert sorted(q.option_labels) == [0.0, 1 / 3, 2 / 3, 1.0]
    assert "(blank 1, studied at, Orvel College)" in q.prompt and "Knowledge" not in q.prompt
    # a blank whose gold is also another blank's gold: non-gold candidates exclude only that blank's gold
    assert all("blank 3: Teo Rand" in o or "blank 3: Lars Bly" in o for o in qs[1].options)
    with_k = wow.tasks.get("knowledge_crosswords", path=str(F / "kc.jsonl"), with_knowledge=True).questions(10, seed=0)
    assert any("(Ilsa Marnow, was born in, Tavren)" in x.prompt for x in with_k)


def test_kc_malformed_row_names_file_and_line(tmp_path):
    lines = (F / "kc.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    del row["answer_all"]
    bad = tmp_path / "kc.jsonl"
    bad.write_text("\n".join([lines[0], lines[1], json.dumps(row)]) + "\n")
    with pytest.raises(WowError, match=r"kc.jsonl:3: missing field 'answer_all'"):
        wow.tasks.get("knowledge_crosswords", path=str(bad)).questions(5)
    bad.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(WowError, match=r"kc.jsonl:2: not valid JSON"):
        wow.tasks.get("knowledge_crosswords", path=str(bad)).questions(5)


# -- hub loaders on local fixtures --------------------------------------------------------------------------------


def test_medmcqa_is_one_hot_and_wrong_answers_never_differ():
    task = wow.tasks.get("medmcqa", data_files=str(F / "medmcqa.jsonl"))
    qs = {q.id: q for q in task.questions(3, seed=0)}
    q = qs["medmcqa/m1"]
    assert q.options[q.gold] == "Vitamin C" and q.option_labels == [0.0, 0.0, 1.0, 0.0]
    wrong = [task.grade(q, i) for i in (0, 1, 3)]
    assert len({g.raw_label for g in wrong}) == 1 and not any(g.is_correct for g in wrong)
    assert task.grade(q, 2).is_correct and task.grade(q, 2).correctness == 1.0


def test_medmcqa_bad_gold_index_names_the_row(tmp_path):
    row = json.loads((F / "medmcqa.jsonl").read_text().splitlines()[0])
    row["cop"] = 7
    bad = tmp_path / "med.jsonl"
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(WowError, match=r"med.jsonl:1: cop 7"):
        wow.tasks.get("medmcqa", data_files=str(bad)).questions(1)


def test_malformed_local_file_read_through_datasets_names_the_line(tmp_path):
    lines = (F / "medmcqa.jsonl").read_text().splitlines()
    bad = tmp_path / "med.jsonl"
    bad.write_text(lines[0] + "\n" + lines[1][:40] + "\n")
    with pytest.raises(WowError, match=r"med.jsonl:2: not valid JSON"):
        wow.tasks.get("medmcqa", data_files=str(bad)).questions(2)


def test_mmlu_pro_keeps_paper_subjects_and_labels_by_similarity_to_gold():
    task = wow.tasks.get("mmlu_pro", data_files=str(F / "mmlu_pro.jsonl"))
    qs = {q.id: q for q in task.questions(10, seed=0)}
    assert sorted(qs) == ["mmlu_pro/101", "mmlu_pro/102", "mmlu_pro/104"]  # high_school_mathematics is not kept
    q = qs["mmlu_pro/104"]
    assert len(q.options) == 5 and q.option_labels[q.gold] == 1.0
    assert all(-1.0 <= lab < 1.0 for i, lab in enumerate(q.option_labels) if i != q.gold)
    assert "Question: Which ocean is the largest?" in q.prompt
    again = wow.tasks.get("mmlu_pro", data_files=str(F / "mmlu_pro.jsonl")).questions(10, seed=0)
    assert json.dumps([x.to_dict() for x in again]) == json.dumps([x.to_dict() for x in task.questions(10, seed=0)])
    assert len(wow.tasks.get("mmlu_pro", data_files=str(F / "mmlu_pro.jsonl"), subjects=None).questions(10)) == 4


def test_minilm_similarity_ranks_a_paraphrase_above_an_unrelated_option():
    [labels] = similarity_labels(
        [["The cat sat on the mat.", "A cat was sitting on the mat.", "Stock prices fell."]], [0]
    )
    assert labels[0] == 1.0 and labels[1] > labels[2]


def test_hellaswag_loader_and_unlabelled_rows(tmp_path):
    qs = wow.tasks.get("hellaswag", data_files=str(F / "hellaswag.jsonl")).questions(3, seed=0)
    q = {x.id: x for x in qs}["hellaswag/9"]
    assert q.options[q.gold] == "dives into the water and swims a lap." and q.option_labels[q.gold] == 1.0
    assert "Context: A woman stands at the edge of a pool. she" in q.prompt
    row = json.loads((F / "hellaswag.jsonl").read_text().splitlines()[1])
    row["label"] = ""
    bad = tmp_path / "hs.jsonl"
    bad.write_text((F / "hellaswag.jsonl").read_text().splitlines()[0] + "\n" + json.dumps(row) + "\n")
    with pytest.raises(WowError, match=r"hs.jsonl:2: label ''"):
        wow.tasks.get("hellaswag", data_files=str(bad)).questions(2)


def test_com2_loader_filters_types_and_drops_the_last_option():
    qs = {q.id: q for q in wow.tasks.get("com2", path=str(F / "com2.csv")).questions(10, seed=0)}
    assert sorted(qs) == ["com2/line2", "com2/line3"]  # a 1p row and a row whose gold is the last option are left out
    q = qs["com2/line3"]
    assert q.options == ["PersonX gets injured", "PersonX becomes fit", "PersonX loses a bet", "PersonX moves house"]
    assert q.gold == 1 and q.option_labels[1] == 1.0 and q.meta["type"] == "3i"
    assert "Context: PersonX prepares for a marathon." in q.prompt


@pytest.mark.parametrize(
    "question, expected",
    [
        ("What event or state is both a result of X and also a cause of Y?", ["a result of X", "a cause of Y"]),
        (
            "What event or state is both caused by A, caused by B, and also caused by C?",
            ["caused by A", "caused by B", "caused by C"],
        ),
        ("What happens next?", ["What happens next"]),
    ],
)
def test_com2_conditions_by_hand(question, expected):
    assert conditions(question) == expected


def test_com2_options_are_parsed_as_literals_never_evaluated(tmp_path):
    bad = tmp_path / "com2.csv"
    with open(bad, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "context", "options", "label", "type"])
        w.writerow(["q", "c", "__import__('os').getcwd()", "0", "2i"])
    with pytest.raises(WowError, match=r"com2.csv:2: 'options' is not a Python list literal"):
        wow.tasks.get("com2", path=str(bad)).questions(1)


def test_com2_missing_file_and_missing_column(tmp_path):
    with pytest.raises(WowError, match="not found: the COM2 csv"):
        wow.tasks.get("com2", path=str(tmp_path / "none.csv")).questions(1)
    bad = tmp_path / "c.csv"
    bad.write_text("question,context,options,label\nq,c,\"['a','b']\",0\n")
    with pytest.raises(WowError, match=r"missing column\(s\) \['type'\]"):
        wow.tasks.get("com2", path=str(bad)).questions(1)


def test_hub_dataset_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WowError, match="data_files"):
        wow.tasks.get("medmcqa", path="someorg/not-a-cached-dataset").questions(1)


# -- labelers --------------------------------------------------------------------------------------------------


def test_vera_head_by_hand():
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], [[1.0, 0.0], [5.0, 5.0], [2.0, 2.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    emb = torch.zeros(32100, 2)
    emb[32099] = torch.tensor([2.0, 3.0])  # w
    emb[32098, 0] = 1.0  # b
    emb[32097, 0] = 2.0  # temperature
    s = scores_from_hidden(hidden, mask, emb)
    # row 0: h = [0, 1] -> (3 + 1) / 2 = 2; row 1: h = [2, 2] -> (4 + 6 + 1) / 2 = 5.5
    assert s.tolist() == pytest.approx([1 / (1 + torch.e**-2), 1 / (1 + torch.e**-5.5)])


class _ToyTokenizer:
    """Whitespace tokens -> ids, right padding, an end token like T5's."""

    padding_side = "right"

    def __call__(self, texts, padding=True, return_tensors="pt"):
        ids = [[3 + (sum(map(ord, w)) % 90) for w in t.split()] + [1] for t in texts]
        width = max(map(len, ids))
        return {
            "input_ids": torch.tensor([x + [0] * (width - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
        }


def test_vera_scorer_on_a_tiny_random_t5_ignores_padding():
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=32128, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    scorer = VeraScorer(T5EncoderModel(cfg), _ToyTokenizer(), batch_size=4)
    alone = scorer.score(["water is wet"])
    batched = scorer.score(["water is wet", "a much longer statement about the cold fire of winter"])
    assert 0.0 < alone[0] < 1.0
    assert batched[0] == pytest.approx(alone[0], abs=1e-5)


def test_plausibility_labels_average_conditions_and_fix_gold_at_one():
    scorer = SimpleNamespace(score=lambda stmts: [0.2, 0.4, 0.9, 0.5, 0.1, 0.3][: len(stmts)])
    labels = plausibility_labels([[["a1", "a2"], ["b1", "b2"], ["c1", "c2"]]], [1], scorer)
    assert labels == [[pytest.approx(0.3), 1.0, pytest.approx(0.2)]]


def test_openai_embedder_labels_with_a_fake_client():
    vectors = {"gold": [1.0, 0.0], "near": [3.0, 4.0], "far": [0.0, 2.0]}
    calls = []

    def create(model, input):
        calls.append((model, list(input)))
        data = [SimpleNamespace(index=i, embedding=vectors[t]) for i, t in enumerate(input)]
        return SimpleNamespace(data=list(reversed(data)))

    client = SimpleNamespace(embeddings=SimpleNamespace(create=create))
    labels = similarity_labels([["near", "gold", "far"]], [1], OpenAIEmbedder(client=client))
    assert labels == [[0.6, 1.0, 0.0]]  # cos([3,4],[1,0]) = 0.6; cos([0,2],[1,0]) = 0
    assert calls == [("text-embedding-3-small", ["near", "gold", "far"])]


def test_unknown_labeler_is_refused():
    with pytest.raises(WowError, match="unknown labeler"):
        wow.tasks.get("hellaswag", data_files=str(F / "hellaswag.jsonl"), labeler="bert").questions(1)
