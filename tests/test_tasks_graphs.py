"""Graph tasks: oracles against independent computations, the grader by hand, extraction, the NLGraph loader."""

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import wow.tasks
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching, shortest_path
from wow import WowError
from wow.tasks.base import UNPARSED, Question
from wow.tasks.longest_path import longest_simple_path

F = Path(__file__).parent / "fixtures" / "tasks"


def _simple_paths(n, weight, s, t):
    """Weights of every simple s-t path, by enumerating ordered sets of intermediate nodes."""
    others = [v for v in range(n) if v not in (s, t)]
    for k in range(len(others) + 1):
        for mid in itertools.permutations(others, k):
            path = (s, *mid, t)
            if all((a, b) in weight for a, b in itertools.pairwise(path)):
                yield sum(weight[a, b] for a, b in itertools.pairwise(path))


def test_shortest_path_gold_and_normaliser_match_brute_force():
    task = wow.tasks.get("shortest_path", n_nodes=(4, 7), edge_prob=0.5, max_weight=9)
    for q in task.questions(25, seed=5):
        n, s, t = q.meta["n_nodes"], q.meta["source_node"], q.meta["target_node"]
        weight = {}
        for u, v, w in q.meta["edges"]:
            weight[u, v] = weight[v, u] = w
        dense = np.zeros((n, n))
        for (u, v), w in weight.items():
            dense[u, v] = w
        assert q.gold == int(shortest_path(csr_matrix(dense), directed=False)[s, t])
        paths = list(_simple_paths(n, weight, s, t))
        assert q.gold == min(paths)
        assert q.meta["longest_path"] == max(paths) and q.meta["normaliser_exact"]
        assert q.meta["normaliser"] == max(max(paths), q.gold + 1) > q.gold
        assert f"from node {s} to node {t}" in q.prompt
        assert len(re.findall(r"an edge between node \d+ and node \d+ with weight \d+", q.prompt)) == len(
            q.meta["edges"]
        )


def test_longest_path_past_the_exact_size_falls_back_to_an_upper_bound_past_its_budget():
    adj = {u: {v: u + v + 1 for v in range(6) if v != u} for u in range(6)}
    exact, ok = longest_simple_path(adj, 0, 5)
    searched, found = longest_simple_path(adj, 0, 5, max_exact_nodes=0)  # the search, within its budget
    bound, cut = longest_simple_path(adj, 0, 5, budget=10, max_exact_nodes=0)
    assert ok and found and not cut
    assert searched == exact and bound >= exact
    heaviest = sorted({(min(a, b), max(a, b)): w for a in adj for b, w in adj[a].items()}.values())[-5:]
    assert bound == sum(heaviest)


def _complete(n, weight):
    return {u: {v: weight(u, v) for v in range(n) if v != u} for u in range(n)}


@pytest.mark.parametrize("n", [17, 20])
def test_longest_path_is_exact_on_complete_graphs_of_nlgraph_size(n):
    """K_n with weight(u, v) = u + v: the heaviest 0-(n-1) path visits every node (inserting x between a and b adds
    2x), so it weighs 2 * (0 + 1 + ... + n-1) - 0 - (n-1): 256 for n = 17, 361 for n = 20. A search with the old
    200,000-step budget stops long before and returns a bound."""
    adj = _complete(n, lambda u, v: u + v)
    expected = 2 * sum(range(n)) - (n - 1)
    assert expected == {17: 256, 20: 361}[n]
    assert longest_simple_path(adj, 0, n - 1) == (expected, True)
    bound, exact = longest_simple_path(adj, 0, n - 1, max_exact_nodes=0)
    assert not exact and bound > expected


def test_longest_path_matches_brute_force_on_random_graphs():
    import random

    from wow.tasks.graphs import random_pairs

    rng = random.Random(11)
    for _ in range(60):
        n = rng.randint(2, 8)
        weight = {}
        for u, v in random_pairs(rng, n, rng.uniform(0.1, 0.8), False):
            weight[u, v] = weight[v, u] = rng.randint(1, 9)
        adj = {u: {} for u in range(n)}
        for (u, v), w in weight.items():
            adj[u][v] = w
        s, t = rng.sample(range(n), 2)
        assert longest_simple_path(adj, s, t) == (max(_simple_paths(n, weight, s, t)), True)


def test_longest_path_ignores_parts_no_simple_path_can_visit():
    """0 -1- 1 -2- 2, plus a heavy pendant 1 -100- 3 and a heavy triangle 2-4-5 past the target: only 0-1-2 counts."""
    from wow.tasks.longest_path import path_nodes

    edges = {(0, 1): 1, (1, 2): 2, (1, 3): 100, (2, 4): 50, (4, 5): 50, (2, 5): 50}
    adj = {u: {} for u in range(6)}
    for (u, v), w in edges.items():
        adj[u][v] = adj[v][u] = w
    assert path_nodes(adj, 0, 2) == {0, 1, 2}
    assert longest_simple_path(adj, 0, 2) == (3, True)
    assert longest_simple_path(adj, 0, 5) == (103, True)  # 0-1-2-4-5: 1 + 2 + 50 + 50


