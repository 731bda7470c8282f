"""The decoding loop's token choice: the two-level inverse-CDF walk and the sampled frequencies."""

import math

import pytest
import torch
from wow.backends.base import ChatRequest
from wow.backends.local import token_choice


def _full_walk(weights, u):
    """The reference: search the whole vocabulary's cumulative sum for ``u`` times the total."""
    cdf = weights.cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1:]).contiguous(), right=True)[:, 0].clamp_max(cdf.shape[-1] - 1)


@pytest.mark.parametrize(
    "u, token",
    [(0.0, 0), (0.24, 0), (0.25, 2), (0.5, 2), (0.74, 2), (0.75, 3), (0.99, 3)],
)
def test_the_walk_picks_the_token_whose_cdf_interval_holds_u_by_hand(monkeypatch, u, token):
    # weights 1, 0, 2, 1 (total 4) in blocks of 2: the CDF 1, 1, 3, 4; u * 4 = 1.0 lands past token 0 and skips the
    # zero-weight token 1; the second block's start (1) must be added to its inner sums
    monkeypatch.setattr(token_choice, "CDF_BLOCK", 2)
    weights = torch.tensor([[1.0, 0.0, 2.0, 1.0]], dtype=torch.float64)
    assert token_choice._inverse_cdf(weights, torch.tensor([[u]], dtype=torch.float64)).tolist() == [token]


def test_the_walk_pads_a_vocabulary_that_is_not_a_whole_number_of_blocks(monkeypatch):
    monkeypatch.setattr(token_choice, "CDF_BLOCK", 2)
    weights = torch.tensor([[0.0, 0.0, 0.0, 0.0, 5.0], [2.0, 0.0, 0.0, 0.0, 2.0]], dtype=torch.float64)
    u = torch.tensor([[0.7], [0.6]], dtype=torch.float64)
    assert token_choice._inverse_cdf(weights, u).tolist() == [4, 4]


def test_the_walk_agrees_with_a_search_of_the_whole_cumulative_sum():
    gen = torch.Generator().manual_seed(0)
    for vocab in (49152, 1000, 300):  # the offline model's vocabulary, and two that blocks do not divide
        logits = torch.randn(16, vocab, generator=gen, dtype=torch.float64) * 4
        logits[:4, ::3] = -math.inf  # rows with many zero weights
        weights = (logits - logits.amax(-1, keepdim=True)).exp()
        for _ in range(20):
            u = torch.rand(16, 1, generator=gen, dtype=torch.float64)
            assert token_choice._inverse_cdf(weights, u).tolist() == _full_walk(weights, u).tolist()


def _request(temperature=1.0, top_p=1.0):
    return ChatRequest(messages=[{"role": "user", "content": "x"}], temperature=temperature, top_p=top_p)


def _frequencies(logits_row, request, draws=6000):
    generator = torch.Generator().manual_seed(1)
    counts = torch.zeros(logits_row.shape[-1])
    for _ in range(draws):
        chosen, _ = token_choice.choose(logits_row[None], [request], [generator], [False], [0])
        counts[int(chosen[0])] += 1
    return counts / draws


@pytest.mark.parametrize(
    "temperature, top_p, expected",
    [
        (1.0, 1.0, [0.5, 0.3, 0.2]),
        (0.5, 1.0, [25 / 38, 9 / 38, 4 / 38]),  # p ** 2 normalised
        (1.0, 0.7, [0.5 / 0.8, 0.3 / 0.8, 0.0]),  # the nucleus: 0.5 + 0.3 is the smallest prefix reaching 0.7
    ],
)
def test_sampled_tokens_follow_the_distribution(temperature, top_p, expected):
    vocab = 700  # three blocks of 256: the likely tokens sit in the first, second and third
    logits = torch.full((vocab,), -math.inf)
    logits[[5, 300, 699]] = torch.tensor([0.5, 0.3, 0.2]).log()
    freq = _frequencies(logits, _request(temperature, top_p))
    for token, p in zip((5, 300, 699), expected, strict=True):
        assert abs(float(freq[token]) - p) <= 4 * math.sqrt(max(p * (1 - p), 1e-9) / 6000) + 1e-9
    assert float(freq.sum() - freq[[5, 300, 699]].sum()) == 0.0


def test_a_rows_token_does_not_depend_on_its_batch():
    logits = torch.randn(5, 49152, generator=torch.Generator().manual_seed(2)) * 3
    requests = [_request(), _request(0.7), _request(0.0), _request(1.0, 0.9), _request()]

    def generators():
        return [torch.Generator().manual_seed(10 + j) for j in range(5)]

    together, lps = token_choice.choose(logits, requests, generators(), [False] * 5, list(range(5)))
    gens = generators()
    for j in range(5):
        alone, lp = token_choice.choose(logits[j : j + 1], [requests[j]], [gens[j]], [False], [0])
        assert int(alone[0]) == int(together[j])
        assert lp[0] == pytest.approx(lps[j], abs=1e-6)
    assert int(together[2]) == int(logits[2].argmax())  # temperature 0: greedy
    assert lps[0] == pytest.approx(float(torch.log_softmax(logits[0], -1)[together[0]]), abs=1e-6)
