"""The reference model's log-probabilities of preference sequences, computed once and shared by every training.

A DPO-family loss compares the policy's log-probability of each answer with the reference model's, ``log
pi_ref(y|x)`` summed over the answer's tokens. The reference is the model as loaded (LoRA adapters off), so the value
of a sequence never changes during a stage. TRL computes it per batch (one extra forward pass per step and per
validation batch) or, with ``precompute_ref_log_probs``, for the whole data set before the first step, cached per data
set; neither shares it between preference sets, and the arms of a stage read the same sequences: ``oracle``,
``noisy@p`` and ``random`` are the same pairs with labels flipped, a grid's points and ``train_seeds`` read the same
pairs again, and the judges' pairs reuse the same sampled answers.

:func:`share` makes a DPO-family TRL trainer read the reference's value of each sequence of a batch from a
:class:`ReferenceLogps` store and compute it (with TRL's own ``compute_ref_log_probs``, on the whole batch as TRL
would) only when one of them is missing; it stores the missing ones. A sequence is what the model reads: its token
ids (padding stripped) and which of them are answer tokens. A store keys it with the reference's identity (model,
precision, quantization, device type, attention kernel), so a value never crosses models or precisions. With a
cache file (a stage passes its run's ``cache.sqlite``) the values outlive the process: a Ray worker, a rerun after a
kill or the next grid point reads them; without one they are kept in this process's memory.

Values are used exactly as computed: a sequence first read in another batch (other padding) may differ from a
fresh computation in its last bits (as TRL's precompute does with its own batch size); the first training of a
stage computes every batch it reads, so its numbers are TRL's. That holds in float32 only. In bfloat16 (or float16)
a sequence's value moves with the batch around it and the thread count, by far more than rounding: on an Intel Xeon
with AMX the default model's smoke pair took a DPO loss of 0.655 at its first step (policy and reference the same
model) when its reference values came from a process with 2 threads and the policy ran with 1 (Ray's workers), not ln
2 = 0.693, a reward margin of 0.077 out of nothing. TRL's per-batch computation cancels that noise between the policy
and the reference of one batch, so a training in reduced precision computes its reference per batch (``can_share``
is False there) and records ``shared: false``.

Example::

    store = ReferenceLogps("outputs/demo/cache.sqlite")
    share(trl_trainer, store, identity(model_name, model, config, "cpu"))
    trl_trainer.train()
    store.stats()   # {"computed": ..., "reused": ...}
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from wow.backends.cache import CallCache, cache_key

log = logging.getLogger(__name__)

KIND = "reference_logp"
#: This process's stores without a file, one per reference identity (trainings of one process share them).
_MEMORY: dict[str, dict[str, float]] = {}
_MEMORY_LOCK = threading.Lock()


class ReferenceLogps:
    """Reference log-probabilities by sequence key: in a wow cache file (``path``) or in this process's memory.

    Attributes:
        computed: sequences whose value this store received from a reference forward pass.
        reused: sequences served from the store.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self._cache = None if path is None else CallCache(path)
        self.computed = 0
        self.reused = 0

    def get_many(self, identity: dict, keys: list[str]) -> list[float | None]:
        """The stored value of each key (None where there is none)."""
        if self._cache is None:
            with _MEMORY_LOCK:
                memory = _MEMORY.get(_memory_name(identity), {})
                return [memory.get(k) for k in keys]
        out = []
        for k in keys:
            row = self._cache.get(cache_key(identity, KIND, {"sequence": k}))
            out.append(None if row is None else float(row["logp"]))
        return out

    def put_many(self, identity: dict, values: dict[str, float]) -> None:
        """Store ``key -> value`` in one transaction (all or none survive a kill)."""
        if self._cache is None:
            with _MEMORY_LOCK:
                _MEMORY.setdefault(_memory_name(identity), {}).update(values)
            return
        items = [(cache_key(identity, KIND, {"sequence": k}), {"logp": v}) for k, v in values.items()]
        self._cache.put_many(items, kind=KIND, engine="trl-reference", model=str(identity.get("model", "")))

    def stats(self) -> dict:
        """``{"computed": ..., "reused": ...}``: sequences of this store's trainings so far."""
        return {"computed": self.computed, "reused": self.reused}

    def close(self) -> None:
        """Close the cache file, if any."""
        if self._cache is not None:
            self._cache.close()


def _memory_name(identity: dict) -> str:
    return cache_key(identity, KIND, {})


def clear_memory() -> None:
    """Forget every value kept in this process's memory (the stores without a file)."""
    with _MEMORY_LOCK:
        _MEMORY.clear()


