"""The paper's training regime on the tiny random Llama (`tiny_model` of conftest.py): the adapter saved is the
checkpoint of the lowest validation loss, an interrupted run resumes from its last checkpoint, gradient
checkpointing reaches the model, and 4-bit QLoRA is refused clearly where it cannot run."""

import dataclasses
import math

import pytest
import torch
from conftest import FAST_TRAINING, preference_pair
from safetensors.torch import load_file
from transformers import TrainerCallback
from wow import WowError, io
from wow.align import quantization
from wow.align.align_config import AlignConfig
from wow.align.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = FAST_TRAINING


@pytest.fixture(scope="module")
def pairs():
    """4 training pairs, and validation pairs that prefer the opposite answers: training raises their loss."""
    from datasets import Dataset

    rows = [(q, f"The total weight is {q + 3}.", f"It is {q + 90} or so, I think.") for q in range(4)]
    train_set = Dataset.from_list([preference_pair(q, c, r) for q, c, r in rows])
    val_set = Dataset.from_list([preference_pair(q, r, c) for q, c, r in rows[:2]])
    return train_set, val_set


def _adapter(folder):
    return load_file(folder / "adapter_model.safetensors")


def _same(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


def test_the_adapter_saved_is_the_checkpoint_of_the_lowest_validation_loss(tiny_model, pairs, tmp_path):
    train_set, val_set = pairs
    cfg = dataclasses.replace(FAST, max_steps=4, eval_steps=1, keep_checkpoints=True)
    res = train(train_set, val_set, tiny_model, "dpo", tmp_path / "run", cfg)
    evals = [(h["step"], h["eval_loss"]) for h in res.log_history if "eval_loss" in h]
    assert [s for s, _ in evals] == [1, 2, 3, 4]  # every eval_steps steps
    assert evals[0][1] < evals[-1][1]  # the set-up: training on the opposite preferences raises the validation loss
    best_step, best_loss = min(evals, key=lambda e: e[1])
    assert res.best_step == best_step < 4 and res.val_loss == best_loss
    ckpt = tmp_path / "run" / "checkpoints"
    assert _same(_adapter(tmp_path / "run"), _adapter(ckpt / f"checkpoint-{best_step}"))
    assert not _same(_adapter(tmp_path / "run"), _adapter(ckpt / "checkpoint-4"))  # not the final weights
    # save_total_limit 3: the best checkpoint is kept besides the last ones
    assert len(list(ckpt.glob("checkpoint-*"))) <= 4 and (ckpt / f"checkpoint-{best_step}").exists()
    logged = io.read_json(tmp_path / "run" / "train_log.json")
    assert (logged["best_step"], logged["val_loss"], logged["steps"]) == (best_step, best_loss, 4)


def test_without_validation_pairs_the_final_weights_are_saved(tiny_model, pairs, tmp_path, caplog):
    train_set, _ = pairs
    cfg = dataclasses.replace(FAST, max_steps=2, eval_steps=1)
    with caplog.at_level("INFO", logger="wow.align.in_run_validation"):
        res = train(train_set, None, tiny_model, "dpo", tmp_path / "run", cfg)
    assert (res.best_step, res.val_loss, res.steps) == (None, None, 2)
    assert not [h for h in res.log_history if "eval_loss" in h]
    assert "no validation pairs, so no evaluation while training" in caplog.text
    assert not (tmp_path / "run" / "checkpoints").exists()  # removed once complete


class StopAt(TrainerCallback):
    """Kills the run right after the checkpoint of step ``step`` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed after the checkpoint of step {self.step}")


@pytest.mark.parametrize("killed_at", [2, 4])  # a checkpoint in the middle; the last one, before the adapter is saved
def test_an_interrupted_run_resumes_from_its_last_checkpoint(killed_at, tiny_model, pairs, tmp_path):
    from wow.align.training import is_complete

    train_set, val_set = pairs
    # checkpoints at steps 2 and 4; losses logged at 1 and 3 (and, for the resumed mean, at every checkpoint)
    cfg = dataclasses.replace(FAST, max_steps=4, eval_steps=2, logging_steps=3)
    whole = train(train_set, val_set, tiny_model, "dpo", tmp_path / "whole", cfg)
    assert whole.resumed_from is None

    with pytest.raises(KeyboardInterrupt):
        train(train_set, val_set, tiny_model, "dpo", tmp_path / "cut", cfg, callbacks=[StopAt(killed_at)])
    assert not is_complete(tmp_path / "cut")
    assert (tmp_path / "cut" / "checkpoints" / f"checkpoint-{killed_at}").exists()

    class FirstStep(TrainerCallback):
        step = None

        def on_step_begin(self, args, state, control, **kwargs):
            self.step = state.global_step if self.step is None else self.step

    first = FirstStep()
    resumed = train(train_set, val_set, tiny_model, "dpo", tmp_path / "cut", cfg, callbacks=[first])
    assert resumed.resumed_from == killed_at  # the steps before the checkpoint were not trained again
    assert first.step == (killed_at if killed_at < 4 else None)  # None: nothing was left to train
    assert resumed.steps == whole.steps == 4 and is_complete(tmp_path / "cut")
    assert io.read_json(tmp_path / "cut" / "train_log.json")["resumed_from"] == killed_at
    # the same run as the uninterrupted one: same data order, weights, losses and choice
    assert resumed.best_step == whole.best_step
    assert math.isclose(resumed.val_loss, whole.val_loss, abs_tol=1e-5)
    assert math.isclose(resumed.train_loss, whole.train_loss, abs_tol=1e-5)
    assert _same(_adapter(tmp_path / "cut"), _adapter(tmp_path / "whole"), atol=1e-5)


def test_a_checkpoint_of_other_settings_is_not_resumed(tiny_model, pairs, tmp_path):
    train_set, val_set = pairs
    cfg = dataclasses.replace(FAST, max_steps=3, eval_steps=1)
    with pytest.raises(KeyboardInterrupt):
        train(train_set, val_set, tiny_model, "dpo", tmp_path / "run", cfg, callbacks=[StopAt(1)])
    other = train(train_set, val_set, tiny_model, "dpo", tmp_path / "run", dataclasses.replace(cfg, beta=0.5))
    assert other.resumed_from is None and other.steps == 3


def test_gradient_checkpointing_reaches_the_model_and_trains(tiny_model, pairs, tmp_path):
    from wow.align.align_config import trl_config

    class Seen(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.on = model.is_activation_checkpointing if hasattr(model, "is_activation_checkpointing") else None
            self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    train_set, val_set = pairs
    cfg = dataclasses.replace(FAST, max_steps=2, gradient_checkpointing=True)
    assert trl_config("dpo", cfg, tmp_path, "cpu").activation_checkpointing is True
    assert trl_config("dpo", FAST, tmp_path, "cpu").activation_checkpointing is False
    seen = Seen()
    res = train(train_set, val_set, tiny_model, "dpo", tmp_path / "run", cfg, callbacks=[seen])
    assert seen.on is True  # the model recomputes activations in the backward pass
    assert res.steps == 2 and math.isfinite(res.train_loss)
    assert all(not seen.before[n].equal(seen.after[n]) for n in seen.before)  # every LoRA weight trained


def test_4bit_config_is_the_papers_qlora():
    config = quantization.bnb_config()
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16


def test_4bit_is_refused_before_loading_where_it_cannot_run(tiny_model, pairs, tmp_path, monkeypatch):
    from wow.backends import models

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", no_load)
    train_set, val_set = pairs
    cfg = dataclasses.replace(FAST, max_steps=1, quantization="4bit", device="cpu")
    with pytest.raises(WowError, match=r"4bit needs a CUDA GPU.*set quantization: none, or run on a CUDA GPU"):
        train(train_set, val_set, tiny_model, "dpo", tmp_path / "run", cfg)
    # a CUDA machine without bitsandbytes
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(quantization.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WowError, match=r"needs the bitsandbytes package.*pip install bitsandbytes"):
        quantization.check_available("4bit", "cuda")
    quantization.check_available("none", "cpu")
    with pytest.raises(WowError, match="use_lora"):
        AlignConfig(quantization="4bit", use_lora=False).check()
    with pytest.raises(WowError, match="unknown quantization '8bit'"):
        AlignConfig(quantization="8bit").check()


def test_trl_precomputes_the_reference_only_for_full_weight_training_that_reads_every_pair(
    tiny_model, pairs, tmp_path
):
    """TRL's precompute of the reference's log-probabilities pays where every pair is read and keeps no copy of the
    reference in memory, which matters only in full-weight training; a run that max_steps stops early (the demo reads
    8 of 135 pairs) would precompute pairs it never reads. LoRA trainings share a per-sequence store instead
    (tests/test_reference_logps.py). train_log.json says which."""
    import json

    from wow.align.align_config import reads_every_pair, trl_config

    assert reads_every_pair(dataclasses.replace(FAST, max_steps=-1), 135)
    assert not reads_every_pair(dataclasses.replace(FAST, max_steps=4, train_batch_size=2), 135)  # 8 of 135
    assert reads_every_pair(dataclasses.replace(FAST, max_steps=4, train_batch_size=2, grad_accumulation=2), 16)
    assert reads_every_pair(dataclasses.replace(FAST, max_steps=4, train_batch_size=2), 16, world_size=2)
    assert reads_every_pair(dataclasses.replace(FAST, max_steps=1), None)
    few = dataclasses.replace(FAST, max_steps=2, use_lora=False)  # batch 1: 2 of the 4 training pairs
    assert trl_config("dpo", few, tmp_path, "cpu", n_train=4).precompute_ref_log_probs is False
    assert trl_config("dpo", few, tmp_path, "cpu", n_train=2).precompute_ref_log_probs is True
    lora = dataclasses.replace(few, use_lora=True)
    assert trl_config("dpo", lora, tmp_path, "cpu", n_train=2).precompute_ref_log_probs is False  # the store
    off = dataclasses.replace(few, max_steps=-1, precompute_ref_log_probs=False)
    assert trl_config("dpo", off, tmp_path, "cpu", n_train=2).precompute_ref_log_probs is False  # asked off

    train_set, val_set = pairs
    runs = (
        ("early", few, False, True),  # full weights, 2 of 4 pairs: TRL's reference copy, shared through the store
        ("whole", dataclasses.replace(few, max_steps=4), True, False),  # every pair read: TRL precomputes
        ("lora", dataclasses.replace(lora, max_steps=4), False, True),
        ("off", dataclasses.replace(lora, max_steps=4, precompute_ref_log_probs=False), False, False),
    )
    for name, cfg, precomputed, shared in runs:
        res = train(train_set, val_set, tiny_model, "dpo", tmp_path / name, cfg)
        record = json.loads((tmp_path / name / "train_log.json").read_text())
        assert record["precomputed_ref_log_probs"] is precomputed and math.isfinite(res.train_loss), name
        assert record["reference_logps"]["shared"] is shared, name


def test_max_eval_pairs_validates_on_a_seeded_subset(tiny_model, pairs, tmp_path):
    from wow import WowError

    train_set, val_set = pairs  # 2 validation pairs
    cfg = dataclasses.replace(FAST, max_steps=1, max_eval_pairs=1)
    res = train(train_set, val_set, tiny_model, "dpo", tmp_path / "one", cfg)
    assert res.n_val == 1 and math.isfinite(res.val_loss)
    again = train(train_set, val_set, tiny_model, "dpo", tmp_path / "again", cfg)
    assert again.val_loss == res.val_loss  # the same pair: the subset is seeded
    whole = train(train_set, val_set, tiny_model, "dpo", tmp_path / "all", dataclasses.replace(cfg, max_eval_pairs=5))
    assert whole.n_val == 2
    with pytest.raises(WowError, match="max_eval_pairs"):
        dataclasses.replace(FAST, max_eval_pairs=0).check()
