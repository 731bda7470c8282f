"""Rules between run parameters: contradictions that a field on its own cannot show.

A preference set that needs judgements the run would not make, an ``eval_tasks`` entry naming a task the run does
not build, options for a task the run does not have. Each rule raises ``ValueError`` with what to change; pydantic
reports it under the parameter set's name (:func:`wow.params.validate`).
"""

from __future__ import annotations

from wow import WowError, schema, tasks
from wow.backends import models


def check_rules(P) -> None:
    """Apply every rule to ``P`` (a :class:`wow.params.RunParams`)."""
    _api_prefill(P)
    _preferences_have_their_judgements(P)
    _acc_wow_split_of_judged_sets(P)
    _eval_tasks(P)
    _task_options(P)


def is_api(name: str) -> bool:
    """Whether a model name is served by an API (no next-token distributions)."""
    return name.startswith("openai:") or name in models.API_MODELS


def _api_prefill(P) -> None:
    """Refuse a prefill that OpenAI's own API cannot serve, and raw completions without a chat template."""
    if P.api_prefill != "none" and P.base_url is None:
        raise ValueError(
            f"api_prefill {P.api_prefill!r} needs a server that continues a prefilled turn (vLLM, llama.cpp): set "
            "base_url to it; OpenAI's API cannot (api_prefill: none)"
        )
    if P.api_prefill == "completions" and not P.api_chat_template:
        raise ValueError(
            "api_prefill completions renders raw prompts with a chat template: set api_chat_template to the model "
            "the server runs (a name such as smollm2-135m, a hub id or a folder)"
        )


def _preferences_have_their_judgements(P) -> None:
    """Refuse preference types whose judgements the run would not make (they would be skipped later)."""
    kinds = {spec: schema.parse_pref_type(spec)[0] for spec in P.pref_types}
    judged = [spec for spec, kind in kinds.items() if kind.endswith(("direct", "score"))]
    if not judged:
        return
    if not P.judges:
        raise ValueError(f"pref_types {judged} need a judge, but judges is empty; name one in judges")
    if P.pref_judge is not None and P.pref_judge not in P.judges:
        raise ValueError(
            f"pref_judge {P.pref_judge!r} is not in judges {P.judges}: its verdicts are never made; add it "
            "to judges or pick one of them"
        )
    if not P.judge_modes:
        raise ValueError(f"pref_types {judged} need a judge mode, but judge_modes is empty")
    if P.pref_judge_mode is not None and P.pref_judge_mode not in P.judge_modes:
        raise ValueError(
            f"pref_judge_mode {P.pref_judge_mode!r} is not in judge_modes {P.judge_modes}: that mode never "
            "runs; add it to judge_modes or pick one of them"
        )
    judge = P.pref_judge or P.judges[0]
    mode = P.pref_judge_mode or P.judge_modes[0]
    mode_key = "pref_judge_mode" if P.pref_judge_mode else "judge_modes"
    if mode == "logprob" and is_api(judge) and P.api_prefill == "none":
        raise ValueError(
            f"{mode_key} gives the logprob mode for pref_judge {judge!r}, an API model without next-token "
            "verdicts; use the text mode (pref_judge_mode: text), a local judge, or a server that continues a "
            "prefilled turn (api_prefill: chat for vLLM, completions for llama.cpp)"
        )
    direct = [spec for spec in judged if kinds[spec].endswith("direct")]
    if direct and not P.pairwise:
        raise ValueError(f"pref_types {direct} need pairwise verdicts, but pairwise is false; set pairwise: true")
    scored = [spec for spec in judged if kinds[spec].endswith("score")]
    if scored and P.pref_score_k not in P.score_k:
        raise ValueError(
            f"pref_score_k {P.pref_score_k} is not in score_k {P.score_k}: the score sets {scored} would "
            f"have no judge scores; add {P.pref_score_k} to score_k or set pref_score_k to one of them"
        )
    if scored and mode == "logprob" and P.pref_score_k != 1:
        raise ValueError(
            f"pref_score_k {P.pref_score_k} with {mode_key} logprob: next-token scores read one answer per "
            "prompt, so only pref_score_k 1 is scored; set pref_score_k: 1 or pref_judge_mode: text"
        )


def _acc_wow_split_of_judged_sets(P) -> None:
    """Refuse an ``acc_wow_split`` other than ``train`` when the run trains judge-built sets: they are built from
    train questions only, and Fig 3 sets the judge's Acc_WoW beside them
    (:func:`wow.analysis.fig3_points.method_acc_wow`)."""
    judged = [spec for spec in P.pref_types if schema.parse_pref_type(spec)[0] in ("direct", "score")]
    if judged and P.acc_wow_split != "train":
        raise ValueError(
            f"acc_wow_split {P.acc_wow_split!r} scores other questions than the preference sets {judged} are built "
            "from (train questions only), and Fig 3 sets the two side by side; set acc_wow_split: train, or score "
            "the other split in a run without these sets"
        )


def _eval_tasks(P) -> None:
    """Every task named by ``eval_tasks`` must be a task of the run (its test questions are built there)."""
    for name, targets in P.eval_tasks.items():
        missing = [t for t in [name, *targets] if t not in P.tasks]
        if missing:
            raise ValueError(
                f"eval_tasks[{name!r}] names {missing}, not in tasks {P.tasks}: a task is aligned and "
                "evaluated on the test questions the run builds for it; add them to tasks"
            )
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"eval_tasks[{name!r}] must name one or more distinct tasks, e.g. [{name}]")


def _task_options(P) -> None:
    """Options only for tasks of the run, and only options the task knows."""
    for name, opts in P.task_options.items():
        if name not in P.tasks:
            raise ValueError(f"task_options names task {name!r}, which is not in tasks {P.tasks}")
        try:
            tasks.check_options(name, opts)
        except WowError as e:
            raise ValueError(f"task_options: {e}") from None
