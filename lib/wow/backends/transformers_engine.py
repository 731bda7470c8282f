"""The ``transformers`` engine: a local model, batched, with per-token logprobs and per-sample seeds.

Requests are rendered with the model's chat template (``add_generation_prompt=True``; a ``prefill`` is appended to
the rendered prompt, so the model continues the assistant turn) and decoded by a small loop of our own over the KV
cache. Design decisions:

* **Per-sample seeds, batch-invariant.** Each row draws one uniform per step from its own ``torch.Generator``
  seeded with :meth:`ChatRequest.sample_seed` and picks its token by inverse CDF, so the random stream of a sample
  never depends on its batch. The arithmetic must not depend on it either, and on CPU it does in four ways
  (measured on the default model): a row left-padded by a different amount rounds differently in attention (up
  to 0.4 in a bf16 logit, enough to flip samples); GEMMs pick kernels by their number of rows; fp32 GEMMs tile
  rows by 4 and round a row in a partial tile differently; SDPA's CPU flash kernel rounds a row differently by
  its place in the batch (and its math kernel is slow). So, with ``fixed_shapes=True`` (the default):

  - every prompt is left-padded to its own length rounded up to ``pad_multiple``;
  - a prompt is read alone (identical prompts, such as the N samples of a question, once);
  - decoding steps are always ``batch_size`` rows tall, a multiple of 8 (filler rows complete the last batch,
    finished rows stay until the batch ends);
  - on CPU, attention is :mod:`wow.backends.rowwise_attention`, and while decoding its
    :class:`~wow.backends.rowwise_attention.GroupedKV`: the rows of one padded length and token budget form a
    group with its own preallocated key/value buffers (written in place, no ``torch.cat`` per step), attended to
    8 rows at a time over the group's own length, so rows of different padded lengths share a batch (no
    part-filled batch per length) and every attention shape a row meets still depends on that row alone. On other
    devices only prompts of one padded length and budget share a batch.

  Then a given (messages, seed, sample_index) yields bitwise the same text and logprobs in any batch composition
  (tested). A result still depends on ``batch_size``, ``pad_multiple``, dtype, device and library versions. On
  GPU the attention kernels are left alone, so expect last-bit differences between batch compositions there;
  ``fixed_shapes=False`` (one batched prompt pass over prompts of any lengths, sorted by length; finished rows
  leave the batch) skips the filler and finished rows. A resumed run does not rely on any of this: behind the
  call cache the engine decodes the batches :meth:`plan` cuts from the *whole* request list, each stored once
  complete, so an interrupted and an uninterrupted run decode the same batches (:mod:`wow.backends.cache`).
* **Logprobs** are the model's own distribution: ``log_softmax`` of the raw logits (temperature 1, no top-p) at
  each chosen token, as in the paper's code, read from the decoding step itself (no second forward pass). The end
  of sequence token is not part of the text and not part of the mean.
* ``temperature == 0`` is greedy. The prompt pass keeps only the last position's logits. Sampling, argmax and
  log-softmax run only on the rows that need them (the CDF is searched by bisection), never on filler rows.

Example::

    engine = TransformersEngine("smollm2-135m", dtype="float32", batch_size=8)
    [c] = engine.generate([ChatRequest(messages=[{"role": "user", "content": "2+3?"}], max_tokens=16, seed=1)])
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from pathlib import Path

from tqdm.auto import tqdm

from wow import WowError, models
from wow.backends import rowwise_attention
from wow.backends.base import ChatRequest, Completion, Engine, EngineError, ResultCallback

log = logging.getLogger(__name__)

#: With fixed shapes, decoding batches are a multiple of this many rows (CPU GEMM kernels tile rows by 4 or 8).
ROW_TILE = 8
#: Part of :meth:`TransformersEngine.identity` (so of every cache key): bumped when the same request may decode to
#: other tokens or logprobs than before. 2: decoding attention in float32 over preallocated buffers (CPU).
SAMPLER_VERSION = 2


class TransformersEngine(Engine):
    """A local Hugging Face model (see :func:`wow.models.load`), loaded on first use and reused.

    Args:
        model: model name (:func:`wow.models.resolve`).
        dtype: ``bfloat16`` (fast bulk sampling on CPU) or ``float32`` (exact logprob comparisons).
        batch_size: rows decoded together (with ``fixed_shapes``, rounded up to a multiple of 8).
        device: ``cpu``, ``cuda``...; default: cuda when available.
        adapter: a peft LoRA adapter folder applied on top of the model (its content hash is part of the cache key).
        pad_multiple: prompts are left-padded to a multiple of this many tokens (batch invariance, see above).
        fixed_shapes: make every shape a row goes through independent of its batch (see above), so a sample never
            depends on its batch. False: one batched prompt pass, small groups run small, finished rows leave the
            batch (faster for few requests; samples may then differ between batch compositions).
    """

    name = "transformers"
    supports_prefill = True
    streams_results = True

    def __init__(
        self,
        model: str = models.DEFAULT_MODEL,
        dtype: str = "bfloat16",
        batch_size: int = 16,
        device: str | None = None,
        adapter: str | Path | None = None,
        pad_multiple: int = 32,
        fixed_shapes: bool = True,
    ):
        super().__init__(model)
        if dtype not in ("float32", "bfloat16", "float16"):
            raise WowError(f"dtype {dtype!r} is not one of float32, bfloat16, float16.")
        if batch_size < 1 or pad_multiple < 1:
            raise WowError(f"batch_size ({batch_size}) and pad_multiple ({pad_multiple}) must be at least 1.")
        self.dtype = dtype
        self.batch_size = -(-int(batch_size) // ROW_TILE) * ROW_TILE if fixed_shapes else int(batch_size)
        self.device = device
        self.pad_multiple = int(pad_multiple)
        self.fixed_shapes = bool(fixed_shapes)
        self.adapter = Path(adapter).expanduser().resolve() if adapter else None
        if self.adapter is not None and not (self.adapter / "adapter_config.json").exists():
            raise WowError(f"{self.adapter} is not a peft adapter folder (no adapter_config.json).")
        self._adapter_hash = _folder_hash(self.adapter) if self.adapter else None
        self._model = None
        self._tokenizer = None
        self._keeps_logits = False
        self._grouped = False
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    # -- identity and loading -------------------------------------------------------------------------------
    def identity(self) -> dict:
        """Engine, model, dtype and the adapter's content hash: what a cached result depends on.

        The adapter's path is left out: the same adapter in a moved or copied run folder gives the same results, so
        its cached calls stay valid there.
        """
        ident = {"engine": self.name, "model": self.model, "dtype": self.dtype, "sampler": SAMPLER_VERSION}
        if self.adapter is not None:
            ident["adapter_sha256"] = self._adapter_hash
        return ident

    def _load(self):
        if self._model is not None:
            return
        import torch

        model, tokenizer = models.load(self.model, dtype=self.dtype, device=self.device)
        self._device = next(model.parameters()).device
        if self.fixed_shapes and self._device.type == "cpu":
            model.set_attn_implementation(rowwise_attention.register())
            self._grouped = True  # decoding batches may mix padded prompt lengths (rowwise_attention.GroupedKV)
        if self.adapter is not None:
            from peft import PeftModel

            # merged into the weights: sampling then costs what the base model costs (no extra LoRA matmuls)
            model = PeftModel.from_pretrained(model, str(self.adapter)).merge_and_unload().eval()
        if getattr(tokenizer, "chat_template", None) is None:
            raise EngineError(f"model {self.model!r} has no chat template; the transformers engine needs one.")
        self._model, self._tokenizer = model, tokenizer
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        ids = model.generation_config.eos_token_id if model.generation_config is not None else None
        ids = ids if isinstance(ids, list) else [ids]
        self._eos = {i for i in [*ids, tokenizer.eos_token_id] if i is not None}
        self._pad = tokenizer.pad_token_id
        self._torch = torch
        log.info("loaded %s (%s) on %s", self.model, self.dtype, self._device)

    # -- prompts --------------------------------------------------------------------------------------------
    def _prompt_text(self, request: ChatRequest) -> str:
        text = self._tokenizer.apply_chat_template(
            [dict(m) for m in request.messages], tokenize=False, add_generation_prompt=True
        )
        return text + (request.prefill or "")

    def _encode(self, text: str) -> list[int]:
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def _batches(self, prompts: list[list[int]], budgets: list[int] | None = None) -> list[list[int]]:
        """Indices grouped by padded prompt length (and token budget), then cut into batches of ``batch_size``.

        With fixed shapes a batch's rows share a padded prompt length and a ``max_tokens`` (the size of the
        preallocated KV cache, see :func:`_preallocate`, so every shape a row meets depends on that row alone).

        Without fixed shapes any lengths may share a batch: the prompts are sorted by length (stable) and cut into
        full batches, so a mix of lengths never runs as several part-filled batches.
        """
        if not self.fixed_shapes:
            order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
            return [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        if self._grouped:  # full batches of any padded lengths, each length's rows contiguous
            order = sorted(
                range(len(prompts)), key=lambda i: (self._padded_len(len(prompts[i])), budgets[i] if budgets else 0)
            )
            return [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, ids in enumerate(prompts):
            groups.setdefault((self._padded_len(len(ids)), budgets[i] if budgets else 0), []).append(i)
        out = []
        for length in sorted(groups):
            idx = groups[length]
            out += [idx[s : s + self.batch_size] for s in range(0, len(idx), self.batch_size)]
        return out

    def _padded_len(self, n: int) -> int:
        return -(-max(n, 1) // self.pad_multiple) * self.pad_multiple

    def _left_pad(self, prompts: list[list[int]]):
        torch = self._torch
        length = self._padded_len(max(len(p) for p in prompts))
        ids = torch.full((len(prompts), length), self._pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for r, p in enumerate(prompts):
            if p:
                ids[r, length - len(p) :] = torch.tensor(p, dtype=torch.long)
                mask[r, length - len(p) :] = 1
        return ids.to(self._device), mask.to(self._device)

    def _forward(self, ids, mask, positions, cache):
        """Logits of the last position (float32), updating ``cache``."""
        kwargs = {"attention_mask": mask, "position_ids": positions, "cache": cache, "use_cache": cache is not None}
        if self._keeps_logits:
            kwargs["logits_to_keep"] = 1
        out = self._model(input_ids=ids, **kwargs)
        return out.logits[:, -1, :].float()

    # -- generation -----------------------------------------------------------------------------------------
    def plan(self, requests: list[ChatRequest], kind: str = "generate") -> list[list[int]]:
        """The batches :meth:`generate` (``kind="generate"``) or :meth:`choice_logprobs` would decode, in order."""
        self._load()
        prompts = [self._encode(self._prompt_text(r)) for r in requests]
        budgets = [max(r.max_tokens, 0) for r in requests] if kind == "generate" else None
        return self._batches(prompts, budgets)

    def _generate(
        self,
        requests: list[ChatRequest],
        progress: bool = False,
        on_result: ResultCallback | None = None,
        batches: list[list[int]] | None = None,
    ) -> list[Completion]:
        self._load()
        prompts = [self._encode(self._prompt_text(r)) for r in requests]
        results: list[Completion | None] = [None] * len(requests)
        if batches is None:
            batches = self._batches(prompts, [max(r.max_tokens, 0) for r in requests])
        bar = tqdm(total=len(requests), unit="answer", desc=f"{self.model}", disable=not progress)
        try:
            for idx in batches:
                done = self._decode([requests[i] for i in idx], [prompts[i] for i in idx])
                for i, c in zip(idx, done, strict=True):
                    results[i] = c
                    if on_result is not None:
                        on_result(i, c)
                bar.update(len(idx))
        finally:
            bar.close()
        return results

    def _decode(self, requests: list[ChatRequest], prompts: list[list[int]]) -> list[Completion]:
        """Decode one batch (all prompts share a padded length); see the module docstring."""
        torch = self._torch
        n = len(requests)
        self.calls += n
        tokens: list[list[int]] = [[] for _ in range(n)]
        logprobs: list[list[float]] = [[] for _ in range(n)]
        finish: list[str | None] = ["length" if r.max_tokens <= 0 else None for r in requests]
        active = [r for r in range(n) if finish[r] is None]
        if active:
            with torch.inference_mode():
                cache, mask, positions, logits = self._prompt_pass(
                    [prompts[r] for r in active], [requests[r].max_tokens for r in active]
                )
                rows = active + [active[0]] * (len(positions) - len(active))
                reqs = [requests[r] for r in rows]
                filler = [False] * len(active) + [True] * (len(rows) - len(active))
                generators = [
                    None if f else torch.Generator().manual_seed(q.sample_seed())
                    for q, f in zip(reqs, filler, strict=True)
                ]
                grouped = isinstance(cache, rowwise_attention.GroupedKV)
                if not grouped:
                    budget = max(requests[r].max_tokens for r in active)
                    _preallocate(cache, budget)
                    full_mask = torch.cat([mask, mask.new_ones((len(rows), budget))], dim=1)
                    width = mask.shape[1]
                while True:
                    real = [j for j, f in enumerate(filler) if not f]
                    chosen, token_lp = self._choose(logits, reqs, generators, filler, real)
                    chosen_list = chosen.tolist()
                    for j, lp in zip(real, token_lp, strict=True):
                        r = rows[j]
                        if finish[r] is None:
                            finish[r] = self._step(requests[r], tokens[r], logprobs[r], chosen_list[j], lp)
                    keep = [j for j, r in enumerate(rows) if not filler[j] and finish[r] is None]
                    if not keep:
                        break
                    if not self.fixed_shapes and len(keep) < len(rows):  # finished rows leave the batch
                        sel = torch.tensor(keep, device=self._device)
                        cache.batch_select_indices(sel)
                        full_mask, positions, chosen = full_mask[sel], positions[sel], chosen[sel]
                        rows, reqs = [rows[j] for j in keep], [reqs[j] for j in keep]
                        generators, filler = [generators[j] for j in keep], [filler[j] for j in keep]
                    positions = positions[:, -1:] + 1
                    if grouped:
                        logits = self._grouped_forward(chosen[:, None], positions, cache)
                    else:
                        width += 1
                        logits = self._forward(chosen[:, None], full_mask[:, :width], positions, cache)
        out = []
        for r, req in enumerate(requests):
            text, kept = self._finish_text(req, tokens[r])
            lps = logprobs[r][:kept] if req.logprobs else []
            self.prompt_tokens += len(prompts[r])
            self.completion_tokens += kept
            out.append(Completion(text, lps, len(prompts[r]), kept, finish[r] or "length"))
        return out

    def _prompt_pass(self, prompts: list[list[int]], budgets: list[int] | None = None):
        """Read the prompts into a KV cache; returns ``(cache, mask, positions, next-token logits)``.

        Without ``fixed_shapes``: one batched pass. With it, every computation a row goes through has a shape that
        depends on that row alone: all prompt tokens but the last are read one distinct prompt at a time (identical
        prompts, e.g. the N samples of a question, are read once), the caches are stacked and widened to
        ``batch_size`` rows (filler copies of the first row, decoded greedily and discarded), and the last prompt
        token is read as a ``batch_size``-row decoding step.
        """
        torch = self._torch
        from transformers import DynamicCache

        if self._grouped:
            return self._grouped_prompt_pass(prompts, budgets or [0] * len(prompts))
        ids, mask = self._left_pad(prompts)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        if not self.fixed_shapes:
            cache = DynamicCache(config=self._model.config)
            return cache, mask, positions, self._forward(ids, mask, positions, cache)
        rows = list(range(len(prompts))) + [0] * max(self.batch_size - len(prompts), 0)
        sel = torch.tensor(rows, device=self._device)
        ids, mask, positions = ids[sel], mask[sel], positions[sel]
        distinct: dict[tuple, int] = {}
        for r in range(len(prompts)):
            distinct.setdefault(tuple(prompts[r]), r)
        caches = {}
        for r in distinct.values():
            caches[r] = DynamicCache(config=self._model.config)
            if ids.shape[1] > 1:
                self._forward(ids[r : r + 1, :-1], mask[r : r + 1, :-1], positions[r : r + 1, :-1], caches[r])
        source = [distinct[tuple(prompts[r])] for r in rows]
        cache = _stack_caches([caches[r] for r in source]) if ids.shape[1] > 1 else caches[source[0]]
        return cache, mask, positions, self._forward(ids[:, -1:], mask, positions[:, -1:], cache)

    def _grouped_prompt_pass(self, prompts: list[list[int]], budgets: list[int]):
        """The fixed-shapes prompt pass on CPU: returns ``(GroupedKV, None, positions, next-token logits)``.

        Each distinct prompt (padded to its own length) is read alone but for its last token; the rows of one padded
        length and token budget (contiguous: see :meth:`_batches`) form a group of
        :class:`~wow.backends.rowwise_attention.GroupedKV` whose buffers hold the prompts' keys and values and room
        for ``budget`` more positions; the last prompt tokens are then read as a ``batch_size``-row decoding step.
        Rows beyond the prompts (filler) attend to nothing and are discarded.
        """
        torch = self._torch
        from transformers import DynamicCache

        chunk = rowwise_attention.CHUNK
        config = self._model.config
        n_layers = config.num_hidden_layers
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        n_rows = max(self.batch_size, len(prompts))
        keys = [(self._padded_len(len(p)), max(int(b), 0)) for p, b in zip(prompts, budgets, strict=True)]
        read: dict[tuple, tuple] = {}  # distinct prompt -> (cache or None, ids, mask, positions)
        for p in prompts:
            if tuple(p) in read:
                continue
            ids, mask = self._left_pad([p])
            positions = (mask.cumsum(-1) - 1).clamp_min(0)
            cache = None
            if ids.shape[1] > 1:
                cache = DynamicCache(config=config)
                self._forward(ids[:, :-1], mask[:, :-1], positions[:, :-1], cache)
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
            g_mask = torch.zeros((rounded, length + budget), dtype=torch.bool, device=self._device)
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
        state.cache = _write_through_cache(state, config)
        last = [read[tuple(p)][1][0, -1] for p in prompts]
        pos = [read[tuple(p)][3][0, -1] for p in prompts]
        ids = torch.stack(last + [last[0]] * (n_rows - len(prompts)))[:, None]
        positions = torch.stack(pos + [pos[0]] * (n_rows - len(prompts)))[:, None]
        return state, None, positions, self._grouped_forward(ids, positions, state)

    def _grouped_forward(self, ids, positions, state):
        """One decoding step of a :class:`~wow.backends.rowwise_attention.GroupedKV` batch (float32 logits)."""
        rowwise_attention.active = state
        try:
            logits = self._forward(ids, None, positions, state.cache)
        finally:
            rowwise_attention.active = None
        state.advance()
        return logits

    def _choose(self, logits, requests: list[ChatRequest], generators: list, filler: list[bool], real: list[int]):
        """One token per row and the logprobs of the ``real`` rows' tokens (a list, in ``real``'s order).

        Greedy at temperature 0 (and for filler rows), else inverse-CDF sampling: a sampling row draws exactly one
        uniform per step from its own generator and walks the CDF in vocabulary order (``top_p == 1``) or in
        descending probability over the nucleus (``top_p < 1``). Every row-wise computation (softmax, cumulative
        sum, search, argmax, log-softmax) runs on the subset of rows that needs it; a row's result never depends on
        the other rows of that subset, so its token never depends on its neighbours.
        """
        torch = self._torch
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

    def _step(self, req: ChatRequest, toks: list[int], lps: list[float], token: int, lp: float) -> str | None:
        """Record one token; the finish reason once the row is done, else None."""
        if token in self._eos:
            return "stop"
        toks.append(token)
        lps.append(lp)
        if req.stop and any(s in self._tokenizer.decode(toks, skip_special_tokens=True) for s in req.stop):
            return "stop"
        if len(toks) >= req.max_tokens:
            return "length"
        return None

    def _finish_text(self, req: ChatRequest, toks: list[int]) -> tuple[str, int]:
        """The text (cut before a stop string) and the number of tokens that produced it."""
        text = self._tokenizer.decode(toks, skip_special_tokens=True)
        if not req.stop:
            return text, len(toks)
        cuts = [text.find(s) for s in req.stop if s in text]
        return (text[: min(cuts)], len(toks)) if cuts else (text, len(toks))

    # -- next-token distributions ---------------------------------------------------------------------------
    def _choice_logprobs(
        self, requests: list[ChatRequest], choices: list[str], batches: list[list[int]] | None = None
    ) -> list[dict[str, float]]:
        """One forward pass on prompt + prefill; log-softmax of the next-token logits at each choice's token.

        A choice's token is the first token the choice adds when appended to the prompt text (so "1" after
        "Score:" is read as the tokenizer would write it there); the rest of a multi-token choice is ignored.
        """
        self._load()
        torch = self._torch
        texts = [self._prompt_text(r) for r in requests]
        prompts = [self._encode(t) for t in texts]
        out: list[dict[str, float] | None] = [None] * len(requests)
        for idx in self._batches(prompts) if batches is None else batches:
            self.calls += len(idx)
            with torch.inference_mode():
                logp = torch.log_softmax(self._prompt_pass([prompts[i] for i in idx])[3], dim=-1).cpu()
            for j, i in enumerate(idx):
                self.prompt_tokens += len(prompts[i])
                out[i] = {c: float(logp[j, self._choice_token(texts[i], prompts[i], c)]) for c in choices}
        return out

    def _choice_token(self, text: str, prompt: list[int], choice: str) -> int:
        full = self._encode(text + choice)
        if len(full) > len(prompt) and full[: len(prompt)] == prompt:
            return full[len(prompt)]
        ids = self._encode(choice)
        if not ids:
            raise EngineError(f"choice {choice!r} encodes to no token.")
        return ids[0]

    def usage(self) -> dict:
        """Requests decoded and tokens read / generated by this engine so far."""
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    def close(self) -> None:
        """Drop the model (frees its memory)."""
        self._model = None
        self._tokenizer = None


_NOT_HASHED = {"train_log.json", "progress.json", "training_args.bin", "README.md"}


def _folder_hash(folder: Path) -> str:
    """sha256 over the names and bytes of the files of an adapter folder that shape its outputs (non-recursive, sorted).

    Training logs, progress, the pickled training arguments and the model card are left out: they hold timings and
    paths, and would make two identical adapters look different.
    """
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name not in _NOT_HASHED):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _inverse_cdf(probs, u):
    """Per row, the first index whose cumulative probability exceeds ``u`` times the row's total.

    A binary search of the (non-decreasing) CDF: the number of entries ``<= u * total``.
    """
    import torch

    cdf = probs.cumsum(-1)
    target = (u * cdf[:, -1:]).contiguous()
    return torch.searchsorted(cdf, target, right=True)[:, 0].clamp_max(cdf.shape[-1] - 1)


def _preallocate(cache, extra: int) -> None:
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


def _write_through_cache(state, config):
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
    """A :class:`DynamicLayer` that writes into a ``GroupedKV`` (see :func:`_write_through_cache`)."""
    from transformers.cache_utils import DynamicLayer

    return type("WriteThroughLayer", (DynamicLayer,), {"update": _write_through_update})


@functools.cache
def _preallocated_class():
    """A :class:`DynamicLayer` whose ``update`` writes into preallocated buffers (see :func:`_preallocate`)."""
    from transformers.cache_utils import DynamicLayer

    return type(
        "PreallocatedLayer", (DynamicLayer,), {"update": _prealloc_update, "batch_select_indices": _prealloc_select}
    )


def _stack_caches(caches: list):
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
