"""The text of ``wow estimate`` (:func:`format_table`) and the one-line plan ``wow run`` says before its first stage
(:func:`plan_text`), from :func:`wow.cli.estimate.estimate`'s rows.

Example::

    from wow import params
    from wow.cli import estimate, estimate_table
    rows = estimate.estimate(params.load("parameters/paper/fig3_alignment.yaml"))
    print(estimate_table.format_table(rows, summary=True))
"""

from __future__ import annotations

from wow.cli.estimate import SUMMED, Line, totals
from wow.cli.throughput import local_tokens_per_second


def plan_text(lines: list[Line]) -> str:
    """The estimate in one line, as ``wow run`` says it before the first stage: model calls, API cost, local time
    and the throughput that time assumes (where it was measured, or that it is assumed)."""
    from wow.progress import duration

    t = totals(lines).get("all", dict.fromkeys(SUMMED, 0))
    parts = [f"{t['calls']:,} model calls"]
    if t["cost_usd"]:
        parts.append(f"API USD {t['cost_usd']:,.2f} at list prices")
    for device in ("GPU", "CPU"):
        hours = t[f"{device.lower()}_hours"]
        if hours:
            bases = sorted({line.basis for line in lines if line.device == device and line.hours and line.basis})
            parts.append(f"about {duration(hours * 3600)} of {device} time ({'; '.join(bases)})")
    return "plan (wow estimate, pairs counted as upper bounds): " + ", ".join(parts)


def format_table(
    lines: list[Line],
    tokens_per_second: float | None = None,
    train_tokens_per_second: float | None = None,
    summary: bool = False,
    dtype: str = "float32",
) -> str:
    """The estimate as a plain-text table: one line per row (unless ``summary``), then per-stage and grand totals,
    then the throughput each local model's hours assume.

    Args:
        lines: :func:`estimate`'s rows.
        tokens_per_second, train_tokens_per_second: the figures :func:`estimate` was given (named in the table).
        summary: the totals only, one line per stage.
        dtype: the run's precision, resolved (the measured CPU figure depends on it).
    """
    head = (
        f"{'stage':16} {'model':14} {'calls':>10} {'prompt tok':>13} {'output tok':>12} {'USD':>10} "
        f"{'GPU hours':>10} {'CPU hours':>10}  what"
    )
    out = [head, "-" * len(head)]

    def num(value, width, digits):
        return f"{value:{width},.{digits}f}" if value else f"{'-':>{width}}"

    def fmt(stage, model, calls, p, c, usd, gpu, cpu, what=""):
        return (
            f"{stage:16} {model:14} {calls:>10,} {p:>13,} {c:>12,} {num(usd, 10, 2)} {num(gpu, 10, 2)} "
            f"{num(cpu, 10, 2)}  {what}"
        ).rstrip()

    if not summary:
        for line in lines:
            gpu, cpu = (line.hours if line.device == d else None for d in ("GPU", "CPU"))
            out.append(
                fmt(line.stage, line.model, line.calls, line.prompt_tokens, line.completion_tokens, line.cost_usd,
                    gpu, cpu, line.what)
            )  # fmt: skip
        out.append("-" * len(head))
    for stage, t in totals(lines).items():
        out.append(
            fmt(stage, "(total)", t["calls"], t["prompt_tokens"], t["completion_tokens"], t["cost_usd"],
                t["gpu_hours"], t["cpu_hours"], "every grid point of every setting" if stage == "all" else "")
        )  # fmt: skip
    for model in sorted({line.model for line in lines if line.device}):
        rate = local_tokens_per_second(model, tokens_per_second, dtype=dtype)
        train = local_tokens_per_second(model, tokens_per_second, "train", train_tokens_per_second, dtype)
        out.append(
            f"{rate.device} hours of {model}: {rate.tokens_per_second:,.0f} tok/s generation, "
            f"{train.tokens_per_second:,.0f} tok/s training ({rate.basis}; --tokens-per-second and "
            "--train-tokens-per-second for your hardware's)"
        )
    out.append("pairs are upper bounds (every answer wrong, labels distinct); tokens use typical sizes per task")
    return "\n".join(out)
