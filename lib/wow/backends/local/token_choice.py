"""Each row's next token in the decoding loop: chosen (greedy or inverse-CDF sampling, with its logprob), recorded,
and the finished text.

Each sampling row draws one uniform per step from its own generator (seeded per sample), so a sample's random
stream never depends on its batch; see :func:`choose`.
"""

from __future__ import annotations

from wow.backends.base import ChatRequest, EngineError


def choose(logits, requests: list[ChatRequest], generators: list, filler: list[bool], real: list[int]):
    """One token per row and the logprobs of the ``real`` rows' tokens (a list, in ``real``'s order).

    Greedy at temperature 0 (and for filler rows), else inverse-CDF sampling in float64: a sampling row draws
    exactly one uniform per step from its own generator and walks the CDF in vocabulary order (``top_p == 1``) or
    in descending probability over the nucleus (``top_p < 1``). Every row-wise computation (softmax, cumulative
    sum, search, argmax, log-softmax) runs on the subset of rows that needs it; a row's result never depends on
    the other rows of that subset, so its token never depends on its neighbours.
    """
    import torch

    device = logits.device
    sampled = [j for j, (r, f) in enumerate(zip(requests, filler, strict=True)) if not f and r.temperature > 0]
    greedy = sorted(set(range(len(requests))) - set(sampled))
    chosen = torch.empty(len(requests), dtype=torch.long, device=device)
    if greedy:
        sel = torch.tensor(greedy, device=device) if len(greedy) < len(requests) else slice(None)  # all: a view
        chosen[sel] = logits[sel].argmax(dim=-1)
    if sampled:
        sel = torch.tensor(sampled, device=device) if len(sampled) < len(requests) else slice(None)
        rows = logits[sel].to(torch.float64, copy=True)  # a copy, scaled in place below
        u = [float(torch.rand((), generator=generators[j], dtype=torch.float64)) for j in sampled]
        u = torch.tensor(u, dtype=torch.float64, device=device)[:, None]
        temps = [requests[j].temperature for j in sampled]
        if any(t != 1.0 for t in temps):
            rows = rows / torch.tensor(temps, dtype=torch.float64, device=device)[:, None]
        top_p = [requests[j].top_p for j in sampled]
        nuc = [i for i, p in enumerate(top_p) if p < 1.0]
        nsel = torch.tensor(nuc, device=device) if nuc else None
        nucleus = torch.softmax(rows[nsel], -1) if nuc else None
        weights = rows.sub_(rows.amax(-1, keepdim=True)).exp_()  # softmax's numerators: the walk scales u by the sum
        pick = _inverse_cdf(weights, u)
        if nuc:
            ranked, order = torch.sort(nucleus, dim=-1, descending=True, stable=True)
            p = torch.tensor([top_p[i] for i in nuc], dtype=torch.float64, device=device)[:, None]
            ranked = ranked.masked_fill(ranked.cumsum(-1) - ranked >= p, 0.0)  # the smallest prefix reaching p
            pick[nsel] = order.gather(1, _inverse_cdf(ranked, u[nsel])[:, None])[:, 0]
        chosen[sel] = pick
    if len(real) == len(requests):  # real is in row order: every row
        picked, source = chosen, logits
    else:
        rsel = torch.tensor(real, device=device)
        picked, source = chosen[rsel], logits[rsel]
    lp = torch.log_softmax(source, dim=-1).gather(1, picked[:, None])[:, 0]
    return chosen, lp.tolist()


#: Vocabulary entries per block of the two-level CDF walk in :func:`_inverse_cdf`.
CDF_BLOCK = 256


def _inverse_cdf(weights, u):
    """Per row, the first index whose cumulative weight exceeds ``u`` times the row's total (``weights`` float64,
    non-negative, ``[rows, vocab]``; ``u`` ``[rows, 1]`` in [0, 1)).

    Two levels, so a step reads the vocabulary's weights once: the cumulative sums of blocks of :data:`CDF_BLOCK`
    entries locate the block where the row's total times ``u`` falls, and the cumulative sum inside that one block
    the entry. The same token as a search of the whole vocabulary's cumulative sum except where ``u`` lies within
    float64 rounding (about 1e-16 of the total) of a token's boundary.
    """
    import torch

    rows, vocab = weights.shape
    n_blocks = -(-vocab // CDF_BLOCK)
    if n_blocks * CDF_BLOCK != vocab:
        weights = torch.nn.functional.pad(weights, (0, n_blocks * CDF_BLOCK - vocab))
    blocks = weights.view(rows, n_blocks, CDF_BLOCK)
    ends = blocks.sum(-1).cumsum(-1)  # [rows, n_blocks]: the cumulative weight at each block's end
    target = (u * ends[:, -1:]).contiguous()
    block = torch.searchsorted(ends, target, right=True).clamp_max(n_blocks - 1)  # [rows, 1]
    start = torch.where(block > 0, ends.gather(1, (block - 1).clamp_min(0)), torch.zeros_like(target))
    inside = blocks.gather(1, block[:, :, None].expand(rows, 1, CDF_BLOCK))[:, 0].cumsum(-1) + start
    entry = torch.searchsorted(inside, target, right=True).clamp_max(CDF_BLOCK - 1)
    return (block * CDF_BLOCK + entry)[:, 0].clamp_max(vocab - 1)


def record_token(tokenizer, eos: set[int], req: ChatRequest, toks: list[int], lps: list[float], token: int, lp: float):
    """Record one chosen token of a row; the finish reason (``stop``, ``length``) once the row is done, else None."""
    if token in eos:
        return "stop"
    toks.append(token)
    lps.append(lp)
    if req.stop and any(s in tokenizer.decode(toks, skip_special_tokens=True) for s in req.stop):
        return "stop"
    if len(toks) >= req.max_tokens:
        return "length"
    return None


def finish_text(tokenizer, req: ChatRequest, toks: list[int]) -> tuple[str, int]:
    """A row's text (cut before a stop string) and the number of tokens that produced it."""
    text = tokenizer.decode(toks, skip_special_tokens=True)
    if not req.stop:
        return text, len(toks)
    cuts = [text.find(s) for s in req.stop if s in text]
    return (text[: min(cuts)], len(toks)) if cuts else (text, len(toks))


def choice_token(encode, text: str, prompt: list[int], choice: str) -> int:
    """The token ``choice`` adds when appended to the prompt ``text`` (token ids ``prompt``, ``encode`` the
    tokenizer's): the first new token of ``text + choice`` where that encoding extends ``prompt``, else the first
    token of ``choice`` alone."""
    full = encode(text + choice)
    if len(full) > len(prompt) and full[: len(prompt)] == prompt:
        return full[len(prompt)]
    ids = encode(choice)
    if not ids:
        raise EngineError(f"choice {choice!r} encodes to no token.")
    return ids[0]
