"""End to end on the real offline default model: DPO with LoRA for two steps, then the adapter loads back."""

import math

import pytest
from wow.align.align_config import AlignConfig
from wow.align.training import train
from wow.preferences import build_preferences

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_dpo_lora_on_the_default_model_saves_a_loadable_adapter(tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from wow.backends import models

    # 4 train questions x 3 wrong answers -> 3 oracle pairs each; 12 pairs, one question's 3 go to validation
    answers = [
        {
            "answer_id": f"sp{q}|smollm2-135m|{i}",
            "question_id": f"sp{q}",
            "split": "train",
            "generator": "smollm2-135m",
            "sample_index": i,
            "prompt_messages": [
                {
                    "role": "user",
                    "content": f"Graph {q}: edges 0-1 weight 2, 1-2 weight {q + 1}. Shortest path 0 to 2?",
                }
            ],
            "text": f"Going 0 -> 1 -> 2 the total weight is {q + 3 + 2 * i}.",
            "extracted": q + 3 + 2 * i,
            "raw_label": -(2 * i + 1) if i else -0.5,
            "is_correct": False,
        }
        for q in range(4)
        for i in range(3)
    ]
    prefs = build_preferences(answers, "oracle", val_fraction=0.25, seed=0)
    assert len(prefs["train"]) == 9 and len(prefs["validation"]) == 3
    out = tmp_path / "self_oracle_dpo"
    res = train(
        prefs["train"].select(range(8)),
        prefs["validation"],
        "smollm2-135m",
        "dpo",
        out,
        AlignConfig(max_steps=2, train_batch_size=1, progress=False, cpu_threads=1),
    )
    assert res.steps == 2 and math.isfinite(res.train_loss) and math.isfinite(res.val_loss)
    assert res.s_per_step is not None and res.s_per_step > 0

    saved = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())  # B starts at 0: it trained
    base, tok = models.load_model("smollm2-135m")
    model = PeftModel.from_pretrained(base, out)
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    some_key = next(k for k in saved if "lora_B" in k)
    match = [k for k in loaded if k.replace(".default", "").endswith(some_key.split("base_model.model.", 1)[1])]
    assert match and torch.equal(loaded[match[0]].float(), saved[some_key].float())
    ids = tok.apply_chat_template(
        prefs["train"][0]["prompt"], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 4 or tok.eos_token_id in gen[0].tolist()
