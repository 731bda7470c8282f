"""Every trainer trains a tiny random Llama (built here, with the default model's tokenizer) for a few steps."""

import math

import pytest
from transformers import TrainerCallback
from wow import WowError, io
from wow.align import (
    TRAINERS,
    AlignConfig,
    grid_search,
    is_complete,
    main,
    setting_name,
    train,
)
from wow.preferences import build_preferences, save_preferences

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer, hidden-32 Llama with the offline default model's tokenizer, saved to a folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from wow import models

    tok = AutoTokenizer.from_pretrained(models.default_model_path())
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def prefs():
    """6 questions x 3 wrong answers with distinct labels -> 18 oracle pairs; 2 questions (6 pairs) validate."""
    answers = [
        {
            "answer_id": f"q{q}|m|{i}",
            "question_id": f"q{q}",
            "split": "train",
            "generator": "m",
            "prompt_messages": [{"role": "user", "content": f"What is the shortest path weight in graph {q}?"}],
            "text": f"The total weight is {q + i + 3}.",
            "extracted": q + i + 3,
            "raw_label": -(i + 1),
            "is_correct": False,
        }
        for q in range(6)
        for i in range(3)
    ]
    return build_preferences(answers, "oracle", val_fraction=0.34, seed=0)


# Two steps without warm-up: the first moves every LoRA B (initialised at 0), the second every LoRA A.
FAST = AlignConfig(
    max_steps=2,
    batch_size=2,
    learning_rate=1e-2,
    warmup_ratio=0.0,
    weight_decay=0.0,
    logging_steps=1,
    progress=False,
    cpu_threads=1,  # the test machine is shared: see AlignConfig.cpu_threads
)


