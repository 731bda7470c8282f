"""Biographies: FActScore over a tiny passage database, with the LLM steps served by a fake engine."""

import json
import math
import re
from pathlib import Path

import pytest
import wow.tasks
from wow import WowError
from wow.backends.base import Completion, Engine
from wow.tasks.base import UNPARSED
from wow.tasks.factscore import (
    FactScorer,
    PassageDB,
    bm25_top,
    build_passage_db,
    is_supported,
    length_penalty,
    split_sentences,
)

F = Path(__file__).parent / "fixtures" / "tasks"


class FakeEngine(Engine):
    """Splits a sentence into facts at " and "; calls a fact true when its last word is in the passages shown."""

    name = "fake"

    def __init__(self):
        super().__init__("fake")
        self.requests = []

    def _generate(self, requests, progress=False, **kwargs):
        out = []
        for r in requests:
            self.requests.append(r)
            text = r.messages[-1]["content"]
            if text.rstrip().endswith("Facts:"):
                sentence = re.findall(r"Sentence: (.+)", text)[-1]
                facts = [] if "Nothing" in sentence else [p.strip() for p in sentence.split(" and ")]
                out.append(Completion("".join(f"- {f}\n" for f in facts)))
            else:
                fact = re.search(r"Input: (.+) True or False\?", text).group(1)
                passages = " ".join(re.findall(r"Text: (.+)", text))
                last = re.sub(r"\W", "", fact.split()[-1])
                out.append(Completion("True" if last in passages else "False"))
        return out


@pytest.fixture()
def db(tmp_path):
    return build_passage_db(F / "passages.jsonl", tmp_path / "passages.db", words_per_passage=12)


def test_passage_db_is_in_factscore_format(db):
    pdb = PassageDB(db)
    assert pdb.has("Edda Vornholt") and not pdb.has("Nobody")
    edda = pdb.passages("Edda Vornholt")
    assert len(edda) == 4 and edda[0].startswith("Edda Vornholt is a fictional")
    assert " ".join(pdb.passages("Pavel Strand")).startswith(
        "Pavel Strand is a fictional Czech violinist born in Brno."
    )
    with pytest.raises(WowError, match="no article titled 'Nobody'"):
        pdb.passages("Nobody")


def test_factscore_by_hand(db):
    engine = FakeEngine()
    scorer = FactScorer(engine, db, k=2, gamma=0)
    text = "Edda Vornholt is a Norwegian glaciologist and she was born in Tromso. She won the Nobel Prize."
    [res] = scorer.score(["Edda Vornholt"], [text])
    assert res.facts == [
        "Edda Vornholt is a Norwegian glaciologist",
        "she was born in Tromso.",
        "She won the Nobel Prize.",
    ]
    assert res.supported == [True, True, False]
    assert res.score == pytest.approx(2 / 3, abs=1e-6)
    assert all(r.temperature == 0.0 for r in engine.requests)
    verify = [r.messages[0]["content"] for r in engine.requests if "True or False" in r.messages[0]["content"]]
    assert len(verify) == 3 and all(v.count("Title: Edda Vornholt") == 2 for v in verify)
    penalised = FactScorer(FakeEngine(), db, k=2, gamma=10).score(["Edda Vornholt"], [text])[0].score
    assert penalised == pytest.approx(2 / 3 * math.exp(1 - 10 / 3), abs=1e-6)


def test_scores_line_up_with_texts_when_one_has_no_facts(db):
    scorer = FactScorer(FakeEngine(), db, gamma=0)
    res = scorer.score(
        ["Pavel Strand", "Pavel Strand", "Edda Vornholt"], ["He was born in Brno.", "", "Nothing to say here."]
    )
    assert [r.score for r in res] == [1.0, None, 0.0]  # a sentence with no facts returned counts as one fact


def test_missing_topic_fails_before_any_model_call(db):
    engine = FakeEngine()
    with pytest.raises(WowError, match="no article titled 'Nobody'"):
        FactScorer(engine, db).score(["Nobody"], ["Some text."])
    assert engine.requests == []


@pytest.mark.parametrize(
    "reply, supported",
    [
        ("True", True),
        ("False", False),
        ("True. Wait, that is false.", False),
        ("It seems false, but actually true", True),
        ("Yes", True),
        ("I do not know", False),
        ("There is no information about that.", False),
    ],
)
def test_verdict_rule(reply, supported):
    assert is_supported(reply) is supported


def test_length_penalty_by_hand():
    assert length_penalty(10, 10) == 1.0 and length_penalty(25, 10) == 1.0
    assert length_penalty(5, 10) == pytest.approx(math.exp(-1))
    assert length_penalty(3, 0) == 1.0


def test_bm25_by_hand():
    # "banana": idf = ln(1.6); doc 0 scores 1.0 * idf, doc 2 (tf 2, longer) 1.2308 * idf, doc 1 nothing
    assert bm25_top("banana", ["apple banana", "cherry", "banana banana cherry"], 2) == [2, 0]


def test_sentence_split_keeps_initials_and_titles():
    text = "J. K. Rowling wrote books. Dr. Smith agreed!\nA new line here"
    assert split_sentences(text) == ["J. K. Rowling wrote books.", "Dr. Smith agreed!", "A new line here"]


def test_bio_task_questions_scoring_and_grade(db):
    task = wow.tasks.get("bio_generation", path=str(F / "bio.jsonl"), db=str(db), engine=FakeEngine(), gamma=0)
    qs = {q.meta["topic"]: q for q in task.questions(2, seed=0)}
    q = qs["Pavel Strand"]
    assert (
        q.prompt == "Tell me a bio of Pavel Strand.\n"
        and q.gold is None
        and task.free_text
        and task.extraction is None
    )
    scores = task.score_answers(
        [q, q], ["Pavel Strand is a violinist and he taught at the Conservatory.", "He was born in Vienna."]
    )
    assert scores == [1.0, 0.0]
    assert task.parse_direct("He taught in Brno.", q) == 1.0
    g = task.grade(q, 0.9)
    assert (g.correctness, g.raw_label, g.is_correct) == (0.9, 0.9, True)
    assert not task.grade(q, 0.89).is_correct
    assert task.grade(q, None) == UNPARSED


def test_bio_without_db_or_engine_cannot_score():
    task = wow.tasks.get("bio_generation", path=str(F / "bio.jsonl"))
    q = task.questions(2, seed=0)[0]
    with pytest.raises(WowError, match="pass db=.*engine="):
        task.parse_direct("text", q)


def test_bio_topic_missing_from_db_names_the_line(db, tmp_path):
    bad = tmp_path / "bio.jsonl"
    bad.write_text((F / "bio.jsonl").read_text() + json.dumps({"topic": "Nobody Known"}) + "\n")
    with pytest.raises(WowError, match=r"bio.jsonl:3: topic 'Nobody Known' is not a title"):
        wow.tasks.get("bio_generation", path=str(bad), db=str(db)).questions(3)


def test_missing_passage_db_says_what_to_do(tmp_path):
    with pytest.raises(WowError, match="passage database .* not found.*build_passage_db"):
        PassageDB(tmp_path / "none.db")
