"""Stage 04's trainings as Ray tasks (train_backend: ray) on a local 2-CPU Ray instance: through ``wow run``, equal
to the sequential smoke run and concurrent; a training whose worker dies is retried by Ray and still finishes."""

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "parameters" / "smoke.yaml"


def _logs(run_dir: Path) -> dict[str, dict]:
    return {
        str(p.parent.relative_to(run_dir / "models")): json.loads(p.read_text()) | {"_end": p.stat().st_mtime}
        for p in sorted((run_dir / "models").rglob("train_log.json"))
    }


def _per_step(log: dict, key: str) -> list:
    """``key`` at each training step of a ``train_log.json``."""
    return [h[key] for h in log["log_history"] if key in h and "loss" in h]


def test_wow_run_trains_stage_04_on_ray_concurrently_and_as_the_sequential_run_did(smoke_run, tmp_path):
    from wow.cli import run

    copy = tmp_path / "runs" / smoke_run.name
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns(".wow.lock", "models"))
    run.run(SMOKE, output_root=str(copy.parent), only=["04"], train_backend="ray")
    ray_logs, local_logs = _logs(copy), _logs(smoke_run)
    assert sorted(ray_logs) == sorted(local_logs) and len(ray_logs) == 2  # the oracle and random settings
    float32 = yaml.safe_load((smoke_run / "run.yaml").read_text())["dtype"] == "float32"
    for point, log in ray_logs.items():  # same seeds, same pairs: the same training
        theirs = local_logs[point]
        assert (
            log["complete"]
            and log["steps"] == theirs["steps"]
            and log["config"] == theirs["config"] | {"reference_cache": log["config"]["reference_cache"]}
        )
        # the same batches in the same order, at the same learning rates
        assert _per_step(log, "num_tokens") == _per_step(theirs, "num_tokens"), point
        assert _per_step(log, "learning_rate") == _per_step(theirs, "learning_rate"), point
        # float32: the same numbers to rounding. bfloat16: a Ray worker runs with 1 thread and the sequential run
        # with 2, and there a sequence's log-probability moves with the thread count by far more than rounding (a
        # policy and its reference of one batch can then differ at step 1: the sequential run's mean loss 0.672 on
        # one AMX Xeon, the worker's ln 2), so the losses agree within that noise only
        assert log["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-4 if float32 else 0.05), point
        ours_w = load_file(copy / "models" / point / "adapter_model.safetensors")
        theirs_w = load_file(smoke_run / "models" / point / "adapter_model.safetensors")
        # float32: the same adapter to rounding. bfloat16: the same initial adapter (seed), and each Adam step moves a
        # weight by at most its learning rate, so two runs whose gradients differ in sign end at most 2 x sum(lr) apart
        bound = 1e-5 if float32 else 2 * sum(_per_step(log, "learning_rate")) * 1.01
        assert all((ours_w[k] - theirs_w[k]).abs().max() < bound for k in theirs_w), point
    (a, b) = ray_logs.values()
    starts = [log["_end"] - log["seconds"] for log in (a, b)]
    assert starts[1] < a["_end"] and starts[0] < b["_end"], "the two trainings did not overlap in time"
    ours = pd.read_csv(copy / "alignment.csv")
    theirs = pd.read_csv(smoke_run / "alignment.csv")
    assert ours["setting"].tolist() == theirs["setting"].tolist()
    if float32:  # the same answers sampled, to rounding; in bfloat16 adapters 1e-4 apart sample others
        for setting in ours["setting"]:
            mine, other = (
                [json.loads(line) for line in (folder / "eval" / "shortest_path" / f"{setting}.jsonl").open()]
                for folder in (copy, smoke_run)
            )
            same = [(a, b) for a, b in zip(mine, other, strict=True) if a["text"] == b["text"]]
            # adapters 1e-7 apart (1 thread against 2) give logits 1e-6 apart: a draw whose uniform falls that close
            # to a CDF boundary takes another token (seen once in float32 on an AMX Xeon: 1 of 4 answers), so one
            # answer may differ; every other is the same text with the same log-probability to rounding
            assert len(same) >= len(mine) - 1 and len(mine) >= 4, setting
            assert all(abs(a["mean_logprob"] - b["mean_logprob"]) < 1e-5 for a, b in same), setting
            if len(same) == len(mine):
                assert [a["correctness"] for a, _ in same] == [b["correctness"] for _, b in same], setting
    assert json.loads((copy / "stage_params.json").read_text())["04_dpo_training"]["values"]["train_backend"] == "ray"


class DieOnce(TrainerCallback):
    """Kills its worker process at the first step, once (a marker file remembers)."""

    def __init__(self, marker: str):
        self.marker = marker

    def on_step_end(self, args, state, control, **kwargs):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)


def test_a_training_whose_worker_dies_is_retried_and_finishes(smoke_run, tiny_model, tmp_path, monkeypatch):
    from wow import preferences
    from wow.align import ray_backend, training
    from wow.align.align_config import AlignConfig

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "lib"), str(ROOT / "tests")]))
    saved = tmp_path / "set"  # a saved set, as the kernel hands it on: the worker reads it from its files
    shutil.copytree(sorted((smoke_run / "preferences").glob("*/*"))[0], saved)
    ds = preferences.load_preferences(saved)
    marker = tmp_path / "died"
    job = ray_backend.TrainingJob(
        ds["train"], ds["validation"], str(tiny_model), "dpo", tmp_path / "point", AlignConfig(max_steps=2),
        callbacks=(DieOnce(str(marker)),),
    )  # fmt: skip
    results = ray_backend.train_all([job], cpus=1)
    assert marker.exists()  # the first attempt died at its first step
    assert training.is_complete(tmp_path / "point") and results[tmp_path / "point"].steps == 2
    assert ray_backend.train_all([job], cpus=1) == {}  # finished points are reused, not retrained
    assert sorted(p.name for p in saved.rglob("cache-*")) == []  # and nothing was written beside the saved set