class WeightWatch(TrainerCallback):
    """Snapshots the trainable weights at the start and the end of training."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_every_trainer_changes_every_lora_weight(trainer, tiny_model, prefs, tmp_path):
    watch = WeightWatch()
    val = prefs["validation"].select(range(2))
    res = train(prefs["train"].select(range(4)), val, tiny_model, trainer, tmp_path / trainer, FAST, callbacks=[watch])
    assert watch.before and all("lora_" in n for n in watch.before)  # only the adapter trains
    assert len(watch.before) == 2 * 7 * 2  # A and B of q/k/v/o/gate/up/down in 2 layers
    unchanged = [n for n in watch.before if watch.before[n].equal(watch.after[n])]
    assert not unchanged, f"{trainer}: weights that did not change: {unchanged[:4]}"
    assert res.steps == 2 and math.isfinite(res.train_loss) and math.isfinite(res.val_loss)
    losses = [h["loss"] for h in res.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert is_complete(tmp_path / trainer)
    logged = io.read_json(tmp_path / trainer / "train_log.json")
    assert logged["trainer"] == trainer and logged["trl_loss"] == TRAINERS[trainer][1]
    assert logged["config"]["learning_rate"] == 1e-2 and logged["n_train"] == 4 and logged["n_val"] == 2


def test_complete_folder_is_not_retrained(tiny_model, prefs, tmp_path):
    cfg = AlignConfig(**{**FAST.__dict__, "max_steps": 1})
    first = train(prefs["train"], None, tiny_model, "dpo", tmp_path / "run", cfg)
    assert first.val_loss is None and not first.skipped
    again = train(prefs["train"], None, tiny_model, "dpo", tmp_path / "run", cfg)
    assert again.skipped and again.train_loss == first.train_loss and again.steps == 1
    other = train(
        prefs["train"], None, tiny_model, "dpo", tmp_path / "run", AlignConfig(**{**cfg.__dict__, "beta": 0.5})
    )
    assert not other.skipped and other.config.beta == 0.5  # a folder trained with other settings is redone


def test_full_fine_tuning_without_lora(tiny_model, prefs, tmp_path):
    watch = WeightWatch()
    cfg = AlignConfig(**{**FAST.__dict__, "use_lora": False, "max_steps": 1, "learning_rate": 1e-3})
    res = train(prefs["train"].select(range(2)), None, tiny_model, "dpo", tmp_path / "full", cfg, callbacks=[watch])
    assert not any("lora_" in n for n in watch.before)
    layer = "model.layers.0.self_attn.q_proj.weight"
    assert not watch.before[layer].equal(watch.after[layer]) and math.isfinite(res.train_loss)
    assert (tmp_path / "full" / "model.safetensors").exists() and is_complete(tmp_path / "full")


def test_unknown_trainer_lists_the_valid_ones(prefs, tmp_path):
    with pytest.raises(WowError, match="dpo, ipo, rso, sppo, cpo, simpo, orpo"):
        train(prefs["train"], None, "smollm2-135m", "kto", tmp_path, FAST)


def test_config_rejects_unknown_fields():
    with pytest.raises(WowError, match="lr"):
        AlignConfig.from_dict({"lr": 1e-4})


def test_overlong_prompts_are_dropped_and_none_left_is_an_error(tiny_model, prefs, tmp_path):
    cfg = AlignConfig(**{**FAST.__dict__, "max_prompt_length": 5})
    with pytest.raises(WowError, match="no training pairs"):
        train(prefs["train"], None, tiny_model, "dpo", tmp_path / "long", cfg)


def test_grid_search_picks_best_and_resumes(tiny_model, prefs, tmp_path):
    calls = []

    def select(adapter_dir):
        calls.append(adapter_dir.name)
        return 1.0 if "lr=1.0e-03" in adapter_dir.name else 0.5

    cfg = AlignConfig(**{**FAST.__dict__, "max_steps": -1})  # 1 epoch of 4 pairs at batch 2: 2 steps
    kw = dict(learning_rates=(1e-2, 1e-3), epochs=(1,), select_fn=select)
    train_set, val_set = prefs["train"].select(range(4)), prefs["validation"].select(range(2))
    result = grid_search(train_set, val_set, tiny_model, "dpo", tmp_path, cfg, **kw)
    assert [r["name"] for r in result.runs] == ["lr=1.0e-02_epochs=1", "lr=1.0e-03_epochs=1"]
    assert result.best["name"] == "lr=1.0e-03_epochs=1" and result.selected_by == "select_fn"
    assert all(r["val_loss"] is not None for r in result.runs) and result.runs[0]["epochs"] == 1
    assert io.read_json(tmp_path / "grid.json")["best"] == "lr=1.0e-03_epochs=1"
    again = grid_search(train_set, val_set, tiny_model, "dpo", tmp_path, cfg, **kw)
    assert all(r["skipped"] for r in again.runs) and len(calls) == 2  # no retraining, no re-selection
    one = grid_search(train_set, val_set, tiny_model, "dpo", tmp_path, cfg, **{**kw, "learning_rates": (1e-2,)})
    assert one.selected_by == "only configuration" and len(calls) == 2  # nothing to choose: no validation sampling
    by_loss = grid_search(train_set, val_set, tiny_model, "dpo", tmp_path, cfg, **{**kw, "select_fn": None})
    assert by_loss.selected_by == "val_loss"
    assert by_loss.best["val_loss"] == min(r["val_loss"] for r in by_loss.runs)


def test_grid_search_with_the_evaluation_selector(tiny_model, prefs, tmp_path):
    from wow import tasks
    from wow.evaluate import compare, evaluate_adapter, make_select_fn

    task = tasks.get("shortest_path")
    questions = task.questions(10, seed=0)
    val = [q for q in questions if q.split == "validation"]
    test = [q for q in questions if q.split == "test"]
    opts = dict(
        n_samples=2,
        max_tokens=8,
        engine_options={"batch_size": 4, "fixed_shapes": False},
        preference_sets=[prefs],
        progress=False,
    )
    cache = tmp_path / "cache.sqlite"
    select = make_select_fn(task, val, tiny_model, cache, **opts)
    cfg = AlignConfig(**{**FAST.__dict__, "max_steps": -1})
    train_set, val_set = prefs["train"].select(range(4)), prefs["validation"].select(range(2))
    kw = dict(learning_rates=(1e-2, 1e-3), epochs=(1,), select_fn=select)
    result = grid_search(train_set, val_set, tiny_model, "dpo", tmp_path / "setting", cfg, **kw)
    assert 0.0 <= result.best["select_score"] <= 1.0 and result.selected_by == "select_fn"
    for name in ["lr=1.0e-02_epochs=1", "lr=1.0e-03_epochs=1"]:
        validation_rows = io.read_jsonl(tmp_path / "setting" / "validation_answers" / f"{name}.jsonl")
        assert len(validation_rows) == 2 * len(val) and {r["split"] for r in validation_rows} == {"validation"}
    before = evaluate_adapter(task, test, tiny_model, None, cache, **opts)
    after = evaluate_adapter(task, test, tiny_model, result.best["output_dir"], cache, **opts)
    assert len(after) == 2 * len(test) and {r["split"] for r in after} == {"test"}
    assert (
        after[0]["generator"] == f"{tiny_model}@setting/{result.best['name']}" and before[0]["generator"] == tiny_model
    )
    assert compare(before, after, n_boot=20)["n_questions"] == len(test)


def test_command_line_trains_a_saved_preference_set(tiny_model, prefs, tmp_path):
    folder = save_preferences(prefs, tmp_path / "prefs")
    out = tmp_path / "adapter"
    argv = ["--preferences", str(folder), "--trainer", "ipo", "--output", str(out), "--model", tiny_model]
    assert (
        main([*argv, "--max-steps", "1", "--batch-size", "2", "--config", '{"progress": false, "cpu_threads": 1}'])
        == 0
    )
    logged = io.read_json(out / "train_log.json")
    assert (
        logged["steps"] == 1 and logged["config"]["batch_size"] == 2 and (out / "adapter_model.safetensors").exists()
    )


def test_setting_names_follow_the_paper():
    assert setting_name("self", "oracle", "dpo") == "self_oracle_dpo"
    assert setting_name("mix", "direct", "dpo", judge="gpt-4o") == "mix_direct_filtered_gpt-4o_dpo"
    assert setting_name("mix", "direct", "dpo", judge="gpt-4o", check=False) == "mix_direct_gpt-4o_dpo"
    assert setting_name("mix", "row_score", "dpo", judge="gpt-4o", margin=0.1) == "mix_row_score_0.1_gpt-4o_dpo"
