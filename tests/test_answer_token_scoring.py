"""On the CPU, TRL's fused LM head scores only the answer tokens inside a training (wow.align.answer_token_scoring):
the same log-probabilities, entropies and gradients as scoring every position, from fewer projected rows."""

import pytest
import torch
from trl.trainer import utils as trl_utils
from wow.align.answer_token_scoring import answer_tokens_only

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")  # what TRL's DPOTrainer asks of the policy


@pytest.fixture(scope="module")
def fused_model(tiny_model):
    """The tiny Llama with TRL's fused LM head, as DPOTrainer patches the policy."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    trl_utils.add_fused_lm_head(model, outputs=OUTPUTS)
    return model


def _score(model, input_ids, labels):
    """Per-token outputs of the fused head and the gradient of the summed log-probabilities on the embeddings."""
    model.zero_grad()
    out = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    out.log_probs.sum().backward()
    grad = model.get_input_embeddings().weight.grad.clone()
    return out, grad


def _rows_projected(monkeypatch, model, input_ids, labels):
    """Score once, returning the outputs, the gradient and the rows TRL's chunked function projected."""
    rows = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def counting(hidden, *args):
        rows.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting)
    out, grad = _score(model, input_ids, labels)
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", apply)
    return out, grad, rows


def test_the_cpu_projects_answer_tokens_only_with_the_same_values(fused_model, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 1000, (2, 12), generator=gen)
    labels = input_ids.clone()
    labels[:, :8] = -100  # a prompt of 8 tokens, an answer of 4 (the first label is never a target)
    labels[1, 11] = -100  # a padded position
    every, every_grad, every_rows = _rows_projected(monkeypatch, fused_model, input_ids, labels)
    with answer_tokens_only():
        assert trl_utils._use_triton(CPU)
        only, only_grad, only_rows = _rows_projected(monkeypatch, fused_model, input_ids, labels)
    assert every_rows == [2 * 11]  # every shifted position, prompt included
    assert only_rows == [4 + 3]  # the labelled positions: 4 answer tokens, 3 in the padded row
    mask = labels[:, 1:] != -100
    for name in OUTPUTS:
        a, b = getattr(every, name), getattr(only, name)
        assert a.shape == b.shape == mask.shape, name
        torch.testing.assert_close(a[mask], b[mask], rtol=1e-5, atol=1e-6, msg=name)
    assert (only.log_probs[~mask] == 0).all() and (every.log_probs[~mask] == 0).all()
    assert only_grad.abs().sum() > 0
    torch.testing.assert_close(every_grad, only_grad, rtol=1e-5, atol=1e-7)


def test_the_switch_is_undone_after_the_block_and_on_errors():
    original = trl_utils._use_triton
    assert not original(CPU)  # TRL 1.16 scores every position on a CPU: what the block changes
    with pytest.raises(RuntimeError), answer_tokens_only():
        raise RuntimeError("a training that fails")
    assert trl_utils._use_triton is original


def test_training_runs_inside_the_switch(tiny_model, tmp_path):
    """Through wow's train(), as wow run's stage 04 calls it: every step and the validation see the switch on, and
    train_log.json says so (ORPO, which has no fused head, says it did not; the smoke run's ``wow run`` check is in
    tests/test_parameter_path.py)."""
    from conftest import oracle_answers
    from transformers import TrainerCallback
    from wow import io
    from wow.align.align_config import AlignConfig
    from wow.align.training import train
    from wow.preferences import build_preferences

    class Seen(TrainerCallback):
        def __init__(self):
            self.flags = []

        def on_step_end(self, args, state, control, **kwargs):
            self.flags.append(trl_utils._use_triton(CPU))

        def on_evaluate(self, args, state, control, **kwargs):
            self.flags.append(trl_utils._use_triton(CPU))

    prefs = build_preferences(oracle_answers(), "oracle", val_fraction=0.34, seed=0)
    seen = Seen()
    config = AlignConfig(max_steps=2, train_batch_size=2, progress=False, cpu_threads=1)
    train_set, val_set = prefs["train"].select(range(4)), prefs["validation"].select(range(2))
    res = train(train_set, val_set, tiny_model, "dpo", tmp_path / "dpo", config, callbacks=[seen])
    assert res.steps == 2 and seen.flags == [True, True, True]  # two steps, one validation
    assert not trl_utils._use_triton(CPU)
    assert io.read_json(tmp_path / "dpo" / "train_log.json")["answer_tokens_only"] is True
    train(train_set, None, tiny_model, "orpo", tmp_path / "orpo", config)
    assert io.read_json(tmp_path / "orpo" / "train_log.json")["answer_tokens_only"] is False
