"""The task registry, seeded splits and byte-identical question generation."""

import json
import time

import pytest
import wow.tasks
from wow import WowError
from wow.tasks.base import SPLITS, Question, assign_splits

GENERATED = ["shortest_path", "max_flow", "matching", "knowledge_crosswords", "science"]


def test_names_lists_every_task():
    assert wow.tasks.names() == sorted(
        [
            "bio_generation",
            "chess",
            "com2",
            "hellaswag",
            "knowledge_crosswords",
            "matching",
            "max_flow",
            "medmcqa",
            "mmlu_pro",
            "science",
            "shortest_path",
        ]
    )


@pytest.mark.parametrize("name", wow.tasks.names())
def test_every_registered_class_has_its_name_and_a_version(name):
    cls = wow.tasks.task_class(name)
    assert cls.name == name and cls.version
    assert cls.free_text or cls.extraction is not None


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(WowError, match="unknown task 'shortest_paths'.*max_flow.*shortest_path"):
        wow.tasks.get("shortest_paths")


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(WowError, match="no option.*n_node.*n_nodes, edge_prob, max_weight, path"):
        wow.tasks.get("shortest_path", n_node=5)


def test_bad_difficulty_is_refused():
    with pytest.raises(WowError, match="n_nodes"):
        wow.tasks.get("shortest_path", n_nodes=(8, 5))
    with pytest.raises(WowError, match="edge_prob"):
        wow.tasks.get("max_flow", edge_prob=0)


@pytest.mark.parametrize("name", GENERATED)
def test_same_seed_gives_byte_identical_questions(name):
    a = wow.tasks.get(name).questions(30, seed=3)
    b = wow.tasks.get(name).questions(30, seed=3)
    assert json.dumps([q.to_dict() for q in a]) == json.dumps([q.to_dict() for q in b])
    c = wow.tasks.get(name).questions(30, seed=4)
    assert [q.prompt for q in a] != [q.prompt for q in c]


@pytest.mark.parametrize("name", GENERATED)
def test_splits_are_disjoint_complete_and_deterministic(name):
    qs = wow.tasks.get(name).questions(50, seed=1)
    by_split = {s: {q.id for q in qs if q.split == s} for s in SPLITS}
    assert [len(by_split[s]) for s in SPLITS] == [40, 5, 5]
    assert len({q.id for q in qs}) == 50
    assert set().union(*by_split.values()) == {q.id for q in qs}
    again = wow.tasks.get(name).questions(50, seed=1)
    assert [q.split for q in again] == [q.split for q in qs]


def test_question_i_does_not_depend_on_how_many_are_asked_for():
    few = wow.tasks.get("shortest_path").build(5, seed=2)
    many = wow.tasks.get("shortest_path").build(50, seed=2)
    assert [q.to_dict() for q in few] == [q.to_dict() for q in many[:5]]


def test_assign_splits_rejects_fractions_that_do_not_sum_to_one():
    with pytest.raises(ValueError):
        assign_splits([Question("a", "t", "", "p", 1)], 0, (0.5, 0.2, 0.2))


def test_question_round_trips_through_a_dict():
    q = wow.tasks.get("knowledge_crosswords").questions(1, seed=0)[0]
    assert Question.from_dict(json.loads(json.dumps(q.to_dict()))) == q


def test_thousand_shortest_path_questions_take_under_ten_seconds():
    t0 = time.perf_counter()
    qs = wow.tasks.get("shortest_path").questions(1000, seed=0)
    assert time.perf_counter() - t0 < 10
    assert len(qs) == 1000 and len({q.id for q in qs}) == 1000
