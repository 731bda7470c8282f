"""Throughput behind ``wow estimate``'s hours: the offline model measured on 2 CPU cores per precision, the
rehearsal stand-ins measured, and the GPU figure assumed for every other local model (or the user's own figure).

Example::

    from wow.cli.throughput import local_tokens_per_second
    local_tokens_per_second("smollm2-135m", None, "train", dtype="float32")  # Throughput(270.0, "CPU", "measured, ...")
"""

from __future__ import annotations

from dataclasses import dataclass

#: Throughput of the offline model on 2 CPU cores, per precision it computes in (the run's ``dtype``, ``auto``
#: resolved on the machine at hand: :func:`wow.backends.precision.resolve_dtype`), end to end: generation counts the
#: reply tokens plus a tenth of the prompt tokens (:func:`wow.cli.estimate.estimate`), training the sequence tokens of
#: its steps, each training's loading, in-run validation and saving included.
#:
#: Measured on an Intel Xeon with AMX (2026-12-07, quiet), in each precision (``float32`` forced there computes with
#: the AVX-512 FMA instructions the AVX512-BF16 Xeon, where ``auto`` picks float32, uses too):
#:
#: * generation: stages 01 and 02 of a cold demo (120 answers with their extraction turns, 220 judge prompts read;
#:   every prompt counted at a tenth): 26,346 tokens of that work in 67 s in ``bfloat16`` (``wow run
#:   parameters/demo.yaml``, about 390 tok/s) and 26,513 in 129 s in ``float32`` (``--set dtype=float32``, about 205
#:   tok/s), with the two-level inverse-CDF draw and threads that spin briefly before they sleep
#:   (``GOMP_SPINCOUNT``, :mod:`wow`); 94 s and 174 s (280 and 150 tok/s) earlier that day;
#: * training: one DPO training of 40 steps of 2 pairs on the demo's oracle pairs (``python -m wow.align
#:   --max-steps 40 --train-batch-size 2``, the process from start to end, a validation loss on 39 pairs at the last
#:   step included: 39 and 31 s): 48,306 sequence tokens (TRL's count: each answer with its prompt) in 194 s in
#:   ``bfloat16`` (about 250 tok/s) and in 177 s in ``float32`` (about 270 tok/s: the reference's log-probabilities are
#:   computed once per sequence there, per batch in bfloat16; :mod:`wow.align.reference_logps`).
#:
#: Earlier figures (2026-12-02 to 12-06, before the fused decoding step, answer-token scoring and shared prompts) were
#: 150 / 170 tok/s in bfloat16 and 95 / 100 tok/s in float32 on the AVX512-BF16 Xeon. A CPU with AVX2 only is slower
#: (its demo took 17.3 min on 2026-12-03 against that Xeon's 11.9, both before those changes). Short trainings pay more
#: per token (loading is a fixed cost): from 40-step trainings, these figures give 4-step trainings too few hours.
MEASURED = {
    "smollm2-135m": {
        "bfloat16": {"generate": 390.0, "train": 250.0, "where": "2-core Intel Xeon with AMX, bfloat16"},
        "float32": {"generate": 205.0, "train": 270.0, "where": "2-core Intel Xeon with AMX, float32 forced"},
    }
}
#: The API models' stand-ins of a rehearsal (``wow run SET --fast-dev-run --stand-ins``): the offline model's GGUF on
#: one llama.cpp server per core (:mod:`wow.cli.server_pool`), all servers together, measured 2026-12-05 on 2 cores
#: of an Intel Xeon (AVX512-BF16, no AMX): prompt tokens read and reply tokens (with logprobs) per second. In fig3's
#: rehearsal each stand-in generator read 43,239 prompt tokens and wrote 3,759 in stage 01 in about 200 s; these
#: figures give 238 s.
STAND_IN = {"prompt": 240.0, "generate": 65.0, "where": "llama.cpp stand-in servers, 2-core CPU"}
#: The GPU figure assumed for local models that were not measured (this project has no GPU): Llama-3-8B generation
#: on one A100-class GPU, training at half that; other sizes scaled by parameter count. The paper sets' headers quote
#: their GPU hours at this figure (``tests/test_paper_sets.py`` keeps them equal).
ASSUMED_GPU = {"generate": 2500.0, "train": 1250.0, "params_b": 8.0, "where": "Llama-3-8B on one A100-class GPU"}
#: Parameters (billions) of local models, to scale the measured figure to a model that was not measured.
PARAMS_B = {"llama-3-8b": 8.0, "llama-3": 8.0, "smollm2-135m": 0.135, "smollm2-360m": 0.36, "smollm2-1.7b": 1.7}


@dataclass(frozen=True)
class Throughput:
    """Tokens per second of a local model for generation or training, where (``GPU``/``CPU``) and on what basis."""

    tokens_per_second: float
    device: str
    basis: str  # "given", "measured, <where>", "assumed, <where>"


def local_tokens_per_second(
    model: str,
    tokens_per_second: float | None,
    kind: str = "generate",
    train_tokens_per_second: float | None = None,
    dtype: str = "float32",
) -> Throughput:
    """Throughput of a local model: the user's figure (a GPU's), else :data:`MEASURED` (the offline model on 2 CPU
    cores) at the precision ``dtype`` (resolved; ``bfloat16`` takes the AMX figure, any other the float32 one), else
    :data:`ASSUMED_GPU` scaled by parameter count. Training without its own figure is taken at half the generation
    figure given."""
    if kind == "train" and train_tokens_per_second:
        return Throughput(train_tokens_per_second, "GPU", "given")
    if tokens_per_second:
        return Throughput(tokens_per_second * (1.0 if kind == "generate" else 0.5), "GPU", "given")
    if model in MEASURED:
        figures = MEASURED[model]["bfloat16" if dtype == "bfloat16" else "float32"]
        return Throughput(figures[kind], "CPU", f"measured, {figures['where']}")
    scale = ASSUMED_GPU["params_b"] / PARAMS_B.get(model, ASSUMED_GPU["params_b"])
    return Throughput(ASSUMED_GPU[kind] * scale, "GPU", f"assumed, {ASSUMED_GPU['where']}, not measured here")
