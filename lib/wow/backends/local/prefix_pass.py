"""Reading a batch of prompts whose shared prefixes are computed once: a prompt pass down the prompts' radix tree.

The prompts of one stage repeat themselves: the N samples of a question share the whole prompt, every judge prompt
of a question repeats the question, and pairwise prompts with the same first answer repeat that answer too. Read
naively, a batch computes each of those tokens once per row. :func:`shared_prefix_pass` instead builds the radix
tree (compressed trie) of the batch's distinct prompts (all tokens but the last) and reads it level by level: each
edge of the tree (a segment of tokens shared by every prompt below it) is one row of its level's forward pass, on
top of its parent's keys and values; each prompt's cache is the concatenation of its path's segments (each level
left-padded to the level's widest segment, shorter paths padded with masked zeros that are never computed), and the
prompts' last tokens are read in a final step that gives the next-token logits. Identical prompts are read once and
their caches copied. Edges shorter than :data:`MIN_SHARED` tokens are pushed down into their children (a level
pass costs more than re-reading a few tokens).

The attention mask of a row then has holes (padding between segments) and its position ids are explicit, so the
result equals a plain left-padded pass up to floating-point rounding: on a fixed batch it is deterministic, and the
call cache decodes the same batches on a resumed run (:mod:`wow.backends.cache`). Only models whose cache layers are
plain key/value layers (Llama, Qwen, Mistral, SmolLM...) take this path; others are read by a plain batched pass.

Example::

    cache, mask, positions, logits, computed = shared_prefix_pass(forward, config, prompts, pad_id, device)
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: An edge shorter than this many tokens is not read on its own level (its tokens are re-read by each child).
MIN_SHARED = 16


@dataclass
class _Node:
    """An edge of the radix tree: its tokens, its children, and the prompts whose read part ends here."""

    tokens: list[int]
    children: list[_Node] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)


def radix_tree(sequences: list[list[int]], min_shared: int = MIN_SHARED) -> _Node:
    """The compressed trie of ``sequences`` (the root has no tokens); ``ends`` holds each sequence's index.

    An inner edge shorter than ``min_shared`` tokens is merged into its children (its tokens prepended to theirs),
    so every edge below the root that is read on its own level is either shared and long or a leaf.
    """

    def build(rows: list[int], depth: int) -> _Node:
        node = _Node(tokens=[])
        node.ends = [r for r in rows if len(sequences[r]) == depth]
        groups: dict[int, list[int]] = {}
        for r in rows:
            if len(sequences[r]) > depth:
                groups.setdefault(sequences[r][depth], []).append(r)
        for group in groups.values():
            end = depth + 1
            while all(len(sequences[r]) > end for r in group) and len({sequences[r][end] for r in group}) == 1:
                end += 1
            child = build(group, end)
            child.tokens = list(sequences[group[0]][depth:end])
            node.children.append(child)
        return node

    def merge_short(node: _Node) -> list[_Node]:
        """``node`` with short inner edges pushed down; returns what replaces it among its parent's children."""
        node.children = [k for child in node.children for k in merge_short(child)]
        if not node.children or len(node.tokens) >= min_shared:
            return [node]
        out = [_Node(node.tokens + k.tokens, k.children, k.ends) for k in node.children]
        if node.ends:
            out.append(_Node(list(node.tokens), [], node.ends))
        return out

    root = build(list(range(len(sequences))), 0)
    root.children = [k for child in root.children for k in merge_short(child)]
    return root


