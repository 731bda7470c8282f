"""Each row's next token in the decoding loop: chosen (greedy or inverse-CDF sampling, with its logprob), recorded,
and the finished text.

Each sampling row draws one uniform per step from its own generator (seeded per sample), so a sample's random
stream never depends on its batch; see :func:`choose`.
"""

from __future__ import annotations

from wow.backends.base import ChatRequest, EngineError


def choose(logits, requests: list[ChatRequest], generators: list, filler: list[bool], real: list[int]):
    """One token per row and the logprobs of the ``real`` rows' tokens (a list, in ``real``'s order).

    Greedy at temperature 0 (and for filler rows), else inverse-CDF sampling: a sampling row draws exactly one
    uniform per step from its own generator and walks the CDF in vocabulary order (``top_p == 1``) or in
    descending probability over the nucleus (``top_p < 1``). Every row-wise computation (softmax, cumulative
    sum, search, argmax, log-softmax) runs on the subset of rows that needs it; a row's result never depends on
    the other rows of that subset, so its token never depends on its neighbours.
    """
    import torch

    device = logits.device
    sampled = [j for j, (r, f) in enumerate(zip(requests, filler, strict=True)) if not f and r.temperature > 0]
    greedy = sorted(set(range(len(requests))) - set(sampled))
    chosen = torch.empty(len(requests), dtype=torch.long, device=device)
    if greedy:
        sel = torch.tensor(greedy, device=device) if len(greedy) < len(requests) else None
        chosen[sel if sel is not None else slice(None)] = (logits if sel is None else logits[sel]).argmax(dim=-1)
    if sampled:
        sel = torch.tensor(sampled, device=device)
        rows = logits[sel].double()
        u = [float(torch.rand((), generator=generators[j], dtype=torch.float64)) for j in sampled]
        u = torch.tensor(u, dtype=torch.float64, device=device)[:, None]
        temps = [requests[j].temperature for j in sampled]
        if any(t != 1.0 for t in temps):
            rows = rows / torch.tensor(temps, dtype=torch.float64, device=device)[:, None]
        probs = torch.softmax(rows, -1)
        pick = _inverse_cdf(probs, u)
        top_p = [requests[j].top_p for j in sampled]
        nuc = [i for i, p in enumerate(top_p) if p < 1.0]
        if nuc:
            nsel = torch.tensor(nuc, device=device)
            ranked, order = torch.sort(probs[nsel], dim=-1, descending=True, stable=True)
            p = torch.tensor([top_p[i] for i in nuc], dtype=torch.float64, device=device)[:, None]
            ranked = ranked.masked_fill(ranked.cumsum(-1) - ranked >= p, 0.0)  # the smallest prefix reaching p
            pick[nsel] = order.gather(1, _inverse_cdf(ranked, u[nsel])[:, None])[:, 0]
        chosen[sel] = pick
    rsel = torch.tensor(real, device=device)
    picked = chosen[rsel]
    lp = torch.log_softmax(logits[rsel], dim=-1).gather(1, picked[:, None])[:, 0]
    return chosen, lp.tolist()


def _inverse_cdf(probs, u):
    """Per row, the first index whose cumulative probability exceeds ``u`` times the row's total.

    A binary search of the (non-decreasing) CDF: the number of entries ``<= u * total``.
    """
    import torch

    cdf = probs.cumsum(-1)
    target = (u * cdf[:, -1:]).contiguous()
    return torch.searchsorted(cdf, target, right=True)[:, 0].clamp_max(cdf.shape[-1] - 1)


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
