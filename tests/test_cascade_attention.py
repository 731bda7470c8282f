"""Cascade attention (wow.backends.local.cascade_attention): each group's shared prompt read once per decoding step,
the attention over each row's whole cache up to rounding, and the engine's answers the same with and without it."""

import pytest
import torch
from wow.backends import ChatRequest
from wow.backends.local import cascade_attention
from wow.backends.local.transformers_engine import TransformersEngine


def test_shared_lengths_follow_the_radix_tree():
    """Identical prompts share all but their last token, two prompts their 30-token common start, a prompt alone
    nothing; a common start shorter than the tree's minimum edge (16 tokens) is not shared."""
    a = list(range(100, 140))
    b1, b2 = list(range(200, 230)) + list(range(1, 11)), list(range(200, 230)) + list(range(11, 21))
    c = list(range(300, 340))
    assert cascade_attention.shared_lengths([a, a, a, b1, b2, c]) == [39, 39, 39, 30, 30, 0]
    short1, short2 = [7, 8, 9, *range(400, 430)], [7, 8, 9, *range(500, 530)]
    assert cascade_attention.shared_lengths([short1, short2]) == [0, 0]


class _Layer:
    def __init__(self, keys, values):
        self.keys, self.values = keys, values


class _Cache:
    def __init__(self, layers):
        self.layers = layers


