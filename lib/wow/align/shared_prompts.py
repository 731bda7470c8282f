"""A preference pair's prompt read once per pass: TRL's DPO-family batches computed with both answers behind one copy.

TRL 1.16's DPO-style trainers (``dpo``, ``ipo``, ``rso``, ``sppo``, ``rpo``: ``trl.DPOTrainer``) read a batch of B pairs
as 2B right-padded rows, the chosen answers first (row i: prompt i + chosen answer i) and the rejected answers after
(row B + i: prompt i + rejected answer i), and every training step reads them twice (the policy, and the reference
unless its values are shared). The two rows of a pair repeat their prompt, and in the paper's tasks the prompt is
most of a pair's tokens (a shortest-path pair of the demo: ~230 prompt tokens, ~10-60 per answer), so about half of
each forward and backward pass computes a prompt a second time.

:func:`share_prompts` wraps the forward TRL's fused LM head gave the model (``trl.trainer.utils.add_fused_lm_head``).
A call with TRL's pair layout is computed as B packed rows, one per pair::

    prompt[:-1] | prompt[-1] + chosen answer | prompt[-1] + rejected answer

Position ids restart at the prompt's last token for each answer (both continue the prompt), and a 4-D attention mask
lets each answer see the prompt and itself, never the other answer. The prompt's last token is read once before each
answer: it is where the answer's first token is predicted, and a position carries one label. Every labelled position
so has the inputs, positions and visible keys it has in TRL's layout, and its log-probability (with the entropy, mean
logit and top-1 flag TRL logs) is TRL's up to floating-point rounding: the attention sums the same terms over another
layout. The per-token values are scattered back into TRL's ``[2B, T - 1]`` layout, so TRL's loss, its metrics, the
shared reference values (:mod:`wow.align.reference_logps`) and the gradients go through TRL's code as before.
Measured (``bench/bench_dpo.py``, the demo's 2 pairs a step, 2 CPU cores): 1.9x faster steps in float32, 1.55x in
bfloat16 on AMX (where autocast's per-pass casts of the frozen weights do not shrink with the tokens).

A call that is not a pair batch (odd rows, a pair whose rows do not share their prompt, answer tokens not at the end
of a row, left padding, given position ids or embeddings, an attention kernel other than SDPA or eager) runs
TRL's forward unchanged. CPO, SimPO and ORPO (``trl.experimental``, no fused head) are not wrapped.
``shared_prompts: false`` (a run parameter; :class:`wow.align.align_config.AlignConfig`) trains with TRL's layout.

Example::

    share_prompts(trl_trainer)      # after the trainer is built (it adds the fused head)
    trl_trainer.train()
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: The per-token fields of TRL's ``FusedCausalLMOutput`` that are scattered back into TRL's layout.
PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
#: Attention kernels that read a 4-D mask as given: SDPA a boolean one, eager an additive one.
KERNELS = ("sdpa", "eager")


@dataclass
class Packed:
    """B packed rows of a batch of B pairs, and where their per-token outputs go in TRL's layout.

    Attributes:
        input_ids, position_ids: ``[B, N]``.
        allowed: ``[B, 1, N, N]`` boolean, True where a query position may attend to a key position.
        shift_labels: ``[B, N]``, the token each position predicts (-100: none).
        source: ``[2B, T - 1]`` flat indices into the packed per-token values with one zero appended
            (``B * N`` picks the zero), giving TRL's layout.
    """

    input_ids: object
    position_ids: object
    allowed: object
    shift_labels: object
    source: object


def pack(input_ids, attention_mask, labels, pad_id: int = 0) -> Packed | None:
    """The packed rows of a TRL pair batch (see the module docstring), or None where the batch is not one.

    Args:
        input_ids: ``[2B, T]``, rows i and B + i a pair's chosen and rejected sequences, right-padded.
        attention_mask: ``[2B, T]``, 1 on the real tokens.
        labels: ``[2B, T]``, the answer tokens (a row's last tokens) and -100 elsewhere.
        pad_id: the token of the packed rows' padding.
    """
    import torch

    rows, width = input_ids.shape
    if rows == 0 or rows % 2 or attention_mask is None or attention_mask.dim() != 2 or labels.shape != input_ids.shape:
        return None
    pairs = rows // 2
    real = attention_mask.bool().cpu()
    lengths = real.sum(-1)
    positions = torch.arange(width)
    if not torch.equal(real, positions[None, :] < lengths[:, None]):  # right padding only
        return None
    labelled = (labels != -100).cpu()
    # a row's prompt: the tokens before its first label (every real token when it has none)
    firsts = torch.where(labelled.any(-1), labelled.int().argmax(-1), lengths)
    answer_span = (positions[None, :] >= firsts[:, None]) & (positions[None, :] < lengths[:, None])
    if not torch.equal(labelled, answer_span):  # the answer is the end of the row, all of it labelled
        return None
    ids = input_ids.cpu()
    chunks = []
    for i in range(pairs):
        c, r = i, pairs + i
        prompt = int(firsts[c])
        if prompt < 1 or int(firsts[r]) != prompt or not torch.equal(ids[c, :prompt], ids[r, :prompt]):
            return None
        chunks.append((prompt, int(lengths[c]), int(lengths[r])))
    n = max(lc + lr - p + 1 for p, lc, lr in chunks)
    packed_ids = torch.full((pairs, n), pad_id, dtype=ids.dtype)
    packed_pos = torch.zeros((pairs, n), dtype=torch.long)
    shift = torch.full((pairs, n), -100, dtype=ids.dtype)
    segment = torch.zeros((pairs, n), dtype=torch.long)  # 0 padding, 1 prompt, 2 chosen, 3 rejected
    source = torch.full((rows, width - 1), pairs * n, dtype=torch.long)
    for i, (p, lc, lr) in enumerate(chunks):
        c, r = i, pairs + i
        second = lc  # where the rejected answer's copy of the prompt's last token sits
        total = lc + lr - p + 1
        packed_ids[i, :lc] = ids[c, :lc]
        packed_ids[i, second:total] = ids[r, p - 1 : lr]
        packed_pos[i, :lc] = torch.arange(lc)
        packed_pos[i, second:total] = torch.arange(p - 1, lr)
        segment[i, : p - 1], segment[i, p - 1 : lc], segment[i, second:total] = 1, 2, 3
        shift[i, p - 1 : lc - 1] = ids[c, p:lc]
        shift[i, second : total - 1] = ids[r, p:lr]
        # TRL's per-token output t predicts token t + 1 of a row
        source[c, p - 1 : lc - 1] = i * n + torch.arange(p - 1, lc - 1)
        source[r, p - 1 : lr - 1] = i * n + torch.arange(second, total - 1)
    causal = torch.ones((n, n), dtype=torch.bool).tril()
    query, key = segment[:, :, None], segment[:, None, :]
    allowed = causal & ~((query == 3) & (key == 2)) & (key != 0) & (query != 0)
    allowed |= torch.eye(n, dtype=torch.bool)  # padding attends to itself only (no row of the mask is empty)
    device = input_ids.device
    return Packed(
        packed_ids.to(device), packed_pos.to(device), allowed[:, None].to(device), shift.to(device), source.to(device)
    )


def unpack(values, packed: Packed):
    """Per-token values of the packed rows (``[B, N]``) in TRL's layout (``[2B, T - 1]``; 0 where no label)."""
    import torch

    return torch.cat([values.reshape(-1), values.new_zeros(1)])[packed.source]


def _mask_for(packed: Packed, kernel: str, dtype):
    """The packed rows' 4-D mask in the form ``kernel`` reads: boolean (SDPA) or additive (eager)."""
    import torch

    if kernel == "sdpa":
        return packed.allowed
    return torch.zeros(packed.allowed.shape, dtype=dtype, device=packed.allowed.device).masked_fill(
        ~packed.allowed, torch.finfo(dtype).min
    )


def share_prompts(trl_trainer) -> bool:
    """Make ``trl_trainer``'s model read each pair's prompt once per pass (see the module docstring).

    Returns False, changing nothing, for a trainer that is not a ``trl.DPOTrainer`` with TRL's fused LM head or
    whose model's attention kernel is not SDPA or eager.
    """
    import trl

    model = trl_trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    fused = vars(base).get("forward")  # add_fused_lm_head sets it on the instance
    kernel = getattr(base.config, "_attn_implementation", None)
    if not isinstance(trl_trainer, trl.DPOTrainer) or fused is None or getattr(fused, "shares_prompts", False):
        return False
    if kernel not in KERNELS:
        log.info("pairs read with TRL's layout: attention kernel %s reads no 4-D mask as given", kernel)
        return False
    pad_id = getattr(base.config, "pad_token_id", None) or 0  # masked everywhere: any token would do

    @functools.wraps(fused)
    def forward(*args, fused_lm_head=False, labels=None, shift_labels=None, **kwargs):
        plain = (
            not fused_lm_head
            or args
            or labels is None
            or shift_labels is not None
            or kwargs.get("position_ids") is not None
            or kwargs.get("inputs_embeds") is not None
            or kwargs.get("input_ids") is None
        )
        packed = None if plain else pack(kwargs["input_ids"], kwargs.get("attention_mask"), labels, pad_id)
        if packed is None:
            return fused(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels, **kwargs)
        num_items = kwargs.pop("num_items_in_batch", None)
        kwargs.update(
            input_ids=packed.input_ids,
            position_ids=packed.position_ids,
            attention_mask=_mask_for(packed, kernel, base.lm_head.weight.dtype),
        )
        out = fused(fused_lm_head=True, shift_labels=packed.shift_labels, **kwargs)
        fields = {f: None if getattr(out, f) is None else unpack(getattr(out, f), packed) for f in PER_TOKEN_FIELDS}
        label_mask = labels[:, 1:] != -100
        count = label_mask.sum().clamp(min=1) if num_items is None else num_items
        return type(out)(
            loss=-fields["log_probs"].sum() / count, label_mask=label_mask, aux_loss=out.aux_loss, **fields
        )

    forward.shares_prompts = True
    base.forward = forward
    return True
