"""FActScore-style scoring of biographies against a passage database the user supplies.

The score of a text about ``topic``, after FActScore's "retrieval + LLM" variant (Min et al. 2023):

1. split the text into sentences and ask an LLM to break each sentence into atomic facts ("- fact" lines; a
   sentence the LLM returns no facts for counts as one fact);
2. for each fact, rank the topic's passages by BM25 against ``topic + " " + fact`` and keep the best ``k``;
3. ask the LLM whether the fact is true given those passages; the reply counts as supported when it says "true"
   and not "false" (the later word wins when it says both; with neither, supported unless it says "not",
   "cannot", "unknown" or "information");
4. score = supported share x length penalty, the penalty ``exp(1 - gamma / n_facts)`` below ``gamma`` facts.

A text with no facts at all scores None (the caller grades it as unparsed), so scores always line up with texts.
The LLM steps go through a :class:`wow.backends.base.Engine` (greedy, cached like every other call).

This is not the paper's pipeline (its trimmed copy of FActScore, ``factscore/`` in the paper's repository;
docs/fidelity.md): the paper ranks passages with GTR (``sentence-transformers/gtr-t5-large``,
``Retrieval.get_gtr_passages``), not BM25; its decomposition prompt shows FActScore's own demonstrations (seven fixed
and one chosen by BM25 per sentence, ``AtomicFactGenerator``), ours two fixed demonstrations of our own; and it
post-processes the facts (``postprocess_atomic_facts``: merging one-word sentences, dropping facts covered by others,
an entity check with spaCy), which we do not. Scores are comparable in kind, not equal.

The passage database is FActScore's format: an SQLite file with a table ``documents(title PRIMARY KEY, text)``
whose ``text`` holds the article's passages joined by :data:`SEPARATOR` (FActScore's ``enwiki-20230401.db`` works
as is); :func:`build_passage_db` makes one from a JSONL of ``{"title", "text"}`` records.

Example::

    scorer = FactScorer(engine, "enwiki-20230401.db")
    [result] = scorer.score(["Ada Lovelace"], ["Ada Lovelace was an English mathematician. ..."])
    result.score, result.facts, result.supported
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from wow import WowError
from wow.backends.base import ChatRequest, Engine

log = logging.getLogger(__name__)

SEPARATOR = "####SPECIAL####SEPARATOR####"
VERSION = "1"
_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "st",
    "jr",
    "sr",
    "mt",
    "no",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "u.s",
    "inc",
    "ltd",
    "co",
}

ATOMIC_PROMPT = """Break the sentence into short, independent facts: one fact per line, each line starting with "- ".

Sentence: Marta Lindqvist is a Swedish chemist who won the Ekberg Prize in 2011.
Facts:
- Marta Lindqvist is Swedish.
- Marta Lindqvist is a chemist.
- Marta Lindqvist won the Ekberg Prize.
- Marta Lindqvist won the Ekberg Prize in 2011.

Sentence: He grew up in Porto and later studied law in Lisbon.
Facts:
- He grew up in Porto.
- He studied law.
- He studied in Lisbon.

Sentence: {sentence}
Facts:
"""
VERIFY_PROMPT = """Answer the question about {topic} based on the passages below.

