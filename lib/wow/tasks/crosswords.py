"""``knowledge_crosswords``: fill three blanks so that every relational constraint holds; 4 options, graded.

Generated (default): a small knowledge graph of made-up people, cities and organisations is stated in the prompt
as a closed list of facts (anything not listed is false), with five constraints over three blanks: two chain
constraints linking the blanks and one anchor constraint tying each blank to a named entity. Every blank has three
distractor candidates that share some of the gold entity's relations but never its anchor, so the all-gold filling
is the only one that satisfies every constraint (checked over all candidate fillings when a puzzle is made).

Loaded (``path=...``): Knowledge Crosswords jsonl rows (``blanks``, ``source``/``relation``/``target`` constraint
lists, ``options`` = the candidates of each blank, ``answer_all`` = the gold fillers, ``K`` = knowledge triples);
only 3-blank rows are kept, as in the paper, and the knowledge is left out unless ``with_knowledge=True``.

Options (both sources): four fillings with 0, 1, 2 and 3 gold fillers (the others are random non-gold candidates
of that blank), shuffled once. Label = share of blanks right (0, 1/3, 2/3, 1); correct = all three right.

Example::

    task = wow.tasks.get("knowledge_crosswords", noise_facts=6)
"""

from __future__ import annotations

import itertools
import logging
import random

from wow import WowError
from wow.tasks.base import Question
from wow.tasks.extract import COT_INSTRUCTION
from wow.tasks.multiple_choice import MultipleChoiceTask
from wow.tasks.sources import field, read_jsonl_rows, row_error, seeded_sample

log = logging.getLogger(__name__)

#: relation phrase -> (subject type, object type). No relation is symmetric, so a fact has one reading.
RELATIONS = {
    "mentored": ("person", "person"),
    "hired": ("person", "person"),
    "was born in": ("person", "city"),
    "lives in": ("person", "city"),
    "works for": ("person", "org"),
    "founded": ("person", "org"),
    "is based in": ("org", "city"),
    "has an office in": ("org", "city"),
    "lies north of": ("city", "city"),
    "exports grain to": ("city", "city"),
    "owns": ("org", "org"),
    "supplies": ("org", "org"),
}
_ONSETS = "b br c d dr f g gr h k l m n p r s st t tr v z".split()
_VOWELS = "a e i o u ae ia ou".split()
_CODAS = ["", "", "n", "r", "l", "s", "th", "m"]
_CITY_ENDS = ["ford", "mere", "holm", "dale", "port", "wick"]
_ORG_KINDS = ["Guild", "Institute", "Company", "Society", "Works", "Trust"]
_BLANKS = ("blank 1", "blank 2", "blank 3")
WHAT = "the Knowledge Crosswords jsonl (fields blanks, source, relation, target, options, answer_all)"


