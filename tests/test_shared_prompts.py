"""Each pair's prompt read once per pass (wow.align.shared_prompts): the packed rows by hand, the batches that are
not packed, the per-token values and gradients against TRL's own layout, and whole trainings against TRL's layout."""

import dataclasses
import math

import pytest
import torch
from conftest import FAST_TRAINING, oracle_answers, preference_pair
from wow import io
from wow.align import shared_prompts
from wow.align.command import main
from wow.align.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IGNORE = -100


def _batch(examples, pad=0):
    """TRL's collated pair batch (chosen rows, then rejected rows, right-padded) and its labels."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    batch = DataCollatorForPreference(pad_token_id=pad)(examples)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE)
    return batch, labels


def test_a_pair_is_packed_as_its_prompt_then_each_answer_behind_a_copy_of_its_last_token():
    batch, labels = _batch(
        [
            {"prompt_ids": [11, 12, 13], "chosen_ids": [21, 22], "rejected_ids": [31]},
            {"prompt_ids": [14, 15], "chosen_ids": [23], "rejected_ids": [32, 33, 34]},
        ]
    )
    packed = shared_prompts.pack(batch["input_ids"], batch["attention_mask"], labels, pad_id=0)
    # pair 0: 11 12 | 13 21 22 | 13 31 ; pair 1: 14 | 15 23 | 15 32 33 34
    assert packed.input_ids.tolist() == [[11, 12, 13, 21, 22, 13, 31], [14, 15, 23, 15, 32, 33, 34]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 2, 3], [0, 1, 2, 1, 2, 3, 4]]
    # each position's label is the token it predicts: an answer's tokens, from the token before each
    assert packed.shift_labels.tolist() == [
        [IGNORE, IGNORE, 21, 22, IGNORE, 31, IGNORE],
        [IGNORE, 23, IGNORE, 32, 33, 34, IGNORE],
    ]
    allowed = packed.allowed[:, 0].int().tolist()
    assert allowed[0] == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],  # the chosen answer: the prompt and itself
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0, 1, 0],  # the rejected answer: the prompt but its last token (read again) and itself
        [1, 1, 0, 0, 0, 1, 1],
    ]
    assert allowed[1][4] == [1, 0, 0, 1, 1, 0, 0]  # pair 1's rejected token 32 sees 14, its copy of 15 and itself
    # TRL's layout (rows of width 5): output t of a row predicts its token t + 1; 14 picks the appended zero
    zero = 2 * 7
    assert packed.source.tolist() == [
        [zero, zero, 2, 3],  # chosen 0: 21 from 13 (packed 2), 22 from 21 (packed 3)
        [zero, 8, zero, zero],  # chosen 1: 23 from 15 (packed 7 + 1)
        [zero, zero, 5, zero],  # rejected 0: 31 from the copy of 13 (packed 5)
        [zero, 10, 11, 12],  # rejected 1: 32, 33, 34 from packed 7 + 3, 4, 5
    ]
    values = torch.arange(1.0, 15.0).reshape(2, 7)
    assert shared_prompts.unpack(values, packed)[0].tolist() == [0, 0, 3, 4]


def test_a_padded_pair_row_attends_only_to_itself():
    batch, labels = _batch(
        [
            {"prompt_ids": [11, 12], "chosen_ids": [21], "rejected_ids": [31]},
            {"prompt_ids": [14, 15, 16, 17], "chosen_ids": [23, 24], "rejected_ids": [32, 33]},
        ]
    )
    packed = shared_prompts.pack(batch["input_ids"], batch["attention_mask"], labels, pad_id=0)
    assert packed.input_ids.shape == (2, 9) and packed.input_ids[0].tolist() == [11, 12, 21, 12, 31, 0, 0, 0, 0]
    pad_rows = packed.allowed[0, 0, 5:]
    assert torch.equal(pad_rows, torch.eye(9, dtype=torch.bool)[5:])  # no empty mask row, no real key read
    assert not packed.allowed[0, 0, :5, 5:].any()  # and no real token reads padding


def test_batches_that_are_not_pair_batches_are_left_to_trl():
    examples = [
        {"prompt_ids": [11, 12, 13], "chosen_ids": [21, 22], "rejected_ids": [31]},
        {"prompt_ids": [14, 15], "chosen_ids": [23], "rejected_ids": [32]},
    ]
    batch, labels = _batch(examples)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert shared_prompts.pack(ids, mask, labels) is not None
    assert shared_prompts.pack(ids[:3], mask[:3], labels[:3]) is None  # odd rows
    swapped = ids.clone()
    swapped[2, 0] = 99  # the rejected row's prompt differs from its chosen row's
    assert shared_prompts.pack(swapped, mask, labels) is None
    holed = labels.clone()
    holed[0, 3] = IGNORE  # an unlabelled token inside the answer
    assert shared_prompts.pack(ids, mask, holed) is None
    assert shared_prompts.pack(ids.flip(-1), mask.flip(-1), labels.flip(-1)) is None  # left padding
    no_prompt = labels.clone()
    no_prompt[:, 0] = ids[:, 0]  # a labelled first token: no prompt token to predict it from
    assert shared_prompts.pack(ids, mask, no_prompt) is None


def _fused_lora_model(folder, kernel: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=kernel, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"))
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    return get_peft_model(model, lora)


@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_per_token_values_and_gradients_are_trls_up_to_rounding(tiny_model, kernel):
    """The fused head's every per-token field, its loss and the LoRA gradients of a DPO-style objective, packed
    against TRL's layout on the same model and batch (float32; two pairs of unequal lengths)."""
    import trl

    g = torch.Generator().manual_seed(1)

    def tokens(n):
        return torch.randint(5, 4000, (n,), generator=g).tolist()

    batch, labels = _batch(
        [
            {"prompt_ids": tokens(40), "chosen_ids": tokens(7), "rejected_ids": tokens(12)},
            {"prompt_ids": tokens(25), "chosen_ids": tokens(15), "rejected_ids": tokens(3)},
        ]
    )
    model = _fused_lora_model(tiny_model, kernel)
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}

    def run():
        model.zero_grad()
        out = model(**kwargs, labels=labels, fused_lm_head=True)
        chosen, rejected = out.log_probs.sum(-1).chunk(2)
        (-torch.nn.functional.logsigmoid(chosen - rejected).sum() + out.entropy.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return out, grads

    plain, plain_grads = run()
    trainer = trl.DPOTrainer.__new__(trl.DPOTrainer)
    trainer.model = model
    assert shared_prompts.share_prompts(trainer)
    assert not shared_prompts.share_prompts(trainer)  # wrapped once
    packed, packed_grads = run()
    for field in (*shared_prompts.PER_TOKEN_FIELDS, "label_mask"):
        a, b = getattr(plain, field), getattr(packed, field)
        assert a.shape == b.shape, field
        assert torch.allclose(a.float(), b.float(), rtol=0, atol=1e-5), (field, (a.float() - b.float()).abs().max())
    assert (plain.log_probs != 0).sum() == labels[:, 1:].ne(IGNORE).sum()  # the check compares real values
    assert torch.allclose(plain.loss, packed.loss, atol=1e-6)
    for name, grad in plain_grads.items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(grad, packed_grads[name], rtol=1e-4, atol=1e-6), name
    # a call that is not a pair batch goes through TRL's forward unchanged
    single = model(**{k: v[:1] for k, v in kwargs.items() if k != "use_cache"}, labels=labels[:1], fused_lm_head=True)
    assert torch.allclose(single.log_probs, plain.log_probs[:1], atol=1e-5)


def _pairs(n=4):
    from datasets import Dataset

    rows = [
        (q, f"The total weight is {q + 3}.", f"It is {q + 90} or so, I think, after all the edges.") for q in range(n)
    ]
    return Dataset.from_list([preference_pair(q, c, r) for q, c, r in rows])


@pytest.mark.parametrize("trainer", ["dpo", "rpo"])
def test_a_training_with_shared_prompts_logs_trls_losses(tiny_model, tmp_path, trainer):
    """Whole trainings (2 pairs a step, validation, the reference per batch) with and without shared prompts:
    every logged loss, reward and validation loss equal to rounding, the first loss ln 2, and the log says which."""
    cfg = dataclasses.replace(
        FAST_TRAINING, train_batch_size=2, max_steps=3, eval_steps=3, precompute_ref_log_probs=False
    )
    ds = _pairs()
    runs = {}
    for shared in (True, False):
        folder = tmp_path / f"{trainer}-{shared}"
        train(ds, _pairs(2), tiny_model, trainer, folder, dataclasses.replace(cfg, shared_prompts=shared))
        runs[shared] = io.read_json(folder / "train_log.json")
        assert runs[shared]["shared_prompts"] is shared and runs[shared]["config"]["shared_prompts"] is shared
    keys = ("loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "eval_loss")
    rows = {
        s: [{k: h[k] for k in keys if k in h} for h in runs[s]["log_history"] if "loss" in h or "eval_loss" in h]
        for s in runs
    }
    assert [r.keys() for r in rows[True]] == [r.keys() for r in rows[False]] and len(rows[True]) >= 4
    for packed, plain in zip(rows[True], rows[False], strict=True):
        for key, value in plain.items():
            assert math.isclose(packed[key], value, rel_tol=1e-4, abs_tol=1e-4), (key, packed[key], value)
    if trainer == "dpo":  # the policy is the reference at the first step (RPO adds its NLL term)
        assert runs[True]["log_history"][0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_the_reference_store_keys_the_layout(tiny_model):
    """A reference value computed over packed rows never serves a training with TRL's layout (other rounding)."""
    from transformers import AutoModelForCausalLM
    from wow.align import reference_logps

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    plain = reference_logps.identity("tiny", model, "none", "cpu")
    packed = reference_logps.identity("tiny", model, "none", "cpu", packed=True)
    assert packed == {**plain, "layout": "shared_prompts"}


def test_wow_align_reads_prompts_once_unless_told_to_repeat_them(tiny_model, tmp_path):
    """Through the ``wow.align`` command: shared prompts by default, ``--repeat-prompts`` gives TRL's layout, and
    the two trainings log the same losses to rounding."""
    from wow.preferences import build_preferences, save_preferences

    prefs = save_preferences(build_preferences(oracle_answers(), "oracle", val_fraction=0.34, seed=0), tmp_path / "p")
    config = '{"progress": false, "cpu_threads": 1, "bf16": false, "learning_rate": 0.01, "logging_steps": 1}'
    common = ["--preferences", str(prefs), "--trainer", "dpo", "--model", tiny_model, "--max-steps", "2"]
    common += ["--train-batch-size", "2", "--config", config]
    assert main([*common, "--output", str(tmp_path / "shared")]) == 0
    assert main([*common, "--output", str(tmp_path / "repeated"), "--repeat-prompts"]) == 0
    shared, repeated = (io.read_json(tmp_path / n / "train_log.json") for n in ("shared", "repeated"))
    assert (shared["shared_prompts"], repeated["shared_prompts"]) == (True, False)
    assert repeated["config"]["shared_prompts"] is False
    losses = [[h["loss"] for h in log["log_history"] if "loss" in h] for log in (shared, repeated)]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], abs=1e-4)
