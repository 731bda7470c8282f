"""``chess``: choose the best of four candidate moves; labels = Stockfish win probability of each move.

Positions are generated (default: seeded random legal play from the initial position) or taken from lichess
puzzles (``path=`` a hub id such as :data:`LICHESS_HUB_ID`, or ``data_files=`` a local csv/jsonl/parquet with the
lichess columns ``PuzzleId``, ``FEN``, ``Moves``, ``Rating``): the opponent's first move is applied to ``FEN`` and
the position after it is the question, kept when ``min_rating < Rating < max_rating`` and the solution has more
than two moves, as in the paper (which read ``lczerolens/lichess-puzzles``, same columns).

The four options are the heads of Stockfish's top four principal variations (``multipv=4``), shown in UCI notation
(``move_format="uci"``, the default; the prompt asks for UCI too) or in SAN (``move_format="san"``, as the paper's
data, whose prompt asked for UCI while showing SAN; here the prompt names the notation it shows). Each option's label is the win probability for the side to move: mate for it -> 1,
mate against it -> 0, otherwise ``1 / (1 + 10 ** (-cp / 400))``. The analysis is depth-limited (``depth``, default)
with one thread, a fixed hash size and a cleared hash per position, so labels are deterministic; ``engine_time``
(seconds per position; the paper: 2.0) limits it by time instead, as the paper did, and labels then depend on the
machine's speed. Positions with fewer than four legal
moves are skipped (counted in the log), as are generated positions whose four labels lie within ``min_spread``.

Grading: ``raw_label`` = win probability of the chosen move; ``correctness = 1 - (best - chosen)`` (the win
probability given away, so the best move scores 1); correct = the chosen move has the best label (ties count).

Stockfish: ``$WOW_STOCKFISH``, else ``/usr/games/stockfish`` (Debian package ``stockfish``), else ``stockfish`` on
PATH.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil

import chess
import chess.engine

from wow import WowError
from wow.tasks.base import UNPARSED, Grade, Question
from wow.tasks.extract import COT_INSTRUCTION
from wow.tasks.multiple_choice import MultipleChoiceTask
from wow.tasks.sources import Row, field, load_rows, row_error, take_valid

log = logging.getLogger(__name__)

LICHESS_HUB_ID = "Lichess/chess-puzzles"
DEBIAN_STOCKFISH = "/usr/games/stockfish"


def stockfish_path(explicit: str | None = None) -> str:
    """The Stockfish binary: ``explicit``, ``$WOW_STOCKFISH``, ``/usr/games/stockfish`` or ``stockfish`` on PATH.

    Args:
        explicit: a path given by the caller.

    Returns:
        the path.

    Raises:
        WowError: none found (says how to install it).
    """
    for cand in (explicit, os.environ.get("WOW_STOCKFISH"), DEBIAN_STOCKFISH, shutil.which("stockfish")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise WowError(
        "Stockfish not found: install it (apt-get install stockfish, or conda install stockfish) "
        "or set WOW_STOCKFISH to the binary"
    )


def win_probability(score: chess.engine.Score) -> float:
    """Win probability of a score from the point of view it is given in.

    Args:
        score: a python-chess score (``PovScore.pov(color)``).

    Returns:
        1.0 for a mate for that side, 0.0 for a mate against it, else ``1 / (1 + 10 ** (-cp / 400))``.
    """
    mate = score.mate()
    if mate is not None:
        return 1.0 if mate > 0 else 0.0
    return 1.0 / (1.0 + 10.0 ** (-score.score() / 400.0))


def analyse(
    engine: chess.engine.SimpleEngine, board: chess.Board, depth: int, engine_time: float | None = None
) -> list[tuple[str, float, str]]:
    """Stockfish's top four moves, from a cleared hash, at a fixed depth (or for a fixed time).

    Args:
        engine: an open engine (one thread, fixed hash).
        board: the position.
        depth: search depth (ignored when ``engine_time`` is given).
        engine_time: seconds of search per position instead of a depth (not deterministic).

    Returns:
        ``(uci, win probability, score)`` per principal variation, best first (fewer than four when the engine
        returns fewer).
    """
    limit = chess.engine.Limit(time=engine_time) if engine_time else chess.engine.Limit(depth=depth)
    infos = engine.analyse(board, limit, multipv=4, game=object())
    out = []
    for info in infos:
        if not info.get("pv"):
            continue
        score = info["score"].pov(board.turn)
        out.append((info["pv"][0].uci(), round(win_probability(score), 6), str(score)))
    return out


class ChessMoves(MultipleChoiceTask):
    """Best-move choice among Stockfish's top four moves.

    Args:
        plies: generated positions: random legal plies from the start, an int or a ``(lo, hi)`` range.
        depth: Stockfish search depth (used unless ``engine_time`` is given).
        engine_time: Stockfish seconds per position instead of a depth (the paper: 2.0; labels then vary by machine).
        move_format: ``uci`` (e2e4) or ``san`` (e4, Nxf7+; the paper's option notation) for the options shown.
        min_spread: generated positions: least difference between the best and the worst option's label.
        hash_mb: Stockfish hash size (MB).
        stockfish: path of the Stockfish binary (default: see :func:`stockfish_path`).
        path: lichess puzzles: hub id (e.g. :data:`LICHESS_HUB_ID`) or local file; None generates positions.
        data_files: lichess puzzles: a local file of the same schema.
        split: lichess puzzles: the split.
        min_rating: lichess puzzles: keep ratings above this.
        max_rating: lichess puzzles: keep ratings below this.
        max_rows: lichess puzzles: read at most this many rows (the paper: the first 100,000).
    """

    name = "chess"
    version = "1"

    def __init__(
        self,
        plies: int | tuple[int, int] = (8, 40),
        depth: int = 10,
        min_spread: float = 0.02,
        hash_mb: int = 16,
        stockfish: str | None = None,
        path: str | None = None,
        data_files=None,
        split: str = "train",
        min_rating: int = 600,
        max_rating: int = 1000,
        max_rows: int | None = 100_000,
        engine_time: float | None = None,
        move_format: str = "uci",
    ):
        self.plies = (plies, plies) if isinstance(plies, int) else tuple(plies)
        if not 1 <= self.plies[0] <= self.plies[1]:
            raise WowError(f"chess: plies must be >= 1 or a range (lo, hi) with 1 <= lo <= hi, got {plies!r}")
        if move_format not in ("uci", "san"):
            raise WowError(f"chess: move_format must be 'uci' or 'san', got {move_format!r}")
        if engine_time is not None and not engine_time > 0:
            raise WowError(f"chess: engine_time must be a positive number of seconds, got {engine_time!r}")
        self.depth, self.min_spread, self.hash_mb, self.stockfish = depth, min_spread, hash_mb, stockfish
        self.engine_time, self.move_format = engine_time, move_format
        self.path, self.data_files, self.split = path, data_files, split
        self.min_rating, self.max_rating, self.max_rows = min_rating, max_rating, max_rows

    def build(self, n: int, seed: int) -> list[Question]:
        """Generate ``n`` positions (position ``i`` depends only on ``seed`` and ``i``) or sample lichess puzzles.

        Args:
            n: number of questions.
            seed: the seed.

        Returns:
            the questions, split unset.
        """
        engine = chess.engine.SimpleEngine.popen_uci(stockfish_path(self.stockfish))
        try:
            engine.configure({"Threads": 1, "Hash": self.hash_mb})
            if self.path is not None or self.data_files is not None:
                return self._puzzles(engine, n, seed)
            return [
                self._generate(engine, random.Random(f"{self.name}/{seed}/{i}"), f"{self.name}/gen{seed}-{i}")
                for i in range(n)
            ]
        finally:
            engine.quit()

    def _generate(self, engine, rng: random.Random, qid: str) -> Question:
        for _ in range(100):
            board = chess.Board()
            for _ in range(rng.randint(*self.plies)):
                if board.is_game_over():
                    break
                board.push(rng.choice(sorted(board.legal_moves, key=chess.Move.uci)))
            if board.is_game_over() or board.legal_moves.count() < 4:
                continue
            moves = analyse(engine, board, self.depth, self.engine_time)
            if len(moves) == 4 and moves[0][1] - min(m[1] for m in moves) >= self.min_spread:
                return self._question(qid, board, moves, rng, {"source": "generated", "plies": board.ply()})
        raise WowError(f"chess: no usable position in 100 tries for {qid}; lower min_spread or change plies")

    def _puzzles(self, engine, n: int, seed: int) -> list[Question]:
        rows = load_rows(None if self.data_files else self.path, self.split, self.data_files, limit=self.max_rows)
        pool = []
        for row in rows:
            rating = field(row, "Rating", int)
            moves = str(field(row, "Moves", str)).split()
            if self.min_rating < rating < self.max_rating and len(moves) > 2:
                pool.append(row)

        def make(row: Row) -> Question | None:
            try:
                board = chess.Board(field(row, "FEN", str))
                board.push_uci(row.data["Moves"].split()[0])
            except ValueError as e:
                raise row_error(row, f"bad FEN or first move ({e})") from None
            if board.is_game_over() or board.legal_moves.count() < 4:
                return None
            moves = analyse(engine, board, self.depth, self.engine_time)
            if len(moves) < 4:
                return None
            meta = {
                "source": str(self.data_files or self.path),
                "rating": row.data["Rating"],
                "solution": row.data["Moves"].split()[1],
            }
            qid = f"{self.name}/lichess-{row.data.get('PuzzleId', row.index)}"
            return self._question(qid, board, moves, random.Random(f"{self.name}/{seed}/{qid}"), meta)

        return take_valid(pool, n, seed, make)

    def _question(self, qid: str, board: chess.Board, moves: list, rng: random.Random, meta: dict) -> Question:
        moves = list(moves)
        rng.shuffle(moves)
        labels = [m[1] for m in moves]
        side = "White" if board.turn == chess.WHITE else "Black"
        notation = (
            "Moves are written in UCI notation: the square a piece leaves, then the square it lands on (e2e4), plus "
            "the piece a pawn promotes to (e7e8q)."
            if self.move_format == "uci"
            else "Moves are written in standard algebraic notation (SAN), e.g. e4, Nf3, exd5, O-O, e8=Q."
        )
        text = COT_INSTRUCTION + (
            "You are a strong chess player. Pick the best move for the side to move in the position below, weighing "
            f"immediate gains against long-term prospects. {notation}\n"
            f"FEN: {board.fen()}\nSide to move: {side}\n"
        )
        shown = [m[0] if self.move_format == "uci" else board.san(chess.Move.from_uci(m[0])) for m in moves]
        return Question(
            id=qid,
            task=self.name,
            split="",
            prompt=text,
            gold=labels.index(max(labels)),
            options=shown,
            option_labels=labels,
            meta={
                **meta,
                "fen": board.fen(),
                "scores": [m[2] for m in moves],
                "uci": [m[0] for m in moves],
                "depth": self.depth,
                "engine_time": self.engine_time,
                "move_format": self.move_format,
            },
        )

    def parse(self, text: str, question: Question, permutation: list[int] | None = None) -> int | None:
        """The option letter in an extraction reply; failing that, the last option move written in UCI."""
        letter = super().parse(text, question, permutation)
        return letter if letter is not None else _last_move(text, question)

    def parse_direct(self, answer: str, question: Question, permutation: list[int] | None = None) -> int | None:
        """The last explicit option letter in a reasoning answer; failing that, the last option move in UCI."""
        letter = super().parse_direct(answer, question, permutation)
        return letter if letter is not None else _last_move(answer, question)

    def grade(self, question: Question, extracted: int | None) -> Grade:
        """Grade an original option index: win probability kept (see module docs)."""
        labels = question.option_labels
        if extracted is None or not 0 <= extracted < len(labels):
            return UNPARSED
        best, label = max(labels), labels[extracted]
        return Grade(
            correctness=min(1.0, max(0.0, 1.0 - (best - label))), raw_label=float(label), is_correct=label >= best
        )


#: a move in UCI (e2e4, e7e8q) or SAN (e4, Nxf7+, exd8=Q#, O-O-O).
_MOVE = re.compile(
    r"(?<![\w-])(?:[a-h][1-8][a-h][1-8][qrbn]?|O-O-O|O-O|[KQRBN]?[a-h]?[1-8]?x?[a-h][1-8](?:=[QRBN])?)[+#]?(?![\w-])"
)


def _last_move(text: str, question: Question) -> int | None:
    """The last option move written in the text (UCI or SAN, as the options are shown; check marks optional)."""
    bare = [o.rstrip("+#") for o in question.options]
    hits = [
        (m.start(), bare.index(m.group(0).rstrip("+#")))
        for m in _MOVE.finditer(text or "")
        if m.group(0).rstrip("+#") in bare
    ]
    return hits[-1][1] if hits else None
