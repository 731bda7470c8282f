"""``matching``: the size of a maximum bipartite matching of job applicants to jobs they are interested in.

Generated (default) or loaded from NLGraph's ``matching/main.json`` (``path=...``). The normaliser of the graded
correctness is ``max(2 * gold, gold + 1)``, as for ``max_flow``.

Example::

    task = wow.tasks.get("matching", n_applicants=(3, 6), n_jobs=(3, 6), interest_prob=0.35)
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
    parse_int,
    probability,
    strip_answer_cue,
)
from wow.tasks.sources import Row

log = logging.getLogger(__name__)

EDGE_RE = r"Applicant (\d+) is interested in job (\d+)"


class Matching(GraphTask):
    """Maximum number of applicants that can each get a job they want (one applicant per job).

    Args:
        n_applicants: number of applicants, an int or a ``(lo, hi)`` range drawn per question.
        n_jobs: number of jobs, an int or a range.
        interest_prob: probability that an applicant is interested in a job.
        path: an NLGraph ``matching/main.json`` to load instead of generating.
        reasoning: the instruction before the question, ``step_by_step`` (default) or ``brief`` (one sentence).
    """

    name = "matching"
    version = "2"
    extraction = numeric_extraction("The maximum number of matches is", "the maximum number of applicants matched")
    direct_patterns = direct_patterns(
        r"maximum\s+number\s+of\s+(?:matches|matching|applicants)",
        r"(?:at\s+most|maximum\s+of)",
        r"final\s+answer",
    ) + [r"(?i)(\d+)\s+applicants\s+can\s+(?:find|get|be)"]
    nlgraph_file = "matching/main.json"

    def __init__(
        self,
        n_applicants: int | tuple[int, int] = (3, 6),
        n_jobs: int | tuple[int, int] = (3, 6),
        interest_prob: float = 0.35,
        path: str | None = None,
        reasoning: str = "step_by_step",
    ):
        super().__init__(path, reasoning)
        self.n_applicants = int_range(n_applicants, "n_applicants", 1)
        self.n_jobs = int_range(n_jobs, "n_jobs", 1)
        self.interest_prob = probability(interest_prob, "interest_prob")

    def generate(self, rng: random.Random, qid: str) -> Question:
        """Random interests (every applicant wants at least one job)."""
        n_a, n_j = rng.randint(*self.n_applicants), rng.randint(*self.n_jobs)
        edges = []
        for a in range(n_a):
            wants = [j for j in range(n_j) if rng.random() < self.interest_prob] or [rng.randrange(n_j)]
            edges += [(a, j) for j in wants]
        lines = "\n".join(f"Applicant {a} is interested in job {j}." for a, j in edges)
        body = (
            f"There are {n_a} job applicants numbered from 0 to {n_a - 1}, and {n_j} jobs numbered from 0 to "
            f"{n_j - 1}. Each applicant is interested in some of the jobs. Each job can take only one applicant, "
            f"and each applicant can take only one job.\n{lines}\n"
            "Question: What is the largest number of applicants that can each be given a job they are interested in?"
        )
        return _question(qid, self.prompt(body), n_a, n_j, edges, "generated")

    def from_nlgraph(self, row: Row, key: str) -> Question:
        """An NLGraph record: applicants, jobs, interests and the gold size are parsed from its text."""
        text = row.data["question"]
        n_a = parse_int(row, text, r"There are (\d+) job applicants", "the applicant count")
        n_j = parse_int(row, text, r"and (\d+) jobs", "the job count")
        edges = nlgraph_edges(row, EDGE_RE, "interests")
        what = "the gold size ('N applicants can find') in the answer"
        gold = parse_int(row, row.data["answer"], r"(\d+) applicants can find", what)
        body = strip_answer_cue(text) + " Please also state the maximum number of applicants that can be matched."
        q = _question(f"{self.name}/nlgraph-{key}", self.prompt(body), n_a, n_j, edges, "nlgraph", gold=gold)
        return keep_stated_gold(row, q, gold, "maximum matching size")


def _question(qid, text, n_a, n_j, edges, source, gold=None) -> Question:
    graph = nx.Graph()
    left = [("a", a) for a in range(n_a)]
    graph.add_nodes_from(left)
    graph.add_nodes_from(("j", j) for j in range(n_j))
    graph.add_edges_from((("a", a), ("j", j)) for a, j in edges)
    oracle = len(nx.bipartite.hopcroft_karp_matching(graph, top_nodes=left)) // 2
    gold = oracle if gold is None else gold
    return Question(
        id=qid,
        task="matching",
        split="",
        prompt=text,
        gold=gold,
        meta={
            "source": source,
            "n_applicants": n_a,
            "n_jobs": n_j,
            "edges": [list(e) for e in edges],
            "oracle": oracle,
            "normaliser": max(2 * gold, gold + 1),
        },
    )
