"""Every trainer trains a tiny random Llama (the `tiny_model` fixture of conftest.py) for a few steps; the grid, the
lengths and the command line."""

import math

import pytest
from conftest import oracle_answers
from transformers import TrainerCallback
from wow import WowError, io
from wow.align.align_config import AlignConfig
from wow.align.command import main
from wow.align.grid import grid_search
from wow.align.training import is_complete, train
from wow.analysis.no_preference_loss import no_preference_loss
from wow.preferences import build_preferences, save_preferences
from wow.schema import TRAINERS, setting_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prefs():
    """6 questions x 3 wrong answers with distinct labels -> 18 oracle pairs; 2 questions (6 pairs) validate."""
    answers = oracle_answers()
    return build_preferences(answers, "oracle", val_fraction=0.34, seed=0)


# Two steps without warm-up: the first moves every LoRA B (initialised at 0), the second every LoRA A.
FAST = AlignConfig(
    max_steps=2,
    train_batch_size=2,
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
    assert res.best_step == 2  # a run shorter than eval_steps is evaluated at its last step only: its final weights
    losses = [h["loss"] for h in res.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    # the first step's loss is taken at the start (LoRA's B = 0: the policy is its reference), where each
    # reference-based loss has its fixed no-preference value (ln 2, 1, 1/(4β²), 1/(2β²)); the others have none
    chance = no_preference_loss(trainer, FAST.beta)
    assert (chance is None) == (trainer in ("rpo", "cpo", "simpo", "orpo")), trainer
    if chance:
        assert losses[0] == pytest.approx(chance[1], rel=1e-4), (trainer, chance)
    assert is_complete(tmp_path / trainer) and not (tmp_path / trainer / "checkpoints").exists()  # removed when done
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


def test_a_training_logged_before_a_field_was_renamed_is_reused(tiny_model, prefs, tmp_path):
    """A complete training of an older run logged ``batch_size`` (now ``train_batch_size``): it is read and reused,
    not refused and not retrained."""
    cfg = AlignConfig(**{**FAST.__dict__, "max_steps": 1})
    first = train(prefs["train"], None, tiny_model, "dpo", tmp_path / "run", cfg)
    log = tmp_path / "run" / "train_log.json"
    logged = io.read_json(log)
    logged["config"]["batch_size"] = logged["config"].pop("train_batch_size")
    io.write_json(log, logged)
    again = train(prefs["train"], None, tiny_model, "dpo", tmp_path / "run", cfg)
    assert again.skipped and again.train_loss == first.train_loss
    assert again.config.train_batch_size == cfg.train_batch_size


def test_full_fine_tuning_without_lora(tiny_model, prefs, tmp_path):
    watch = WeightWatch()
    cfg = AlignConfig(**{**FAST.__dict__, "use_lora": False, "max_steps": 1, "learning_rate": 1e-3})
    res = train(prefs["train"].select(range(2)), None, tiny_model, "dpo", tmp_path / "full", cfg, callbacks=[watch])
    assert not any("lora_" in n for n in watch.before)
    layer = "model.layers.0.self_attn.q_proj.weight"
    assert not watch.before[layer].equal(watch.after[layer]) and math.isfinite(res.train_loss)
    assert (tmp_path / "full" / "model.safetensors").exists() and is_complete(tmp_path / "full")


def test_unknown_trainer_lists_the_valid_ones(prefs, tmp_path):
    with pytest.raises(WowError, match="dpo, ipo, rso, sppo, rpo, cpo, simpo, orpo"):
        train(prefs["train"], None, "smollm2-135m", "kto", tmp_path, FAST)


def test_config_rejects_unknown_fields():
    with pytest.raises(WowError, match="lr"):
        AlignConfig.from_dict({"lr": 1e-4})


def _long_pairs():
    """A prompt well over 64 tokens with short answers (cut), one over 64 that fits 128 with its answers (kept, as
    TRL 0.9 kept it), a short one whose answer alone is over 128 tokens (answer cut by TRL), and a short one."""
    edges = ", ".join(f"edge {i}-{i + 1} weight {i % 7 + 1}" for i in range(40))
    rows = [
        (f"Graph: {edges}. Question: what is the shortest path weight from node 0 to node 40?", "It is 12.", "9"),
        ("Graph: " + ", ".join(f"edge {i}-{i + 1}" for i in range(8)) + ". Path weight from 0 to 8?", "8", "7"),
        ("Count to sixty.", " ".join(str(i) for i in range(1, 61)), "No."),
        ("What is 2+2?", "5", "6"),
    ]
    return [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for q, c, r in rows
    ]


def _rendered(tok, prompt):
    return tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False)


def test_overlong_prompts_keep_their_end_like_trl_0_9(tiny_model):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from wow.align.truncation import prepare_examples

    tok = AutoTokenizer.from_pretrained(tiny_model)
    pairs = _long_pairs()
    lengths = [len(_rendered(tok, p["prompt"])) for p in pairs]
    assert lengths[0] > 200 and 64 < lengths[1] < 100 and lengths[2] < 64 and lengths[3] < 64  # the set-up
    cfg = AlignConfig(max_length=128, max_prompt_length=64)
    ds, counts = prepare_examples(Dataset.from_list(pairs), tok, cfg, "train")
    expected = {"pairs": 4, "over_max_length": 2, "prompts_truncated": 1, "answers_truncated": 1}
    assert counts == {**expected, "longest_prompt": lengths[0]}
    cut = ds[0]["prompt"]
    assert 60 <= len(_rendered(tok, cut)) <= 64  # the last max_prompt_length tokens, give or take a re-tokenised one
    assert [m["role"] for m in cut] == ["user"] and pairs[0]["prompt"][0]["content"].endswith(cut[0]["content"])
    assert cut[0]["content"].endswith("from node 0 to node 40?") and len(cut[0]["content"]) < 200
    assert _rendered(tok, cut)[:3] == _rendered(tok, pairs[0]["prompt"])[:3]  # the chat frame's start is whole
    assert [ds[i] for i in (1, 2, 3)] == pairs[1:]  # the others are untouched (the second fits with its answers)
    assert ds[0]["chosen"] == pairs[0]["chosen"] and ds[0]["rejected"] == pairs[0]["rejected"]

    untouched, counts = prepare_examples(Dataset.from_list(pairs[1:]), tok, cfg, "validation")
    assert counts["prompts_truncated"] == 0 and untouched.to_list() == pairs[1:]
    with pytest.raises(WowError, match="chat template alone takes more than max_prompt_length=5"):
        prepare_examples(Dataset.from_list(pairs), tok, AlignConfig(max_length=128, max_prompt_length=5), "train")


def test_overlong_pairs_train_truncated_not_dropped(tiny_model, tmp_path, caplog):
    from datasets import Dataset

    class FirstBatch(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            self.prompt_lengths = [len(x) for x in train_dataloader.dataset["prompt_ids"]]

    seen = FirstBatch()
    cfg = AlignConfig(**{**FAST.__dict__, "max_steps": 1, "max_length": 128, "max_prompt_length": 64})
    with caplog.at_level("INFO", logger="wow.align.truncation"):
        res = train(Dataset.from_list(_long_pairs()), None, tiny_model, "dpo", tmp_path / "run", cfg, callbacks=[seen])
    assert res.n_train == 4 and len(seen.prompt_lengths) == 4  # nothing dropped, by us or by TRL
    assert seen.prompt_lengths[0] <= 64 < seen.prompt_lengths[1]  # cut; kept whole: it fits with its answers
    assert res.truncated["train"]["prompts_truncated"] == 1 and res.truncated["train"]["answers_truncated"] == 1
    assert res.truncated["validation"]["pairs"] == 0
    assert io.read_json(tmp_path / "run" / "train_log.json")["truncated"] == res.truncated
    assert "train: 2 of 4 pairs have prompt + answer over max_length=128 tokens: 1 prompts cut" in caplog.text


def test_config_checks_lengths_and_scheduler_names():
    with pytest.raises(WowError, match="did you mean 'cosine_with_restarts'"):
        AlignConfig(lr_scheduler="cosine_with_restart").check()  # the paper's grid_search.py spelling
    with pytest.raises(WowError, match="max_prompt_length .512. must be positive and below max_length .512."):
        AlignConfig(max_length=512).check()
    AlignConfig().check()
    assert (AlignConfig().max_length, AlignConfig().max_prompt_length) == (1536, 512)  # the paper's


def test_scheduler_names_are_those_of_transformers(tmp_path):
    from transformers.trainer_utils import SchedulerType
    from wow.align.align_config import trl_config
    from wow.align.grid import PAPER_SCHEDULERS
    from wow.schema import SCHEDULERS

    assert set(SCHEDULERS) <= {s.value for s in SchedulerType} and set(PAPER_SCHEDULERS) <= set(SCHEDULERS)
    for name in PAPER_SCHEDULERS:  # TRL's configs accept each; all evaluate while training when they can
        args = trl_config("dpo", AlignConfig(lr_scheduler=name, bf16=False), tmp_path, "cpu", has_validation=True)
        assert args.lr_scheduler_type.value == name
        assert (args.eval_strategy.value, args.eval_steps) == ("steps", 1000)


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


def test_paper_grid_is_81_points_in_the_papers_order(tmp_path, monkeypatch):
    import itertools

    from wow.align import grid, training

    trained = []

    def fake_train(train_set, val_set, model_name, trainer, output_dir, config, callbacks=None):
        trained.append(config)
        return training.TrainResult(output_dir, trainer, model_name, config, 1.0, 1 / len(trained), 1, 0.1, 0.1, 4, 2)

    monkeypatch.setattr(training, "train", fake_train)  # the one training run the grid calls
    paper = dict(lr_schedulers=grid.PAPER_SCHEDULERS, weight_decays=grid.PAPER_WEIGHT_DECAYS)
    result = grid_search([1], [1], "m", "dpo", tmp_path, AlignConfig(), **paper)
    assert len(result.runs) == 81 and len({r["name"] for r in result.runs}) == 81
    axes = ("learning_rate", "lr_scheduler", "weight_decay", "epochs")
    assert [tuple(r[k] for k in axes) for r in result.runs] == list(
        itertools.product(
            (1e-4, 5e-5, 1e-5), ("cosine", "cosine_with_restarts", "reduce_lr_on_plateau"), (0, 1e-5, 1e-3), (1, 3, 5)
        )
    )
    assert [(c.learning_rate, c.lr_scheduler, c.weight_decay, c.epochs) for c in trained] == [
        tuple(r[k] for k in axes) for r in result.runs
    ]
    assert result.runs[0]["name"] == "lr=1.0e-04_scheduler=cosine_decay=0.0e+00_epochs=1"
    assert result.runs[-1]["name"] == "lr=1.0e-05_scheduler=reduce_lr_on_plateau_decay=1.0e-03_epochs=5"
    assert result.best["name"] == result.runs[-1]["name"] and result.selected_by == "val_loss"

    trained.clear()  # default axes: 9 points named as before, at the base scheduler and weight decay
    nine = grid_search([1], [1], "m", "dpo", tmp_path / "nine", AlignConfig(weight_decay=0.0))
    assert [r["name"] for r in nine.runs][:2] == ["lr=1.0e-04_epochs=1", "lr=1.0e-04_epochs=3"] and len(nine.runs) == 9
    assert {(c.lr_scheduler, c.weight_decay) for c in trained} == {("cosine", 0.0)}

    trained.clear()  # a misspelt scheduler, or reduce_lr_on_plateau without validation pairs, fails before training
    with pytest.raises(WowError, match="did you mean 'cosine_with_restarts'"):
        grid_search([1], [1], "m", "dpo", tmp_path, lr_schedulers=["cosine", "cosine_with_restart"])
    with pytest.raises(WowError, match="no validation pairs"):
        grid_search([1], None, "m", "dpo", tmp_path, **paper)
    with pytest.raises(WowError, match="empty grid axis weight_decays"):
        grid_search([1], [1], "m", "dpo", tmp_path, weight_decays=[])
    assert trained == []


def test_grid_over_schedulers_trains_each_and_plateau_evaluates(tiny_model, prefs, tmp_path):
    class Optimiser(TrainerCallback):
        seen = []

        def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
            decays = {g["weight_decay"] for g in optimizer.param_groups}
            self.seen.append((type(lr_scheduler).__name__, max(decays)))

    cfg = AlignConfig(**{**FAST.__dict__, "max_steps": 3, "train_batch_size": 1, "eval_steps": 1})
    kw = dict(
        learning_rates=(1e-2,), epochs=(1,), lr_schedulers=("cosine", "reduce_lr_on_plateau"), weight_decays=(1e-3,)
    )
    train_set, val_set = prefs["train"].select(range(3)), prefs["validation"].select(range(2))
    result = grid_search(train_set, val_set, tiny_model, "dpo", tmp_path, cfg, callbacks=[Optimiser()], **kw)
    names = ["lr=1.0e-02_scheduler=cosine_epochs=1", "lr=1.0e-02_scheduler=reduce_lr_on_plateau_epochs=1"]
    assert [r["name"] for r in result.runs] == names  # one weight decay: not in the names
    assert Optimiser.seen == [("LambdaLR", 1e-3), ("ReduceLROnPlateau", 1e-3)]
    cosine, plateau = (io.read_json(tmp_path / n / "train_log.json") for n in names)
    assert plateau["config"]["lr_scheduler"] == "reduce_lr_on_plateau" and plateau["config"]["weight_decay"] == 1e-3
    # both validated every eval_steps (1) steps while training; the plateau scheduler steps on those evaluations
    assert [h["step"] for h in plateau["log_history"] if "eval_loss" in h] == [1, 2, 3]
    assert [h["step"] for h in cosine["log_history"] if "eval_loss" in h] == [1, 2, 3]
    lrs = [[h["learning_rate"] for h in log["log_history"] if "loss" in h] for log in (cosine, plateau)]
    assert lrs[0][0] > lrs[0][-1] and lrs[1] == [1e-2] * 3  # cosine decays; the plateau rate holds (no warm-up)


def test_grid_search_with_the_evaluation_selector(tiny_model, prefs, tmp_path):
    from wow import tasks
    from wow.align.evaluate import evaluate_adapter, make_select_fn
    from wow.analysis.eval_metrics import compare_before_after

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
    assert compare_before_after(before, after, n_boot=20)["n_questions"] == len(test)


def test_command_line_trains_a_saved_preference_set(tiny_model, prefs, tmp_path):
    folder = save_preferences(prefs, tmp_path / "prefs")
    out = tmp_path / "adapter"
    argv = ["--preferences", str(folder), "--trainer", "ipo", "--output", str(out), "--model", tiny_model]
    assert (
        main(
            [*argv, "--max-steps", "1", "--train-batch-size", "2", "--config", '{"progress": false, "cpu_threads": 1}']
        )
        == 0
    )
    logged = io.read_json(out / "train_log.json")
    assert (
        logged["steps"] == 1
        and logged["config"]["train_batch_size"] == 2
        and (out / "adapter_model.safetensors").exists()
    )
    # training reads the saved set and writes nothing into it (no datasets cache files beside a run's sets)
    assert sorted(p.name for p in folder.rglob("cache-*")) == []


def test_setting_names_follow_the_paper():
    assert setting_name("self", "oracle", "dpo") == "self_oracle_dpo"
    assert setting_name("mix", "direct", "dpo", judge="gpt-4o") == "mix_direct_filtered_gpt-4o_dpo"
    assert setting_name("mix", "direct", "dpo", judge="gpt-4o", both_orders=False) == "mix_direct_gpt-4o_dpo"
    assert setting_name("mix", "row_score", "dpo", judge="gpt-4o", margin=0.1) == "mix_row_score_0.1_gpt-4o_dpo"
