"""The transformers engine on the offline default model: seeds, batch invariance, logprobs, prefill, choices."""

import math

import pytest
import torch
from wow import WowError
from wow.backends import ChatRequest, get_engine
from wow.backends.local import token_choice
from wow.backends.local.transformers_engine import TransformersEngine

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
def fixed():
    """The batch-invariant mode (``fixed_shapes=True``)."""
    return TransformersEngine(dtype="float32", batch_size=8, fixed_shapes=True)


@pytest.fixture(scope="module", params=["fixed_shapes", "default"])
def engine(request, fixed):
    """Each mode in turn: the batch-invariant one and the default (shared prefixes read once)."""
    return fixed if request.param == "fixed_shapes" else TransformersEngine(dtype="float32", batch_size=8)


def test_same_sample_in_any_batch_composition(fixed):
    engine = fixed
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


def test_mixed_lengths_budgets_and_modes_share_a_batch_invariantly(fixed):
    engine = fixed
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


def test_radix_tree_reads_each_long_shared_prefix_once():
    from wow.backends.local.prefix_pass import radix_tree

    q = list(range(100, 140))  # a 40-token "question" shared by three prompts
    seqs = [q + [1] * 20, q + [1] * 20 + [2] * 30, q + [3] * 5, [7, 8, 9], q + [1] * 20]
    root = radix_tree(seqs, min_shared=16)
    [shared, other] = sorted(root.children, key=lambda n: -len(n.tokens))
    assert shared.tokens == q and other.tokens == [7, 8, 9] and other.ends == [3]
    by_len = sorted(shared.children, key=lambda n: len(n.tokens))
    assert [n.tokens for n in by_len] == [[3] * 5, [1] * 20]
    assert by_len[1].ends == [0, 4] and by_len[1].children[0].tokens == [2] * 30  # identical prompts: one node
    # a shared edge shorter than min_shared is re-read by each child instead of being a level of its own
    short = radix_tree([[5, 6, 1, 1], [5, 6, 2, 2]], min_shared=16)
    assert sorted(n.tokens for n in short.children) == [[5, 6, 1, 1], [5, 6, 2, 2]]


def test_shared_prefixes_are_read_once_and_change_no_result(default_model):
    """Judge-like prompts (one question, every ordered pair of answers): a third of the prompt tokens or fewer are
    computed, and the next-token distributions and sampled logprobs equal those of each prompt read alone."""
    model, tok = default_model
    question = PROMPTS[2] + " Explain each step of your reasoning and give the total weight of the path at the end."
    answers = ["0-1-4, weight 5.", "I think 0-4 directly, weight 9, since it is one edge.", "Weight 7.", "0-1-4"]
    requests = [
        ask(f"Question: {question}\nAnswer 1: {a}\nAnswer 2: {b}\nWhich answer is better?", prefill="Answer")
        for a in answers
        for b in answers
        if a != b
    ]
    engine = TransformersEngine(dtype="float32", batch_size=16)
    got = engine.choice_logprobs(requests, ["1", "2"])
    usage = engine.usage()
    assert usage["prompt_tokens_computed"] * 3 <= usage["prompt_tokens"]
    for request, lp in zip(requests[:4], got[:4], strict=True):
        text = tok.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
        ids = tok(text + "Answer", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
        for choice in ("1", "2"):
            token = token_choice.choice_token(engine._encode, text + "Answer", ids, choice)
            assert lp[choice] == pytest.approx(logp[token].item(), abs=1e-4)
    completions = engine.generate([ask(question, k, max_tokens=6) for k in range(4)])  # 4 samples of one prompt
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    for c in completions:
        ids = tok(text + c.text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        n = len(ids) - c.completion_tokens
        assert [logp[i - 1, ids[i]].item() for i in range(n, len(ids))] == pytest.approx(c.token_logprobs, abs=1e-3)


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(WowError, match="dtype"):
        TransformersEngine(dtype="int8")
    with pytest.raises(WowError, match="adapter"):
        TransformersEngine(adapter=tmp_path)
    with pytest.raises(WowError, match="unknown option"):
        get_engine("transformers", "smollm2-135m", temprature=1.0)
    with pytest.raises(WowError, match="unknown engine"):
        get_engine("vllm", "smollm2-135m")


def make_lora(model_dir, folder, seed, targets=("q_proj", "v_proj", "down_proj")):
    """A saved LoRA adapter of ``model_dir`` with random (non-zero) weights drawn from ``seed``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, target_modules=list(targets), init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_adapters_on_a_shared_base_are_bitwise_those_of_a_model_each(tiny_model, tmp_path, monkeypatch, dtype):
    from wow.backends import models

    adapters = [make_lora(tiny_model, tmp_path / f"lora{seed}", seed) for seed in (1, 2)]
    adapters.append(make_lora(tiny_model, tmp_path / "lora3", 3, targets=("o_proj", "up_proj")))  # other layers
    requests = [ask(p, k, max_tokens=6) for p in PROMPTS[:2] for k in range(2)]
    requests.append(ask(PROMPTS[3], temperature=0.0, max_tokens=6))

    def outputs(engine):
        completions = engine.generate(requests)
        return (
            [(c.text, c.token_logprobs) for c in completions],
            engine.choice_logprobs(requests[:2], ["1", "2"]),
            engine.identity(),
        )

    own = {}
    for adapter in [None, *adapters]:  # today's path: a model loaded for each adapter, merged into its weights
        engine = TransformersEngine(tiny_model, dtype=dtype, batch_size=8, adapter=adapter)
        own[adapter] = outputs(engine)
        engine.close()
    assert len({repr(o[0]) for o in own.values()}) == len(own)  # every adapter changes the samples
    assert all(own[a][2]["adapter_sha256"] for a in adapters) and "adapter_sha256" not in own[None][2]

    loads = []
    real_load = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    with models.SharedBase(tiny_model, dtype=dtype) as base:
        shared = {
            a: TransformersEngine(tiny_model, dtype=dtype, batch_size=8, adapter=a, base=base)
            for a in [None, *adapters]
        }
        # back and forth: each switch puts the weights an adapter changed back before merging the next one
        for adapter in [adapters[0], None, adapters[1], adapters[2], adapters[0], None, adapters[2]]:
            assert outputs(shared[adapter]) == own[adapter]
            assert base.active == shared[adapter].identity().get("adapter_sha256")
        assert base.loads == 1 and len(loads) == 1
    assert base.model is None  # the owner freed it


def test_shared_base_refuses_an_engine_of_another_model_or_dtype(tiny_model):
    from wow.backends import models

    base = models.SharedBase(tiny_model, dtype="float32")
    with pytest.raises(WowError, match="shared base model"):
        TransformersEngine(tiny_model, dtype="bfloat16", base=base)
    with pytest.raises(WowError, match="shared base model"):
        TransformersEngine("smollm2-135m", dtype="float32", base=base)
    assert base.loads == 0  # nothing loaded until an engine runs
