"""The transformers engine on the offline default model: seeds, batch invariance, logprobs, prefill, choices."""

import math

import pytest
import torch
from wow import WowError
from wow.backends import ChatRequest, get_engine
from wow.backends.transformers_engine import TransformersEngine

PROMPTS = [
    "What is 2+3?",
    "Name a color and say why you like it.",
    "In a graph with edges 0-1 weight 3, 1-4 weight 2 and 0-4 weight 9, what is the shortest path from 0 to 4?",
    "Count to five.",
]


def ask(prompt, k=0, **kw):
    kw.setdefault("max_tokens", 10)
    return ChatRequest(messages=[{"role": "user", "content": prompt}], seed=7, sample_index=k, **kw)


@pytest.fixture(scope="module")
def engine():
    return TransformersEngine(dtype="float32", batch_size=8)


def test_same_sample_in_any_batch_composition(engine):
    requests = [ask(p, k) for p in PROMPTS for k in range(2)]
    together = engine.generate(requests)
    alone = engine.generate([requests[5]])
    mixed = engine.generate([requests[6], requests[1], requests[3]])
    for got, want in [
        (alone[0], together[5]),
        (mixed[0], together[6]),
        (mixed[1], together[1]),
        (mixed[2], together[3]),
    ]:
        assert (got.text, got.token_logprobs) == (want.text, want.token_logprobs)
    # the sample index reseeds: two samples of one prompt differ somewhere
    assert any(together[2 * i].text != together[2 * i + 1].text for i in range(len(PROMPTS)))


def test_mixed_lengths_budgets_and_modes_share_a_batch_invariantly(engine):
    # more rows of one prompt than an attention chunk, other prompt lengths, two token budgets, a greedy row
    requests = [ask(PROMPTS[2], k, max_tokens=6) for k in range(9)] + [
        ask(PROMPTS[0], 1, max_tokens=9),
        ask(PROMPTS[3], 2, max_tokens=6, temperature=0.0),
        ask(PROMPTS[1], 3, max_tokens=9, top_p=0.8),
    ]
    together = engine.generate(requests)
    for i in (0, 8, 9, 10, 11):
        [alone] = engine.generate([requests[i]])
        assert (alone.text, alone.token_logprobs) == (together[i].text, together[i].token_logprobs)
    assert engine.choice_logprobs(requests[8:10], ["1", "2"]) == engine.choice_logprobs(requests, ["1", "2"])[8:10]


def test_logprobs_match_a_teacher_forced_pass(engine, default_model):
    model, tok = default_model
    [c] = engine.generate([ask(PROMPTS[2], max_tokens=12)])
    assert len(c.token_logprobs) == c.completion_tokens > 0
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": PROMPTS[2]}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(prompt + c.text, add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids and len(ids) - len(prompt_ids) == c.completion_tokens
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    forced = [logp[i - 1, ids[i]].item() for i in range(len(prompt_ids), len(ids))]
    assert forced == pytest.approx(c.token_logprobs, abs=1e-3)
    assert c.mean_logprob == pytest.approx(sum(forced) / len(forced), abs=1e-3)
    assert 0 < c.confidence <= 1


def test_greedy_prefill_continues_the_assistant_turn(engine, default_model):
    model, tok = default_model
    prefill = "The total weight is"
    [c] = engine.generate([ask(PROMPTS[2], temperature=0.0, prefill=prefill, max_tokens=6)])
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": PROMPTS[2]}], tokenize=False, add_generation_prompt=True
    )
    enc = tok(prompt + prefill, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    expected = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert c.text == expected
    assert not c.text.startswith(prefill) and c.prompt_tokens == enc["input_ids"].shape[1]


def test_choice_logprobs_are_the_next_token_distribution(engine, default_model):
    model, tok = default_model
    request = ask("Rate the answer 'Paris' to 'Capital of France?' from 0 to 5.", prefill="Score: ")
    digits = [str(d) for d in range(10)]
    [lp] = engine.choice_logprobs([request], digits)
    assert set(lp) == set(digits) and all(v < 0 for v in lp.values())
    total = sum(math.exp(v) for v in lp.values())
    assert 0 < total <= 1 + 1e-6
    prompt = tok.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True) + "Score: "
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
    digit_id = tok("3", add_special_tokens=False)["input_ids"][0]
    assert lp["3"] == pytest.approx(logp[digit_id].item(), abs=1e-3)


def test_stop_strings_and_max_tokens(engine):
    [free] = engine.generate([ask("Count to five.", max_tokens=16, temperature=0.0)])
    stop = free.text.split()[2]
    stopped, empty = engine.generate(
        [ask("Count to five.", max_tokens=16, temperature=0.0, stop=[stop]), ask("Hi", max_tokens=0)]
    )
    assert stopped.text == free.text[: free.text.index(stop)] and stopped.finish_reason == "stop"
    assert (empty.text, empty.completion_tokens, empty.finish_reason) == ("", 0, "length")


def test_tiny_top_p_is_greedy_and_loose_shapes_still_sample_correctly(engine, default_model):
    model, tok = default_model
    [greedy, nucleus] = engine.generate([ask(PROMPTS[1], temperature=0.0), ask(PROMPTS[1], top_p=1e-9)])
    assert nucleus.text == greedy.text
    loose = TransformersEngine(dtype="float32", batch_size=3, fixed_shapes=False)
    out = loose.generate([ask(p, max_tokens=8) for p in PROMPTS])  # two batches; finished rows leave the batch
    c = out[2]
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": PROMPTS[2]}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt + c.text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    n = len(ids) - c.completion_tokens
    assert [logp[i - 1, ids[i]].item() for i in range(n, len(ids))] == pytest.approx(c.token_logprobs, abs=1e-3)


def test_adapter_changes_the_model_and_the_identity(engine, tmp_path, default_model):
    from peft import LoraConfig, get_peft_model

    model, _ = default_model
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.unload()  # leave the shared fixture model as it was
    tuned = TransformersEngine(dtype="float32", batch_size=8, adapter=tmp_path / "adapter")
    assert tuned.identity()["adapter_sha256"] and tuned.identity() != engine.identity()
    request = ask(PROMPTS[0], temperature=0.0, max_tokens=8)
    assert tuned.generate([request])[0].token_logprobs != engine.generate([request])[0].token_logprobs


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(WowError, match="dtype"):
        TransformersEngine(dtype="int8")
    with pytest.raises(WowError, match="adapter"):
        TransformersEngine(adapter=tmp_path)
    with pytest.raises(WowError, match="unknown option"):
        get_engine("transformers", "smollm2-135m", temprature=1.0)
    with pytest.raises(WowError, match="unknown engine"):
        get_engine("vllm", "smollm2-135m")
