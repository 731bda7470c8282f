"""One decoding step of a Llama-family model on CPU, with less per-step work than the model's own ``forward``.

A decoding step multiplies one token per row by every weight of the model, so on a CPU it is bound by the cost of
each matrix product call and of the modules around it, not by its arithmetic (see ``bench/bench_sampling.py``).
:class:`FusedDecodeStep` computes what ``LlamaForCausalLM.forward`` computes for one new token per row over a
preallocated KV cache (:func:`wow.backends.local.kv_buffers.preallocate`), with

* the query, key and value projections of a layer in one matrix product, and its gate and up projections in another
  (the weights concatenated once: 4 products a layer instead of 7);
* on CPU, the weights prepacked into oneDNN's blocked layout once per model and merged adapter (:class:`StepCache`;
  ``torch.ops.mkldnn._reorder_linear_weight``), so a product does not reorder its weight at every call (the layout
  PyTorch's own compiler uses for CPU inference; plain ``F.linear`` where this build cannot pack the dtype);
* the model's own pieces where they carry its numerics: its embedding, its rotary embedding module (any RoPE
  type), its RMSNorm arithmetic (float32 statistics, the weight applied in the model's dtype) and the same
  ``scaled_dot_product_attention`` call with the query heads of a key/value head stacked as query rows, as
  ``transformers``' SDPA attention does for one query token under a padding mask.

The step's logits equal the model's ``forward`` up to floating-point rounding (tested in
``tests/test_decode_step.py``: the offline model's within 1e-3 in float32, and the same greedy tokens);
concatenating weights splits no dot product, so in bfloat16 on an AMX CPU they were bitwise equal. :func:`supports`
says which models qualify (plain Llama layers on CPU: no biases, SiLU MLP); others decode through ``forward``.

Example::

    step = FusedDecodeStep(model)                       # packs the weights (tens of milliseconds for 135M)
    logits = step(tokens[:, None], mask, positions, cache)   # float32 [rows, vocab]
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: ``config.model_type`` values whose decoder layers are plain Llama layers (what :class:`FusedDecodeStep` computes).
LLAMA_TYPES = ("llama",)


def supports(model) -> bool:
    """Whether :class:`FusedDecodeStep` computes ``model``'s forward: a CPU ``LlamaForCausalLM`` with plain layers.

    Checked: the model type, no attention or MLP bias, SiLU activation, no tensor-parallel split, the layers' own
    module types (a peft wrapper or a quantised linear layer is not a plain weight), and the CPU device.
    """
    import torch

    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in LLAMA_TYPES:
        return False
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return False
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return False
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        return False
    linear = torch.nn.Linear
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        projections = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(type(p) is not linear for p in projections):
            return False
    return type(model.lm_head) is linear and model.lm_head.weight.device.type == "cpu"


def _packer(dtype):
    """``(pack, product)`` for weights of ``dtype``: oneDNN's prepacked layout where this PyTorch build has it, else
    the plain weight and ``F.linear``."""
    import torch

    ops = getattr(torch.ops, "mkldnn", None)
    if torch.backends.mkldnn.is_available() and ops is not None and hasattr(ops, "_linear_pointwise"):
        try:  # the op exists in every CPU build with oneDNN; a build without its packing raises here, once
            probe = torch.zeros((8, 8), dtype=dtype)
            packed = torch.ops.mkldnn._reorder_linear_weight(probe, 1)
            torch.ops.mkldnn._linear_pointwise(torch.zeros((1, 8), dtype=dtype), packed, None, "none", [], "")
        except (RuntimeError, AttributeError) as exc:
            log.info("oneDNN weight packing unavailable (%s); decoding with plain weights", exc)
        else:

            def pack(weight, rows):
                return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)

            def product(x, weight):
                return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")

            return pack, product
    return (lambda weight, rows: weight.contiguous()), torch.nn.functional.linear


class FusedDecodeStep:
    """A decoding step of a :func:`supports`-ed model: ``step(tokens, mask, positions, cache) -> logits``.

    Args:
        model: the model (its current weights are packed: build a new step after merging an adapter in).
        rows: the batch size the packed layout is tuned for (any number of rows works).
    """

    def __init__(self, model, rows: int = 16):
        import torch

        inner = model.model
        dtype = model.lm_head.weight.dtype
        pack, self._product = _packer(dtype)
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.intermediate = config.intermediate_size
        self.scaling = inner.layers[0].self_attn.scaling
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.final_norm = (inner.norm.weight, inner.norm.variance_epsilon)
        self.layers = []
        with torch.no_grad():
            for layer in inner.layers:
                attn, mlp = layer.self_attn, layer.mlp
                qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
                gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
                self.layers.append(
                    (
                        (layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
                        pack(qkv, rows),
                        pack(attn.o_proj.weight, rows),
                        (layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon),
                        pack(gate_up, rows),
                        pack(mlp.down_proj.weight, rows),
                    )
                )
            self.head = pack(model.lm_head.weight, rows)
        self._torch = torch

    @staticmethod
    def _norm(x, norm):
        """LlamaRMSNorm's arithmetic: float32 statistics, the weight applied in the input's dtype."""
        import torch

        weight, eps = norm
        xf = x.to(torch.float32)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return weight * xf.to(x.dtype)

    def _rotate(self, x, cos, sin):
        half = self.head_dim // 2
        return x * cos + self._torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def __call__(self, tokens, mask, positions, cache, shared=None):
        """Logits (float32, ``[rows, vocab]``) of the next token after ``tokens`` (``[rows, 1]``) at ``positions``
        (``[rows, 1]``), attending to the cache's keys and values under ``mask`` (``[rows, width]``, 1 = attend,
        ``width`` = the cache's length after this step) and, with ``shared``
        (:class:`wow.backends.local.cascade_attention.SharedPrefix`), to the rows' shared prefixes first; writes this
        step's keys and values into ``cache``."""
        torch = self._torch
        functional = torch.nn.functional
        product, norm = self._product, self._norm
        rows = tokens.shape[0]
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        groups = heads // kv_heads
        x = self.embed(tokens)  # [rows, 1, hidden]
        cos, sin = self.rotary(x, positions)  # [rows, 1, dim], the model's dtype
        cos, sin = cos[:, None], sin[:, None]
        keep = mask.bool()[:, None, None, :]
        if shared is not None:  # the flash kernel that returns log-sum-exps takes an additive mask
            keep = torch.zeros(keep.shape, dtype=x.dtype).masked_fill(~keep, float("-inf"))
        split = [heads * dim, kv_heads * dim, kv_heads * dim]
        for i, (layer, weights) in enumerate(zip(cache.layers, self.layers, strict=True)):
            norm_in, qkv_w, o_w, norm_post, gate_up_w, down_w = weights
            q, k, v = product(norm(x, norm_in), qkv_w).split(split, dim=-1)
            q = self._rotate(q.view(rows, 1, heads, dim).transpose(1, 2), cos, sin)
            k = self._rotate(k.view(rows, 1, kv_heads, dim).transpose(1, 2), cos, sin)
            keys, values = layer.update(k, v.view(rows, 1, kv_heads, dim).transpose(1, 2))
            q = q.reshape(rows, kv_heads, groups, dim)
            if shared is None:
                out = functional.scaled_dot_product_attention(q, keys, values, attn_mask=keep, scale=self.scaling)
            else:
                out = shared.attend(i, q, keys, values, keep, self.scaling)
            x = x + product(out.reshape(rows, 1, heads * dim), o_w)
            gate, up = product(norm(x, norm_post), gate_up_w).split(self.intermediate, dim=-1)
            x = x + product(functional.silu(gate) * up, down_w)
        return product(norm(x[:, -1], self.final_norm), self.head).float()


#: Above this many bytes of weights the fused step (a second, packed copy of them) is not built.
MAX_PACKED_BYTES = 4 << 30


class StepCache:
    """The :class:`FusedDecodeStep` of the model an engine decodes with, built on first use and rebuilt when the
    model object or the adapter merged into it changes (a shared base merges adapters in place)."""

    def __init__(self):
        self._key = self._model = self._step = None

    def get(self, model, adapter_hash: str | None, rows: int):
        """The fused step for ``model`` with ``adapter_hash`` merged in, or None where :func:`supports` says no (the
        caller then decodes through ``forward``)."""
        if self._model is model and self._key == adapter_hash:
            return self._step
        self._model, self._key, self._step = model, adapter_hash, None
        if supports(model):
            size = sum(p.numel() * p.element_size() for p in model.parameters())
            if size <= MAX_PACKED_BYTES:
                self._step = FusedDecodeStep(model, rows)
            else:
                log.info("%.1f GB of weights: decoding through forward (no packed copy)", size / 2**30)
        return self._step