def _nlgraph_record(n, edges, s, t, gold):
    lines = ",\n".join(f"an edge between node {u} and node {v} with weight {w}" for u, v, w in edges)
    return {
        "question": f"In an undirected graph, the nodes are numbered from 0 to {n - 1}, and the edges are:\n{lines}."
        f"\nQ: Give the shortest path from node {s} to node {t}.\nA:",
        "answer": f"The shortest path from node {s} to node {t} is {s},{t} with a total weight of {gold}",
    }


def test_nlgraph_20_node_normaliser_is_the_exact_longest_path_and_data_check_counts_inexact_ones(tmp_path):
    from wow import params
    from wow.cli import datacheck

    k20 = [(u, v, u + v) for u in range(20) for v in range(u + 1, 20)]
    k22 = [(u, v, 1) for u in range(22) for v in range(u + 1, 22)]
    path = tmp_path / "main.json"
    path.write_text(json.dumps({"0": _nlgraph_record(20, k20, 0, 19, 19), "1": _nlgraph_record(22, k22, 0, 21, 1)}))
    q20, q22 = wow.tasks.get("shortest_path", path=str(path)).load_nlgraph(str(path))
    assert (q20.meta["longest_path"], q20.meta["normaliser"], q20.meta["normaliser_exact"]) == (361, 361, True)
    # 22 nodes: past EXACT_MAX_NODES, the search runs out of budget; the bound is the 21 heaviest edges (all 1)
    assert (q22.meta["longest_path"], q22.meta["normaliser_exact"]) == (21, False)
    P = params.validate({"tasks": ["shortest_path"], "task_options": {"shortest_path": {"path": str(path)}}})
    (result,) = datacheck.check_data(P)
    assert result.ok and "1 of 2 normalisers are upper bounds" in result.message


def _min_cut(n, cap, s, t):
    """Max flow = min cut, by trying every cut (n <= 8)."""
    best = None
    others = [v for v in range(n) if v not in (s, t)]
    for k in range(len(others) + 1):
        for side in itertools.combinations(others, k):
            src = {s, *side}
            c = sum(w for (u, v), w in cap.items() if u in src and v not in src)
            best = c if best is None else min(best, c)
    return best


def test_max_flow_gold_matches_brute_force_min_cut():
    task = wow.tasks.get("max_flow", n_nodes=(4, 7), edge_prob=0.4, max_capacity=9)
    for q in task.questions(25, seed=6):
        cap = {(u, v): c for u, v, c in q.meta["edges"]}
        assert q.gold == _min_cut(q.meta["n_nodes"], cap, q.meta["source_node"], q.meta["target_node"]) > 0
        assert q.meta["normaliser"] == 2 * q.gold


def test_matching_gold_matches_scipy():
    task = wow.tasks.get("matching", n_applicants=(2, 6), n_jobs=(2, 6), interest_prob=0.3)
    for q in task.questions(25, seed=7):
        dense = np.zeros((q.meta["n_applicants"], q.meta["n_jobs"]))
        for a, j in q.meta["edges"]:
            dense[a, j] = 1
        assert q.gold == int((maximum_bipartite_matching(csr_matrix(dense), perm_type="column") >= 0).sum()) >= 1


def _sp_question(gold=6, norm=17):
    return Question("sp/x", "shortest_path", "test", "p", gold, meta={"normaliser": norm})


@pytest.mark.parametrize(
    "answer, correctness, raw, correct",
    [
        (6, 1.0, 0.0, True),
        (8, 1 - 2 / 11, -2.0, False),  # gold 6, normaliser 17: 1 - |8-6| / (17-6)
        (4, 1 - 2 / 11, -2.0, False),  # same distance below gold: a tie
        (0, 1 - 6 / 11, -6.0, False),
        (17, 0.0, -11.0, False),
        (40, 0.0, -34.0, False),  # clipped at 0
        (6.5, 1 - 0.5 / 11, -0.5, False),
    ],
)
def test_graph_grade_by_hand(answer, correctness, raw, correct):
    """Gold 6, normaliser 17: the scale is max(17 - 6, 6) = 11."""
    g = wow.tasks.get("shortest_path").grade(_sp_question(), answer)
    assert g.correctness == pytest.approx(correctness)
    assert g.raw_label == raw and g.is_correct is correct


def test_answers_below_a_gold_near_the_longest_path_keep_their_shade():
    """Gold 11, longest path 12: the paper's scale (12 - 11 = 1) would grade 10 as 0; ours is max(1, 11) = 11."""
    sp = wow.tasks.get("shortest_path")
    q = _sp_question(gold=11, norm=12)
    assert sp.grade(q, 10).correctness == pytest.approx(1 - 1 / 11)
    assert sp.grade(q, 12).correctness == pytest.approx(1 - 1 / 11)
    assert sp.grade(q, 0).correctness == 0.0


def test_graph_unparsed_answer_grades_as_unparsed():
    assert wow.tasks.get("max_flow").grade(_sp_question(), None) == UNPARSED


