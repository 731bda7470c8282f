"""Key/value caches for the decoding loop of :mod:`wow.backends.local.transformers_engine`.

* :func:`compact`: the positions no row attends to (the holes the shared-prefix pass leaves) dropped, so decoding
  attention reads no padding;
* :func:`preallocate`: every layer of a ``DynamicCache`` gets buffers with room for the steps to come, written in
  place (no ``torch.cat`` per step);
* :func:`write_through_cache`: a cache whose layers hand each step's keys and values to a
  :class:`~wow.backends.local.rowwise_attention.GroupedKV` (the batch-invariant mode's per-group buffers);
* :func:`stack_caches`: one cache from single-row caches of one length.
"""

from __future__ import annotations

import functools

from wow.backends.base import EngineError


def compact(cache, mask):
    """Move each row's attended positions (``mask`` 1) to the right end of ``cache``, in order, and drop the
    positions no row needs; returns the new mask (``[rows, width]``, width = the most positions a row attends to).

    The shared-prefix pass pads every level of its tree to the level's widest segment, so a row's cache has holes
    (40% of the positions for the demo's batches of 4 questions x 10 samples); attention over them costs reads and
    gives nothing (their weight is 0). Position ids are explicit, so moving keys changes no position; attention
    then sums the same terms over fewer blocks, which may round differently in the last bits. Plain key/value layers
    only; a cache without holes is left as it is.
    """
    import torch

    real = mask.bool()
    width = int(real.sum(-1).max())
    if width == mask.shape[1]:
        return mask
    order = torch.sort(real.to(torch.int8), dim=-1, stable=True).indices[:, -width:]  # holes first, then positions
    for layer in cache.layers:
        b, h, _, d = layer.keys.shape
        index = order.to(layer.keys.device)[:, None, :, None].expand(b, h, width, d)
        layer.keys, layer.values = layer.keys.gather(2, index), layer.values.gather(2, index)
    return mask.gather(1, order)


def preallocate(cache, extra: int) -> None:
    """Give every layer of ``cache`` room for ``extra`` more positions, written in place (no ``torch.cat``/step).

    Each layer's keys and values move into buffers ``extra`` positions longer; :meth:`update` copies a step's keys
    and values in and hands attention views of the filled part, so attention sees exactly the shapes a growing
    cache would give it. The buffer's length is the row's prompt length plus its own ``max_tokens`` (a batch's rows
    share both with fixed shapes), so the views' strides depend on the row alone too.
    """
    from transformers.cache_utils import DynamicLayer

    for layer in cache.layers:
        if type(layer) is not DynamicLayer or not layer.is_initialized:
            continue
        b, h, n, d = layer.keys.shape
        kbuf = layer.keys.new_empty((b, h, n + extra, d))
        vbuf = layer.values.new_empty((b, h, n + extra, d))
        kbuf[:, :, :n] = layer.keys
        vbuf[:, :, :n] = layer.values
        kbuf[:, :, n:] = 0
        vbuf[:, :, n:] = 0
        layer.kbuf, layer.vbuf, layer.filled = kbuf, vbuf, n
        layer.keys, layer.values = kbuf[:, :, :n], vbuf[:, :, :n]
        layer.__class__ = _preallocated_class()


def _prealloc_update(self, key_states, value_states, *args, **kwargs):
    start, end = self.filled, self.filled + key_states.shape[-2]
    if end > self.kbuf.shape[-2]:
        raise EngineError("preallocated KV cache overflow (more steps than max_tokens).")
    self.kbuf[:, :, start:end] = key_states
    self.vbuf[:, :, start:end] = value_states
    self.filled = end
    self.keys, self.values = self.kbuf[:, :, :end], self.vbuf[:, :, :end]
    return self.keys, self.values


def _prealloc_select(self, indices) -> None:
    self.kbuf, self.vbuf = self.kbuf[indices], self.vbuf[indices]
    self.keys, self.values = self.kbuf[:, :, : self.filled], self.vbuf[:, :, : self.filled]


def write_through_cache(state, config):
    """A ``DynamicCache`` whose layers hand a step's keys and values to ``state`` (a ``GroupedKV``) and keep none."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    cls = _write_through_class()
    for i, layer in enumerate(cache.layers):
        layer.__class__ = cls
        layer.state, layer.index = state, i
        layer.keys = layer.values = torch.empty(0)
        layer.is_initialized = True
    return cache


def _write_through_update(self, key_states, value_states, *args, **kwargs):
    self.state.write(self.index, key_states, value_states)
    return key_states, value_states


@functools.cache
def _write_through_class():
    """A :class:`DynamicLayer` that writes into a ``GroupedKV`` (see :func:`write_through_cache`)."""
    from transformers.cache_utils import DynamicLayer

    return type("WriteThroughLayer", (DynamicLayer,), {"update": _write_through_update})


@functools.cache
def _preallocated_class():
    """A :class:`DynamicLayer` whose ``update`` writes into preallocated buffers (see :func:`preallocate`)."""
    from transformers.cache_utils import DynamicLayer

    return type(
        "PreallocatedLayer", (DynamicLayer,), {"update": _prealloc_update, "batch_select_indices": _prealloc_select}
    )


def stack_caches(caches: list):
    """One cache whose row i is row 0 of ``caches[i]`` (all of one length). Plain key/value layers only."""
    import torch
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    first = caches[0]
    for layer in first.layers:
        if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer):
            raise EngineError(
                f"cache layer {type(layer).__name__} cannot be stacked; use fixed_shapes=False for this model."
            )
    stacked = [
        (torch.cat([c.layers[i].keys for c in caches]), torch.cat([c.layers[i].values for c in caches]))
        for i in range(len(first.layers))
    ]
    for layer, (keys, values) in zip(first.layers, stacked, strict=True):
        layer.keys, layer.values = keys, values
    return first
