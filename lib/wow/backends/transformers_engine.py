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

  - every prompt is left-padded to its own length rounded up to ``pad_multiple``, and only prompts of one padded
    length share a batch;
  - a prompt is read alone (identical prompts, such as the N samples of a question, once);
  - decoding steps are always ``batch_size`` rows tall, a multiple of 8 (filler rows complete short groups,
    finished rows stay until the batch ends);
  - on CPU, attention is :mod:`wow.backends.rowwise_attention`.

  Then a given (messages, seed, sample_index) yields bitwise the same text and logprobs in any batch composition
  (tested). A result still depends on ``batch_size``, ``pad_multiple``, dtype, device and library versions. On
  GPU the attention kernels are left alone, so expect last-bit differences between batch compositions there;
  ``fixed_shapes=False`` (one batched prompt pass over prompts of any lengths, sorted by length; finished rows
  leave the batch) is faster on large batches.
* **Logprobs** are the model's own distribution: ``log_softmax`` of the raw logits (temperature 1, no top-p) at
  each chosen token, as in the paper's code, read from the decoding step itself (no second forward pass). The end
  of sequence token is not part of the text and not part of the mean.
* ``temperature == 0`` is greedy. The prompt pass keeps only the last position's logits.

Example::

    engine = TransformersEngine("smollm2-135m", dtype="float32", batch_size=8)
    [c] = engine.generate([ChatRequest(messages=[{"role": "user", "content": "2+3?"}], max_tokens=16, seed=1)])
