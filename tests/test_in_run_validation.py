"""``in_run_validation``: ``auto`` computes the validation loss only where it chooses something, and the weights it
saves are those of ``always``; the step count it plans on is the trainer's; a grid chosen by loss validates."""

import dataclasses

import pytest
import torch
from conftest import FAST_TRAINING, preference_pair
from safetensors.torch import load_file
from wow import WowError, io
from wow.align import grid, in_run_validation
from wow.align.align_config import AlignConfig
from wow.align.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pairs():
    from datasets import Dataset

    rows = [(q, f"The total weight is {q + 3}.", f"It is {q + 90} or so, I think.") for q in range(5)]
    train_set = Dataset.from_list([preference_pair(q, c, r) for q, c, r in rows])
    val_set = Dataset.from_list([preference_pair(q, r, c) for q, c, r in rows[:2]])
    return train_set, val_set


def test_planned_steps_by_hand():
    cfg = AlignConfig(train_batch_size=2, epochs=1)
    assert in_run_validation.planned_steps(cfg, 53) == 27  # 26 full batches and a partial one
    assert in_run_validation.planned_steps(dataclasses.replace(cfg, grad_accumulation=2), 53) == 14  # ceil(27 / 2)
    assert in_run_validation.planned_steps(dataclasses.replace(cfg, epochs=1.5), 53) == 41  # ceil(1.5 x 27)
    assert in_run_validation.planned_steps(cfg, 53, world_size=2) == 14  # 27 batches of 2 x 2 processes
    assert in_run_validation.planned_steps(dataclasses.replace(cfg, max_steps=4), 53) == 4
    assert in_run_validation.planned_steps(AlignConfig(train_batch_size=4, epochs=3), 1) == 3  # at least 1 an epoch


def test_chooses_where_the_loss_decides_something():
    auto = AlignConfig(in_run_validation="auto", max_steps=4, eval_steps=1000)
    assert not in_run_validation.chooses(auto, 53)  # one evaluation, at step 4
    assert not in_run_validation.chooses(dataclasses.replace(auto, eval_steps=4), 53)  # still one, at step 4
    assert in_run_validation.chooses(dataclasses.replace(auto, eval_steps=3), 53)  # steps 3 and 4: a choice
    assert in_run_validation.chooses(dataclasses.replace(auto, lr_scheduler="reduce_lr_on_plateau"), 53)
    assert in_run_validation.chooses(dataclasses.replace(auto, in_run_validation="always"), 53)
    assert AlignConfig().in_run_validation == "always"  # the library's default: pairs given are read
    with pytest.raises(WowError, match="unknown in_run_validation 'sometimes'; valid: auto, always"):
        dataclasses.replace(auto, in_run_validation="sometimes").check()


def test_a_grid_chosen_by_validation_loss_validates_every_point():
    auto = AlignConfig(in_run_validation="auto")
    two = grid.grid_points(auto, [1e-4, 5e-5], [1], selected_by_loss=True)
    assert [cfg.in_run_validation for _, cfg in two] == ["always", "always"]
    assert [cfg.in_run_validation for _, cfg in grid.grid_points(auto, [1e-4, 5e-5], [1])] == ["auto", "auto"]
    one = grid.grid_points(auto, [1e-4], [1], selected_by_loss=True)  # one point: nothing to choose
    assert [cfg.in_run_validation for _, cfg in one] == ["auto"]


def test_auto_skips_the_one_evaluation_and_saves_the_weights_always_saves(tiny_model, pairs, tmp_path, caplog):
    train_set, val_set = pairs
    auto = dataclasses.replace(FAST_TRAINING, max_steps=2, eval_steps=1000, in_run_validation="auto")
    with caplog.at_level("INFO", logger="wow.align.in_run_validation"):
        skipped = train(train_set, val_set, tiny_model, "dpo", tmp_path / "auto", auto)
    assert "no in-run validation: its one evaluation, at step 2, would choose nothing" in caplog.text
    assert (skipped.n_val, skipped.val_loss, skipped.best_step, skipped.steps) == (0, None, None, 2)
    assert not [h for h in skipped.log_history if "eval_loss" in h]
    logged = io.read_json(tmp_path / "auto" / "train_log.json")
    assert (logged["config"]["in_run_validation"], logged["n_val"], logged["val_loss"]) == ("auto", 0, None)
    always = train(
        train_set,
        val_set,
        tiny_model,
        "dpo",
        tmp_path / "always",
        dataclasses.replace(auto, in_run_validation="always"),
    )
    assert always.n_val == 2 and always.best_step == 2 and always.val_loss is not None
    a, b = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("auto", "always"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same weights, bit for bit
    # several evaluations choose a checkpoint: auto validates, at steps 1 and 2
    chosen = train(train_set, val_set, tiny_model, "dpo", tmp_path / "chosen", dataclasses.replace(auto, eval_steps=1))
    assert chosen.n_val == 2 and [h["step"] for h in chosen.log_history if "eval_loss" in h] == [1, 2]


def test_planned_steps_are_the_trainers(tiny_model, pairs, tmp_path):
    train_set, _ = pairs  # 5 pairs, 2 a step: 3 steps an epoch
    cfg = dataclasses.replace(FAST_TRAINING, max_steps=-1, epochs=1, train_batch_size=2)
    res = train(train_set, None, tiny_model, "dpo", tmp_path / "run", cfg)
    assert res.steps == in_run_validation.planned_steps(cfg, len(train_set)) == 3
