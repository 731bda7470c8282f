"""NLGraph-style graph tasks: the shared base class, random graphs, and the grading normaliser.

The three graph tasks (``shortest_path``, ``max_flow``, ``matching``) state a small graph in words and ask for one
integer. Their questions are either generated here (seeded, with a networkx oracle) or loaded from NLGraph's
per-task ``main.json`` (``{"0": {"question": ..., "answer": ...}, ...}``), whose edges are parsed out of the
question text.

Grading (one rule for all three):

* ``raw_label = -|answer - gold|`` (the paper's label; higher is less wrong);
* ``correctness = clip(1 - |answer - gold| / max(normaliser - gold, gold), 0, 1)``, with a per-question
  ``normaliser`` stored in ``question.meta`` at generation/load time and always greater than ``gold`` (never a
  division by zero). The paper divides by ``normaliser - gold`` alone, which on small graphs (longest path close to
  the shortest) grades every answer below the gold as 0; scaling by at least ``gold`` keeps those answers graded;
* ``is_correct = answer == gold``.

Each task module defines the normaliser (shortest path: the weight of the longest simple path between the two
nodes, exact for graphs of up to :data:`EXACT_MAX_NODES` nodes; flow and matching: ``2 * gold``), see docs/tasks.md.
:meth:`GraphTask.paper_normaliser` gives the paper's (``protocol: paper``): the true longest path, or ``2 * gold``.
"""

from __future__ import annotations

import logging
import random
import re

from wow import WowError
from wow.tasks.base import UNPARSED, Grade, Question, Task
from wow.tasks.extract import COT_INSTRUCTION, NUMBER, integral, last_match, to_number
from wow.tasks.sources import Row, field, read_jsonl_rows, require_file, row_error, sample

log = logging.getLogger(__name__)


class GraphTask(Task):
    """Base of the integer-answer graph tasks. Subclasses implement ``generate`` and ``from_nlgraph``.

    Class attributes:
        direct_patterns: regexes (group 1 = the number) for the direct parse of a reasoning answer.
        nlgraph_file: the NLGraph file name, for messages.
    """

    direct_patterns: list[str] = []
    nlgraph_file: str = ""

    def __init__(self, path: str | None = None):
        self.path = path

    def build(self, n: int, seed: int) -> list[Question]:
        """Generate ``n`` questions (question ``i`` depends only on ``seed`` and ``i``) or load them from ``path``.

        Args:
            n: number of questions.
            seed: the seed.

        Returns:
            the questions, split unset.
        """
        if self.path is not None:
            return sample(self.load_nlgraph(self.path), n, seed, self.path)
        return [
            self.generate(random.Random(f"{self.name}/{seed}/{i}"), f"{self.name}/gen{seed}-{i}") for i in range(n)
        ]

    def generate(self, rng: random.Random, qid: str) -> Question:
        """One generated question."""
        raise NotImplementedError

    def from_nlgraph(self, row: Row, key: str) -> Question:
        """One question from an NLGraph record (``row.data`` has ``question`` and ``answer``)."""
        raise NotImplementedError

    def load_nlgraph(self, path: str) -> list[Question]:
        """All questions of an NLGraph ``main.json`` file, in file order.

        Args:
            path: the file.

        Returns:
            the questions.

        Raises:
            WowError: the file is missing, is not a JSON object of records, or a record cannot be parsed.
        """
        return [self.from_nlgraph(row, key) for key, row in read_nlgraph(path, self.nlgraph_file)]

    def canonical(self, raw: str, question: Question, permutation: list[int] | None) -> int | float | None:
        """The number in the match: an ``int`` when whole, else the float."""
        return integral(to_number(raw))

    def parse_direct(self, answer: str, question: Question, permutation: list[int] | None = None):
        """The last stated answer in a reasoning answer (e.g. "... the total weight is 7"), or None."""
        m = last_match(self.direct_patterns, answer)
        return None if m is None else self.canonical(m.group(1), question, permutation)

    def grade(self, question: Question, extracted) -> Grade:
        """Grade an integer answer against ``question.gold`` with the stored normaliser (see module docs).

        Args:
            question: the question (``meta["normaliser"] > gold``).
            extracted: the canonical answer or None.

        Returns:
            the grade; :data:`UNPARSED` for None.
        """
        if extracted is None:
            return UNPARSED
        gold, norm = question.gold, question.meta["normaliser"]
        err = abs(extracted - gold)
        correctness = min(1.0, max(0.0, 1.0 - err / max(norm - gold, gold)))
        return Grade(correctness=correctness, raw_label=-float(err), is_correct=extracted == gold)

    def paper_normaliser(self, question: Question) -> float:
        """The normaliser of the paper's evaluation (``1 - |e - gold| / (normaliser - gold)``): ``2 * gold``, its
        in-domain rule for maximum flow (``evaluate.py``, ``calculate_normalizer_for_maximum_flow``)."""
        return 2 * question.gold


