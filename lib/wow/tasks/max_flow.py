"""``max_flow``: the maximum flow between two nodes of a small directed graph with integer capacities.

Generated (default) or loaded from NLGraph's ``flow/main.json`` (``path=...``). The normaliser of the graded
correctness is ``max(2 * gold, gold + 1)`` (the paper's in-domain rule, ``correctness = 1 - |e - g| / g``): an
answer of 0 or of twice the true flow scores 0.

Example::

    task = wow.tasks.get("max_flow", n_nodes=(5, 8), edge_prob=0.35, max_capacity=10)
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
from wow.tasks.sources import Row

log = logging.getLogger(__name__)

EDGE_RE = r"an edge from node (\d+) to node (\d+) with capacity (\d+)"


class MaxFlow(GraphTask):
    """Maximum flow from a source to a sink node.

    Args:
        n_nodes: number of nodes, an int or a ``(lo, hi)`` range drawn per question.
        edge_prob: probability of a directed edge per ordered pair of nodes.
        max_capacity: capacities are drawn uniformly from 1..max_capacity.
        path: an NLGraph ``flow/main.json`` to load instead of generating.
        reasoning: the instruction before the question, ``step_by_step`` (default) or ``brief`` (one sentence).
    """

    name = "max_flow"
    version = "2"
    extraction = numeric_extraction("The maximum flow is", "the maximum flow")
    direct_patterns = direct_patterns(r"maximum\s+flow", r"max(?:imum)?\s+flow\s+value", r"final\s+answer")
    nlgraph_file = "flow/main.json"

    def __init__(
        self,
        n_nodes: int | tuple[int, int] = (5, 8),
        edge_prob: float = 0.35,
        max_capacity: int = 10,
        path: str | None = None,
        reasoning: str = "step_by_step",
    ):
        super().__init__(path, reasoning)
        self.n_nodes = int_range(n_nodes, "n_nodes", 2)
        self.edge_prob = probability(edge_prob, "edge_prob")
        self.max_capacity = int_range(max_capacity, "max_capacity", 1)[1]

    def generate(self, rng: random.Random, qid: str) -> Question:
        """A random directed graph and a source/sink pair with a positive flow."""
        n = rng.randint(*self.n_nodes)
        edges = [(u, v, rng.randint(1, self.max_capacity)) for u, v in random_pairs(rng, n, self.edge_prob, True)]
        graph = _graph(n, edges)
        pairs = [(s, t) for s in range(n) for t in nx.descendants(graph, s)]
        indirect = [(s, t) for s, t in pairs if not graph.has_edge(s, t)]
        s, t = rng.choice(indirect or pairs)
        lines = ",\n".join(f"an edge from node {u} to node {v} with capacity {c}" for u, v, c in edges)
        body = (
            f"In a directed graph, the nodes are numbered from 0 to {n - 1}, and the edges are:\n{lines}.\n"
            f"Question: What is the maximum flow from node {s} to node {t}?"
        )
        return _question(qid, self.prompt(body), n, edges, s, t, "generated")

    def from_nlgraph(self, row: Row, key: str) -> Question:
        """An NLGraph record: edges, source, sink and the gold flow are parsed from its text."""
        text = row.data["question"]
        n = parse_int(row, text, r"numbered from 0 to (\d+)", "the node count") + 1
        edges, (s, t) = nlgraph_edges(row, EDGE_RE), nlgraph_ends(row, "flow")
        what = "the gold flow ('maximum flow ... is N') in the answer"
        gold = parse_int(row, row.data["answer"], r"maximum flow.*?is (\d+)", what)
        q = _question(
            f"{self.name}/nlgraph-{key}", self.prompt(strip_answer_cue(text)), n, edges, s, t, "nlgraph", gold=gold
        )
        return keep_stated_gold(row, q, gold, "maximum flow")


def _graph(n: int, edges: list[tuple[int, int, int]]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    for u, v, c in edges:
        graph.add_edge(u, v, capacity=c)
    return graph


def _question(qid, text, n, edges, s, t, source, gold=None) -> Question:
    oracle = int(nx.maximum_flow_value(_graph(n, edges), s, t))
    gold = oracle if gold is None else gold
    return Question(
        id=qid,
        task="max_flow",
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
            "normaliser": max(2 * gold, gold + 1),
        },
    )