def _batch(rows_of, prefix_len, own_lens, width, heads=2, dim=8, n_layers=2, seed=0):
    """A cache whose rows of one group hold the same prefix keys and values (as the shared-prefix pass leaves them),
    each row its own keys after them, left padding and a hole in the middle of the prefix region masked."""
    gen = torch.Generator().manual_seed(seed)
    rows = len(own_lens)
    mask = torch.zeros((rows, width), dtype=torch.long)
    prompts, layers = [], []
    for _ in range(n_layers):
        layers.append(_Layer(torch.zeros((rows, heads, width, dim)), torch.zeros((rows, heads, width, dim))))
    for g, members in enumerate(rows_of):
        shared_k = [torch.randn((heads, prefix_len, dim), generator=gen) for _ in range(n_layers)]
        shared_v = [torch.randn((heads, prefix_len, dim), generator=gen) for _ in range(n_layers)]
        for r in members:
            n = prefix_len + own_lens[r]
            positions = list(range(width - n - 1, width - n - 1 + prefix_len // 2)) + list(
                range(width - n + prefix_len // 2, width)
            )  # a hole of one position inside the prefix region
            assert len(positions) == n
            mask[r, positions] = 1
            for layer, sk, sv in zip(layers, shared_k, shared_v, strict=True):
                layer.keys[r][:, positions[:prefix_len]] = sk
                layer.values[r][:, positions[:prefix_len]] = sv
                layer.keys[r][:, positions[prefix_len:]] = torch.randn((heads, own_lens[r], dim), generator=gen)
                layer.values[r][:, positions[prefix_len:]] = torch.randn((heads, own_lens[r], dim), generator=gen)
            prompts.append((r, [1000 + g] * prefix_len + list(range(2000 + 100 * r, 2000 + 100 * r + own_lens[r]))))
    prompts = [p for _, p in sorted(prompts)]
    return _Cache(layers), mask, prompts


def _full_attention(q, layer, mask, scale):
    keep = mask.bool()[:, None, None, :]
    return torch.nn.functional.scaled_dot_product_attention(q, layer.keys, layer.values, attn_mask=keep, scale=scale)


@pytest.mark.skipif(not cascade_attention.available(), reason="this PyTorch has no CPU flash kernel with log-sum-exp")
def test_attention_over_the_shared_prefix_and_the_rows_own_part_is_the_attention_over_each_whole_row():
    """Two groups (3 and 2 rows) sharing a 20-key prefix, one row alone, rows of different lengths, padding and a hole:
    per layer, the cascade's output equals SDPA over each row's whole cache (float32, 1e-5), after a step's keys are
    appended and again after rows leave the batch; the prefix is kept once per group."""
    own = [5, 9, 1, 12, 3, 7]
    cache, mask, prompts = _batch([[0, 1, 2], [3, 4], [5]], 20, own, width=48)
    full = _Cache([_Layer(layer.keys.clone(), layer.values.clone()) for layer in cache.layers])
    shared, own_mask = cascade_attention.split(cache, mask, prompts, step=object())
    assert shared is not None and shared.group == [0, 0, 0, 1, 1, 2]
    assert [tuple(k.shape) for k, _ in shared.layers] == [(3, 2, 20 + 7 - 1, 8)] * 2  # the longest: row 5's own
    assert own_mask.sum(-1).tolist() == [5, 9, 1, 12, 3, 1]  # a row alone keeps its last key only
    gen = torch.Generator().manual_seed(1)
    rows, scale = len(own), 0.3
    new_k = [torch.randn((rows, 2, 1, 8), generator=gen) for _ in cache.layers]
    new_v = [torch.randn((rows, 2, 1, 8), generator=gen) for _ in cache.layers]
    for layer, f, k, v in zip(cache.layers, full.layers, new_k, new_v, strict=True):  # a decoding step's keys
        layer.keys, layer.values = torch.cat([layer.keys, k], 2), torch.cat([layer.values, v], 2)
        f.keys, f.values = torch.cat([f.keys, k], 2), torch.cat([f.values, v], 2)
    own_mask = torch.cat([own_mask, own_mask.new_ones((rows, 1))], 1)
    mask = torch.cat([mask, mask.new_ones((rows, 1))], 1)
    q = torch.randn((rows, 2, 3, 8), generator=gen)  # 3 queries per key/value head (grouped-query attention)

    def check(q, mask, own_mask, selected):
        bias = torch.zeros(own_mask.shape).masked_fill(own_mask == 0, float("-inf"))[:, None, None, :]
        for i, (layer, f) in enumerate(zip(cache.layers, full.layers, strict=True)):
            got = shared.attend(i, q, layer.keys[selected], layer.values[selected], bias, scale)
            whole = _Layer(f.keys[selected], f.values[selected])
            assert torch.allclose(got, _full_attention(q, whole, mask, scale), atol=1e-5), i

    everyone = torch.arange(rows)
    check(q, mask, own_mask, everyone)
    stay = torch.tensor([4, 0, 5])  # rows leave; the group of 3 keeps one row, the order changes
    shared.select(stay)
    assert shared.group == [1, 0, 2]
    check(q[stay], mask[stay], own_mask[stay], stay)


def test_nothing_shared_or_no_fused_step_leaves_the_cache_alone():
    for groups, step in (([[0], [1]], object()), ([[0, 1]], None)):  # two rows alone; a shared prefix, no fused step
        cache, mask, prompts = _batch(groups, 20, [4, 6], width=40)
        before = [layer.keys.clone() for layer in cache.layers]
        assert cascade_attention.split(cache, mask, prompts, step=step) == (None, mask)
        assert all(torch.equal(a, layer.keys) for a, layer in zip(before, cache.layers, strict=True))


@pytest.mark.skipif(not cascade_attention.available(), reason="this PyTorch has no CPU flash kernel with log-sum-exp")
def test_the_engine_answers_the_same_with_and_without_the_cascade(monkeypatch):
    """The offline model in float32, two questions x 3 samples and their extraction-like turns (distinct prompts
    sharing the question), budgets that let rows leave the batch early: greedy answers are the same texts and every
    logprob agrees within 1e-4 with and without the cascade, and the cascade ran."""
    questions = ["In a graph with edges 0-1 weight 3 and 1-2 weight 4, what is the shortest path from 0 to 2?",
                 "Name three colors of the rainbow and say which one has the longest wavelength."]  # fmt: skip
    requests = [
        ChatRequest([{"role": "user", "content": q}], max_tokens=6 + 5 * k, temperature=0.0, logprobs=True)
        for q in questions
        for k in range(3)
    ]
    requests += [
        ChatRequest(
            [
                {"role": "user", "content": q},
                {"role": "assistant", "content": f"Answer {k}."},
                {"role": "user", "content": "State the final answer."},
            ],
            max_tokens=8,
            temperature=0.0,
            logprobs=True,
        )  # fmt: skip
        for q in questions
        for k in range(3)
    ]
    calls = []
    attend = cascade_attention.SharedPrefix.attend
    monkeypatch.setattr(cascade_attention.SharedPrefix, "attend", lambda self, *a: calls.append(1) or attend(self, *a))
    on = TransformersEngine(dtype="float32", batch_size=12).generate(requests)
    assert calls, "the cascade never ran"
    monkeypatch.setattr(cascade_attention, "ENABLED", False)
    calls.clear()
    off = TransformersEngine(dtype="float32", batch_size=12).generate(requests)
    assert not calls
    assert [c.text for c in on] == [c.text for c in off]
    assert [c.completion_tokens for c in on] == [c.completion_tokens for c in off]
    for x, y in zip(on, off, strict=True):
        assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-4)