def direct_patterns(*phrases: str) -> list[str]:
    """Direct-parse regexes: a phrase, an optional "from node S to node T", a short gap without digits, then a
    number (the result when it is written ``a + b = c``).

    Args:
        phrases: regex fragments such as ``total weight``.

    Returns:
        case-insensitive patterns with the number in group 1.
    """
    num = f"(?:{NUMBER})"
    nodes = r"(?:\s+(?:from|between)\s+node\s+\d+\s+(?:to|and)\s+node\s+\d+)?"
    return [
        rf"(?i)(?:{p}){nodes}[^0-9\n]{{0,30}}?(?:{num}(?:\s*[-+*\u00d7]\s*{num})+\s*=\s*)?({NUMBER})" for p in phrases
    ]


def read_nlgraph(path: str, what: str) -> list[tuple[str, Row]]:
    """The records of an NLGraph ``main.json``: ``{"<id>": {"question": str, "answer": str, ...}}``.

    Args:
        path: the file.
        what: the file's name in NLGraph (for the missing-file message).

    Returns:
        ``(id, row)`` pairs in file order; ``row.where`` is ``<file> record <id>``.
    """
    import json

    p = require_file(path, f"the NLGraph file ({what}, from the NLGraph repository's per-task main.json)")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        return [(str(r.data.get("id", r.index)), r) for r in read_jsonl_rows(p, what)]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise WowError(f"{p}:{e.lineno}: not valid JSON ({e.msg}).") from None
    if not isinstance(data, dict):
        raise WowError(
            f"{p}: expected a JSON object of records keyed by id (NLGraph main.json), got {type(data).__name__}"
        )
    out = []
    for i, (key, rec) in enumerate(data.items()):
        row = Row(rec if isinstance(rec, dict) else {}, f"{p} record {key!r} (line {_line_of(text, key)})", i)
        if not isinstance(rec, dict):
            raise row_error(row, "not an object with 'question' and 'answer'")
        field(row, "question", str)
        field(row, "answer", str)
        out.append((str(key), row))
    return out


def parse_int(row: Row, text: str, pattern: str, what: str) -> int:
    """The integer in group 1 of ``pattern`` in ``text``; a WowError naming the row when absent."""
    m = re.search(pattern, text)
    if not m:
        raise row_error(row, f"cannot find {what} (expected text matching {pattern!r})")
    return int(m.group(1))


def strip_answer_cue(question: str) -> str:
    """An NLGraph question without its trailing ``A:`` cue."""
    return re.sub(r"\s*A:\s*$", "", question)


def prompt(body: str) -> str:
    """The reasoning prompt: our chain-of-thought instruction, then the question."""
    return COT_INSTRUCTION + body.strip() + "\n"


