"""docs/fidelity.md row by row: every row cites the paper's code, names tests that exist, and states the code's numbers;
the paper's parameter sets run the paper's protocol and the run scripts' training configuration.

The paper's values are worked out by hand from its public code (yaojh18/Varying-Shades-of-Wrong): ``finetune.py``'s
``preference_optimization`` defaults, ``grid_search.py``'s ``grid_search`` lists, ``dataset.py``'s
``ChessPuzzle.precess_dataset``.
"""

import inspect
import re
from pathlib import Path

import pytest
from wow import params, protocol
from wow.align import align_config, checkpoints
from wow.elicit import sampling
from wow.tasks import chess_moves, longest_path

ROOT = Path(__file__).resolve().parents[1]
FIDELITY = ROOT / "docs" / "fidelity.md"
PAPER = ROOT / "parameters" / "paper"
TESTS = ROOT / "tests"


def rows() -> dict[int, list[str]]:
    """``row number -> cells`` of every table row of docs/fidelity.md (escaped pipes kept inside cells)."""
    out = {}
    for line in FIDELITY.read_text().splitlines():
        m = re.match(r"\| (\d+) \|", line)
        if m:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            out[int(m.group(1))] = cells
    return out


def row(n: int) -> str:
    return " | ".join(rows()[n])


def test_rows_are_numbered_once_each():
    numbers = [int(m) for m in re.findall(r"^\| (\d+) \|", FIDELITY.read_text(), flags=re.M)]
    assert len(numbers) == len(set(numbers)) == len(rows()) >= 49


def test_no_row_cites_a_document_outside_the_repository():
    text = FIDELITY.read_text()
    assert "ref §" not in text and "/work/" not in text and "reference-method" not in text


def test_every_row_cites_the_papers_code_by_file_and_function():
    for n, cells in rows().items():
        paper = cells[2]
        files = re.findall(r"`([\w./-]+\.(?:py|sh|txt|md))`", paper)
        assert files, f"row {n} cites no file of the paper's code: {paper[:80]}"
        if any(f.endswith(".py") for f in files):
            names = re.findall(r"`([A-Za-z_][\w.]*(?:\(.*?\))?)`", paper)
            functions = [x for x in names if not re.search(r"\.(py|sh|txt|md)$", x)]
            assert functions, f"row {n} names a file but no function"


def test_every_switch_row_names_tests_that_exist():
    defined = {m for f in TESTS.glob("test_*.py") for m in re.findall(r"^def (test_\w+)", f.read_text(), flags=re.M)}
    switched = {n: cells for n, cells in rows().items() if "**switch" in cells[-1]}
    assert set(switched) >= {*range(1, 16), 40}
    for n, cells in rows().items():
        named = set(re.findall(r"`(test_\w+)`", cells[-1]))
        if n in switched:
            assert named, f"switch row {n} names no test"
        assert named <= defined, f"row {n} names tests that do not exist: {named - defined}"


# -- the numbers the rows state are the code's ------------------------------------------------------------------------
def test_row_28_states_the_chess_depth_the_task_uses():
    depth = inspect.signature(chess_moves.ChessMoves.__init__).parameters["depth"].default
    assert depth == 10
    assert re.search(r"Stockfish depth (\d+)", row(28)).group(1) == str(depth)
    # the paper: Limit(time=2.0) (dataset.py, ChessPuzzle.precess_dataset); the paper sets ask for the same
    assert "`Limit(time=2.0)`, 2 s per position" in row(28)
    opts = params.load(PAPER / "fig2_fig5_acc_wow.yaml").task_options["chess"]
    assert opts["engine_time"] == 2.0


def test_rows_state_the_papers_samples_caps_and_token_budgets_the_code_uses():
    assert protocol.PAPER_BIO_EVAL_SAMPLES == 3 and "3 samples per test question" in row(13)
    assert protocol.PAPER_JUDGE_CAP == 10_000 and "10,000 pairs, only for the GPT-4o judge" in row(8)
    assert protocol.PAPER_EXTRACT_MAX_TOKENS == sampling.FREE_EXTRACT_MAX_TOKENS == 32
    assert "at most 32 tokens" in row(3) and "the free 32-token turn" in row(3)
    assert params.validate({}).max_pairs == 4000 and "4000 pairs or 2000 + 2000" in row(15)
    assert {params.load(p).max_pairs for p in PAPER.glob("*.yaml")} == {4000}


def test_row_33_states_the_training_regime_the_code_uses():
    cfg = align_config.AlignConfig()
    assert (cfg.max_length, cfg.max_prompt_length) == (1536, 512) and "max length 1536/512" in row(33)
    assert (cfg.lora_r, cfg.lora_alpha) == (16, 16) and "LoRA r 16 / alpha 16" in row(33)
    assert params.validate({}).eval_steps == 1000 and "every `eval_steps` (1000)" in row(33)
    assert checkpoints.SAVE_TOTAL_LIMIT == 3 and "at most 3 kept besides the best" in row(33)


