"""Data-parallel training: ``accelerate launch --multi_gpu --num_processes 2 -m wow.align`` with ``ACCELERATE_USE_CPU=1``
(two CPU processes, gloo; ``--cpu`` alone starts one process) on the tiny random Llama
gives the adapter of a one-process run with the same effective batch (2 processes x 1 pair = 1 process x 2 pairs,
same pairs, same seed), and only its main process writes."""

import os
import socket
import subprocess
import sys

import pytest
from conftest import oracle_answers
from safetensors.torch import load_file
from wow import io
from wow.align.command import main
from wow.preferences import build_preferences, save_preferences

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: fp32 on CPU: the two runs differ only in the order of float sums (a batch of 2 against an all-reduce of 2).
#: Measured: 2e-7 (validation loss), 8e-8 (training loss), 2e-6 (largest adapter weight difference); one step on other
#: pairs moves the weights by about the learning rate, 1e-2.
TOLERANCE = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefs_folder(tmp_path_factory):
    """6 questions x 3 wrong answers -> 18 oracle pairs; 2 questions (6 pairs) validate."""
    answers = oracle_answers()
    prefs = build_preferences(answers, "oracle", val_fraction=0.34, seed=0)
    assert len(prefs["validation"]) == 6  # even: both processes evaluate 3
    return save_preferences(prefs, tmp_path_factory.mktemp("mp") / "prefs")


# logging_steps 1: transformers averages the training loss over the processes at each logging step only; the steps
# after the last one count the main process's own loss.
CONFIG = (
    '{"progress": false, "cpu_threads": 1, "bf16": false, "learning_rate": 0.01, "warmup_ratio": 0.0, '
    '"logging_steps": 1}'
)


def test_two_processes_train_the_adapter_of_one_with_the_same_effective_batch(tiny_model, prefs_folder, tmp_path):
    common = ["--preferences", str(prefs_folder), "--trainer", "dpo", "--model", tiny_model, "--max-steps", "3"]
    common += ["--eval-steps", "1", "--config", CONFIG]
    assert main([*common, "--output", str(tmp_path / "one"), "--train-batch-size", "2"]) == 0

    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port()), "-m", "wow.align"]
    out = subprocess.run(
        [*launch, *common, "--output", str(tmp_path / "two"), "--train-batch-size", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]

    one, two = (io.read_json(tmp_path / n / "train_log.json") for n in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert (one["config"]["train_batch_size"], two["config"]["train_batch_size"]) == (2, 1)
    assert one["steps"] == two["steps"] == 3 and one["best_step"] == two["best_step"]
    a, b = (load_file(tmp_path / n / "adapter_model.safetensors") for n in ("one", "two"))
    assert a.keys() == b.keys()
    gaps = {
        "val_loss": abs(one["val_loss"] - two["val_loss"]),
        "train_loss": abs(one["train_loss"] - two["train_loss"]),
        "weights": max((a[k] - b[k]).abs().max().item() for k in a),
    }
    print(f"one process x batch 2 against two x batch 1, largest differences: {gaps}")  # shown with pytest -s
    assert all(gap < TOLERANCE for gap in gaps.values()), gaps
    assert out.stderr.count("adapter in ") == 1  # the main process logs; the other one only warns
