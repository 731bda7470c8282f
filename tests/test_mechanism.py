"""The mechanism endpoint (#31): implicit rewards of the base answers under each adapter, by hand."""

import math

import numpy as np
import pytest
import torch
from wow import WowError
from wow.align import mechanism


def row(q, i, correctness, label, correct=False, text=None):
    return {
        "answer_id": f"{q}|{i}",
        "question_id": q,
        "generator": "g",
        "sample_index": i,
        "prompt_messages": [{"role": "user", "content": f"Question {q}: the weight?"}],
        "text": text or f"The weight is {10 + label}.",
        "extracted": 10 + label,
        "raw_label": label,
        "correctness": correctness,
        "is_correct": correct,
    }


ROWS = [
    row("q1", 0, 0.8, -2),
    row("q1", 1, 0.4, -6),
    row("q1", 2, 1.0, 0, correct=True),
    row("q2", 0, 0.5, -5),
    row("q2", 1, 0.9, -1),
]


def test_arm_metrics_by_hand():
    rewards = np.array([1.0, 0.0, 5.0, 0.0, -1.0])
    m = mechanism.arm_metrics(ROWS, rewards)
    # pairs: q1 (0.8 vs 0.4): reward 1 > 0, hit; q2 (0.5 vs 0.9): reward 0 > -1 but label -5 < -1, miss
    assert m["n_pairs"] == 2 and m["ranking_accuracy"] == 0.5
    # wrong answers 0.8, 0.4, 0.5, 0.9 with weights e^1, e^0, e^0, e^-1 (self-normalised)
    w = np.exp([1.0, 0.0, 0.0, -1.0])
    c = np.array([0.8, 0.4, 0.5, 0.9])
    assert m["iw_p_wrong"] == pytest.approx((w * c).sum() / w.sum())
    assert m["d_iw_p_wrong"] == pytest.approx((w * c).sum() / w.sum() - c.mean())
    assert m["ess"] == pytest.approx(w.sum() ** 2 / (w**2).sum()) and m["n_wrong"] == 4
    assert m["kl_ref_policy"] == pytest.approx(-rewards.mean())
    same = mechanism.arm_metrics(ROWS, np.zeros(5))  # an adapter that changes nothing
    assert same["ranking_accuracy"] == 0.0 and same["d_iw_p_wrong"] == pytest.approx(0.0)
    assert same["ess"] == pytest.approx(4.0) and same["kl_ref_policy"] == 0.0
    with pytest.raises(WowError, match="rewards"):
        mechanism.arm_metrics(ROWS, np.zeros(3))


def test_ranking_difference_by_hand():
    # q1 has one pair (answers 0 over 1), q2 one pair (answer 1 over 0)
    a = {"q1|0": 1.0, "q1|1": 0.0, "q1|2": 0.0, "q2|0": 0.0, "q2|1": 1.0}  # orders both pairs right
    b = {"q1|0": 0.0, "q1|1": 1.0, "q1|2": 0.0, "q2|0": 0.0, "q2|1": 1.0}  # only q2's
    assert mechanism.question_hits(ROWS, a) == {"q1": (1, 1), "q2": (1, 1)}
    assert mechanism.question_hits(ROWS, b) == {"q1": (0, 1), "q2": (1, 1)}
    d = mechanism.ranking_difference(ROWS, {"a": a, "b": b}, ["a"], ["b"], n_boot=2000, seed=0)
    assert (d["a"], d["b"], d["difference"]) == (1.0, 0.5, 0.5)
    assert d["n_questions"] == 2 and d["n_pairs"] == 2
    # a question draw holds q1 k times out of 2: difference k / 2, so the interval runs from 0 to 1
    assert d["ci_low"] == 0.0 and d["ci_high"] == 1.0
    # two seeds of an arm are averaged: seeds a and b against b alone
    pooled = mechanism.ranking_difference(ROWS, {"a": a, "b": b}, ["a", "b"], ["b"], n_boot=200)
    assert pooled["a"] == 0.75 and pooled["difference"] == 0.25
    with pytest.raises(WowError, match="at least one setting"):
        mechanism.ranking_difference(ROWS, {"a": a}, ["a"], [])