"""

from __future__ import annotations

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
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    # -- identity and loading -------------------------------------------------------------------------------
    def identity(self) -> dict:
        """Engine, model, dtype and the adapter's content hash: what a cached result depends on.

        The adapter's path is left out: the same adapter in a moved or copied run folder gives the same results, so
        its cached calls stay valid there.
        """
        ident = {"engine": self.name, "model": self.model, "dtype": self.dtype}
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

    def _batches(self, prompts: list[list[int]]) -> list[list[int]]:
        """Indices grouped by padded prompt length, then cut into batches of ``batch_size`` (original order).

        Without fixed shapes any lengths may share a batch: the prompts are sorted by length (stable) and cut into
        full batches, so a mix of lengths never runs as several part-filled batches.
        """
        if not self.fixed_shapes:
            order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
            return [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        groups: dict[int, list[int]] = {}
        for i, ids in enumerate(prompts):
            groups.setdefault(self._padded_len(len(ids)), []).append(i)
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
    def _generate(
        self, requests: list[ChatRequest], progress: bool = False, on_result: ResultCallback | None = None
    ) -> list[Completion]:
        self._load()
        prompts = [self._encode(self._prompt_text(r)) for r in requests]
        results: list[Completion | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), unit="answer", desc=f"{self.model}", disable=not progress)
        try:
            for idx in self._batches(prompts):
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
                cache, mask, positions, logits = self._prompt_pass([prompts[r] for r in active])
                rows = active + [active[0]] * (len(mask) - len(active))
                reqs = [requests[r] for r in rows]
                filler = [False] * len(active) + [True] * (len(rows) - len(active))
                generators = [
                    None if f else torch.Generator().manual_seed(q.sample_seed())
                    for q, f in zip(reqs, filler, strict=True)
                ]
                while True:
                    chosen = self._choose(logits, reqs, generators, filler)
                    token_lp = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None])[:, 0].tolist()
                    chosen_list = chosen.tolist()
                    for j, r in enumerate(rows):
                        if not filler[j] and finish[r] is None:
                            finish[r] = self._step(requests[r], tokens[r], logprobs[r], chosen_list[j], token_lp[j])
                    keep = [j for j, r in enumerate(rows) if not filler[j] and finish[r] is None]
                    if not keep:
                        break
                    if not self.fixed_shapes and len(keep) < len(rows):  # finished rows leave the batch
                        sel = torch.tensor(keep, device=self._device)
                        cache.batch_select_indices(sel)
                        mask, positions, chosen = mask[sel], positions[sel], chosen[sel]
                        rows, reqs = [rows[j] for j in keep], [reqs[j] for j in keep]
                        generators, filler = [generators[j] for j in keep], [filler[j] for j in keep]
                    mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
                    positions = positions[:, -1:] + 1
                    logits = self._forward(chosen[:, None], mask, positions, cache)
        out = []
        for r, req in enumerate(requests):
            text, kept = self._finish_text(req, tokens[r])
            lps = logprobs[r][:kept] if req.logprobs else []
            self.prompt_tokens += len(prompts[r])
            self.completion_tokens += kept
            out.append(Completion(text, lps, len(prompts[r]), kept, finish[r] or "length"))
        return out

    def _prompt_pass(self, prompts: list[list[int]]):
        """Read the prompts into a KV cache; returns ``(cache, mask, positions, next-token logits)``.

        Without ``fixed_shapes``: one batched pass. With it, every computation a row goes through has a shape that
        depends on that row alone: all prompt tokens but the last are read one distinct prompt at a time (identical
        prompts, e.g. the N samples of a question, are read once), the caches are stacked and widened to
        ``batch_size`` rows (filler copies of the first row, decoded greedily and discarded), and the last prompt
        token is read as a ``batch_size``-row decoding step.
        """
        torch = self._torch
        from transformers import DynamicCache

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

    def _choose(self, logits, requests: list[ChatRequest], generators: list, filler: list[bool]):
        """One token per row: greedy at temperature 0 (and for filler rows), else inverse-CDF sampling.

        A sampling row draws exactly one uniform per step from its own generator and walks the CDF in vocabulary
        order (``top_p == 1``) or in descending probability over the nucleus (``top_p < 1``). Every row goes
        through the same tensor operations whatever its neighbours do, so its token never depends on them.
        """
        torch = self._torch
        device = logits.device
        sampled = [not f and r.temperature > 0 for r, f in zip(requests, filler, strict=True)]
        greedy = logits.argmax(dim=-1)
        if not any(sampled):
            return greedy
        u = [
            float(torch.rand((), generator=g, dtype=torch.float64)) if s else 0.0
            for g, s in zip(generators, sampled, strict=True)
        ]
        temps = [r.temperature if s else 1.0 for r, s in zip(requests, sampled, strict=True)]
        top_p = [r.top_p if s else 1.0 for r, s in zip(requests, sampled, strict=True)]
        u = torch.tensor(u, dtype=torch.float64, device=device)[:, None]
        probs = torch.softmax(logits.double() / torch.tensor(temps, dtype=torch.float64, device=device)[:, None], -1)
        pick = _inverse_cdf(probs, u)
        if any(p < 1.0 for p in top_p):
            ranked, order = torch.sort(probs, dim=-1, descending=True, stable=True)
            p = torch.tensor(top_p, dtype=torch.float64, device=device)[:, None]
            ranked = ranked.masked_fill(ranked.cumsum(-1) - ranked >= p, 0.0)  # the smallest prefix reaching p
            nucleus = order.gather(1, _inverse_cdf(ranked, u)[:, None])[:, 0]
            pick = torch.where(p[:, 0] < 1.0, nucleus, pick)
        return torch.where(torch.tensor(sampled, device=device), pick, greedy)

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
    def _choice_logprobs(self, requests: list[ChatRequest], choices: list[str]) -> list[dict[str, float]]:
        """One forward pass on prompt + prefill; log-softmax of the next-token logits at each choice's token.

        A choice's token is the first token the choice adds when appended to the prompt text (so "1" after
        "Score:" is read as the tokenizer would write it there); the rest of a multi-token choice is ignored.
        """
        self._load()
        torch = self._torch
        texts = [self._prompt_text(r) for r in requests]
        prompts = [self._encode(t) for t in texts]
        out: list[dict[str, float] | None] = [None] * len(requests)
        for idx in self._batches(prompts):
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
    """Per row, the first index whose cumulative probability exceeds ``u`` times the row's total."""
    cdf = probs.cumsum(-1)
    return (cdf <= u * cdf[:, -1:]).sum(-1).clamp_max(cdf.shape[-1] - 1)


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
