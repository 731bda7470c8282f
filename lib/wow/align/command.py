"""The command ``python -m wow.align`` (or ``accelerate launch -m wow.align``, :mod:`wow.align.__main__`): train on a saved preference set, one
configuration or the paper's grid (:mod:`wow.align`)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from wow import schema
from wow.align import checkpoints
from wow.align.align_config import AlignConfig
from wow.align.grid import PAPER_SCHEDULERS, PAPER_WEIGHT_DECAYS, grid_search
from wow.align.training import train

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """The command ``python -m wow.align`` (or ``accelerate launch -m wow.align``, :mod:`wow.align.__main__`): train on a saved preference set.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0).
    """
    p = argparse.ArgumentParser(prog="python -m wow.align", description=main.__doc__.splitlines()[0])
    p.add_argument("--preferences", required=True, help="folder written by wow.preferences.save_preferences")
    p.add_argument("--trainer", required=True, choices=list(schema.TRAINERS))
    p.add_argument("--output", required=True, help="adapter folder (with --grid: the setting folder)")
    p.add_argument("--model", default="smollm2-135m", help="base model name (wow.backends.models)")
    p.add_argument("--config", help="AlignConfig fields as a JSON object or a path to a JSON file")
    p.add_argument("--learning-rate", type=float, help="learning rate (AlignConfig.learning_rate)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--beta", type=float)
    p.add_argument("--train-batch-size", type=int, help="pairs per device and step")
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--eval-steps", type=int, help="validation loss and a checkpoint every this many steps")
    p.add_argument("--quantization", choices=["none", "4bit"], help="4bit: QLoRA (a CUDA GPU and bitsandbytes)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (less memory)")
    p.add_argument(
        "--repeat-prompts", action="store_true", help="TRL's layout: each answer's row repeats its pair's prompt"
    )
    p.add_argument("--no-lora", action="store_true", help="train the full model")
    p.add_argument(
        "--grid",
        action="store_true",
        help="run the paper's 81-point grid (lr x scheduler x weight decay x epochs), choosing by validation loss",
    )
    p.add_argument("--overwrite", action="store_true", help="retrain a complete output folder")
    a = p.parse_args(argv)
    # one process logs: the others of an `accelerate launch` only warn
    level = logging.INFO if checkpoints.is_main_process() else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    fields: dict[str, Any] = {}
    if a.config:
        text = Path(a.config).read_text(encoding="utf-8") if Path(a.config).is_file() else a.config
        fields = json.loads(text)
    for key, value in (
        ("learning_rate", a.learning_rate),
        ("epochs", a.epochs),
        ("beta", a.beta),
        ("train_batch_size", a.train_batch_size),
        ("grad_accumulation", a.grad_accum),
        ("max_steps", a.max_steps),
        ("eval_steps", a.eval_steps),
        ("quantization", a.quantization),
    ):
        if value is not None:
            fields[key] = value
    if a.no_lora:
        fields["use_lora"] = False
    if a.gradient_checkpointing:
        fields["gradient_checkpointing"] = True
    if a.repeat_prompts:
        fields["shared_prompts"] = False
    config = AlignConfig.from_dict(fields)

    from wow.preferences import load_preferences

    ds = load_preferences(a.preferences)
    val = ds["validation"] if "validation" in ds else None
    if a.grid:
        paper_axes = {"lr_schedulers": PAPER_SCHEDULERS, "weight_decays": PAPER_WEIGHT_DECAYS}
        result = grid_search(ds["train"], val, a.model, a.trainer, a.output, config, **paper_axes)
        log.info("best: %s (validation loss %s)", result.best["output_dir"], result.best["val_loss"])
    else:
        res = train(ds["train"], val, a.model, a.trainer, a.output, config, overwrite=a.overwrite)
        log.info("adapter in %s: train loss %s, validation loss %s", res.output_dir, res.train_loss, res.val_loss)
    return 0
