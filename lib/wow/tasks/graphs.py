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
from wow.tasks.extract import BRIEF_INSTRUCTION, COT_INSTRUCTION, NUMBER, integral, last_match, to_number
from wow.tasks.sources import Row, field, read_jsonl_rows, require_file, row_error, seeded_sample

log = logging.getLogger(__name__)


class GraphTask(Task):
    """Base of the integer-answer graph tasks. Subclasses implement ``generate`` and ``from_nlgraph``.

    Class attributes:
        direct_patterns: regexes (group 1 = the number) for the direct parse of a reasoning answer.
        nlgraph_file: the NLGraph file name, for messages.
    """

    direct_patterns: list[str] = []
    nlgraph_file: str = ""

    def __init__(self, path: str | None = None, reasoning: str = "step_by_step"):
        if reasoning not in REASONING:
            raise WowError(f"reasoning must be one of {sorted(REASONING)}, got {reasoning!r}")
        self.path = path
        self.reasoning = reasoning

    def prompt(self, body: str) -> str:
        """The question's prompt: the instruction of ``reasoning`` (:data:`REASONING`), then the question."""
        return REASONING[self.reasoning] + body.strip() + "\n"

    def build(self, n: int, seed: int) -> list[Question]:
        """Generate ``n`` questions (question ``i`` depends only on ``seed`` and ``i``) or load them from ``path``.

        Args:
            n: number of questions.
            seed: the seed.

        Returns:
            the questions, split unset.
        """
        if self.path is not None:
            return seeded_sample(self.load_nlgraph(self.path), n, seed, self.path)
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


def nlgraph_edges(row: Row, edge_re: str, what: str = "edges") -> list[tuple[int, ...]]:
    """The edges of an NLGraph record's question, one tuple of ints per match of ``edge_re``; a WowError naming the
    row when there is none."""
    edges = [tuple(int(x) for x in m) for m in re.findall(edge_re, row.data["question"])]
    if not edges:
        raise row_error(row, f"no {what} found (expected lines like {edge_re!r})")
    return edges


def nlgraph_ends(row: Row, what: str) -> tuple[int, int]:
    """The end nodes S, T of an NLGraph question that asks for the ``what`` ("path", "flow") from node S to node T."""
    m = re.search(rf"{what} from node (\d+) to node (\d+)", row.data["question"])
    if not m:
        raise row_error(row, f"cannot find '{what} from node S to node T' in the question")
    return int(m.group(1)), int(m.group(2))


def keep_stated_gold(row: Row, question: Question, gold: int, what: str) -> Question:
    """``question``, whose gold is the record's stated answer; a warning names the record when the graph's own answer
    (``meta["oracle"]``) differs from it (NLGraph's stated answers are kept, as in the paper)."""
    if question.meta["oracle"] != gold:
        log.warning(
            "%s: the stated %s %d differs from the graph's own %d; keeping the stated one",
            row.where,
            what,
            gold,
            question.meta["oracle"],
        )
    return question


def strip_answer_cue(question: str) -> str:
    """An NLGraph question without its trailing ``A:`` cue."""
    return re.sub(r"\s*A:\s*$", "", question)


#: The graph tasks' instructions by the task option ``reasoning``: ``step_by_step`` (the default, our wording of the
#: paper's chain-of-thought prefix) or ``brief`` (one sentence; for small models under a short token budget).
REASONING = {"step_by_step": COT_INSTRUCTION, "brief": BRIEF_INSTRUCTION}


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


def _line_of(text: str, key: str) -> int:
    idx = text.find(f'"{key}"')
    return text.count("\n", 0, idx) + 1 if idx >= 0 else 1
