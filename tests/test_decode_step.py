"""The fused decoding step (wow.backends.local.decode_step): the model's own logits, step after step, and the engine
decoding through it by default."""

import pytest
import torch
from wow.backends import ChatRequest
from wow.backends.local import decode_step, kv_buffers
from wow.backends.local.transformers_engine import SAMPLER_VERSION, TransformersEngine


def gqa_llama(dtype=torch.float32, **overrides):
    """A random 3-layer Llama with grouped-query attention (6 query heads on 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    settings = dict(
        vocab_size=97,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    settings.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**settings)).eval().to(dtype)
    with torch.no_grad():  # norms away from 1, so a norm applied wrongly shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def prompt_cache(model, ids, mask, extra):
    """The KV cache and next-token logits of a left-padded prompt pass, with room for ``extra`` steps (None: a plain
    cache)."""
    from transformers import DynamicCache

    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
    if extra is not None:
        kv_buffers.preallocate(cache, extra)
    return cache, logits.logits[:, -1].float(), positions[:, -1:]


def decode(model, step, ids, mask, steps=6, drop_after=3):
    """Greedy decoding from a prompt pass; the step is ``step`` or the model's forward. Row 1 leaves the batch after
    ``drop_after`` steps (as finished rows do). Returns every step's logits (rows that stay)."""
    cache, logits, positions = prompt_cache(model, ids, mask, steps)
    full = torch.cat([mask, mask.new_ones((len(ids), steps))], dim=1)
    width, out = mask.shape[1], []
    for s in range(steps):
        if s == drop_after:
            keep = torch.tensor([r for r in range(len(ids)) if r != 1])
            cache.batch_select_indices(keep)
            full, positions, logits = full[keep], positions[keep], logits[keep]
        chosen = logits.argmax(-1)[:, None]
        positions, width = positions + 1, width + 1
        if step is None:
            logits = (
                model(input_ids=chosen, attention_mask=full[:, :width], position_ids=positions, cache=cache)
                .logits[:, -1]
                .float()
            )
        else:
            logits = step(chosen, full[:, :width], positions, cache)
        out.append(logits if s >= drop_after else logits[[0, 2, 3]])
    return torch.stack(out)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_the_step_gives_the_models_logits_at_every_step(dtype, tolerance):
    model = gqa_llama(dtype)
    assert decode_step.supports(model)
    torch.manual_seed(1)
    ids = torch.randint(3, 97, (4, 12))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding
    mask[2, 4:7] = 0  # a hole between shared-prefix segments, as the shared-prefix pass leaves
    with torch.inference_mode():
        ours = decode(model, decode_step.FusedDecodeStep(model, rows=4), ids, mask)
        theirs = decode(model, None, ids, mask)
    scale = theirs.abs().max().item()
    assert scale > 0.1  # the logits are not trivially small
    assert (ours - theirs).abs().max().item() <= tolerance * max(scale, 1.0)
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_without_onednn_packing_the_step_uses_plain_weights_and_the_same_logits(monkeypatch):
    model = gqa_llama()
    torch.manual_seed(1)
    ids = torch.randint(3, 97, (4, 12))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        packed = decode(model, decode_step.FusedDecodeStep(model, rows=4), ids, mask)
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        step = decode_step.FusedDecodeStep(model, rows=4)
        assert step._product is torch.nn.functional.linear and step.head.dtype == torch.float32
        plain = decode(model, step, ids, mask)
        theirs = decode(model, None, ids, mask)
    assert (plain - theirs).abs().max().item() < 1e-5 and (packed - plain).abs().max().item() < 1e-5


