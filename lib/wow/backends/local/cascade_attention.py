"""Decoding attention that reads each shared prompt prefix once for all the rows that share it (cascade attention).

The N samples of a question decode side by side, and after the shared-prefix pass every row's cache holds its own
copy of the question's keys and values: at each step, each row's attention reads the same prefix again, N times per
question, from memory (30 layers' caches do not stay in the processor's caches). Here the batch's rows are grouped by
the longest prompt prefix they share with another row (the deepest node of the prompts' radix tree with two rows or
more below it, :func:`wow.backends.local.prefix_pass.radix_tree`); the group's prefix keys and values are kept once
(:class:`SharedPrefix`) and the rows' caches keep only the rest of their prompt and what they generate. A step's
attention is then two passes of PyTorch's CPU flash-attention kernel, which also returns each query's log-sum-exp:
the group's queries over its prefix, each row's queries over its own part, merged exactly (softmax over the union of
the two key sets). The result is the attention over the row's whole cache up to rounding; a row still attends to
exactly the keys it did.

Used by the fused decoding step (:class:`wow.backends.local.decode_step.FusedDecodeStep`) in the default mode over
plain key/value caches; the batch-invariant mode (``fixed_shapes``) keeps its own layout.
"""

from __future__ import annotations

import functools
from collections import defaultdict

from wow.backends.local.prefix_pass import radix_tree


@functools.cache
def available() -> bool:
    """Whether this PyTorch build has the CPU flash-attention kernel that returns the log-sum-exp."""
    import torch

    return hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


def shared_lengths(prompts: list[list[int]]) -> list[int]:
    """Per row, the length of the longest prefix of its prompt (all tokens but the last) it shares with at least one
    other row along the prompts' radix tree (0: none)."""
    distinct: dict[tuple, list[int]] = defaultdict(list)
    for r, p in enumerate(prompts):
        distinct[tuple(p[:-1])].append(r)
    keys = list(distinct)
    root = radix_tree([list(k) for k in keys])
    out = [0] * len(prompts)

    def walk(node, depth: int) -> list[int]:  # the rows below node; sets out[r] at the deepest shared node
        rows = [r for i in node.ends for r in distinct[keys[i]]]
        for child in node.children:
            rows += walk(child, depth + len(child.tokens))
        if len(rows) >= 2:
            for r in rows:
                out[r] = max(out[r], depth)
        return rows

    walk(root, 0)
    return out


class SharedPrefix:
    """The shared prefixes' keys and values of a decoding batch (one copy per group) and the rows' groups.

    Built by :func:`split`; :meth:`select` follows the rows that stay in the batch; :meth:`attend` is one layer's
    attention of a step.
    """

    def __init__(self, layers: list, bias, group: list[int]):
        self.layers = layers  # per layer (keys, values) [groups, kv_heads, width, dim]
        self.bias = bias  # [groups, width]: 0 where a group's prefix has a key, -inf in its padding
        self.select_rows(group)

    def select_rows(self, group: list[int]) -> None:
        """Set the groups of the batch's rows (in row order) and the query slots they take in their group."""
        import torch

        self.group = group
        count: dict[int, int] = defaultdict(int)
        slot = []
        for g in group:
            slot.append(count[g])
            count[g] += 1
        self.width = max(count.values())
        device = self.bias.device
        self.group_index = torch.tensor(group, device=device)
        self.slot_index = torch.tensor(slot, device=device)
        self._bias = None  # the prefix bias for the queries' layout, built by the first layer of the next step

    def select(self, rows) -> None:
        """Keep the rows ``rows`` (indices into the current batch, in their new order)."""
        self.select_rows([self.group[int(r)] for r in rows])

    def attend(self, index: int, q, keys, values, suffix_bias, scale: float):
        """Attention of queries ``q`` (``[rows, kv_heads, groups, dim]``) over the row's group prefix of layer
        ``index`` and over its own ``keys``/``values`` under ``suffix_bias`` (additive, ``[rows, 1, 1, width]``)."""
        import torch

        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        rows, heads, per, dim = q.shape
        n_groups, width = self.bias.shape[0], self.width
        at = (self.group_index, slice(None), self.slot_index)  # a row's queries in its group's query block
        grouped = q.new_zeros((n_groups, heads, width, per, dim))
        grouped[at] = q
        if self._bias is None or self._bias.dtype != q.dtype:
            self._bias = self.bias.to(q.dtype)[:, None, None, :].expand(n_groups, 1, width * per, self.bias.shape[1])
        prefix_keys, prefix_values = self.layers[index]
        out1, lse1 = flash(
            grouped.view(n_groups, heads, width * per, dim),
            prefix_keys,
            prefix_values,
            attn_mask=self._bias,
            scale=scale,
        )
        out1 = out1.view(n_groups, heads, width, per, dim)[at]
        lse1 = lse1.view(n_groups, heads, width, per)[at]
        out2, lse2 = flash(
            q.contiguous(), keys, values, attn_mask=suffix_bias.expand(rows, 1, per, keys.shape[2]), scale=scale
        )
        weight = torch.sigmoid(lse1 - lse2)[..., None]  # the prefix's share of the row's softmax mass
        return torch.lerp(out2.float(), out1.float(), weight).to(q.dtype)


