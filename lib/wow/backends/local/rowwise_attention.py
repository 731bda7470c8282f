"""An attention implementation whose result for one sequence never depends on the rest of the batch.

PyTorch's CPU flash-attention kernel rounds a row differently depending on its place in the batch, and its math
kernel is slow in bf16 (measured: 1.6 ms vs 0.3 ms for one decoding step of 16 rows). This one is plain batched
matrix products (every (sequence, head) pair is its own small matrix product), a float32 softmax and grouped-query
attention by reshaping (no copy of the keys and values). Masked scores get the most negative float32 instead of
-inf, so a row with nothing to attend to (a left pad) stays finite and cannot spread NaNs.

While the transformers engine decodes with fixed shapes, :class:`GroupedKV` takes over: rows of different padded
prompt lengths share a decoding batch, each group of one length keeps its keys and values in preallocated float32
buffers (keys transposed), and attention runs in float32, :data:`CHUNK` rows at a time over the group's own length
(profiled: the bf16 products over a growing ``torch.cat`` cache and per-length part-filled batches were most of
the decoding time). :data:`active` is a process-wide switch: one engine decodes at a time per process.

Registered with transformers as :data:`NAME`; the transformers engine switches a loaded model to it with
``model.set_attn_implementation(NAME)`` (see :func:`register`).
"""

from __future__ import annotations

NAME = "wow_rowwise"
_registered = False
#: Rows per attention chunk of :class:`GroupedKV` (every chunk's matrix products have this many rows).
CHUNK = 8
#: The :class:`GroupedKV` of the decoding pass in progress (set by the transformers engine), or None.
active = None


def rowwise_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention for transformers' ``AttentionInterface``.

    Args:
        module: the attention module (unused).
        query: ``(batch, heads, q_len, dim)``.
        key: ``(batch, kv_heads, kv_len, dim)``.
        value: ``(batch, kv_heads, kv_len, dim)``.
        attention_mask: boolean ``(batch, 1, q_len, kv_len)`` (True = attend), or None (causal).
        scaling: score scale (default ``dim ** -0.5``).
        dropout: must be 0 (inference only).

    Returns:
        ``(output (batch, q_len, heads, dim), None)``.
    """

    if dropout:
        raise ValueError("wow_rowwise attention is for inference only (dropout must be 0).")
    if active is not None:
        return active.attend(module.layer_idx, query, scaling), None
    return _attend(query, key, value, attention_mask, scaling)


def _attend(query, key, value, attention_mask, scaling):
    import torch

    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    rep = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    grouped = query.reshape(batch, kv_heads, rep * q_len, dim)
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float().mul_(scale).view(batch, kv_heads, rep, q_len, kv_len)
    if attention_mask is None:
        if q_len > 1:
            offset = kv_len - q_len
            keep = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(diagonal=offset)
            scores = scores.masked_fill(~keep, torch.finfo(torch.float32).min)
    else:
        mask = attention_mask[..., :kv_len]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask[:, :, None], torch.finfo(torch.float32).min)
        else:
            scores = scores + mask[:, :, None].float()
    probs = torch.softmax(scores, dim=-1).to(value.dtype).view(batch, kv_heads, rep * q_len, kv_len)
    out = torch.matmul(probs, value).view(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


class GroupedKV:
    """Keys and values of a decoding batch whose rows may have different padded prompt lengths.

    The rows of one group (one padded prompt length ``p`` and one token budget) are contiguous in the batch and own
    float32 buffers of ``p + budget`` positions (its rows rounded up to :data:`CHUNK` with zero rows; keys stored
    transposed, so the score product reads them in place), and attention runs in float32. A decoding step
    writes each group's new keys and values in place (no concatenation) and attends over the group's filled
    positions, :data:`CHUNK` rows at a time: every matrix product, mask and softmax a row goes through has the
    shape ``(CHUNK, heads, 1, p + step)`` and the strides of its own buffer, whatever the rest of the batch holds,
    so a row's result never depends on its batch. Rows outside every group (filler) get a zero attention output.

    Args:
        n_rows: rows of the batch.
        groups: ``(start, end, keys, values, mask, filled)`` per group: rows ``start:end`` of the batch; per layer
            float32 buffers of transposed keys ``(rows rounded up to CHUNK, kv_heads, dim, capacity)`` and of values
            ``(rows rounded up, kv_heads, capacity, dim)``; a boolean mask
            ``(rows rounded up, capacity)`` (True = attend); positions already filled.
    """

    def __init__(self, n_rows: int, groups: list[tuple]):
        self.n_rows = n_rows
        self.groups = [list(g) for g in groups]

    def write(self, layer: int, key, value) -> None:
        """Store a step's keys and values ``(n_rows, kv_heads, 1, dim)`` at each group's next position."""
        for start, end, keys, values, _mask, filled in self.groups:
            if filled < values[layer].shape[2]:  # a group whose budget is spent only waits for the batch to end
                keys[layer][: end - start, :, :, filled] = key[start:end, :, 0]
                values[layer][: end - start, :, filled] = value[start:end, :, 0]

    def advance(self) -> None:
        """Move every group to its next position (after a whole forward step)."""
        for g in self.groups:
            g[5] += 1

    def attend(self, layer: int, query, scaling):
        """Attention output ``(n_rows, 1, heads, dim)`` of one decoding step's queries ``(n_rows, heads, 1, dim)``."""
        import torch

        out = query.new_zeros((self.n_rows, 1, query.shape[1], query.shape[3]))
        for start, end, keys, values, mask, filled in self.groups:
            if filled >= values[layer].shape[2]:
                continue
            n = end - start
            rounded = keys[layer].shape[0]
            q = query[start:end].float()
            if rounded > n:
                q = torch.cat([q, q.new_zeros((rounded - n, *q.shape[1:]))])
            width = filled + 1
            for c in range(0, n, CHUNK):
                o = _attend_transposed(
                    q[c : c + CHUNK],
                    keys[layer][c : c + CHUNK, :, :, :width],
                    values[layer][c : c + CHUNK, :, :width],
                    mask[c : c + CHUNK, None, None, :width],
                    scaling,
                )
                take = min(CHUNK, n - c)
                out[start + c : start + c + take] = o[:take]
        return out