def identity(model_name: str, model, quantization: str, device: str, packed: bool = False) -> dict:
    """What the reference's values depend on besides the tokens: the model, its loaded precision, quantization,
    device type, attention kernel (the weights are the model as loaded: the adapters are off) and, where the pairs'
    prompts are read once (:mod:`wow.align.shared_prompts`: other rounding), that layout."""
    return {
        "engine": "trl-reference",
        "model": model_name,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "quantization": quantization,
        "device": str(device).split(":")[0],
        "attention": getattr(model.config, "_attn_implementation", None),
        **({"layout": "shared_prompts"} if packed else {}),
    }


def sequence_keys(inputs: dict) -> list[str]:
    """One key per row of a collated DPO batch: the sha256 of its real tokens and answer-token mask."""
    ids, attention, answer = (inputs[k].detach().cpu() for k in ("input_ids", "attention_mask", "completion_mask"))
    keys = []
    for row in range(ids.shape[0]):
        real = attention[row].bool()
        tokens = ",".join(map(str, ids[row][real].tolist()))
        mask = "".join(map(str, answer[row][real].tolist()))
        keys.append(hashlib.sha256(f"{tokens}|{mask}".encode()).hexdigest())
    return keys


def can_share(trl_trainer) -> bool:
    """True for a DPO-family TRL trainer whose reference is fixed and per sequence: it has TRL's
    ``compute_ref_log_probs``, no length-desensitised weighting (``ld_alpha``, whose value depends on the pair), no
    precompute of its own, one process, no DeepSpeed or FSDP sharding, and float32 (in bfloat16 or float16 a value
    depends on its batch and thread count: see the module docstring)."""
    return (
        hasattr(trl_trainer, "compute_ref_log_probs")
        and not (getattr(trl_trainer.args, "bf16", False) or getattr(trl_trainer.args, "fp16", False))
        and getattr(trl_trainer, "ld_alpha", None) is None
        and not getattr(trl_trainer, "precompute_ref_logps", False)
        and not getattr(trl_trainer.args, "sync_ref_model", False)
        and trl_trainer.args.world_size == 1
        and not trl_trainer.is_deepspeed_enabled
        and not trl_trainer.is_fsdp_enabled
    )


def share(trl_trainer, store: ReferenceLogps, ref_identity: dict) -> bool:
    """Make ``trl_trainer`` read the reference's values from ``store`` (computing and storing those it lacks).

    Wraps the trainer's ``_prepare_inputs`` (every training and validation batch passes there, on the trainer's
    device) and sets its ``precompute_ref_logps`` so that TRL's loss reads the batch's ``ref_chosen_logps`` and
    ``ref_rejected_logps`` instead of running the reference. Returns False, changing nothing, where
    :func:`can_share` is False.
    """
    if not can_share(trl_trainer):
        return False
    import torch

    prepare = trl_trainer._prepare_inputs

    def prepare_with_reference(inputs):
        inputs = prepare(inputs)
        if "completion_mask" not in inputs or "ref_chosen_logps" in inputs:
            return inputs
        keys = sequence_keys(inputs)
        values = store.get_many(ref_identity, keys)
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            model = trl_trainer.ref_model or trl_trainer.model
            chosen, rejected = trl_trainer.compute_ref_log_probs(model, inputs)
            fresh = torch.cat([chosen, rejected]).float().cpu().tolist()
            new = {keys[i]: fresh[i] for i in missing}
            store.put_many(ref_identity, new)
            for i in missing:
                values[i] = fresh[i]
        store.computed += len(missing)
        store.reused += len(keys) - len(missing)
        ref = torch.tensor(values, dtype=torch.float32, device=inputs["input_ids"].device)
        inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = ref.chunk(2)
        return inputs

    trl_trainer._prepare_inputs = prepare_with_reference
    trl_trainer.precompute_ref_logps = True  # TRL's loss now reads the batch's reference values
    return True


def for_training(
    trl_trainer, model_name: str, model, config, device: str, packed: bool = False
) -> ReferenceLogps | None:
    """The store a training's trainer reads (:func:`share`, at ``config.reference_cache`` or in memory), or None where
    TRL computes the reference itself: ``precompute_ref_log_probs`` off, or a trainer that cannot share
    (:func:`can_share`: TRL's own precompute on, no reference, several processes...)."""
    if not config.precompute_ref_log_probs or not can_share(trl_trainer):
        if config.precompute_ref_log_probs and (trl_trainer.args.bf16 or trl_trainer.args.fp16):
            log.info("the reference's log-probabilities computed per batch: in reduced precision they are not shared")
        return None
    store = ReferenceLogps(config.reference_cache)
    share(trl_trainer, store, identity(model_name, model, config.quantization, device, packed))
    return store


def train_log_entry(store: ReferenceLogps | None) -> dict:
    """``train_log.json``'s ``reference_logps`` of a training that read ``store`` (None: TRL computed the reference
    itself): ``shared``, and the sequences ``computed`` and ``reused``. Closes the store (its training is over)."""
    if store is None:
        return {"shared": False, "computed": None, "reused": None}
    store.close()
    return {"shared": True, **store.stats()}
