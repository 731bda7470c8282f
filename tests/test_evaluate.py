"""Evaluation metrics, Δ sign conventions and leak checks, against values computed by hand; adapters evaluated on
one loaded base model, against a model loaded for each."""

import math

import pytest
from wow import WowError
from wow.align.evaluate import check_held_out, evaluate_model
from wow.analysis.alignment_csv import build_alignment_table, write_alignment_csv
from wow.analysis.eval_metrics import compare_before_after, reliability, summarize
from wow.preferences import build_preferences
from wow.tasks.base import Question


def row(qid, correctness, correct, conf, i=0, parsed=True):
    return {
        "answer_id": f"{qid}|m|{i}",
        "question_id": qid,
        "generator": "m",
        "correctness": correctness,
        "is_correct": correct,
        "extracted": 1 if parsed else None,
        "mean_logprob": None if conf is None else math.log(conf),
    }


def test_summarize_by_hand():
    rows = [
        row("q1", 1.0, True, 0.85),
        row("q1", 0.5, False, 0.85, 1),
        row("q2", 0.0, False, 0.15, parsed=False),
        row("q2", 0.25, False, None, 1),  # no logprob: left out of ECE only
    ]
    s = summarize(rows)
    assert s["n"] == 4 and s["n_questions"] == 2 and s["n_confidence"] == 3
    assert s["mean_correctness"] == pytest.approx((1 + 0.5 + 0 + 0.25) / 4)
    assert s["p_wrong"] == pytest.approx((0.5 + 0 + 0.25) / 3)  # the unparsed answer counts, at 0
    assert s["accuracy"] == pytest.approx(0.25)
    # bin (0.8, 0.9]: 2 answers, conf 0.85, acc 0.5; bin (0.1, 0.2]: 1 answer, conf 0.15, acc 0
    assert s["ece"] == pytest.approx((2 * 0.35 + 1 * 0.15) / 3)
    assert s["parse_rate"] == pytest.approx(0.75)


BEFORE = [
    row("q1", 1.0, True, 0.85),
    row("q1", 0.2, False, 0.85, 1),
    row("q2", 0.4, False, 0.15),
    row("q2", 0.0, False, 0.15, 1),
]
AFTER = [
    row("q1", 1.0, True, 0.85),
    row("q1", 1.0, True, 0.85, 1),
    row("q2", 0.6, False, 0.15),
    row("q2", 0.4, False, 0.15, 1),
]


def test_compare_deltas_and_signs_by_hand():
    c = compare_before_after(BEFORE, AFTER, n_boot=200, seed=0)
    assert c["before_p_wrong"] == pytest.approx(0.2) and c["after_p_wrong"] == pytest.approx(0.5)
    assert c["before_accuracy"] == pytest.approx(0.25) and c["after_accuracy"] == pytest.approx(0.5)
    assert c["before_ece"] == pytest.approx(0.25) and c["after_ece"] == pytest.approx(0.15)
    assert c["d_p_wrong"] == pytest.approx(0.3)  # after - before: less wrong is positive
    assert c["d_acc"] == pytest.approx(0.25)  # after - before
    assert c["neg_d_ece"] == pytest.approx(0.10)  # before - after: better calibrated is positive
    assert c["d_mean_correctness"] == pytest.approx(0.35)
    # paired resampling of 2 questions: (q1,q1) gives ΔAcc 0.5, (q2,q2) 0, mixed 0.25
    assert 0.0 <= c["d_acc_ci_low"] <= c["d_acc_ci_high"] <= 0.5
    assert c["n_questions"] == 2 and c["n_before"] == c["n_after"] == 4