def int_range(value: int | tuple[int, int] | list[int], name: str, low: int) -> tuple[int, int]:
    """A ``(lo, hi)`` range option (an int means a fixed value); a WowError when it is invalid."""
    lo, hi = (value, value) if isinstance(value, int) else tuple(value)
    if not (isinstance(lo, int) and isinstance(hi, int) and low <= lo <= hi):
        raise WowError(f"{name} must be an int >= {low} or a range (lo, hi) with {low} <= lo <= hi, got {value!r}")
    return lo, hi


def probability(value: float, name: str) -> float:
    """A probability option in (0, 1]; a WowError otherwise."""
    if not 0.0 < float(value) <= 1.0:
        raise WowError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


def random_pairs(rng: random.Random, n: int, p: float, directed: bool) -> list[tuple[int, int]]:
    """The node pairs of a G(n, p) random graph, then joined into one (weakly) connected component.

    Components are joined by one random edge from each later component to a node of an earlier one, so the graph
    keeps roughly the density ``p`` asked for.

    Args:
        rng: the random source.
        n: number of nodes.
        p: edge probability per (ordered, when directed) pair.
        directed: ordered pairs.

    Returns:
        the sorted edge list.
    """
    pairs = [(u, v) for u in range(n) for v in range(n) if (u != v if directed else u < v)]
    edges = {e for e in pairs if rng.random() < p}
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges:
        parent[root(u)] = root(v)
    comps: dict[int, list[int]] = {}
    for x in range(n):
        comps.setdefault(root(x), []).append(x)
    groups = sorted(comps.values())
    for i in range(1, len(groups)):
        a = rng.choice(groups[i])
        b = rng.choice([x for g in groups[:i] for x in g])
        edge = (a, b) if directed and rng.random() < 0.5 else (b, a) if directed else (min(a, b), max(a, b))
        edges.add(edge)
    return sorted(edges)


#: Most nodes (of the part of a graph that simple s-t paths can visit) for which :func:`longest_simple_path` is
#: exact: a dynamic programme over subsets, 2**(n-1) x (n-1) states (about 40 MB and a fraction of a second at 20
#: nodes). NLGraph's graphs have at most 20 nodes (its hard shortest-path graphs 11-20); the generated ones 5-8 by
#: default.
EXACT_MAX_NODES = 20


def longest_simple_path(
    adj: dict[int, dict[int, int]], s: int, t: int, budget: int = 200_000, max_exact_nodes: int = EXACT_MAX_NODES
) -> tuple[int, bool]:
    """Weight of the heaviest simple path from ``s`` to ``t`` of an undirected graph.

    Only the nodes some simple s-t path can visit count (:func:`path_nodes`: the blocks between ``s`` and ``t``).
    Up to ``max_exact_nodes`` of them the weight is exact (:func:`longest_path_dp`); past that, a depth-first
    search within ``budget`` steps, and when that runs out an upper bound replaces the weight.

    Args:
        adj: ``adj[u][v] = weight``, both directions.
        s: source node.
        t: target node (reachable from ``s``).
        budget: most steps of the search on graphs larger than ``max_exact_nodes``.
        max_exact_nodes: largest graph part solved by the dynamic programme.

    Returns:
        ``(weight, exact)``: with ``exact`` False the weight is an upper bound, the sum of the ``n - 1`` heaviest
        edges of that part (no simple path has more edges).
    """
    keep = path_nodes(adj, s, t)
    sub = {u: {v: w for v, w in adj[u].items() if v in keep} for u in keep}
    if len(sub) <= max_exact_nodes:
        return longest_path_dp(sub, s, t), True
    return _longest_path_search(sub, s, t, budget)