{passages}Input: {fact} True or False?
Output:"""


@dataclass
class BioScore:
    """The FActScore of one text.

    Attributes:
        score: supported share x length penalty, in [0, 1]; None when the text has no facts.
        facts: the atomic facts.
        supported: one verdict per fact.
    """

    score: float | None
    facts: list[str] = field(default_factory=list)
    supported: list[bool] = field(default_factory=list)


def build_passage_db(jsonl_path: str | Path, db_path: str | Path, words_per_passage: int = 200) -> Path:
    """Make a FActScore-format passage database from ``{"title": ..., "text": str or [str, ...]}`` records.

    Args:
        jsonl_path: the records (one article per line; a repeated title keeps its first article).
        db_path: the SQLite file to write (must not exist yet).
        words_per_passage: passages hold at most this many words.

    Returns:
        the database path.
    """
    from wow.tasks.sources import field as get_field
    from wow.tasks.sources import read_jsonl_rows

    db_path = Path(db_path)
    if db_path.exists():
        raise WowError(f"{db_path} already exists; remove it or write somewhere else")
    docs = {}
    for row in read_jsonl_rows(jsonl_path, "a JSONL of {title, text} articles"):
        title, text = get_field(row, "title", str), get_field(row, "text", (str, list))
        words = " ".join(text if isinstance(text, list) else [text]).split()
        if title not in docs and words:
            chunks = [" ".join(words[i : i + words_per_passage]) for i in range(0, len(words), words_per_passage)]
            docs[title] = SEPARATOR.join(chunks)
    con = sqlite3.connect(db_path)
    try:
        con.execute("CREATE TABLE documents (title PRIMARY KEY, text)")
        con.executemany("INSERT INTO documents VALUES (?, ?)", sorted(docs.items()))
        con.commit()
    finally:
        con.close()
    return db_path


class PassageDB:
    """Read access to a FActScore-format passage database.

    Args:
        path: the SQLite file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise WowError(
                f"passage database {self.path} not found: give the FActScore SQLite file "
                "(e.g. enwiki-20230401.db) or build one with wow.tasks.factscore.build_passage_db"
            )
        self.con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._cache: dict[str, list[str]] = {}

    def has(self, title: str) -> bool:
        """Whether the database holds an article with this exact title."""
        return self.con.execute("SELECT 1 FROM documents WHERE title = ?", (title,)).fetchone() is not None

    def passages(self, title: str) -> list[str]:
        """The passages of an article.

        Args:
            title: the exact title.

        Returns:
            the passages, in article order.

        Raises:
            WowError: no article with that title.
        """
        if title not in self._cache:
            row = self.con.execute("SELECT text FROM documents WHERE title = ?", (title,)).fetchone()
            if row is None:
                raise WowError(
                    f"{self.path} has no article titled {title!r}; the topic must be an exact title in the database"
                )
            self._cache[title] = [p for p in row[0].split(SEPARATOR) if p.strip()]
        return self._cache[title]


def split_sentences(text: str) -> list[str]:
    """Split a text into sentences: on newlines, then after ``.!?`` unless the word before is an initial or a
    common abbreviation ("J. K. Rowling", "Dr. Smith", "U.S.").

    Args:
        text: the text.

    Returns:
        the non-empty sentences.
    """
    out = []
    for para in text.splitlines():
        parts = re.split(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])", para.strip())
        buf = ""
        for part in parts:
            buf = f"{buf} {part}".strip() if buf else part
            last = re.sub(r"[.!?]+$", "", buf.split()[-1] if buf.split() else "").lower()
            if len(last) == 1 and last.isalpha() or last in _ABBREVIATIONS:
                continue
            out.append(buf)
            buf = ""
        if buf:
            out.append(buf)
    return [s for s in out if s.strip()]


def bm25_top(query: str, passages: list[str], k: int, k1: float = 1.5, b: float = 0.75) -> list[int]:
    """Indices of the ``k`` passages that best match ``query`` under Okapi BM25 (ties: earlier passage first).

    Args:
        query: the query.
        passages: the passages.
        k: how many.
        k1: term-frequency saturation.
        b: length normalisation.

    Returns:
        passage indices, best first.
    """
    docs = [re.findall(r"\w+", p.lower()) for p in passages]
    if not docs:
        return []
    avg = sum(map(len, docs)) / len(docs) or 1.0
    df = Counter(t for d in docs for t in set(d))
    terms = re.findall(r"\w+", query.lower())
    scores = []
    for i, d in enumerate(docs):
        tf = Counter(d)
        s = 0.0
        for t in terms:
            if tf[t]:
                idf = math.log((len(docs) - df[t] + 0.5) / (df[t] + 0.5) + 1.0)
                s += idf * tf[t] * (k1 + 1) / (tf[t] + k1 * (1 - b + b * len(d) / avg))
        scores.append((-s, i))
    return [i for _, i in sorted(scores)[:k]]