@pytest.mark.parametrize(
    "name, reply, expected",
    [
        ("shortest_path", "The total weight is 7.", 7),
        ("shortest_path", "The total weight is **12**", 12),
        ("shortest_path", "The total weight is 1,234", 1234),
        ("shortest_path", "The total weight is 7.5", 7.5),
        ("shortest_path", "the total weight is: 9", 9),
        ("shortest_path", "The total weight is None", None),
        ("shortest_path", "None", None),
        ("max_flow", "The maximum flow is 15 units.", 15),
        ("max_flow", "The maximum flow is -3", -3),
        ("matching", "The maximum number of matches is 4", 4),
        ("matching", "I cannot tell.", None),
    ],
)
def test_graph_extraction_reads_prefix_plus_reply(name, reply, expected):
    task = wow.tasks.get(name)
    assert task.parse(reply, _sp_question()) == expected


def test_extraction_prefix_is_the_start_of_what_the_pattern_needs():
    task = wow.tasks.get("shortest_path")
    prefilled = task.extraction.prefix + " 11"
    assert task.parse(prefilled, _sp_question()) == 11
    assert "The total weight is" in task.extraction.instruction


@pytest.mark.parametrize(
    "name, answer, expected",
    [
        (
            "shortest_path",
            "Path 0 -> 2 -> 3 has weight 3. Path 0 -> 1 -> 3: total weight 2 + 3 = 5. So the total weight is 3.",
            3,
        ),
        ("shortest_path", "The shortest distance is 9", 9),
        ("max_flow", "Paths carry 3 and 4, so the maximum flow from node 0 to node 5 is 7.", 7),
        ("matching", "Assign 0->1, 2->0. So 2 applicants can find a job.", 2),
        ("matching", "No conclusion.", None),
    ],
)
def test_graph_direct_parse_takes_the_last_stated_answer(name, answer, expected):
    assert wow.tasks.get(name).parse_direct(answer, _sp_question()) == expected


@pytest.mark.parametrize(
    "name, fixture, golds, norms",
    [
        ("shortest_path", "nlgraph_shortest_path.json", [6, 6, 10], [17, 9, 19]),
        ("max_flow", "nlgraph_flow.json", [5, 5], [10, 10]),
        ("matching", "nlgraph_matching.json", [2, 2], [4, 4]),
    ],
)
def test_nlgraph_loader_reads_gold_and_graph_from_the_text(name, fixture, golds, norms):
    task = wow.tasks.get(name, path=str(F / fixture))
    qs = task.questions(10, seed=0)
    assert [q.gold for q in sorted(qs, key=lambda q: q.id)] == golds
    assert [q.meta["normaliser"] for q in sorted(qs, key=lambda q: q.id)] == norms
    assert all(q.meta["oracle"] == q.gold for q in qs)
    assert all(
        not q.prompt.rstrip().endswith("A:") and q.prompt.count("edge") + q.prompt.count("Applicant") > 2 for q in qs
    )
    assert {q.split for q in qs} <= {"train", "validation", "test"}


def test_nlgraph_record_without_gold_names_the_record(tmp_path):
    data = json.loads((F / "nlgraph_flow.json").read_text())
    data["1"]["answer"] = "I do not know."
    bad = tmp_path / "flow.json"
    bad.write_text(json.dumps(data, indent=1))
    with pytest.raises(WowError, match=r"flow.json record '1' \(line \d+\).*gold flow"):
        wow.tasks.get("max_flow", path=str(bad)).questions(2)


def test_nlgraph_file_that_is_a_list_is_refused(tmp_path):
    bad = tmp_path / "sp.json"
    bad.write_text("[1, 2]")
    with pytest.raises(WowError, match="JSON object of records"):
        wow.tasks.get("shortest_path", path=str(bad)).questions(1)


def test_missing_nlgraph_file_says_what_to_do(tmp_path):
    with pytest.raises(WowError, match="not found: the NLGraph file.*path="):
        wow.tasks.get("matching", path=str(tmp_path / "nope.json")).questions(1)


@pytest.mark.parametrize("name", ["shortest_path", "max_flow", "matching"])
def test_reasoning_option_sets_the_instruction_and_nothing_else(name):
    """reasoning="brief" asks for one sentence; the graph, the question and the gold are those of the default."""
    import random

    from wow.tasks.extract import BRIEF_INSTRUCTION, COT_INSTRUCTION

    default = wow.tasks.get(name).generate(random.Random(3), "q")
    brief = wow.tasks.get(name, reasoning="brief").generate(random.Random(3), "q")
    assert default.prompt.startswith(COT_INSTRUCTION) and brief.prompt.startswith(BRIEF_INSTRUCTION)
    assert brief.prompt.removeprefix(BRIEF_INSTRUCTION) == default.prompt.removeprefix(COT_INSTRUCTION)
    assert brief.gold == default.gold
    with pytest.raises(WowError, match="reasoning must be one of"):
        wow.tasks.get(name, reasoning="verbose")