def test_supports_plain_llama_layers_only(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    assert decode_step.supports(gqa_llama())
    assert not decode_step.supports(gqa_llama(attention_bias=True))
    assert not decode_step.supports(gqa_llama(mlp_bias=True))
    assert not decode_step.supports(gqa_llama(hidden_act="gelu"))
    lora = get_peft_model(gqa_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    assert not decode_step.supports(lora.base_model.model)  # a LoRA layer is not a plain weight
    qwen = Qwen2ForCausalLM(
        Qwen2Config(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=1, num_attention_heads=6)
    )
    assert not decode_step.supports(qwen)


def test_the_step_is_rebuilt_when_the_model_or_its_merged_adapter_changes():
    steps = decode_step.StepCache()
    model, other = gqa_llama(), gqa_llama()
    first = steps.get(model, None, 4)
    assert first is not None and steps.get(model, None, 8) is first
    assert steps.get(model, "adapter-a", 4) is not first  # an adapter merged in place: new weights to pack
    assert steps.get(other, "adapter-a", 4) is not first
    assert steps.get(gqa_llama(attention_bias=True), None, 4) is None


@pytest.mark.parametrize("dtype,max_diff,mean_diff", [("float32", 1e-3, 1e-4), ("bfloat16", 1.0, 0.1)])
def test_the_step_gives_the_offline_models_logits_teacher_forced(dtype, max_diff, mean_diff):
    """The offline default model (30 layers, grouped-query attention): 8 steps of the fused step and of forward, fed
    the same tokens, from prompts of three lengths (left padding). bfloat16's bounds allow the last-bit differences
    another CPU's kernels may give (a logit of 20 has a resolution of 0.125); a wrong norm, rotation or head order
    moves the logits by whole units."""
    from wow.backends import models

    model, tokenizer = models.load_model(models.DEFAULT_MODEL, dtype=dtype)
    questions = ["What is 2+3?", "Name a color and say why you like it.", "Count to five, then back to one."]
    prompts = [
        tokenizer(
            tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        )["input_ids"]
        for q in questions
    ]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    forced = torch.randint(100, 20000, (3, 8), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = {}
        for name, step in (("fused", decode_step.FusedDecodeStep(model, rows=3)), ("forward", None)):
            cache, _, positions = prompt_cache(model, ids, mask, 8)
            full = torch.cat([mask, mask.new_ones((3, 8))], dim=1)
            logits = []
            for s in range(8):
                positions = positions + 1
                args = (forced[:, s : s + 1], full[:, : width + s + 1], positions, cache)
                if step is None:
                    logits.append(model(input_ids=args[0], attention_mask=args[1], position_ids=args[2], cache=cache))
                    logits[-1] = logits[-1].logits[:, -1].float()
                else:
                    logits.append(step(*args))
            out[name] = torch.stack(logits)
    diff = (out["fused"] - out["forward"]).abs()
    assert diff.max().item() <= max_diff and diff.mean().item() <= mean_diff
    assert (out["fused"].argmax(-1) == out["forward"].argmax(-1)).float().mean().item() >= 0.9


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_engine_decodes_through_the_step(dtype):
    """The default engine uses the fused step (and its identity says how it decodes); in float32 its greedy answers
    equal those of decoding through ``forward`` and its sampled logprobs agree wherever it sampled the same tokens."""
    fused = TransformersEngine(dtype=dtype, batch_size=4)
    plain = TransformersEngine(dtype=dtype, batch_size=4, fused_decode=False)
    assert fused.identity()["sampler"] == SAMPLER_VERSION == 6 and "fused_decode" not in fused.identity()
    assert plain.identity()["fused_decode"] is False  # their results never share a cache entry
    assert "fused_decode" not in TransformersEngine(dtype=dtype, fixed_shapes=True).identity()
    prompts = [
        "What is 2+3?",
        "Name a color.",
        "Count to five.",
        "In a graph with edges 0-1 weight 3, what is 0 to 1?",
    ]
    greedy = [ChatRequest([{"role": "user", "content": p}], max_tokens=12, temperature=0.0) for p in prompts]
    sampled = [ChatRequest([{"role": "user", "content": p}], max_tokens=12, seed=3, logprobs=True) for p in prompts]
    a, b = fused.generate(greedy + sampled), plain.generate(greedy + sampled)
    assert fused.usage()["decode_steps_fused"] > 0 and fused.usage()["decode_steps_forward"] == 0
    assert plain.usage()["decode_steps_forward"] > 0 and plain.usage()["decode_steps_fused"] == 0
    assert all(c.text and c.completion_tokens for c in a)
    if dtype == "float32":  # bfloat16 may round a near tie the other way on another CPU
        assert [c.text for c in a[:4]] == [c.text for c in b[:4]]
        same = [(x, y) for x, y in zip(a[4:], b[4:], strict=True) if x.text == y.text]
        assert same  # sampled answers that took the same tokens
        for x, y in same:
            assert x.token_logprobs and x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-4)


def test_compacting_the_cache_drops_its_holes_and_changes_no_logit():
    """kv_buffers.compact: the positions no row attends to leave the cache; decoding after it gives the same logits
    (float32) through the fused step and through forward."""
    model = gqa_llama()
    torch.manual_seed(2)
    ids = torch.randint(3, 97, (3, 10))
    mask = torch.ones_like(ids)
    mask[:, 3:6] = 0  # a hole every row has: dropped
    mask[0, :2] = 0  # row 0 attends to 5 positions, rows 1 and 2 to 7
    with torch.inference_mode():
        cache, logits, positions = prompt_cache(model, ids, mask, None)
        keys = [layer.keys.clone() for layer in cache.layers]
        compacted = kv_buffers.compact(cache, mask)
        assert compacted.tolist() == [[0, 0, 1, 1, 1, 1, 1], [1] * 7, [1] * 7]
        kept = [[2, 6, 7, 8, 9], [0, 1, 2, 6, 7, 8, 9], [0, 1, 2, 6, 7, 8, 9]]
        for layer, before in zip(cache.layers, keys, strict=True):
            assert layer.keys.shape[2] == 7
            for r, idx in enumerate(kept):
                assert torch.equal(layer.keys[r, :, 7 - len(idx) :], before[r, :, idx])
        assert kv_buffers.compact(cache, compacted) is compacted  # no holes left: nothing to do
        kv_buffers.preallocate(cache, 3)
        tokens = logits.argmax(-1)[:, None]
        full = torch.cat([compacted, compacted.new_ones((3, 3))], dim=1)
        step = decode_step.FusedDecodeStep(model, rows=3)
        ours = step(tokens, full[:, :8], positions + 1, cache)
        reference, _, _ = prompt_cache(model, ids, mask, 3)
        full = torch.cat([mask, mask.new_ones((3, 3))], dim=1)
        theirs = model(input_ids=tokens, attention_mask=full[:, :11], position_ids=positions + 1, cache=reference)
    assert (ours - theirs.logits[:, -1].float()).abs().max().item() < 1e-5
