"""The batch-invariant prompt pass (``TransformersEngine(fixed_shapes=True)``): every shape a row meets depends on
that row alone, so a given (messages, seed, sample_index) yields bitwise the same text and logprobs in any batch
composition (tested), at about half the default mode's speed.

Each prompt is left-padded to its own length rounded up to ``pad_multiple`` and read alone (identical prompts once);
decoding steps are always ``batch_size`` rows tall, a multiple of 8 (filler rows; finished rows stay until the
batch ends). On CPU, attention is :mod:`wow.backends.local.rowwise_attention` over per-group preallocated float32 buffers,
8 rows at a time: :func:`grouped_prompt_pass` makes the rows of one padded length and token budget a
:class:`~wow.backends.local.rowwise_attention.GroupedKV` group, :func:`grouped_forward` runs one decoding step of such a
batch. On other devices :func:`fixed_prompt_pass` stacks single-row caches of prompts of one padded length. A result
still depends on ``batch_size``, ``pad_multiple``, dtype, device and library versions; on GPU expect last-bit
differences between compositions (its attention kernels are left alone).
"""

from __future__ import annotations

from wow.backends.base import EngineError
from wow.backends.local import kv_buffers, rowwise_attention


def fixed_prompt_pass(engine, prompts: list[list[int]], ids, mask, positions):
    """The fixed-shapes prompt pass off CPU: each distinct prompt read alone but for its last token, the caches
    stacked and widened to ``batch_size`` rows (filler copies of the first row), the last tokens read as one
    ``batch_size``-row step. ``ids, mask, positions``: the batch left-padded to its one padded length."""
    import torch
    from transformers import DynamicCache

    rows = list(range(len(prompts))) + [0] * max(engine.batch_size - len(prompts), 0)
    sel = torch.tensor(rows, device=engine._device)
    ids, mask, positions = ids[sel], mask[sel], positions[sel]
    distinct: dict[tuple, int] = {}
    for r in range(len(prompts)):
        distinct.setdefault(tuple(prompts[r]), r)
    caches = {}
    for r in distinct.values():
        caches[r] = DynamicCache(config=engine._model.config)
        if ids.shape[1] > 1:
            engine._forward(ids[r : r + 1, :-1], mask[r : r + 1, :-1], positions[r : r + 1, :-1], caches[r])
    source = [distinct[tuple(prompts[r])] for r in rows]
    cache = kv_buffers.stack_caches([caches[r] for r in source]) if ids.shape[1] > 1 else caches[source[0]]
    return cache, mask, positions, engine._forward(ids[:, -1:], mask, positions[:, -1:], cache)


def grouped_prompt_pass(engine, prompts: list[list[int]], budgets: list[int]):
    """The fixed-shapes prompt pass on CPU: returns ``(GroupedKV, None, positions, next-token logits)``.

    Each distinct prompt (padded to its own length) is read alone but for its last token; the rows of one padded
    length and token budget (contiguous: see :meth:`_batches`) form a group of
    :class:`~wow.backends.local.rowwise_attention.GroupedKV` whose buffers hold the prompts' keys and values and room
    for ``budget`` more positions; the last prompt tokens are then read as a ``batch_size``-row decoding step.
    Rows beyond the prompts (filler) attend to nothing and are discarded.
    """
    import torch
    from transformers import DynamicCache

    chunk = rowwise_attention.CHUNK
    config = engine._model.config
    n_layers = config.num_hidden_layers
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    n_rows = max(engine.batch_size, len(prompts))
    keys = [(engine._padded_len(len(p)), max(int(b), 0)) for p, b in zip(prompts, budgets, strict=True)]
    read: dict[tuple, tuple] = {}  # distinct prompt -> (cache or None, ids, mask, positions)
    for p in prompts:
        if tuple(p) in read:
            continue
        ids, mask = engine._left_pad([p])
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = None
        if ids.shape[1] > 1:
            cache = DynamicCache(config=config)
            engine._forward(ids[:, :-1], mask[:, :-1], positions[:, :-1], cache)
        read[tuple(p)] = (cache, ids, mask, positions)
    groups, start = [], 0
    while start < len(prompts):
        end = start
        while end < len(prompts) and keys[end] == keys[start]:
            end += 1
        length, budget = keys[start]
        if keys[start] in [keys[i] for i in range(start)]:
            raise EngineError("internal: rows of one padded length are not contiguous in the batch.")
        rounded = -(-(end - start) // chunk) * chunk
        f32 = torch.float32
        k_bufs = [torch.zeros((rounded, kv_heads, dim, length + budget), dtype=f32) for _ in range(n_layers)]
        v_bufs = [torch.zeros((rounded, kv_heads, length + budget, dim), dtype=f32) for _ in range(n_layers)]
        g_mask = torch.zeros((rounded, length + budget), dtype=torch.bool, device=engine._device)
        for j, r in enumerate(range(start, end)):
            cache, _, mask, _ = read[tuple(prompts[r])]
            g_mask[j, :length] = mask[0].bool()
            g_mask[j, length:] = True
            if cache is not None:
                for layer in range(n_layers):
                    k_bufs[layer][j, :, :, : length - 1] = cache.layers[layer].keys[0].transpose(-1, -2)
                    v_bufs[layer][j, :, : length - 1] = cache.layers[layer].values[0]
        groups.append((start, end, k_bufs, v_bufs, g_mask, length - 1))
        start = end
    state = rowwise_attention.GroupedKV(n_rows, groups)
    state.cache = kv_buffers.write_through_cache(state, config)
    last = [read[tuple(p)][1][0, -1] for p in prompts]
    pos = [read[tuple(p)][3][0, -1] for p in prompts]
    ids = torch.stack(last + [last[0]] * (n_rows - len(prompts)))[:, None]
    positions = torch.stack(pos + [pos[0]] * (n_rows - len(prompts)))[:, None]
    return state, None, positions, grouped_forward(engine, ids, positions, state)


def grouped_forward(engine, ids, positions, state):
    """One decoding step of a :class:`~wow.backends.local.rowwise_attention.GroupedKV` batch (float32 logits)."""
    rowwise_attention.active = state
    try:
        logits = engine._forward(ids, None, positions, state.cache)
    finally:
        rowwise_attention.active = None
    state.advance()
    return logits