class KnowledgeCrosswords(MultipleChoiceTask):
    """Knowledge-crossword puzzles.

    Args:
        noise_facts: extra random facts among the puzzle's entities (more = harder to read off).
        candidates: candidates per blank, the gold one included (at least 2).
        path: a Knowledge Crosswords jsonl to load instead of generating.
        with_knowledge: loaded rows: state their knowledge triples ``K`` in the prompt.
    """

    name = "knowledge_crosswords"
    version = "1"

    def __init__(
        self, noise_facts: int = 6, candidates: int = 4, path: str | None = None, with_knowledge: bool = False
    ):
        if noise_facts < 0 or candidates < 2:
            raise WowError("knowledge_crosswords: noise_facts must be >= 0 and candidates >= 2")
        self.noise_facts, self.candidates = noise_facts, candidates
        self.path, self.with_knowledge = path, with_knowledge

    def build(self, n: int, seed: int) -> list[Question]:
        """Generate ``n`` puzzles (puzzle ``i`` depends only on ``seed`` and ``i``) or load a sample from ``path``.

        Args:
            n: number of questions.
            seed: the seed.

        Returns:
            the questions, split unset.
        """
        if self.path is not None:
            return seeded_sample(self.load(self.path, seed), n, seed, self.path)
        return [
            self.generate(random.Random(f"{self.name}/{seed}/{i}"), f"{self.name}/gen{seed}-{i}") for i in range(n)
        ]

    # -- generated puzzles ----------------------------------------------------------------------------------
    def generate(self, rng: random.Random, qid: str) -> Question:
        """One generated puzzle (see the module docs)."""
        names = _Names(rng)
        rel_from = {t: [r for r, (s, _) in RELATIONS.items() if s == t] for t in ("person", "city", "org")}
        r12 = rng.choice([r for rels in rel_from.values() for r in rels])
        t1, t2 = RELATIONS[r12]
        r23 = rng.choice(rel_from[t2])
        t3 = RELATIONS[r23][1]
        types = (t1, t2, t3)
        gold = [names.new(t) for t in types]
        cands = [[names.new(t) for _ in range(self.candidates - 1)] for t in types]
        anchors = []
        for t in types:
            r = rng.choice(rel_from[t])
            anchors.append((r, names.new(RELATIONS[r][1])))
        constraints = [("blank 1", r12, "blank 2"), ("blank 2", r23, "blank 3")]
        constraints += [(_BLANKS[i], r, a) for i, (r, a) in enumerate(anchors)]
        facts = {(gold[0], r12, gold[1]), (gold[1], r23, gold[2])} | {
            (g, r, a) for g, (r, a) in zip(gold, anchors, strict=True)
        }
        forbidden = {(d, anchors[i][0], anchors[i][1]) for i in range(3) for d in cands[i]}
        for i, ds in enumerate(cands):
            for d in ds:
                r, a = anchors[i]
                facts.add((d, r, names.new(RELATIONS[r][1])))  # same relation, another object
                if rng.random() < 0.5:  # satisfies a chain constraint, so only the anchor rules it out
                    facts.add({0: (d, r12, gold[1]), 1: (d, r23, gold[2]), 2: (gold[1], r23, d)}[i])
        entities = sorted({e for f in facts for e in (f[0], f[2])})
        by_type = {t: [e for e in entities if names.type_of[e] == t] for t in ("person", "city", "org")}
        usable = [r for r, (st, ot) in RELATIONS.items() if by_type[st] and by_type[ot]]
        for _ in range(self.noise_facts):
            r = rng.choice(usable)
            s, o = rng.choice(by_type[RELATIONS[r][0]]), rng.choice(by_type[RELATIONS[r][1]])
            if s != o and (s, r, o) not in forbidden:
                facts.add((s, r, o))
        _check_unique(facts, constraints, gold, cands)
        fact_list = sorted(facts)
        rng.shuffle(fact_list)
        body = (
            "The facts below are everything that is true about some made-up people, cities and organisations: a "
            "relation that is not listed does not hold.\nFacts:\n"
            + "".join(f"({s}, {r}, {o})\n" for s, r, o in fact_list)
            + "Fill in blank 1, blank 2 and blank 3 so that every constraint below holds.\nConstraints:\n"
            + "".join(f"({s}, {r}, {o})\n" for s, r, o in constraints)
        )
        return _question(
            qid,
            COT_INSTRUCTION + body,
            gold,
            cands,
            rng,
            {"source": "generated", "facts": [list(f) for f in fact_list]},
        )

    # -- loaded puzzles -------------------------------------------------------------------------------------
    def load(self, path: str, seed: int) -> list[Question]:
        """All 3-blank puzzles of a Knowledge Crosswords jsonl file, in file order.

        Args:
            path: the file.
            seed: seeds the synthesis of each row's four options.

        Returns:
            the questions.
        """
        out, other = [], 0
        for row in read_jsonl_rows(path, WHAT):
            blanks = field(row, "blanks", list)
            if len(blanks) != 3:
                other += 1
                continue
            src, rel, tgt = (field(row, k, list) for k in ("source", "relation", "target"))
            if not len(src) == len(rel) == len(tgt) > 0:
                raise row_error(row, "source, relation and target must be non-empty lists of equal length")
            gold = [str(g) for g in field(row, "answer_all", list)]
            if len(gold) != 3:
                raise row_error(row, f"answer_all must hold 3 gold fillers, got {len(gold)}")
            options = field(row, "options", (dict, list))
            keys = list(options) if isinstance(options, dict) else list(range(len(options)))
            if len(keys) != 3:
                raise row_error(row, f"options must give the candidates of 3 blanks, got {len(keys)}")
            cands = [[str(c) for c in options[k] if str(c) != gold[i]] for i, k in enumerate(keys)]
            if any(not c for c in cands):
                raise row_error(row, "every blank needs at least one non-gold candidate")
            body = "Pick the answer for each blank that satisfies all the given constraints.\n"
            if self.with_knowledge:
                triples = [t for ts in field(row, "K", dict).values() for t in ts]
                body += "Knowledge:\n" + "".join(f"({', '.join(map(str, t))})\n" for t in triples)
            body += "Constraints:\n" + "".join(f"({s}, {r}, {t})\n" for s, r, t in zip(src, rel, tgt, strict=True))
            rng = random.Random(f"{self.name}/{seed}/line{row.index + 1}")
            out.append(
                _question(
                    f"{self.name}/kc-line{row.index + 1}",
                    COT_INSTRUCTION + body,
                    gold,
                    cands,
                    rng,
                    {"source": str(path)},
                )
            )
        if other:
            log.info(
                "%s: kept %d puzzles with 3 blanks, left out %d with another number of blanks", path, len(out), other
            )
        return out


