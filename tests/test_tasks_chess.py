"""Chess: Stockfish labels against a direct UCI conversation with the engine, grading, the lichess loader."""

import subprocess
from pathlib import Path

import chess
import chess.engine
import pytest
import wow.tasks
from wow import WowError
from wow.tasks.base import UNPARSED, Question
from wow.tasks.chess_moves import stockfish_path, win_probability

F = Path(__file__).parent / "fixtures" / "tasks"
DEPTH = 8


def _direct_top4(fen: str, depth: int) -> dict[str, str]:
    """Ask Stockfish directly over UCI: the final score of each of the top-4 lines, keyed by first move."""
    script = (
        "uci\nsetoption name Threads value 1\nsetoption name Hash value 16\nsetoption name MultiPV value 4\n"
        f"ucinewgame\nisready\nposition fen {fen}\ngo depth {depth}\n"
    )
    proc = subprocess.Popen([stockfish_path()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    proc.stdin.write(script)
    proc.stdin.flush()
    final = {}
    for line in proc.stdout:
        parts = line.split()
        if parts and parts[0] == "bestmove":
            break
        if "multipv" in parts and "pv" in parts and f"depth {depth} " in line and "bound" not in line:
            i = parts.index("score")
            final[int(parts[parts.index("multipv") + 1])] = (
                parts[parts.index("pv") + 1],
                parts[i + 1],
                int(parts[i + 2]),
            )
    proc.stdin.write("quit\n")
    proc.stdin.flush()
    proc.wait(timeout=10)
    out = {}
    for move, kind, value in final.values():
        out[move] = (1.0 if value > 0 else 0.0) if kind == "mate" else 1 / (1 + 10 ** (-value / 400))
    return out


@pytest.fixture(scope="module")
def generated():
    return wow.tasks.get("chess", depth=DEPTH).questions(3, seed=0)


def test_labels_match_a_direct_stockfish_call(generated):
    for q in generated:
        direct = _direct_top4(q.meta["fen"], DEPTH)
        assert sorted(direct) == sorted(q.options)
        for move, label in zip(q.options, q.option_labels, strict=True):
            assert label == pytest.approx(direct[move], abs=1e-6)
        assert q.option_labels[q.gold] == max(q.option_labels)


def test_options_are_legal_uci_moves_shown_as_uci(generated):
    task = wow.tasks.get("chess")
    for q in generated:
        board = chess.Board(q.meta["fen"])
        assert len(set(q.options)) == 4
        assert all(chess.Move.from_uci(m) in board.legal_moves for m in q.options)
        text = task.messages(q, [3, 2, 1, 0])[0]["content"]
        assert f"FEN: {q.meta['fen']}" in text and f"A. {q.options[3]}" in text and "UCI" in text


def test_generation_is_deterministic(generated):
    again = wow.tasks.get("chess", depth=DEPTH).questions(3, seed=0)
    assert [q.to_dict() for q in again] == [q.to_dict() for q in generated]


def test_win_probability_by_hand():
    assert win_probability(chess.engine.Cp(0)) == 0.5
    assert win_probability(chess.engine.Cp(400)) == pytest.approx(1 / 1.1)
    assert win_probability(chess.engine.Cp(-400)) == pytest.approx(1 / 11)
    assert win_probability(chess.engine.Mate(3)) == 1.0
    assert win_probability(chess.engine.Mate(-2)) == 0.0


def test_chess_grade_by_hand_with_ties():
    task = wow.tasks.get("chess")
    q = Question(
        "chess/x",
        "chess",
        "test",
        "p",
        0,
        options=["e2e4", "d2d4", "g1f3", "a2a3"],
        option_labels=[0.6, 0.6, 0.45, 0.1],
    )
    assert task.grade(q, 0).is_correct and task.grade(q, 1).is_correct  # tied best moves are both right
    g = task.grade(q, 2)
    assert (g.correctness, g.raw_label, g.is_correct) == (pytest.approx(0.85), 0.45, False)
    assert task.grade(q, 3).correctness == pytest.approx(0.5)
    assert task.grade(q, None) == UNPARSED and task.grade(q, 7) == UNPARSED


def test_chess_parse_accepts_a_letter_or_an_option_move():
    task = wow.tasks.get("chess")
    q = Question(
        "chess/x",
        "chess",
        "test",
        "p",
        0,
        options=["e2e4", "d2d4", "g1f3", "a2a3"],
        option_labels=[0.6, 0.5, 0.4, 0.1],
    )
    perm = [3, 2, 1, 0]
    assert task.parse("The answer is option A", q, perm) == 3
    assert task.parse("The answer is option E", q, perm) is None
    assert task.parse("I would play g1f3.", q, perm) == 2
    assert task.parse_direct("Both e2e4 and d2d4 work, but d2d4 is best.", q, perm) == 1
    assert task.parse_direct("Play h2h4.", q, perm) is None


def test_lichess_loader_applies_the_first_move_and_filters_rating_and_length():
    qs = {
        q.id: q
        for q in wow.tasks.get("chess", depth=6, data_files=str(F / "lichess_puzzles.csv")).questions(10, seed=0)
    }
    assert sorted(qs) == ["chess/lichess-p0001", "chess/lichess-p0002", "chess/lichess-p0005"]
    q = qs["chess/lichess-p0001"]
    board = chess.Board("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1")
    board.push_uci("e2e4")
    assert q.meta["fen"] == board.fen() and q.meta["solution"] == "e7e5" and q.meta["rating"] == 800
    assert all(chess.Move.from_uci(m) in board.legal_moves for m in q.options)


def test_lichess_bad_fen_names_the_line(tmp_path):
    bad = tmp_path / "puzzles.csv"
    lines = (F / "lichess_puzzles.csv").read_text().splitlines()
    bad.write_text(lines[0] + "\n" + lines[1].replace("e2e4 e7e5", "e2e5 e7e5") + "\n")
    with pytest.raises(WowError, match=r"puzzles.csv:2: bad FEN or first move"):
        wow.tasks.get("chess", depth=6, data_files=str(bad)).questions(1)


def test_missing_stockfish_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("WOW_STOCKFISH", str(tmp_path / "none"))
    monkeypatch.setattr("wow.tasks.chess_moves.DEBIAN_STOCKFISH", str(tmp_path / "none"))
    monkeypatch.setattr("shutil.which", lambda _: None)
    with pytest.raises(WowError, match="apt-get install stockfish"):
        stockfish_path()


def test_chess_san_options_and_parse():
    task = wow.tasks.get("chess", move_format="san")
    q = Question(
        "chess/x",
        "chess",
        "test",
        "p",
        0,
        options=["e4", "Nf3", "Qxf7#", "O-O"],
        option_labels=[0.6, 0.5, 0.4, 0.1],
    )
    assert task.parse("I would play Nf3.", q) == 1
    assert task.parse_direct("Qxf7 mates, so Qxf7# it is", q) == 2
    assert task.parse_direct("Castle: O-O, not e4", q) == 0
    assert task.parse_direct("Play h4.", q) is None


def test_chess_san_and_time_limit_on_generated_positions():
    uci = wow.tasks.get("chess", depth=DEPTH).questions(1, seed=0)[0]
    san = wow.tasks.get("chess", depth=DEPTH, move_format="san").questions(1, seed=0)[0]
    board = chess.Board(uci.meta["fen"])
    assert san.options == [board.san(chess.Move.from_uci(m)) for m in uci.options]
    assert san.option_labels == uci.option_labels and san.meta["uci"] == uci.options
    assert "standard algebraic notation" in san.prompt
    timed = wow.tasks.get("chess", engine_time=0.05).questions(1, seed=0)[0]
    assert timed.meta["engine_time"] == 0.05 and len(timed.options) == 4


@pytest.mark.parametrize("opts", [{"move_format": "lan"}, {"engine_time": 0}])
def test_chess_bad_options_are_refused(opts):
    with pytest.raises(WowError, match="chess"):
        wow.tasks.get("chess", **opts)
