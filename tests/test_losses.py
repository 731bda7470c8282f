"""Every trainer's loss, as TRL reports it in a run of ``wow.align.training.train``, equals its formula computed by hand.

One optimiser step over one batch of three pairs, with learning rate 0, on the tiny random Llama (conftest.py). A
callback gives every LoRA B a seeded random value when training starts, so the policy (adapter on) differs from the
reference (adapter off, the frozen base). The test then computes the log-probabilities itself: it tokenises each
pair with the chat template (not with TRL), runs the model with the adapter on and off, sums the token
log-probabilities of each answer, and evaluates the paper's formula with the paper's settings written here, not
read from ``wow.align``. A wrong loss type, beta, ``cpo_alpha``, SimPO gamma or reference in ``wow.align`` fails.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from wow.align import align_config
from wow.align.align_config import AlignConfig
from wow.align.training import train
from wow.schema import TRAINERS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The paper's settings (finetune.py's preference_optimization, TRL 0.9.6 defaults where it passes nothing).
BETA = 0.1  # DPO/IPO/RSO/SPPO beta; CPO's and SimPO's beta; ORPO's lambda
SIMPO_GAMMA = 0.5  # SimPO's target margin
CPO_ALPHA = 1.0  # weight of CPO's NLL term; SimPO sets 0
RPO_ALPHA = 1.0  # weight of RPO's NLL term (Pang et al.), an anchored DPO this toolkit adds to the paper's seven

#: Trainers built on TRL's experimental CPO/ORPO trainers, which tokenise the chat-template text themselves and
#: append EOS when the answer does not end with it (SmolLM2's template ends a turn with "<|im_end|>\n").
ADDS_EOS = {"cpo", "simpo", "orpo"}


def _pairs():
    """Three pairs with different prompts and answers of different lengths."""
    rows = [
        (
            "Graph 1: edges 0-1 weight 2, 1-2 weight 3. Shortest path from 0 to 2?",
            "It is 6.",
            "The total is 9, via 1.",
        ),
        ("Which gas do plants absorb?", "Oxygen, mostly at night.", "Nitrogen."),
        ("Name a prime above 10.", "It is 15, which is odd.", "12"),
    ]
    return [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for q, c, r in rows
    ]


class PerturbAdapter(TrainerCallback):
    """Sets every LoRA B to seeded random values when training starts (B starts at 0: policy = reference) and keeps
    the model for the hand computation."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.model = model