def shared_prefix_pass(forward, config, prompts: list[list[int]], pad_id: int, device):
    """Read ``prompts`` (token ids, at least one token each) sharing their common prefixes; see the module docs.

    Args:
        forward: ``forward(ids, mask, positions, cache) -> last-position logits`` (the engine's model call).
        config: the model's config (for a fresh ``DynamicCache``).
        prompts: the batch's prompts, in row order.
        pad_id: the padding token id.
        device: the model's device.

    Returns:
        ``(cache, mask, positions, logits, computed)``: a ``DynamicCache`` with one row per prompt, its 2-D
        attention mask, each row's last position (``[rows, 1]``), the next-token logits (float32) and the number of
        prompt tokens actually computed.
    """
    import torch
    from transformers import DynamicCache

    distinct: dict[tuple, int] = {}
    source = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
    root = radix_tree([list(p[:-1]) for p in distinct])
    ends_at = {r: None for r in root.ends}  # distinct prompt -> (level, node index) where its read part ends
    level_kv, masks, lengths, computed = [], [], [], 0
    nodes = [(child, -1) for child in root.children]  # (node, its parent's index on the level above)
    while nodes:
        depth = len(masks)
        width = max(len(n.tokens) for n, _ in nodes)
        ids = torch.full((len(nodes), width), pad_id, dtype=torch.long)
        seg = torch.zeros((len(nodes), width), dtype=torch.long)
        for i, (node, _) in enumerate(nodes):
            ids[i, width - len(node.tokens) :] = torch.tensor(node.tokens, dtype=torch.long)
            seg[i, width - len(node.tokens) :] = 1
            ends_at.update({r: (depth, i) for r in node.ends})
        computed += int(seg.sum())
        parents = torch.tensor([p for _, p in nodes], dtype=torch.long)
        base = lengths[-1][parents] if depth else torch.zeros(len(nodes), dtype=torch.long)
        mask = torch.cat([masks[-1][parents], seg], dim=1) if depth else seg
        positions = (base[:, None] + seg.cumsum(-1) - 1).clamp_min(0)
        cache = DynamicCache(config=config)
        if depth:
            idx = parents.to(device)
            for layer, (keys, values) in zip(cache.layers, level_kv[-1], strict=True):
                layer.update(keys[idx], values[idx])
        forward(ids.to(device), mask.to(device), positions.to(device), cache)
        level_kv.append([(layer.keys, layer.values) for layer in cache.layers])
        masks.append(mask)
        lengths.append(base + seg.sum(-1))
        nodes = [(child, i) for i, (node, _) in enumerate(nodes) for child in node.children]
    # each distinct prompt's cache: its end node's keys and values, zero-padded (masked) to the deepest level's width
    d, total = len(distinct), (masks[-1].shape[1] if masks else 0)
    row_mask = torch.zeros((d, total + 1), dtype=torch.long)
    row_mask[:, -1] = 1
    row_len = torch.zeros(d, dtype=torch.long)
    cache = DynamicCache(config=config)
    if level_kv:
        for layer_i, layer in enumerate(cache.layers):
            keys0, values0 = level_kv[-1][layer_i]
            keys = keys0.new_zeros((d, keys0.shape[1], total, keys0.shape[3]))
            values = values0.new_zeros((d, values0.shape[1], total, values0.shape[3]))
            for r, end in ends_at.items():
                if end is not None:
                    depth, i = end
                    k, v = level_kv[depth][layer_i]
                    keys[r, :, : k.shape[2]] = k[i]
                    values[r, :, : v.shape[2]] = v[i]
            layer.update(keys, values)
        for r, end in ends_at.items():
            if end is not None:
                depth, i = end
                row_mask[r, : masks[depth].shape[1]] = masks[depth][i]
                row_len[r] = lengths[depth][i]
    last = torch.tensor([p[-1] for p in distinct], dtype=torch.long)[:, None]
    positions = row_len[:, None]
    logits = forward(last.to(device), row_mask.to(device), positions.to(device), cache)
    computed += d
    if source != list(range(d)):
        rows = torch.tensor(source, dtype=torch.long, device=device)
        cache.batch_select_indices(rows)
        logits = logits[rows.to(logits.device)]
    rows = torch.tensor(source, dtype=torch.long)
    return cache, row_mask[rows].to(device), positions[rows].to(device), logits, computed