#: Cascade attention on (a switch for benchmarks and tests; the results are the same up to rounding).
ENABLED = True


def split(cache, mask, prompts: list[list[int]], step=None):
    """Move the prefixes that rows share out of ``cache`` (rows in ``prompts``' order, plain key/value layers,
    ``mask`` ``[rows, width]`` 1 where a row has a key, in prompt order) for the fused decoding step ``step``.
    Returns ``(SharedPrefix, mask)``, the new mask being that of the rows' own parts, right-aligned; or ``(None,
    mask)``, the cache untouched, when there is no fused step, no two rows share a prefix or cascades are off."""
    import torch

    if step is None or not ENABLED or not available():
        return None, mask
    shared = shared_lengths(prompts)
    real = mask.bool()
    n = real.sum(-1)
    if max(shared, default=0) == 0 or int(n.min()) < 2:  # nothing shared, or a row with no key before its last
        return None, mask
    width = mask.shape[1]
    order = torch.sort(real.to(torch.int8), dim=-1, stable=True).indices  # holes first, then the keys in order
    # a group per distinct shared prefix; a row sharing nothing keeps all but its last key as a prefix of its own
    lengths = [p if p else int(n[r]) - 1 for r, p in enumerate(shared)]
    key_of = {}
    group = []
    for r, p in enumerate(lengths):
        key = tuple(prompts[r][:p]) if shared[r] else ("row", r)
        group.append(key_of.setdefault(key, len(key_of)))
    first_row = {g: group.index(g) for g in range(len(key_of))}
    prefix_width = max(max(lengths), 1)
    prefix_index = torch.zeros((len(key_of), prefix_width), dtype=torch.long)
    bias = torch.full((len(key_of), prefix_width), float("-inf"))
    for g, r in first_row.items():
        p, start = lengths[r], width - int(n[r])
        if p:
            prefix_index[g, prefix_width - p :] = order[r, start : start + p]
            bias[g, prefix_width - p :] = 0.0
    own = [int(n[r]) - lengths[r] for r in range(len(prompts))]
    own_width = max(own)
    own_index = torch.zeros((len(prompts), own_width), dtype=torch.long)
    own_mask = torch.zeros((len(prompts), own_width), dtype=mask.dtype)
    for r, k in enumerate(own):
        own_index[r, own_width - k :] = order[r, width - k :]
        own_mask[r, own_width - k :] = 1
    reps = torch.tensor([first_row[g] for g in range(len(key_of))])
    layers = []
    for layer in cache.layers:
        b, h, _, d = layer.keys.shape
        device = layer.keys.device
        idx = prefix_index.to(device)[:, None, :, None].expand(len(key_of), h, prefix_width, d)
        rep = reps.to(device)
        layers.append((layer.keys[rep].gather(2, idx), layer.values[rep].gather(2, idx)))
        idx = own_index.to(device)[:, None, :, None].expand(b, h, own_width, d)
        layer.keys, layer.values = layer.keys.gather(2, idx), layer.values.gather(2, idx)
    return SharedPrefix(layers, bias.to(cache.layers[0].keys.device), group), own_mask.to(mask.device)