def path_nodes(adj: dict[int, dict[int, int]], s: int, t: int) -> set[int]:
    """The nodes that lie on at least one simple path from ``s`` to ``t``: the union of the biconnected blocks on
    the path from ``s`` to ``t`` in the graph's block tree (every other node hangs off a cut node that a simple
    path could not leave again)."""
    import networkx as nx

    graph = nx.Graph((u, v) for u in adj for v in adj[u])
    graph.add_nodes_from([s, t])
    blocks = [set(b) for b in nx.biconnected_components(graph)]
    tree = nx.Graph()
    for i, block in enumerate(blocks):
        tree.add_edges_from((("block", i), ("node", v)) for v in block)
    try:
        route = nx.shortest_path(tree, ("node", s), ("node", t))
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        raise WowError(f"no path from node {s} to node {t}") from None
    return set().union(*(blocks[i] for kind, i in route if kind == "block"))


def longest_path_dp(adj: dict[int, dict[int, int]], s: int, t: int) -> int:
    """Exact weight of the heaviest simple s-t path by dynamic programming over subsets of the other nodes.

    ``best[mask, v]``: the heaviest path that starts at ``s``, visits exactly the nodes of ``mask`` and ends at
    ``v``. Masks are filled by their number of nodes, all masks of one size at once (numpy); a path never continues
    from ``t``. Time and memory grow as ``2 ** (n - 1) * (n - 1)``.

    Args:
        adj: ``adj[u][v] = weight``, both directions; ``t`` reachable from ``s``.
        s: source node.
        t: target node, not ``s``.

    Returns:
        the weight.
    """
    import numpy as np

    others = sorted(v for v in adj if v != s)
    m, index = len(others), {v: i for i, v in enumerate(others)}
    dtype = np.int64 if sum(w for u in adj for w in adj[u].values()) >= 2**30 else np.int32
    none = np.iinfo(dtype).min // 2
    best = np.full((1 << m, m), none, dtype=dtype)
    for v, w in adj[s].items():
        best[1 << index[v], index[v]] = w
    masks = np.arange(1 << m, dtype=np.int64)
    size = np.zeros(1 << m, dtype=np.int64)
    for b in range(m):
        size += (masks >> b) & 1
    by_size = np.argsort(size, kind="stable")
    edges = np.searchsorted(size[by_size], np.arange(m + 2))
    into = []  # per node: the nodes a path may come from (not s, not t) and the edge weights
    for v in others:
        src = [(index[u], w) for u, w in adj[v].items() if u not in (s, t)]
        into.append((np.array([i for i, _ in src], dtype=np.int64), np.array([w for _, w in src], dtype=dtype)))
    for k in range(1, m):
        layer = by_size[edges[k] : edges[k + 1]]
        for j, (src, w) in enumerate(into):
            if len(src) == 0:
                continue
            free = layer[((layer >> j) & 1) == 0]
            reach = (best[free][:, src] + w).max(axis=1)
            ok = reach > none // 2
            best[free[ok] | (1 << j), j] = reach[ok]
    return int(best[:, index[t]].max())


def _longest_path_search(adj: dict[int, dict[int, int]], s: int, t: int, budget: int) -> tuple[int, bool]:
    """Depth-first search for the heaviest simple s-t path within ``budget`` steps; past it an upper bound."""
    best = -1
    steps = 0
    visited = {s}
    stack = [(s, 0, iter(adj[s].items()))]
    while stack:
        node, dist, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            visited.discard(node)
            continue
        v, w = nxt
        if v in visited:
            continue
        steps += 1
        if steps > budget:
            weights = sorted({(min(a, b), max(a, b)): w for a in adj for b, w in adj[a].items()}.values())
            log.warning("longest path from %d to %d: %d nodes, search budget spent; an upper bound", s, t, len(adj))
            return sum(weights[-(len(adj) - 1) :]), False
        if v == t:
            best = max(best, dist + w)
            continue
        visited.add(v)
        stack.append((v, dist + w, iter(adj[v].items())))
    return best, True


def _line_of(text: str, key: str) -> int:
    idx = text.find(f'"{key}"')
    return text.count("\n", 0, idx) + 1 if idx >= 0 else 1