def test_parse_rate_p_wrong_of_parsed_answers_and_length_by_hand():
    """#31: what reads p_wrong, beside it. p_wrong counts an unparsed answer as a wrong one of correctness 0;
    p_wrong_parsed leaves it out; lengths are the answers' tokens."""
    from wow.analysis.eval_metrics import question_totals, weighted_metric

    before = [
        {**row("q1", 0.5, False, 0.5), "n_tokens": 10},
        {**row("q1", 0.0, False, 0.5, 1, parsed=False), "n_tokens": 30},
        {**row("q2", 1.0, True, 0.5), "n_tokens": 20},
        {**row("q2", 0.3, False, 0.5, 1), "n_tokens": 40},
    ]
    after = [
        {**row("q1", 0.0, False, 0.5, parsed=False), "n_tokens": 64},
        {**row("q1", 0.0, False, 0.5, 1, parsed=False), "n_tokens": 64},
        {**row("q2", 0.9, False, 0.5), "n_tokens": 12},
        {**row("q2", 0.0, False, 0.5, 1, parsed=False), "n_tokens": 64},
    ]
    s = summarize(before)
    assert s["parse_rate"] == pytest.approx(0.75)
    assert s["p_wrong"] == pytest.approx((0.5 + 0.0 + 0.3) / 3)  # the unparsed one at 0
    assert s["p_wrong_parsed"] == pytest.approx((0.5 + 0.3) / 2)
    assert s["mean_length"] == pytest.approx(25.0)
    c = compare_before_after(before, after, n_boot=200, seed=0)
    assert c["after_parse_rate"] == pytest.approx(0.25) and c["d_parse_rate"] == pytest.approx(-0.5)
    # p_wrong falls (0.225 from 0.267: three unparsed answers at 0) while the parsed answers got less wrong
    assert c["after_p_wrong"] == pytest.approx(0.9 / 4) and c["d_p_wrong"] == pytest.approx(0.9 / 4 - 0.8 / 3)
    assert c["after_p_wrong_parsed"] == pytest.approx(0.9) and c["d_p_wrong_parsed"] == pytest.approx(0.9 - 0.4)
    assert c["d_mean_length"] == pytest.approx(51.0 - 25.0)
    for key in ("d_parse_rate", "d_p_wrong_parsed", "d_mean_length"):
        assert c[f"{key}_ci_low"] <= c[key] <= c[f"{key}_ci_high"] or math.isclose(c[key], c[f"{key}_ci_high"])
    # the per-question sums give the same values for unit weights (the bootstrap's path)
    totals = question_totals(after, ["q1", "q2"])
    for name, value in (("parse_rate", 0.25), ("p_wrong_parsed", 0.9), ("mean_length", 51.0)):
        assert weighted_metric(name, totals, [1.0, 1.0]) == pytest.approx(value)
    assert math.isnan(weighted_metric("p_wrong_parsed", totals, [1.0, 0.0]))  # q1 alone: no parsed wrong answer


def test_compare_identical_models_has_zero_deltas_and_zero_width_cis():
    c = compare_before_after(BEFORE, BEFORE, n_boot=100, seed=1)
    for key in ("d_p_wrong", "d_acc", "neg_d_ece", "d_mean_correctness"):
        assert c[key] == 0.0 and c[f"{key}_ci_low"] == 0.0 and c[f"{key}_ci_high"] == 0.0


def test_compare_needs_shared_questions():
    with pytest.raises(WowError, match="share no question"):
        compare_before_after(BEFORE[:2], AFTER[2:], n_boot=0)


def test_reliability_per_model():
    table = reliability({"before": BEFORE, "after": AFTER})
    assert len(table) == 20 and set(table.model) == {"before", "after"}
    after_top = table[(table.model == "after") & (table.bin == 8)].iloc[0]
    assert after_top.n == 2 and after_top.accuracy == 1.0


def test_alignment_table_and_csv(tmp_path):
    entry = {
        "setting": "self_oracle_dpo",
        "task": "shortest_path",
        "pref_type": "oracle",
        "source": "self",
        "trainer": "dpo",
        "config": {"learning_rate": 5e-5, "epochs": 3},
        "before_rows": BEFORE,
        "after_rows": AFTER,
    }
    table = build_alignment_table([entry], n_boot=50)
    assert list(table.columns[:9]) == [
        "setting",
        "task",
        "eval_task",
        "pref_type",
        "source",
        "trainer",
        "judge",
        "margin",
        "config",
    ]
    assert table.loc[0, "d_p_wrong"] == pytest.approx(0.3)
    path = write_alignment_csv(table, tmp_path / "alignment.csv")
    assert path.read_text().splitlines()[0].startswith("setting,task,eval_task,pref_type")
    assert table.loc[0, "eval_task"] == table.loc[0, "task"]  # evaluated on its own task unless eval_tasks says


def question(qid, split):
    return Question(id=qid, task="shortest_path", split=split, prompt=f"{qid}?", gold=3)


