"""4-bit QLoRA, the paper's training regime: the base model loaded in bitsandbytes NF4 with double quantisation and
bfloat16 compute, prepared with peft's ``prepare_model_for_kbit_training``, LoRA adapters trained on top. The
reference model of the DPO-style trainers is then the 4-bit base with the adapters disabled (what TRL does with a
peft model and no ``ref_model``), as in the paper (unsloth's 4-bit load in ``preference_optimization/finetune.py``, ``preference_optimization``).

It needs a CUDA GPU and the ``bitsandbytes`` package; :func:`check_available` says so before any model is loaded.
``quantization: none`` (the default) trains LoRA on the unquantised model, on any machine.

Example::

    from wow.align import quantization
    config = quantization.bnb_config()        # the BitsAndBytesConfig of the paper's 4-bit load
    config.bnb_4bit_quant_type                # 'nf4'
"""

from __future__ import annotations

import importlib.util
import logging

from wow import WowError

log = logging.getLogger(__name__)

#: Valid values of the ``quantization`` run parameter and :class:`wow.align.align_config.AlignConfig` field.
QUANTIZATIONS = ("none", "4bit")


def bnb_config():
    """The ``transformers.BitsAndBytesConfig`` of a 4-bit QLoRA load: NF4 weights, double quantisation (the
    quantisation constants quantised too), bfloat16 compute. Built without a GPU; loading a model with it needs one.
    """
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def check_available(quantization: str, device: str) -> None:
    """Refuse a quantised run that cannot load here, before any model is loaded.

    Args:
        quantization: one of :data:`QUANTIZATIONS`.
        device: the training device (``cpu``, ``cuda``...).

    Raises:
        WowError: an unknown value; ``4bit`` on a device other than a CUDA GPU, or without ``bitsandbytes``.
    """
    if quantization not in QUANTIZATIONS:
        raise WowError(f"unknown quantization {quantization!r}; valid: {', '.join(QUANTIZATIONS)}.")
    if quantization == "none":
        return
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise WowError(
            f"quantization: 4bit needs a CUDA GPU (bitsandbytes), but this run trains on {device!r}"
            f"{'' if torch.cuda.is_available() else ' and no CUDA device is visible'}; set quantization: none, or run "
            "on a CUDA GPU with `pip install bitsandbytes`."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise WowError(
            "quantization: 4bit needs the bitsandbytes package, which is not installed; `pip install bitsandbytes` "
            "(on a CUDA GPU), or set quantization: none."
        )


def prepare_for_training(model, gradient_checkpointing: bool):
    """peft's ``prepare_model_for_kbit_training`` on a 4-bit model: freezes the base weights, casts the layer norms
    and the output head to float32 and, with ``gradient_checkpointing``, enables it with input gradients."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