def _attend_transposed(query, keys_t, value, mask, scaling):
    """Float32 attention of one decoding step: ``query (rows, heads, 1, dim)``, ``keys_t (rows, kv_heads, dim,
    kv_len)`` (keys stored transposed: the score product reads them as they lie), ``value (rows, kv_heads, kv_len,
    dim)``, boolean ``mask (rows, 1, 1, kv_len)``; returns ``(rows, 1, heads, dim)`` in float32."""
    import torch

    rows, heads, q_len, dim = query.shape
    kv_heads, kv_len = keys_t.shape[1], keys_t.shape[3]
    rep = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    scores = torch.matmul(query.reshape(rows, kv_heads, rep * q_len, dim), keys_t).mul_(scale)
    scores = scores.view(rows, kv_heads, rep, q_len, kv_len).masked_fill_(
        ~mask[:, :, None], torch.finfo(torch.float32).min
    )
    probs = torch.softmax(scores, dim=-1).view(rows, kv_heads, rep * q_len, kv_len)
    return torch.matmul(probs, value).view(rows, heads, q_len, dim).transpose(1, 2)


def _boolean_mask(*args, **kwargs):
    """transformers' SDPA mask, never skipped in favour of ``is_causal`` (this attention wants a mask).

    None while a :class:`GroupedKV` decodes (it keeps its own masks).
    """
    from transformers.masking_utils import sdpa_mask

    if active is not None:
        return None

    kwargs["allow_is_causal_skip"] = False
    kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


def register() -> str:
    """Register the attention and its mask with transformers (once per process); returns :data:`NAME`."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, rowwise_attention)
        AttentionMaskInterface.register(NAME, _boolean_mask)
        _registered = True
    return NAME
