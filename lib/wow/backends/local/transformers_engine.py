"""The ``transformers`` engine: a local model, batched, with per-token logprobs and per-sample seeds.

Requests are rendered with the model's chat template (``add_generation_prompt=True``; a ``prefill`` is appended to
the rendered prompt, so the model continues the assistant turn) and decoded by a small loop of our own over the KV
cache. Design decisions:

* **Per-sample seeds; the same bytes on a resumed run.** Each row draws one uniform per step from its own
  ``torch.Generator`` seeded with :meth:`ChatRequest.sample_seed` and picks its token by inverse CDF, so the random
  stream of a sample never depends on its batch. The arithmetic may (on CPU: padding amounts, GEMM kernels chosen
  by row count, SDPA's per-row rounding), so behind the call cache the engine decodes the batches :meth:`plan`
  cuts from the *whole* request list, each stored once complete: an interrupted and an uninterrupted run decode
  the same batches and write the same bytes (:mod:`wow.backends.cache`), whatever the kernels do.
* **Default mode: fast.** Sorted prompts share a batch, whose prompt pass reads every shared prefix once
  (:mod:`wow.backends.local.prefix_pass`); finished rows leave the batch. ``usage()`` counts the prompt tokens computed.
* **``fixed_shapes=True``: batch-invariant** (:mod:`wow.backends.local.fixed_shapes`): a given (messages, seed,
  sample_index) yields bitwise the same text and logprobs in any batch composition (tested), at about half the speed.
* **Logprobs** are the model's own distribution (``log_softmax`` of the raw logits at each chosen token, as in the
  paper's code), read from the decoding step itself; the end of sequence token is in neither the text nor the mean.
* **Decoding steps** of Llama-family models on CPU go through :mod:`wow.backends.local.decode_step` (fused, prepacked
  projections), each group of rows reading its shared prompt once (:mod:`wow.backends.local.cascade_attention`).

Example::

    engine = TransformersEngine("smollm2-135m", dtype="float32", batch_size=8)
    [c] = engine.generate([ChatRequest(messages=[{"role": "user", "content": "2+3?"}], max_tokens=16, seed=1)])
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from wow import WowError
from wow.backends import models, precision
from wow.backends.base import ChatRequest, Completion, Engine, EngineError, ResultCallback
from wow.backends.local import (
    cascade_attention,
    decode_step,
    fixed_shapes,
    kv_buffers,
    prefix_pass,
    rowwise_attention,
    token_choice,
)
from wow.progress import bar as progress_bar

log = logging.getLogger(__name__)

#: With fixed shapes, decoding batches are a multiple of this many rows (CPU GEMM kernels tile rows by 4 or 8).
ROW_TILE = 8
#: Part of :meth:`TransformersEngine.identity` (so of every cache key): bumped when the same request may decode to
#: other tokens or logprobs than before. 2: attention in float32 over preallocated buffers (CPU). 3: shared prompt
#: prefixes read once (``prefix_pass``). 4: a compacted cache, the fused step (``decode_step``). 5: each group's shared
#: prompt read once per step (``cascade_attention``). 6: the cascade's merge as one interpolation, the two-level
#: inverse-CDF walk (``token_choice``).
SAMPLER_VERSION = 6


class TransformersEngine(Engine):
    """A local Hugging Face model (see :func:`wow.backends.models.load_model`), loaded on first use and reused.

    Args:
        model: model name (:func:`wow.backends.models.resolve`).
        dtype: ``auto`` (bf16 where the hardware has it natively, else float32: :mod:`wow.backends.precision`),
            ``bfloat16`` (fast bulk sampling where native) or ``float32`` (exact logprob comparisons).
        batch_size: rows decoded together (with ``fixed_shapes``, rounded up to a multiple of 8).
        device: ``cpu``, ``cuda``...; default: cuda when available.
        adapter: a peft LoRA adapter folder applied on top of the model (its content hash is part of the cache key).
        pad_multiple: prompts are left-padded to a multiple of this many tokens (batch invariance, see above).
        fixed_shapes: the batch-invariant mode (see above); False (default): the fast mode (a sample may differ in
            its last bits between batch compositions; a cached run resumes to the same bytes).
        base: a :class:`wow.backends.models.SharedBase` of ``model`` (same dtype and device) to run on instead of loading
            the model: the engines of several adapters share one loaded model, each merging its adapter in when it
            runs (bitwise the results and identity of an engine with a model of its own); its owner frees it.
        fused_decode: decoding steps through :mod:`wow.backends.local.decode_step` where it supports the model (the
            default mode on CPU); False: through the model's ``forward`` (a benchmark's baseline).
    """

    name = "transformers"
    supports_prefill = True
    streams_results = True

    def __init__(
        self,
        model: str = models.DEFAULT_MODEL,
        dtype: str = "auto",
        batch_size: int = 16,
        device: str | None = None,
        adapter: str | Path | None = None,
        pad_multiple: int = 32,
        fixed_shapes: bool = False,
        base: models.SharedBase | None = None,
        fused_decode: bool = True,
    ):
        super().__init__(model)
        if dtype not in ("auto", *precision.DTYPES):
            raise WowError(f"dtype {dtype!r} is not one of auto, float32, bfloat16, float16.")
        dtype = precision.resolve_dtype(dtype)
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
        self._adapter_hash = models.adapter_hash(self.adapter) if self.adapter else None
        if base is not None and (base.name, base.dtype, base.device) != (model, dtype, device):
            raise WowError(
                f"the shared base model is {base.name!r} ({base.dtype}, device {base.device}), not {model!r} ({dtype}, "
                f"device {device}); build the engine with the base's model, dtype and device."
            )
        self.base = base
        self._steps = decode_step.StepCache() if fused_decode and not self.fixed_shapes else None
        self._model = self._tokenizer = None
        self._keeps_logits = self._plain_cache = self._grouped = False
        self.calls = self.prompt_tokens = self.prompt_tokens_computed = self.completion_tokens = 0
        self.decode_steps = {"fused": 0, "forward": 0}  # decoding steps of batches, by the way each was computed

    # -- identity and loading -------------------------------------------------------------------------------
    def identity(self) -> dict:
        """Engine, model, dtype, decoding mode and the adapter's content hash: what a cached result depends on (not
        the adapter's path: the same adapter in a moved or copied run folder gives the same results)."""
        ident = {"engine": self.name, "model": self.model, "dtype": self.dtype, "sampler": SAMPLER_VERSION}
        if self.fixed_shapes:
            ident["fixed_shapes"] = True
        elif self._steps is None:
            ident["fused_decode"] = False
        if self.adapter is not None:
            ident["adapter_sha256"] = self._adapter_hash
        return ident

    def _load(self):
        if self.base is not None or self._model is not None:
            return self._load_shared() if self.base is not None else None
        model, tokenizer = models.load_model(self.model, dtype=self.dtype, device=self.device)
        self._device = next(model.parameters()).device
        if self.fixed_shapes and self._device.type == "cpu":
            model.set_attn_implementation(rowwise_attention.register())
            self._grouped = True  # decoding batches may mix padded prompt lengths (rowwise_attention.GroupedKV)
        if self.adapter is not None:
            from peft import PeftModel

            # merged into the weights: sampling then costs what the base model costs (no extra LoRA matmuls)
            model = PeftModel.from_pretrained(model, str(self.adapter)).merge_and_unload().eval()
        self._loaded(model, tokenizer)

    def _load_shared(self):
        """Run on the shared base: merge this engine's adapter in (nothing to do when it already is) and set this
        engine's attention; called before every use, since another engine may have used the base in between."""
        model, tokenizer = self.base.activate(self.adapter, self._adapter_hash)
        device = next(model.parameters()).device
        grouped = self.fixed_shapes and device.type == "cpu"
        attention = rowwise_attention.register() if grouped else self.base.attn_implementation
        if model.config._attn_implementation != attention:
            model.set_attn_implementation(attention)
        if self._model is not model:  # first use, or the base was loaded again
            self._device, self._grouped = device, grouped
            self._loaded(model, tokenizer)

    def _loaded(self, model, tokenizer):
        """Keep a loaded model (adapter merged in) and what decoding reads from it."""
        import torch

        if getattr(tokenizer, "chat_template", None) is None:
            raise EngineError(f"model {self.model!r} has no chat template; the transformers engine needs one.")
        self._model, self._tokenizer = model, tokenizer
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        # shared prefixes are read once only over plain key/value layers (not sliding windows, not hybrid caches)
        self._plain_cache = all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)
        ids = model.generation_config.eos_token_id if model.generation_config is not None else None
        self._eos = {i for i in [*(ids if isinstance(ids, list) else [ids]), tokenizer.eos_token_id] if i is not None}
        self._pad, self._torch = tokenizer.pad_token_id, torch
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
        """The request indices in batches of ``batch_size``, in decoding order.

        Default mode: sorted by prompt tokens (prompts that share a prefix are neighbours, so a batch reads the
        prefix once). Fixed shapes: grouped by padded prompt length and token budget (see
        :mod:`wow.backends.local.fixed_shapes`).
        """
        if not self.fixed_shapes:
            order = sorted(range(len(prompts)), key=lambda i: prompts[i])
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
        bar = progress_bar(len(requests), "answer", f"{self.model}", disable=not progress)
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
                step = self._steps.get(self._model, self._adapter_hash, n) if self._steps and not grouped else None
                if not grouped:
                    budget = max(requests[r].max_tokens for r in active)
                    mask = kv_buffers.compact(cache, mask) if self._plain_cache and not self.fixed_shapes else mask
                    shared, mask = cascade_attention.split(cache, mask, [prompts[r] for r in rows], step)
                    kv_buffers.preallocate(cache, budget)
                    full_mask = torch.cat([mask, mask.new_ones((len(rows), budget))], dim=1)
                    width = mask.shape[1]
                while True:
                    real = [j for j, f in enumerate(filler) if not f]
                    chosen, token_lp = token_choice.choose(logits, reqs, generators, filler, real)
                    chosen_list = chosen.tolist()
                    for j, lp in zip(real, token_lp, strict=True):
                        r = rows[j]
                        if finish[r] is None:
                            finish[r] = token_choice.record_token(
                                self._tokenizer, self._eos, requests[r], tokens[r], logprobs[r], chosen_list[j], lp
                            )
                    keep = [j for j, r in enumerate(rows) if not filler[j] and finish[r] is None]
                    if not keep:
                        break
                    if not self.fixed_shapes and len(keep) < len(rows):  # finished rows leave the batch
                        sel = torch.tensor(keep, device=self._device)
                        cache.batch_select_indices(sel)
                        if shared is not None:
                            shared.select(keep)
                        full_mask, positions, chosen = full_mask[sel], positions[sel], chosen[sel]
                        rows, reqs = [rows[j] for j in keep], [reqs[j] for j in keep]
                        generators, filler = [generators[j] for j in keep], [filler[j] for j in keep]
                    positions = positions[:, -1:] + 1
                    if grouped:
                        logits = fixed_shapes.grouped_forward(self, chosen[:, None], positions, cache)
                    else:
                        width += 1
                        self.decode_steps["fused" if step else "forward"] += 1
                        args = (chosen[:, None], full_mask[:, :width], positions, cache)
                        logits = step(*args, shared=shared) if step else self._forward(*args)
        out = []
        for r, req in enumerate(requests):
            text, kept = token_choice.finish_text(self._tokenizer, req, tokens[r])
            lps = logprobs[r][:kept] if req.logprobs else []
            self.prompt_tokens += len(prompts[r])
            self.completion_tokens += kept
            out.append(Completion(text, lps, len(prompts[r]), kept, finish[r] or "length"))
        return out

    def _prompt_pass(self, prompts: list[list[int]], budgets: list[int] | None = None):
        """Read the prompts into a KV cache; returns ``(cache, mask, positions, next-token logits)``.

        Default mode: shared prefixes read once (:mod:`wow.backends.local.prefix_pass`; a plain batched pass for models
        with other cache layers). ``fixed_shapes``: :mod:`wow.backends.local.fixed_shapes`.
        """
        from transformers import DynamicCache

        if self.fixed_shapes:
            self.prompt_tokens_computed += sum(len(p) for p in {tuple(p) for p in prompts})
        if self._grouped:
            return fixed_shapes.grouped_prompt_pass(self, prompts, budgets or [0] * len(prompts))
        if not self.fixed_shapes and self._plain_cache and min(len(p) for p in prompts) > 0:
            cache, mask, positions, logits, computed = prefix_pass.shared_prefix_pass(
                self._forward, self._model.config, prompts, self._pad, self._device
            )
            self.prompt_tokens_computed += computed
            return cache, mask, positions, logits
        ids, mask = self._left_pad(prompts)  # a plain left-padded batch (only when the shared-prefix pass is not used)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        if not self.fixed_shapes:
            self.prompt_tokens_computed += int(mask.sum())
            cache = DynamicCache(config=self._model.config)
            return cache, mask, positions, self._forward(ids, mask, positions, cache)
        return fixed_shapes.fixed_prompt_pass(self, prompts, ids, mask, positions)

    # -- next-token distributions ---------------------------------------------------------------------------
    def _choice_logprobs(
        self, requests: list[ChatRequest], choices: list[str], batches: list[list[int]] | None = None
    ) -> list[dict[str, float]]:
        """One forward pass on prompt + prefill; log-softmax of the next-token logits at each choice's token: the
        first token the choice adds to the prompt text (so "1" after "Score:" is read as the tokenizer would write
        it there; :func:`~wow.backends.local.token_choice.choice_token`); the rest of a multi-token choice is ignored.
        """
        self._load()
        torch = self._torch
        texts = [self._prompt_text(r) for r in requests]
        prompts = [self._encode(t) for t in texts]
        out: list[dict[str, float] | None] = [None] * len(requests)
        with progress_bar(len(requests), "prompt", f"{self.model} next-token choices") as bar:
            for idx in self._batches(prompts) if batches is None else batches:
                self.calls += len(idx)
                with torch.inference_mode():
                    logp = torch.log_softmax(self._prompt_pass([prompts[i] for i in idx])[3], dim=-1).cpu()
                for j, i in enumerate(idx):
                    self.prompt_tokens += len(prompts[i])
                    tokens = {c: token_choice.choice_token(self._encode, texts[i], prompts[i], c) for c in choices}
                    out[i] = {c: float(logp[j, t]) for c, t in tokens.items()}
                bar.update(len(idx))
        return out

    def usage(self) -> dict:
        """Requests decoded, tokens read / generated and decoding steps (fused, forward) of this engine so far."""
        counts = ("calls", "prompt_tokens", "prompt_tokens_computed", "completion_tokens")
        steps = {f"decode_steps_{way}": n for way, n in self.decode_steps.items()}
        return {**{key: getattr(self, key) for key in counts}, **steps}

    def close(self) -> None:
        """Drop the model (frees its memory; the fused step holds a packed copy of its weights)."""
        self._model = self._tokenizer = None
        self._steps = self._steps and decode_step.StepCache()
