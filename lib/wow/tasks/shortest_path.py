"""``shortest_path``: the weight of the shortest path between two nodes of a small weighted undirected graph.

Generated (default) or loaded from NLGraph's ``shortest_path/main.json`` (``path=...``). The normaliser of the
graded correctness is the weight of the longest simple path between the two nodes (``meta["longest_path"]``, exact
up to :data:`wow.tasks.longest_path.EXACT_MAX_NODES` nodes, which covers NLGraph's graphs; past that an upper bound,
flagged by ``meta["normaliser_exact"] = False``), raised to ``gold + 1`` when the graph has a single path, so it
always exceeds the gold value. The paper's grade (``protocol: paper``) divides by the true ``longest_path - gold``.

Example::

    task = wow.tasks.get("shortest_path", n_nodes=(5, 8), edge_prob=0.4, max_weight=9)
    q = task.questions(100, seed=0)[0]
    task.grade(q, q.gold).is_correct  # True
"""

from __future__ import annotations

import logging
import random

import networkx as nx

from wow.tasks.base import Question
from wow.tasks.extract import numeric_extraction
from wow.tasks.graphs import (
    GraphTask,
    direct_patterns,
    int_range,
    keep_stated_gold,
    nlgraph_edges,
    nlgraph_ends,
    parse_int,
    probability,
    random_pairs,
    strip_answer_cue,
)
from wow.tasks.longest_path import longest_simple_path
from wow.tasks.sources import Row, row_error

log = logging.getLogger(__name__)

EDGE_RE = r"an edge between node (\d+) and node (\d+) with weight (\d+)"


class ShortestPath(GraphTask):
    """Shortest-path weight in a weighted undirected graph.

    Args:
        n_nodes: number of nodes, an int or a ``(lo, hi)`` range drawn per question.
        edge_prob: probability of an edge between two nodes (the graph is then joined into one component).
        max_weight: edge weights are drawn uniformly from 1..max_weight.
        path: an NLGraph ``shortest_path/main.json`` to load instead of generating.
        reasoning: the instruction before the question, ``step_by_step`` (default) or ``brief`` (one sentence).
    """

    name = "shortest_path"
    version = "2"
    extraction = numeric_extraction("The total weight is", "the total weight of the shortest path")
    direct_patterns = direct_patterns(
        r"total\s+weight", r"shortest\s+(?:path\s+)?(?:distance|length)", r"final\s+answer"
    )
    nlgraph_file = "shortest_path/main.json"

    def __init__(
        self,
        n_nodes: int | tuple[int, int] = (5, 8),
        edge_prob: float = 0.4,
        max_weight: int = 9,
        path: str | None = None,
        reasoning: str = "step_by_step",
    ):
        super().__init__(path, reasoning)
        self.n_nodes = int_range(n_nodes, "n_nodes", 2)
        self.edge_prob = probability(edge_prob, "edge_prob")
        self.max_weight = int_range(max_weight, "max_weight", 1)[1]

    def generate(self, rng: random.Random, qid: str) -> Question:
        """A random connected graph and two nodes (at least two edges apart when the graph allows it)."""
        n = rng.randint(*self.n_nodes)
        edges = [(u, v, rng.randint(1, self.max_weight)) for u, v in random_pairs(rng, n, self.edge_prob, False)]
        graph = _graph(n, edges)
        hops = dict(nx.all_pairs_shortest_path_length(graph))
        pairs = [(s, t) for s in range(n) for t in range(n) if s != t]
        far = [(s, t) for s, t in pairs if hops[s][t] >= 2]
        s, t = rng.choice(far or pairs)
        lines = ",\n".join(f"an edge between node {u} and node {v} with weight {w}" for u, v, w in edges)
        body = (
            f"In an undirected graph, the nodes are numbered from 0 to {n - 1}, and the edges are:\n{lines}.\n"
            f"Question: What is the shortest path from node {s} to node {t}? Give the path and its total weight."
        )
        return _question(qid, self.prompt(body), n, edges, s, t, "generated")

    def from_nlgraph(self, row: Row, key: str) -> Question:
        """An NLGraph record: edges, end nodes and the gold weight are parsed from its text."""
        text = row.data["question"]
        n = parse_int(row, text, r"numbered from 0 to (\d+)", "the node count") + 1
        edges, (s, t) = nlgraph_edges(row, EDGE_RE), nlgraph_ends(row, "path")
        what = "the gold weight ('total weight of N') in the answer"
        gold = parse_int(row, row.data["answer"], r"total weight of (\d+)", what)
        body = strip_answer_cue(text) + " Please also state the total weight of the shortest path."
        try:
            q = _question(f"{self.name}/nlgraph-{key}", self.prompt(body), n, edges, s, t, "nlgraph", gold=gold)
        except (nx.NetworkXNoPath, nx.NodeNotFound) as e:
            raise row_error(row, f"the graph has no path from node {s} to node {t} ({e})") from None
        return keep_stated_gold(row, q, gold, "shortest-path weight")

    def paper_normaliser(self, question: Question) -> float:
        """The paper's normaliser: the weight of the longest simple path itself (``evaluate.py``,
        ``calculate_normalizer_for_shortest_path``), which equals the gold value when the graph has one path."""
        return question.meta.get("longest_path", question.meta["normaliser"])


def _graph(n: int, edges: list[tuple[int, int, int]]) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_weighted_edges_from(edges)
    return graph


def _question(qid, text, n, edges, s, t, source, gold=None) -> Question:
    graph = _graph(n, edges)
    oracle = nx.dijkstra_path_length(graph, s, t)
    gold = oracle if gold is None else gold
    adj = {u: {v: d["weight"] for v, d in graph[u].items()} for u in graph}
    longest, exact = longest_simple_path(adj, s, t)
    return Question(
        id=qid,
        task="shortest_path",
        split="",
        prompt=text,
        gold=gold,
        meta={
            "source": source,
            "n_nodes": n,
            "edges": [list(e) for e in edges],
            "source_node": s,
            "target_node": t,
            "oracle": oracle,
            "longest_path": longest,
            "normaliser": max(longest, gold + 1),
            "normaliser_exact": exact,
        },
    )