def _token_logps(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t = 1..len(ids)-1, in float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    return logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


def _by_hand(model, tokenizer, pairs, trainer: str) -> dict[str, float]:
    """The trainer's loss (and logged terms) from the model's own log-probabilities, in float64."""
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    per_pair = []
    nll_answer = [0.0, 0]  # CPO: mean NLL over the chosen answers' tokens of the batch
    nll_full = [0.0, 0]  # ORPO: mean NLL over the chosen sequences' tokens (prompt too) of the batch
    model.eval()
    for pair in pairs:
        prompt = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, return_dict=False)
        if trainer in ADDS_EOS and prompt[0] != bos:
            prompt = [bos, *prompt]
        row = {}
        for key in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(pair["prompt"] + pair[key], return_dict=False)
            assert full[: len(prompt)] == prompt, "the rendered prompt is not a prefix of prompt + answer"
            answer = full[len(prompt) :]
            if trainer in ADDS_EOS and answer[-1] != eos:
                answer = [*answer, eos]
            ids = prompt + answer
            policy = _token_logps(model, ids)
            with model.disable_adapter():
                reference = _token_logps(model, ids)
            n = len(answer)
            row[key] = {"policy": policy[-n:].sum().item(), "reference": reference[-n:].sum().item(), "n": n}
            if key == "chosen":
                nll_answer[0] -= policy[-n:].sum().item()
                nll_answer[1] += n
                nll_full[0] -= policy.sum().item()
                nll_full[1] += len(policy)
        per_pair.append(row)

    def mean(xs):
        return sum(xs) / len(xs)

    pc = torch.tensor([r["chosen"]["policy"] for r in per_pair], dtype=torch.float64)
    pr = torch.tensor([r["rejected"]["policy"] for r in per_pair], dtype=torch.float64)
    rc = torch.tensor([r["chosen"]["reference"] for r in per_pair], dtype=torch.float64)
    rr = torch.tensor([r["rejected"]["reference"] for r in per_pair], dtype=torch.float64)
    nc = torch.tensor([r["chosen"]["n"] for r in per_pair], dtype=torch.float64)
    nr = torch.tensor([r["rejected"]["n"] for r in per_pair], dtype=torch.float64)
    chosen_ratio, rejected_ratio = pc - rc, pr - rr  # log pi/pi_ref of each answer (sums over its tokens)
    margin = chosen_ratio - rejected_ratio
    out = {"policy_chosen": pc.mean().item(), "reward_chosen": (BETA * chosen_ratio).mean().item()}
    if trainer == "dpo":  # Rafailov et al.: -log sigmoid(beta * margin)
        losses = -F.logsigmoid(BETA * margin)
    elif trainer == "ipo":  # Azar et al. eq. 17, on per-token log-ratios (TRL's and TRL 0.9's length normalisation)
        losses = (chosen_ratio / nc - rejected_ratio / nr - 1 / (2 * BETA)) ** 2
    elif trainer == "rso":  # RSO's hinge loss
        losses = torch.relu(1 - BETA * margin)
    elif trainer == "sppo":  # SPPO with hard probabilities: winner to +1/(2 beta), loser to -1/(2 beta)
        losses = (chosen_ratio - 0.5 / BETA) ** 2 + (rejected_ratio + 0.5 / BETA) ** 2
    elif trainer == "rpo":  # Pang et al.: DPO + alpha * mean NLL of the chosen answers' tokens of the batch
        out["nll"] = nll_answer[0] / nll_answer[1]
        losses = -F.logsigmoid(BETA * margin) + RPO_ALPHA * out["nll"]
    elif trainer == "cpo":  # Xu et al.: -log sigmoid(beta (log pi_c - log pi_r)), no reference, + alpha * NLL
        out["nll"] = nll_answer[0] / nll_answer[1]
        losses = -F.logsigmoid(BETA * (pc - pr)) + CPO_ALPHA * out["nll"]
    elif trainer == "simpo":  # Meng et al.: length-normalised, target margin gamma, no NLL term
        out["policy_chosen"] = (pc / nc).mean().item()
        losses = -F.logsigmoid(BETA * (pc / nc - pr / nr) - SIMPO_GAMMA)
    elif trainer == "orpo":  # Hong et al.: NLL - lambda log sigmoid(log odds ratio), length-normalised log p
        avg_c, avg_r = pc / nc, pr / nr
        log_odds = (avg_c - avg_r) - (torch.log1p(-torch.exp(avg_c)) - torch.log1p(-torch.exp(avg_r)))
        out |= {"nll": nll_full[0] / nll_full[1], "log_odds_ratio": F.logsigmoid(log_odds).mean().item()}
        out |= {"log_odds_chosen": log_odds.mean().item(), "policy_chosen": avg_c.mean().item()}
        losses = out["nll"] - BETA * F.logsigmoid(log_odds)
    else:
        raise AssertionError(f"no formula for {trainer}")
    out["loss"] = mean(losses.tolist())
    return out


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=2e-4, abs_tol=2e-5)


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_reported_loss_is_the_papers_formula(trainer, tiny_model, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer

    pairs = _pairs()
    config = AlignConfig(
        max_steps=1,
        train_batch_size=len(pairs),  # one step sees every pair: the logged loss is their mean
        learning_rate=0.0,  # the step changes nothing: the model afterwards is the one the loss was computed with
        warmup_ratio=0.0,
        logging_steps=1,
        bf16=False,
        progress=False,
        cpu_threads=1,
    )
    perturb = PerturbAdapter()
    res = train(Dataset.from_list(pairs), None, tiny_model, trainer, tmp_path / trainer, config, callbacks=[perturb])
    logged = res.log_history[0]
    assert logged["step"] == 1

    expected = _by_hand(perturb.model, AutoTokenizer.from_pretrained(tiny_model), pairs, trainer)
    assert _close(logged["loss"], expected["loss"]), f"{trainer}: TRL {logged['loss']}, by hand {expected['loss']}"
    assert _close(logged["logps/chosen"], expected["policy_chosen"])  # the same answer tokens, the same model
    if trainer in ("dpo", "ipo", "rso", "sppo", "rpo"):
        # the reference is the base without the adapter
        assert _close(logged["rewards/chosen"], expected["reward_chosen"])
        assert abs(expected["reward_chosen"]) > 1e-3  # the adapter moved the policy away from the reference
    if trainer == "cpo":
        assert _close(logged["nll_loss"], expected["nll"])
    if trainer == "simpo":
        assert logged["nll_loss"] == 0.0  # cpo_alpha 0: no NLL term
    if trainer == "orpo":
        for key, mine in (("nll_loss", "nll"), ("log_odds_ratio", "log_odds_ratio"), ("log_odds_chosen", None)):
            assert _close(logged[key], expected[mine or key])


def test_the_formulas_tell_the_trainers_apart(tiny_model):
    """The hand losses of the seven trainers differ on this batch, so a test above cannot pass with a wrong mapping."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), align_config.lora_config(AlignConfig()))
    PerturbAdapter().on_train_begin(None, None, None, model=model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    losses = {t: _by_hand(model, tokenizer, _pairs(), t)["loss"] for t in TRAINERS}
    values = sorted(losses.values())
    assert all(not _close(a, b) for a, b in zip(values, values[1:], strict=False)), losses


def test_rpo_alpha_reaches_trls_loss_weights():
    """The weight of RPO's NLL term is the run's ``rpo_alpha`` (TRL's ``loss_weights`` of sigmoid and sft)."""
    from wow.align.align_config import trl_config

    args = trl_config("rpo", AlignConfig(rpo_alpha=0.25, bf16=False), __import__("pathlib").Path("unused"), "cpu")
    assert list(args.loss_type) == ["sigmoid", "sft"] and list(args.loss_weights) == [1.0, 0.25]
    dpo = trl_config("dpo", AlignConfig(rpo_alpha=0.25, bf16=False), __import__("pathlib").Path("unused"), "cpu")
    assert list(dpo.loss_type) == ["sigmoid"] and dpo.loss_weights in (None, [1.0])
