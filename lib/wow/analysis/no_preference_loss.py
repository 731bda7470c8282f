"""The training loss of a model that has learnt no preference yet, per trainer.

At the start of a reference-based preference training the policy equals its reference, so every pair's log-ratio
margin is 0 and each of TRL's ``DPOTrainer`` losses takes a fixed value (``trl/trainer/dpo_trainer.py``,
``DPOTrainer._compute_loss``): ``sigmoid`` (DPO) ``-log sigmoid(0) = ln 2``; ``hinge`` (RSO) ``relu(1 - 0) = 1``;
``ipo`` ``(0 - 1/(2β))² = 1/(4β²)``; ``sppo_hard`` ``(0 - 0.5/β)² + (0 + 0.5/β)² = 1/(2β²)`` (25 and 50 at β 0.1).
A mean training loss still near that value means the preferences did not move the model. Reference-free trainers
(CPO, SimPO, ORPO) and RPO (DPO plus the chosen answer's NLL) start where the model's own likelihoods put them: they
have no such value. ``wow run``'s loss lines and the report's verdict read it from here.
"""

from __future__ import annotations

import math

from wow import schema

#: loss type -> (how the value is written, the value as a function of beta)
_VALUES = {
    "sigmoid": ("ln 2", lambda beta: math.log(2)),
    "hinge": ("1", lambda beta: 1.0),
    "ipo": ("1/(4β²)", lambda beta: 1 / (4 * beta**2)),
    "sppo_hard": ("1/(2β²)", lambda beta: 1 / (2 * beta**2)),
}


def no_preference_loss(trainer: str, beta: float) -> tuple[str, float] | None:
    """``(formula, value)`` of ``trainer``'s loss when chosen and rejected get the same reward margin (see the module
    docstring), or None where the trainer's loss has no fixed value then (cpo, simpo, orpo, rpo, unknown names).

    Example: ``no_preference_loss("dpo", 0.1)`` is ``("ln 2", 0.693...)``; ``no_preference_loss("sppo", 0.1)`` is
    ``("1/(2β²)", 50.0)``."""
    family, fields = schema.TRAINERS.get(trainer, ("", {}))
    loss_type = fields.get("loss_type")
    if family != "dpo" or not isinstance(loss_type, str) or loss_type not in _VALUES:
        return None
    formula, value = _VALUES[loss_type]
    return formula, value(beta)
