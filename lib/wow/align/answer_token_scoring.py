"""Score only the answer tokens on the CPU: TRL's fused LM head, without projecting the prompt onto the vocabulary.

TRL 1.16's DPO-style trainers (``dpo``, ``ipo``, ``rso``, ``sppo``, ``rpo``) compute per-token log-probabilities with
a fused LM head (``trl.trainer.utils.add_fused_lm_head``): the last hidden states are projected onto the vocabulary
in tiles and folded into log-softmax statistics (plus the entropy, mean logit and top-1 flag it logs). On a device
with Triton it projects only the positions that carry a label, the answer tokens. Elsewhere it projects every
position, prompt tokens included, and masks them afterwards, so that the tile shapes stay fixed for compilers that
recompile per shape (AWS Neuron). On the CPU, in eager PyTorch, nothing is compiled, and a pair's prompt is most of
its tokens (a shortest-path pair of ``bench/bench_dpo.py``: ~230 prompt tokens, ~10 answer tokens per sequence), so
the projection and its ~20 elementwise passes over ``[tokens, 49152]`` tiles took about two thirds of a training step
of SmolLM2-135M in float32 on 2 cores.

:func:`answer_tokens_only` makes the CPU take the answer-tokens-only path that Triton devices take. The values are
the same (the masked positions were zeroed before; the scored rows are the same rows); only the work differs. The
Triton kernels are not involved: the kernel module keeps its own device test, so the CPU still folds tiles with
TRL's torch code. CPO, SimPO and ORPO (``trl.experimental``) do not use the fused head and are unaffected.

Example::

    with answer_tokens_only():
        trainer.train()
"""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger(__name__)


@contextlib.contextmanager
def answer_tokens_only():
    """Within this block, TRL's fused LM head on a CPU scores only the positions that have a label.

    Patches the device test that ``trl.trainer.utils`` reads when it chooses between scoring every position and
    the labelled ones, and restores it on exit. Where TRL has no such test (a TRL other than the pinned one),
    nothing changes and a warning says so.
    """
    from trl.trainer import utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        log.warning("this TRL has no trl.trainer.utils._use_triton: on a CPU its fused LM head scores every position")
        yield
        return

    def labelled_positions_only(device) -> bool:
        return device.type == "cpu" or original(device)

    trl_utils._use_triton = labelled_positions_only
    try:
        yield
    finally:
        trl_utils._use_triton = original


def scores_answer_tokens_only(trl_trainer, device: str) -> bool:
    """True when ``trl_trainer`` scores with TRL's fused LM head (the DPO-style trainers) and that head, as TRL
    reads it now, projects only the labelled positions on ``device`` (what ``train_log.json`` records)."""
    import torch
    from trl import DPOTrainer
    from trl.trainer import utils as trl_utils

    use_triton = getattr(trl_utils, "_use_triton", None)
    return isinstance(trl_trainer, DPOTrainer) and use_triton is not None and use_triton(torch.device(device))