def _question(
    qid: str, prompt: str, gold: list[str], cands: list[list[str]], rng: random.Random, meta: dict
) -> Question:
    fillings = []
    for c in range(4):
        right = set(rng.sample(range(3), c))
        fillings.append(([gold[i] if i in right else rng.choice(cands[i]) for i in range(3)], c / 3))
    rng.shuffle(fillings)
    options = [", ".join(f"{b}: {x}" for b, x in zip(_BLANKS, f, strict=True)) for f, _ in fillings]
    labels = [lab for _, lab in fillings]
    return Question(
        id=qid,
        task="knowledge_crosswords",
        split="",
        prompt=prompt,
        gold=labels.index(1.0),
        options=options,
        option_labels=labels,
        meta={**meta, "gold_fillers": gold},
    )


def _check_unique(facts: set, constraints: list, gold: list[str], cands: list[list[str]]) -> None:
    """Assert that the gold filling is the only candidate filling that satisfies every constraint."""
    solutions = []
    for filling in itertools.product(*[[g, *c] for g, c in zip(gold, cands, strict=True)]):
        sub = dict(zip(_BLANKS, filling, strict=True))
        if all((sub.get(s, s), r, sub.get(o, o)) in facts for s, r, o in constraints):
            solutions.append(list(filling))
    if solutions != [gold]:
        raise AssertionError(f"puzzle is not uniquely solvable: {solutions}")


class _Names:
    """Unique made-up names per entity type."""

    def __init__(self, rng: random.Random):
        self.rng, self.type_of = rng, {}

    def _word(self, syllables: int) -> str:
        w = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables))
        return (w + self.rng.choice(_CODAS)).capitalize()

    def new(self, kind: str) -> str:
        while True:
            if kind == "person":
                name = f"{self._word(2)} {self._word(2)}"
            elif kind == "city":
                name = self._word(1) + self.rng.choice(_CITY_ENDS)
            else:
                name = f"{self._word(2)} {self.rng.choice(_ORG_KINDS)}"
            if name not in self.type_of:
                self.type_of[name] = kind
                return name