def parse_facts(reply: str) -> list[str]:
    """The facts in an atomic-fact reply: lines starting with ``-``, ``*`` or ``•``."""
    return [m.strip() for m in re.findall(r"(?m)^\s*(?:-|\*|\u2022)\s+(.+?)\s*$", reply or "") if m.strip()]


def is_supported(reply: str) -> bool:
    """Read a True/False verdict (FActScore's rule, see the module docs)."""
    text = (reply or "").lower()
    t, f = text.rfind("true"), text.rfind("false")
    if t >= 0 or f >= 0:
        return t > f
    return not any(w in text for w in ("not", "cannot", "unknown", "information"))


def length_penalty(n_facts: int, gamma: int) -> float:
    """FActScore's length penalty: 1 from ``gamma`` facts up, ``exp(1 - gamma / n)`` below."""
    return 1.0 if n_facts >= gamma or gamma <= 0 else math.exp(1.0 - gamma / n_facts)


class FactScorer:
    """FActScore with an LLM engine and a passage database.

    Args:
        engine: the engine for the atomic-fact and verification prompts (greedy).
        db: a :class:`PassageDB` or the path of one.
        k: passages per verification prompt.
        gamma: the length-penalty constant (0 turns it off).
        max_tokens: most tokens of an atomic-fact reply.
    """

    def __init__(self, engine: Engine, db: PassageDB | str | Path, k: int = 5, gamma: int = 10, max_tokens: int = 256):
        self.engine = engine
        self.db = db if isinstance(db, PassageDB) else PassageDB(db)
        self.k, self.gamma, self.max_tokens = k, gamma, max_tokens

    def atomic_facts(self, texts: list[str]) -> list[list[str]]:
        """The atomic facts of each text (one batched engine call over all sentences).

        Args:
            texts: the texts.

        Returns:
            per text, its facts (a sentence with no facts returned counts as one fact).
        """
        sentences = [split_sentences(t or "") for t in texts]
        flat = [s for ss in sentences for s in ss]
        replies = self.engine.generate(
            [self._request(ATOMIC_PROMPT.format(sentence=s), self.max_tokens) for s in flat]
        )
        it = iter(replies)
        out = []
        for ss in sentences:
            facts = []
            for s in ss:
                found = parse_facts(next(it).text)
                facts += [f for f in (found or [s]) if f not in facts]
            out.append(facts)
        return out

    def verify(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """Whether each ``(topic, fact)`` is supported by the topic's best passages (one batched engine call).

        Args:
            pairs: ``(topic, fact)`` pairs.

        Returns:
            one verdict per pair.
        """
        requests = []
        for topic, fact in pairs:
            passages = self.db.passages(topic)
            best = [passages[i] for i in bm25_top(f"{topic} {fact}", passages, self.k)]
            context = "".join(f"Title: {topic}\nText: {p}\n\n" for p in reversed(best))
            requests.append(self._request(VERIFY_PROMPT.format(topic=topic, passages=context, fact=fact), 16))
        return [is_supported(c.text) for c in self.engine.generate(requests)]

    def score(self, topics: list[str], texts: list[str]) -> list[BioScore]:
        """FActScore of each text about its topic.

        Args:
            topics: per text, the exact title of its article in the database.
            texts: the texts.

        Returns:
            one :class:`BioScore` per text, in order.
        """
        if len(topics) != len(texts):
            raise WowError(f"FactScorer.score: {len(topics)} topics for {len(texts)} texts")
        for t in set(topics):
            self.db.passages(t)  # fail before any model call when a topic is missing
        facts = self.atomic_facts(texts)
        verdicts = iter(self.verify([(t, f) for t, fs in zip(topics, facts, strict=True) for f in fs]))
        out = []
        for fs in facts:
            sup = [next(verdicts) for _ in fs]
            score = sum(sup) / len(fs) * length_penalty(len(fs), self.gamma) if fs else None
            out.append(BioScore(None if score is None else round(score, 6), fs, sup))
        return out

    def _request(self, content: str, max_tokens: int) -> ChatRequest:
        return ChatRequest(
            messages=[{"role": "user", "content": content}],
            max_tokens=max_tokens,
            temperature=0.0,
            logprobs=False,
            template_version=f"factscore-{VERSION}",
        )
