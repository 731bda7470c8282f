"""The preference sets a run asks for: one :class:`PrefSpec` per source x type of the parameters (:func:`pref_specs`),
with the setting name its folders carry and the generators its answers come from.

Example::

    from wow import params
    from wow.preferences.pref_spec import pref_specs
    P = params.load("parameters/smoke.yaml")
    [spec.setting(P, "dpo") for spec in pref_specs(P)]   # ["self_oracle_dpo", ...]
"""

from __future__ import annotations

from dataclasses import dataclass

from wow import WowError, schema
from wow.params import RunParams


@dataclass(frozen=True)
class PrefSpec:
    """One preference set to build: type, score margin, judge, source, and the setting name it trains."""

    pref_type: str
    margin: float | None
    judge: str | None
    mode: str | None
    source: str = "self"

    def setting(self, P: RunParams, trainer: str | None = None) -> str:
        """Folder / row name of the setting (the paper's naming, source first: ``self_...`` and ``mix_...`` never
        collide); without a trainer, the preference set's name."""
        return schema.setting_name(
            self.source,
            self.pref_type,
            trainer,
            judge=self.judge if schema.needs_judge(self.pref_type) else None,
            margin=self.margin,
            both_orders=P.both_orders,
        )

    def generators(self, P: RunParams) -> list[str]:
        """The generators whose answers the set is built from: the policy (``self``) or every generator (``mix``)."""
        return [P.policy_model] if self.source == "self" else list(P.generators)


def pref_specs(P: RunParams) -> list[PrefSpec]:
    """The preference sets the parameters ask for: every source of ``pref_source`` x every type of ``pref_types``."""
    judge = P.pref_judge or (P.judges[0] if P.judges else None)
    mode = P.pref_judge_mode or (P.judge_modes[0] if P.judge_modes else None)
    specs = []
    for source in P.pref_sources:
        for spec in P.pref_types:
            kind, margin = schema.parse_pref_type(spec)
            if schema.needs_judge(kind) and judge is None:
                raise WowError(f"preference type {spec!r} needs a judge: set judges or pref_judge.")
            specs.append(PrefSpec(kind, margin, judge, mode, source))
    return specs