def test_evaluation_refuses_other_splits():
    with pytest.raises(WowError, match="not of the 'test' split"):
        evaluate_model(None, [question("q9", "validation")], engine=None)


def test_evaluation_refuses_questions_seen_in_training():
    answers = [
        {
            "answer_id": f"q1|m|{i}",
            "question_id": "q1",
            "split": "train",
            "generator": "m",
            "sample_index": i,
            "prompt_messages": [{"role": "user", "content": "q1?"}],
            "text": f"answer {i}",
            "extracted": i,
            "raw_label": -i - 1,
            "is_correct": False,
        }
        for i in range(2)
    ]
    prefs = build_preferences(answers, "oracle", val_fraction=0.0)
    with pytest.raises(WowError, match="appear in a preference set"):
        evaluate_model(None, [question("q1", "test")], engine=None, preference_sets=[prefs])
    check_held_out([question("q2", "test")], "test", [prefs])  # an unseen test question passes


def make_lora(model_dir, folder, seed):
    """A saved LoRA adapter of ``model_dir`` with random (non-zero) weights drawn from ``seed``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    ).save_pretrained(folder)
    return folder


def test_adapters_evaluated_on_one_loaded_base_model_match_a_model_each(tiny_model, tmp_path, monkeypatch):
    from wow import tasks
    from wow.align.evaluate import AdapterEngines, evaluate_adapter
    from wow.backends import models

    task = tasks.get("shortest_path")
    test_qs = [q for q in task.questions(10, seed=0) if q.split == "test"]
    adapters = [None, *(make_lora(tiny_model, tmp_path / "setting" / f"lr={seed}", seed) for seed in (1, 2, 3))]
    options = {"dtype": "float32", "batch_size": 8}
    kwargs = {"n_samples": 2, "max_tokens": 6, "progress": False}
    loads = []
    real_load = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))

    own = [evaluate_adapter(task, test_qs, tiny_model, a, engine_options=options, **kwargs) for a in adapters]
    assert len(loads) == len(adapters)  # one load per adapter (and one for the original model)
    assert len({repr([r["text"] for r in rows]) for rows in own}) == len(adapters)  # the adapters change the answers

    loads.clear()
    with AdapterEngines(tiny_model, **options) as engines:
        shared = [evaluate_adapter(task, test_qs, tiny_model, a, engines=engines, **kwargs) for a in adapters]
        assert engines.loads == 1
    assert len(loads) == 1  # one load for the original model and all three adapters
    assert shared == own  # texts, logprobs, grades and generator names, bitwise
    with pytest.raises(WowError, match="not"):
        AdapterEngines(tiny_model)("smollm2-135m", None)


def test_ece_is_over_the_bins_the_run_asks_for():
    """``n_bins`` reaches ECE in the comparison, the summary and the alignment table (not only the diagrams).
    Before: confidence 0.55 right, 0.95 wrong. Ten bins: (|0.55 - 1| + |0.95 - 0|) / 2 = 0.7; two bins, both in
    (0.5, 1]: |1.5 - 1| / 2 = 0.25. After (both right): ten bins (0.45 + 0.05) / 2 = 0.25; two bins |1.5 - 2| / 2."""
    from wow.analysis.alignment_csv import build_alignment_table

    before = [row("q1", 1.0, True, 0.55), row("q1", 0.2, False, 0.95, 1)]
    after = [row("q1", 1.0, True, 0.55), row("q1", 1.0, True, 0.95, 1)]
    ten, two = compare_before_after(before, after, n_boot=0), compare_before_after(before, after, n_boot=0, n_bins=2)
    assert (ten["before_ece"], ten["after_ece"], ten["neg_d_ece"]) == pytest.approx((0.7, 0.25, 0.45))
    assert (two["before_ece"], two["after_ece"], two["neg_d_ece"]) == pytest.approx((0.25, 0.25, 0.0))
    assert summarize(before, n_bins=2)["ece"] == pytest.approx(0.25)
    entry = {"setting": "s", "task": "t", "pref_type": "oracle", "source": "self", "trainer": "dpo"}
    table = build_alignment_table([{**entry, "before_rows": before, "after_rows": after}], n_boot=0, n_bins=2)
    assert table.loc[0, "before_ece"] == pytest.approx(0.25)
