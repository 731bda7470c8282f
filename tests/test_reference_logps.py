"""The reference's log-probabilities computed once per sequence and shared (wow.align.reference_logps): TRL's losses
unchanged, the flipped pairs of another arm and the points of a grid served from the store, a cache file that
outlives the process, and nothing computed twice."""

import dataclasses
import json

import pytest
from conftest import FAST_TRAINING, preference_pair
from wow.align import reference_logps
from wow.align.training import train
from wow.backends.cache import CallCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dataclasses.replace(FAST_TRAINING, max_steps=4)


@pytest.fixture(scope="module")
def pairs():
    """4 training pairs, the same pairs flipped (a random arm's), and 2 validation pairs (the first two flipped)."""
    from datasets import Dataset

    rows = [(q, f"The total weight is {q + 3}.", f"It is {q + 90} or so, I think.") for q in range(4)]
    return (
        Dataset.from_list([preference_pair(q, c, r) for q, c, r in rows]),
        Dataset.from_list([preference_pair(q, r, c) for q, c, r in rows]),
        Dataset.from_list([preference_pair(q, r, c) for q, c, r in rows[:2]]),
    )


def _record(folder) -> dict:
    return json.loads((folder / "train_log.json").read_text())


def _losses(record: dict) -> list[float]:
    return [h["loss"] for h in record["log_history"] if "loss" in h]


def test_shared_reference_gives_trl_s_losses_and_each_sequence_is_computed_once(tiny_model, pairs, tmp_path):
    train_set, flipped, val_set = pairs
    reference_logps.clear_memory()
    per_batch = dataclasses.replace(FAST, precompute_ref_log_probs=False)  # TRL: the reference in every batch
    trl = {name: train(ds, val_set, tiny_model, "dpo", tmp_path / f"trl_{name}", per_batch)
           for name, ds in (("oracle", train_set), ("flipped", flipped))}  # fmt: skip
    assert _record(tmp_path / "trl_oracle")["reference_logps"] == {"shared": False, "computed": None, "reused": None}

    oracle = train(train_set, val_set, tiny_model, "dpo", tmp_path / "oracle", FAST)
    record = _record(tmp_path / "oracle")
    # 4 steps of 1 pair: 8 sequences computed; the 2 validation pairs are 4 of them again (flipped)
    assert record["reference_logps"] == {"shared": True, "computed": 8, "reused": 4}
    assert _losses(record) == pytest.approx(_losses(_record(tmp_path / "trl_oracle")), abs=1e-6)
    assert oracle.val_loss == pytest.approx(trl["oracle"].val_loss, abs=1e-6)

    again = train(flipped, val_set, tiny_model, "dpo", tmp_path / "flipped", FAST)  # the same sequences, flipped
    record = _record(tmp_path / "flipped")
    assert record["reference_logps"] == {"shared": True, "computed": 0, "reused": 12}
    assert _losses(record) == pytest.approx(_losses(_record(tmp_path / "trl_flipped")), abs=1e-5)
    assert again.val_loss == pytest.approx(trl["flipped"].val_loss, abs=1e-5)
    assert record["answer_tokens_only"] is True


def test_a_cache_file_serves_other_processes_and_grid_points_and_nothing_is_computed_twice(
    tiny_model, pairs, tmp_path
):
    train_set, flipped, val_set = pairs
    cache = tmp_path / "cache.sqlite"
    cfg = dataclasses.replace(FAST, reference_cache=str(cache))
    reference_logps.clear_memory()
    train(train_set, val_set, tiny_model, "dpo", tmp_path / "first", cfg)
    assert _record(tmp_path / "first")["reference_logps"]["computed"] == 8
    reference_logps.clear_memory()  # as a new process would start: only the file holds the values
    other_point = dataclasses.replace(cfg, learning_rate=5e-3)  # another point of a grid on the same pairs
    train(flipped, val_set, tiny_model, "dpo", tmp_path / "second", other_point)
    assert _record(tmp_path / "second")["reference_logps"] == {"shared": True, "computed": 0, "reused": 12}
    db = CallCache(cache)
    try:
        assert len(db) == 8 and db.computed_twice() == {}
    finally:
        db.close()


def test_the_store_is_keyed_by_the_reference_and_the_tokens(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ident = reference_logps.identity(str(tiny_model), model, "none", "cpu")
    assert ident["dtype"] == "float32" and ident["device"] == "cpu"
    half = reference_logps.identity(str(tiny_model), model.to(torch.bfloat16), "none", "cpu:0")
    assert half["dtype"] == "bfloat16" and half["device"] == "cpu"
    batch = {  # a right-padded batch: padding is not part of a sequence
        "input_ids": torch.tensor([[5, 6, 7, 0], [5, 6, 7, 8], [5, 6, 7, 8]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]),
        "completion_mask": torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]),
    }
    padded, longer, other_answer = reference_logps.sequence_keys(batch)
    assert padded == reference_logps.sequence_keys({k: v[:1, :3] for k, v in batch.items()})[0]
    assert len({padded, longer, other_answer}) == 3  # other tokens, or other answer tokens: another sequence
    store = reference_logps.ReferenceLogps()
    reference_logps.clear_memory()
    store.put_many(ident, {padded: -1.5})
    assert store.get_many(ident, [padded, longer]) == [-1.5, None]
    assert store.get_many(half, [padded]) == [None]  # never across precisions


def test_a_training_in_bfloat16_computes_the_reference_per_batch(tiny_model, pairs, tmp_path):
    """In bfloat16 a sequence's value depends on its batch and thread count (0.77 nats of margin on the default model
    between 1 and 2 threads), so nothing is shared: TRL's per-batch reference, whose noise cancels the policy's."""
    train_set, _, val_set = pairs
    reference_logps.clear_memory()
    res = train(train_set, val_set, tiny_model, "dpo", tmp_path / "bf16", dataclasses.replace(FAST, bf16=True))
    record = _record(tmp_path / "bf16")
    assert record["bf16"] is True and record["reference_logps"] == {"shared": False, "computed": None, "reused": None}
    assert _losses(record)[0] == pytest.approx(0.6931471805599453, abs=1e-6)  # policy = reference at the first step
    assert res.steps == 4