def test_row_39_states_the_exact_graph_size():
    assert longest_path.EXACT_MAX_NODES == 20
    assert "up to 20 of them" in row(39) and "at most 20 nodes" in row(39)


def test_row_40_states_the_share_of_judge_calls_spent_on_other_splits():
    # 625 questions split 0.8 / 0.1 / 0.1: 500 train; the 125 others are 20 % of the questions, and a cap of 10,000
    # drawn over every split's pairs holds 10,000 x 500 / 625 = 8,000 train pairs on average
    P = params.load(PAPER / "fig3_alignment.yaml")
    assert (P.n_questions, P.split_fractions) == (625, [0.8, 0.1, 0.1])
    assert "about 20 %" in row(40) and "125 validation and test questions of 625" in row(40)
    assert "about 8,000 of 10,000" in row(40) and 10_000 * 500 // 625 == 8_000


# -- the paper's parameter sets --------------------------------------------------------------------------------------
def test_every_paper_set_runs_the_paper_protocol():
    sets = sorted(PAPER.glob("*.yaml"))
    assert len(sets) >= 7
    for path in sets:
        assert params.load(path).protocol == "paper", path.name
        # the same set under wow: the protocol is an override like any other
        assert params.load(path, protocol="wow").protocol == "wow"


#: finetune.py's preference_optimization defaults (commit 4a06d80), the configuration finetune.sh, row.sh and po.sh
#: trained: learning rate 5e-5, cosine, weight decay 1e-5, 3 epochs, beta 0.1, warm-up 0.1.
SCRIPTS = {"learning_rates": [5e-5], "lr_schedulers": ["cosine"], "weight_decays": [1e-5], "epochs": [3]}
#: grid_search.py's loops (lr, scheduler, weight decay, epochs) up to its first invalid scheduler: lr 1e-4, cosine,
#: every weight decay and epoch count: 1 x 1 x 3 x 3 = 9 points (proxy.sh).
PROXY = {
    "learning_rates": [1e-4],
    "lr_schedulers": ["cosine"],
    "weight_decays": [0.0, 1e-5, 1e-3],
    "epochs": [1, 3, 5],
}


@pytest.mark.parametrize(
    ("name", "grid"),
    [
        ("fig3_alignment", SCRIPTS),
        ("fig4_trainers", SCRIPTS),
        ("table3_right_over_wrong", SCRIPTS),
        ("table4_generalisation", SCRIPTS),
        ("proxy_runs", PROXY),
    ],
)
def test_paper_sets_train_the_run_scripts_configuration(name, grid):
    P = params.load(PAPER / f"{name}.yaml")
    assert {k: getattr(P, k) for k in grid} == grid
    assert P.beta == 0.1 and align_config.AlignConfig().warmup_ratio == 0.1
    points = len(P.learning_rates) * len(P.lr_schedulers) * len(P.weight_decays) * len(P.epochs)
    assert points == (9 if name == "proxy_runs" else 1)
    # the 81-point option is written in the set's comment (or points to the one that has it)
    text = (PAPER / f"{name}.yaml").read_text()
    assert "81 points" in text or "full 81 points" in text


def test_the_81_point_option_is_the_papers_grid_with_27_repeated_points():
    from wow.align import grid

    text = (PAPER / "fig3_alignment.yaml").read_text().replace("\n# ", " ")
    lists = {
        "learning_rates": [1e-4, 5e-5, 1e-5],
        "lr_schedulers": ["cosine", "cosine_with_restarts", "reduce_lr_on_plateau"],
        "weight_decays": [0.0, 1e-5, 1e-3],
        "epochs": [1, 3, 5],
    }
    for key, values in lists.items():
        written = re.search(rf"{key} \[([^\]]*)\]", text).group(1)
        assert [type(values[0])(v.strip()) for v in written.split(",")] == values, key
    assert (list(grid.PAPER_LEARNING_RATES), list(grid.PAPER_SCHEDULERS)) == (lists["learning_rates"],
                                                                            lists["lr_schedulers"])  # fmt: skip
    points = 3 * 3 * 3 * 3
    repeated = points // len(lists["lr_schedulers"])  # every point of one scheduler of three
    assert (points, repeated, points - repeated) == (81, 27, 54)
    assert "27 cosine_with_restarts points repeat cosine" in text and "54 distinct points" in text
    P = params.load(PAPER / "fig3_alignment.yaml", **lists)  # the option validates as written
    assert len(P.learning_rates) * len(P.lr_schedulers) * len(P.weight_decays) * len(P.epochs) == 81


def test_cosine_with_restarts_of_one_cycle_is_the_cosine_curve():
    import torch
    from transformers import get_scheduler

    def curve(name):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = get_scheduler(name, opt, num_warmup_steps=10, num_training_steps=100)
        lrs = []
        for _ in range(100):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return lrs

    cosine, restarts = curve("cosine"), curve("cosine_with_restarts")
    assert restarts == pytest.approx(cosine, abs=1e-12)
    assert cosine[10] == 1.0 and cosine[55] == pytest.approx(0.5)  # warm-up over 10 steps, half-way down at 55