@pytest.fixture
def adapter(tiny_model, tmp_path):
    """A LoRA adapter of the tiny model with seeded random B matrices (it changes the model), saved to a folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=4, target_modules="all-linear")
    )
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.5
    model.save_pretrained(tmp_path / "adapter")
    return model, tmp_path / "adapter"


def test_rewards_are_the_adapters_log_ratios_of_the_answer_tokens(tiny_model, adapter):
    from transformers import AutoTokenizer

    peft_model, folder = adapter
    tok = AutoTokenizer.from_pretrained(tiny_model)
    peft_model.eval()
    by_hand = []
    for r in ROWS:  # the answer's tokens after the prompt, with the adapter on and off, one sequence at a time
        prompt = tok.apply_chat_template(r["prompt_messages"], add_generation_prompt=True, return_dict=False)
        full = tok.apply_chat_template([*r["prompt_messages"], {"role": "assistant", "content": r["text"]}],
                                       return_dict=False)  # fmt: skip
        ids, n_prompt = torch.tensor([full]), len(prompt)

        def total(m, ids=ids, n=n_prompt):
            with torch.no_grad():
                logp = m(input_ids=ids).logits[0, :-1].double().log_softmax(-1)
            return logp.gather(-1, ids[0, 1:, None])[:, 0][n - 1 :].sum().item()

        policy = total(peft_model)
        with peft_model.disable_adapter():
            reference = total(peft_model)
        by_hand.append(policy - reference)
    table = mechanism.mechanism_table(ROWS, {"perturbed": str(folder)}, model=str(tiny_model), dtype="float32")
    [arm] = table.to_dict("records")
    expected = mechanism.arm_metrics(ROWS, np.array(by_hand))  # ROWS are in question order, as the table scores
    assert arm["setting"] == "perturbed" and list(table.columns) == mechanism.COLUMNS
    assert abs(arm["kl_ref_policy"]) > 1e-3  # the adapter moved the model
    for key in ("kl_ref_policy", "iw_p_wrong", "ess"):
        assert math.isclose(arm[key], expected[key], rel_tol=1e-4, abs_tol=1e-4), key
    assert arm["ranking_accuracy"] == expected["ranking_accuracy"]


def test_contrast_table_sets_every_arm_against_the_lowest_acc_wow():
    """Arms {a: x 1, two seeds a0, a1}, {b: x 0}, {c: x 0.5}: b is the reference; a pools its seeds."""
    a0 = {"q1|0": 1.0, "q1|1": 0.0, "q1|2": 0.0, "q2|0": 0.0, "q2|1": 1.0}  # both pairs right
    a1 = {"q1|0": 0.0, "q1|1": 1.0, "q1|2": 0.0, "q2|0": 0.0, "q2|1": 1.0}  # q2's only
    b = {"q1|0": 0.0, "q1|1": 1.0, "q1|2": 0.0, "q2|0": 1.0, "q2|1": 0.0}  # none
    rewards = {"a__seed0": a0, "a__seed1": a1, "b": b, "c": a0}
    arms = {"a": (1.0, ["a__seed0", "a__seed1"]), "b": (0.0, ["b"]), "c": (0.5, ["c"])}
    t = mechanism.contrast_table("t", ROWS, rewards, arms, n_boot=200)
    assert list(t["setting"]) == ["a", "c"] and set(t["reference"]) == {"b"}
    assert list(t["n_seeds"]) == [2, 1] and list(t["reference_ranking_accuracy"]) == [0.0, 0.0]
    assert list(t["ranking_accuracy"]) == [0.75, 1.0] and list(t["difference"]) == [0.75, 1.0]
    assert list(t["n_pairs"]) == [2, 2] and list(t["n_questions"]) == [2, 2]
    assert mechanism.contrast_table("t", ROWS, rewards, {"a": arms["a"]}).empty  # one arm: nothing to contrast
    no_pairs = [
        r for r in ROWS if r["question_id"] == "q1" and r["sample_index"] != 1
    ]  # one wrong answer per question
    assert mechanism.contrast_table("t", no_pairs, rewards, arms).empty


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_a_prompt_shared_by_its_answers_is_read_once_and_scores_as_each_whole_sequence(tiny_model, batch_size):
    """answer_logprobs reads each distinct prompt (but its last token) once and the answers after it, in chunks of
    ``batch_size`` (a question's three answers of different lengths: 1 + 2 chunks at 2): every score equals a pass
    over the whole sequence alone, and the decoder reads the shared prompts' tokens once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    rows = [*ROWS, row("q1", 3, 0.3, -7, text="A much longer answer: adding the edges one by one gives 17.")]
    expected, prompts, answers = [], {}, 0
    for r in rows:
        prompt = tok.apply_chat_template(r["prompt_messages"], add_generation_prompt=True, return_dict=False)
        full = tok.apply_chat_template([*r["prompt_messages"], {"role": "assistant", "content": r["text"]}],
                                       return_dict=False)  # fmt: skip
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([full])).logits[0, :-1].double().log_softmax(-1)
        expected.append(logp.gather(-1, torch.tensor(full[1:])[:, None])[:, 0][len(prompt) - 1 :].sum().item())
        prompts[tuple(prompt)] = len(prompt)
        answers += len(full) - len(prompt) + 1  # the prompt's last token, then the answer
    read = []

    def tokens_read(_module, _args, kwargs):  # the real tokens of a forward's input (its mask's last columns)
        ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
        read.append(int(mask[:, -ids.shape[1] :].sum()) if mask is not None else ids.numel())

    hook = model.get_decoder().register_forward_pre_hook(tokens_read, with_kwargs=True)
    try:
        got = mechanism.answer_logprobs(model, tok, rows, batch_size=batch_size)
    finally:
        hook.remove()
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-4), (got, expected)
    assert len({tuple(r["prompt_messages"][0].values()) for r in rows}) == len(prompts) == 2
    # each prompt's tokens but the last once, then every row's continuation; padding is not counted
    assert sum(read) == sum(n - 1 for n in prompts.values()) + answers
