"""Run parameters: one strict schema for every parameter set and every notebook.

A parameter set (``parameters/*.yaml``) is a flat mapping whose keys are fields of :class:`RunParams`. Unknown keys
and wrong types are errors that name the key. Every stage (notebook) validates the run's whole set in its set-up cell
(:func:`wow.run_folder.stage_setup.setup`), which also catches a mistyped name injected by papermill.

Example::

    from wow import params
    P = params.load("parameters/smoke.yaml")
    P.run_dir            # outputs/smoke
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from wow import WowError, layout, schema
from wow.params import rules, secret_values
from wow.params.set_files import RENAMED_PARAMETERS, read_set


class RunParams(BaseModel):
    """Every parameter of a run. Every stage sees the whole set (:func:`wow.run_folder.stage_setup.setup`); a notebook's ``parameters``
    cell names the set's file (``param_file``) and may replace single values, as literals."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: the fields read since :meth:`track_reads` (None: not tracking); what a stage's fingerprint depends on
    _reads: set[str] | None = PrivateAttr(default=None)

    def __getattribute__(self, name: str):
        if name in _FIELDS:
            private = object.__getattribute__(self, "__pydantic_private__")
            if private and private.get("_reads") is not None:
                private["_reads"].add(name)
        return super().__getattribute__(name)

    def track_reads(self) -> None:
        """Record from now on which parameters are read (:meth:`reads`): a stage's set-up cell starts it, so that
        ``wow run`` knows which parameters a stage depends on (:mod:`wow.run_folder.fingerprint`)."""
        self._reads = set()

    def reads(self) -> list[str] | None:
        """The parameters read since :meth:`track_reads` (all of them after a :meth:`model_dump`), sorted."""
        return None if self._reads is None else sorted(self._reads)

    def __eq__(self, other) -> bool:
        """Equal parameters (what was read so far does not count)."""
        return isinstance(other, RunParams) and self.model_dump_values() == other.model_dump_values()

    __hash__ = None  # lists and dicts inside: not hashable

    def model_dump_values(self) -> dict:
        """The parameter values, without counting them as read."""
        return dict(object.__getattribute__(self, "__dict__"))

    def model_dump(self, **kwargs):
        """As pydantic's; while reads are tracked, a dump counts as reading every parameter."""
        if self._reads is not None:
            self._reads.update(_FIELDS)
        return super().model_dump(**kwargs)

    # -- the run --------------------------------------------------------------------------------------------
    run_name: str = Field("interactive", description="folder name under output_root (one folder per run)")
    output_root: str = Field("outputs", description="where run folders live (relative to the repository root)")
    seed: int = Field(0, description="seed of question generation, splits, sampling, subsampling and training")
    protocol: Literal["wow", "paper"] = Field(
        "wow", description="wow: our computation; paper: the paper's code where reproducible (docs/fidelity.md)"
    )

    # -- 01 data prep: tasks and sampling -------------------------------------------------------------------
    tasks: list[str] = Field(["shortest_path"], description="task names (wow.tasks.names())")
    task_options: dict[str, dict] = Field({}, description="per task: keyword options of wow.tasks.get")
    n_questions: int = Field(20, gt=0, description="questions per task (before the split)")
    split_fractions: list[float] = Field([0.6, 0.2, 0.2], description="train / validation / test shares")
    generators: list[str] = Field(["smollm2-135m"], description="models that answer the questions")
    n_samples: int = Field(10, gt=0, description="answers sampled per question and generator")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of the answers")
    max_new_tokens: int = Field(160, gt=0, description="most tokens per answer")
    batch_size: int = Field(16, gt=0, description="requests per forward batch of local engines")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        validate_default=True,  # resolved also when the set leaves it out
        description="local engine and training precision; auto: bfloat16 where the hardware has it natively, else "
        "float32 (resolved once; run.yaml records the result)",
    )
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint for API models (None: OpenAI)")
    api_concurrency: int = Field(8, gt=0, description="parallel requests to an API endpoint")
    api_prefill: Literal["none", "chat", "completions"] = Field(
        "none",
        description="how base_url continues a prefilled answer turn (logprob judges, prefilled extraction): none "
        "(OpenAI), chat (vLLM), completions (raw prompts rendered with api_chat_template; llama.cpp)",
    )
    api_chat_template: str | None = Field(
        None, description="api_prefill completions: the model (name, hub id or folder) whose chat template renders"
    )

    # -- 02 elicitation --------------------------------------------------------------------------------------
    judges: list[str] = Field(["smollm2-135m"], description="models used as LLM judges")
    judge_modes: list[Literal["text", "logprob"]] = Field(
        ["text", "logprob"], description="text: parse the free reply; logprob: next-token verdict (local judges)"
    )
    pairwise: bool = Field(True, description="run the pairwise judge (both orders)")
    score_k: list[int] = Field([1, 5], description="answers per score-judge prompt (1, 2, 5, 10)")
    max_judge_pairs: int | None = Field(None, description="seeded cap on judged pairs, same pairs for every judge")
    judge_max_tokens: int = Field(256, gt=0, description="most tokens of a free-text judge reply (both judges)")
    pairwise_max_tokens: int | None = Field(
        None, gt=0, description="most tokens of a pairwise judge reply (None: judge_max_tokens)"
    )
    score_max_tokens: int | None = Field(
        None, gt=0, description="most tokens of a score-judge reply, any k (None: judge_max_tokens)"
    )

    # -- 03 Acc_WoW --------------------------------------------------------------------------------------------
    margins: list[float] = Field([1.0, 0.5, 0.1], description="margins M: keep the M share of largest gaps")
    acc_wow_split: Literal["train", "validation", "test", "all"] = Field(
        "train", description="questions whose pairs Acc_WoW scores (train: the pairs preference sets use)"
    )
    n_boot: int = Field(1000, gt=0, description="bootstrap resamples for 95% CIs")
    ci_resample: Literal["question", "pair"] = Field(
        "question",
        description="what Acc_WoW's bootstrap CIs resample: question (whole questions with all their pairs) or pair "
        "(each pair alone, as if independent: too narrow where a question holds several pairs)",
    )

    # -- 04 alignment ------------------------------------------------------------------------------------------
    policy_model: str = Field("smollm2-135m", description="the model that is aligned (a local model)")
    pref_types: list[str] = Field(
        ["oracle"],
        description="oracle, direct, score@M (M: margin), row, row_oracle, row_direct, row_score@M, noisy@q (q flipped), random",
    )
    pref_source: Literal["self", "mix"] | list[Literal["self", "mix"]] = Field(
        "self", description="self: policy's answers; mix: all generators; a list builds both"
    )
    pref_judge: str | None = Field(None, description="judge whose verdicts build direct/score sets (None: first)")
    pref_judge_mode: Literal["text", "logprob"] | None = Field(None, description="judge mode used (None: first)")
    both_orders: bool = Field(
        True,
        description="direct sets: only pairs the judge ordered the same way in both orders (the paper's filtered)",
    )
    pref_score_k: int = Field(5, description="score sets: answers per score prompt (must be in score_k)")
    max_pairs: int = Field(4000, gt=0, description="cap on preference pairs per set")
    pairs_per_question: int | None = Field(
        None, gt=0, description="oracle, noisy@q, random: the k largest-gap pairs of each train question (None: all)"
    )
    pairs_from_stated_answers: bool = Field(
        False, description="preference pairs only from answers whose text states the value they are graded on"
    )
    trainers: list[str] = Field(["dpo"], description="dpo, ipo, rso, sppo, rpo (DPO + NLL), cpo, simpo, orpo")
    rpo_alpha: float = Field(1.0, gt=0, description="rpo: weight of the chosen answers' NLL added to DPO's loss")
    learning_rates: list[float] = Field([5e-5], description="grid: learning rates")
    lr_schedulers: list[str] = Field(
        ["cosine"], description="grid: schedulers (paper: cosine, cosine_with_restarts, reduce_lr_on_plateau)"
    )
    weight_decays: list[float] = Field([1e-5], description="grid: AdamW weight decays (paper: 0, 1e-5, 1e-3)")
    epochs: list[int] = Field([1], description="grid: epochs")
    beta: float = Field(0.1, gt=0, description="preference-optimisation beta")
    train_batch_size: int = Field(4, gt=0, description="pairs per optimiser step")
    max_steps: int = Field(-1, description="stop after this many steps (-1: full epochs)")
    eval_steps: int = Field(
        1000,
        gt=0,
        description="validation loss and a checkpoint every this many steps and at the last; the best is kept",
    )
    train_seeds: list[int] | None = Field(
        None, description="train every setting once per seed (None: once, with seed); Fig 3's CI then carries seeds"
    )
    max_eval_pairs: int | None = Field(
        None, gt=0, description="in-run validation: at most this many validation pairs, seeded (None: all)"
    )
    in_run_validation: Literal["auto", "always"] = Field(
        "auto",
        description="auto: the validation loss only where it chooses (several evaluations, a plateau schedule, a grid "
        "chosen by loss); always: every training reports it",
    )
    quantization: Literal["none", "4bit"] = Field(
        "none", description="4bit: the paper's QLoRA (NF4; a CUDA GPU and bitsandbytes); none: LoRA, any machine"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in training (less memory)")
    shared_prompts: bool = Field(
        True,
        description="training reads each pair's prompt once per pass, both answers behind it (TRL's values up to "
        "rounding, about half the tokens); false: TRL's layout, the prompt repeated for each answer",
    )
    train_backend: Literal["local", "ray"] = Field(
        "local",
        description="local: trainings one after another here; ray: every grid point a Ray task (docs/scale.md)",
    )
    ray_address: str | None = Field(None, description="train_backend ray: a running cluster (None: a local instance)")
    ray_cpus_per_training: int = Field(1, gt=0, description="train_backend ray: CPUs per training where no GPU")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        [], description="experiment trackers of the trainings (TRL's report_to; tensorboard writes models/.../runs)"
    )
    eval_samples: int = Field(4, gt=0, description="answers per test question when evaluating models")
    n_bins: int = Field(
        10, gt=0, description="ECE bins: alignment.csv's ECE, Fig 3's slope of -ΔECE and the reliability diagrams"
    )
    eval_tasks: dict[str, list[str]] = Field(
        {}, description="per aligned task: the tasks whose test questions evaluate it ({}: every task, on itself)"
    )

    @field_validator("dtype")
    @classmethod
    def _resolve_dtype(cls, v: str) -> str:
        from wow.backends import precision

        return precision.resolve_dtype(v)

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if len(v) != 3 or any(x < 0 for x in v) or abs(sum(v) - 1) > 1e-6:
            raise ValueError("must be three non-negative shares (train, validation, test) summing to 1")
        return v

    @field_validator("margins")
    @classmethod
    def _margins(cls, v: list[float]) -> list[float]:
        bad = [m for m in v if not 0 < m <= 1]
        if bad:
            raise ValueError(f"margins must lie in (0, 1]; got {bad}")
        return v

    @field_validator("score_k")
    @classmethod
    def _score_k(cls, v: list[int]) -> list[int]:
        schema.check_among(v, schema.SCORE_KS, "score k")
        return v

    @field_validator("pref_types")
    @classmethod
    def _pref_types(cls, v: list[str]) -> list[str]:
        for spec in v:
            schema.parse_pref_type(spec)
        return v

    @field_validator("pref_source")
    @classmethod
    def _pref_source(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"name self and/or mix once each, e.g. [self, mix]; got {v}")
        return v

    @model_validator(mode="after")
    def _rules_between_parameters(self) -> RunParams:
        """Refuse contradicting parameters (:mod:`wow.params.rules`)."""
        rules.check_rules(self)
        return self

    @property
    def aligned_tasks(self) -> list[str]:
        """The tasks that are aligned: the keys of ``eval_tasks`` when given, else every task."""
        return [t for t in self.tasks if t in self.eval_tasks] if self.eval_tasks else list(self.tasks)

    def eval_targets(self, name: str) -> list[str]:
        """The tasks whose test questions evaluate the models aligned on task ``name`` (itself by default)."""
        return list(self.eval_tasks.get(name, [name]))

    @property
    def pairwise_reply_tokens(self) -> int:
        """Reply budget of the pairwise judge (``pairwise_max_tokens``, else ``judge_max_tokens``)."""
        return self.pairwise_max_tokens or self.judge_max_tokens

    @property
    def score_reply_tokens(self) -> int:
        """Reply budget of the score judge (``score_max_tokens``, else ``judge_max_tokens``)."""
        return self.score_max_tokens or self.judge_max_tokens

    @property
    def pref_sources(self) -> list[str]:
        """``pref_source`` as a list (``self``, ``mix`` or both, in the order given)."""
        return [self.pref_source] if isinstance(self.pref_source, str) else list(self.pref_source)

    @field_validator("task_options")
    @classmethod
    def _no_secrets(cls, v: dict) -> dict:
        for task, opts in v.items():
            for key in opts:
                if key.lower() in secret_values.SECRET_NAMES:
                    raise ValueError(f"{task}.{key}: keys and tokens come from the environment, not parameters")
        return v

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str) -> str:
        if not v or v in (".", "..") or "/" in v or "\\" in v:
            raise ValueError(f"{v!r} must be a plain folder name (no slashes); put the folder's parent in output_root")
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        from wow import tasks

        if not v:
            raise ValueError(f"name at least one task; known tasks: {', '.join(tasks.names())}")
        unknown = [t for t in v if t not in tasks.names()]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known tasks: {', '.join(tasks.names())}")
        return v

    @field_validator("generators", "judges", "policy_model")
    @classmethod
    def _model_names(cls, v: list[str] | str) -> list[str] | str:
        for name in [v] if isinstance(v, str) else v:
            _check_model(name)
        return v

    @field_validator("trainers")
    @classmethod
    def _trainers(cls, v: list[str]) -> list[str]:
        schema.check_among(v, schema.TRAINERS, "trainer")
        return v

    @field_validator("lr_schedulers")
    @classmethod
    def _lr_schedulers(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one scheduler, e.g. [cosine]")
        hint = " (cosine_with_restarts, with an s)" if "cosine_with_restart" in v else ""
        schema.check_among(v, schema.SCHEDULERS, "scheduler", hint)
        return v

    @field_validator("weight_decays")
    @classmethod
    def _weight_decays(cls, v: list[float]) -> list[float]:
        if not v or any(x < 0 for x in v):
            raise ValueError(f"give one or more weight decays >= 0, e.g. [0.0]; got {v}")
        return v

    @property
    def run_dir(self) -> Path:
        """The run folder, ``<output_root>/<run_name>`` (relative roots resolve against the repository)."""
        root = Path(self.output_root)
        return (root if root.is_absolute() else layout.REPO_ROOT / root) / self.run_name

    @property
    def layout(self) -> layout.Layout:
        """The artefact paths of the run folder (:class:`wow.layout.Layout`)."""
        return layout.Layout(self.run_dir)

    @property
    def cache_path(self) -> Path:
        """The run's model-call cache (SQLite)."""
        return self.layout.cache


_FIELDS = frozenset(RunParams.model_fields)


def _check_model(name: str) -> None:
    from wow.backends import models

    try:
        models.check_name(name)
    except WowError as e:
        raise ValueError(str(e)) from None


def validate(values: dict, source: str = "parameters") -> RunParams:
    """Validate a mapping of parameters; errors name each bad key and say what is allowed.

    Raises:
        WowError: unknown key, wrong type or value out of range.
    """
    secret_values.refuse(values, source)
    renamed = [f"{old!r} is now {new!r}" for old, new in RENAMED_PARAMETERS.items() if old in values]
    if renamed:
        raise WowError(f"{source}: renamed parameter(s): {'; '.join(renamed)}; rename it in {source}.")
    unknown = sorted(set(values) - set(RunParams.model_fields))
    if unknown:
        import difflib

        hints = [
            f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
            for name in unknown
            for close in [difflib.get_close_matches(name, RunParams.model_fields, n=1)]
        ]
        raise WowError(
            f"{source}: unknown parameter(s) {', '.join(hints)}. Known parameters: "
            f"{', '.join(RunParams.model_fields)} (see `wow params` for what each does)."
        )
    try:
        return RunParams(**values)
    except ValidationError as e:
        problems = "; ".join(
            (f"{'.'.join(map(str, err['loc']))}: " if err["loc"] else "") + err["msg"].removeprefix("Value error, ")
            for err in e.errors()
        )
        raise WowError(f"{source}: {problems}") from None


def load(path: str | Path, **overrides) -> RunParams:
    """Load and validate a YAML parameter set; ``overrides`` replace keys of the file."""
    values = read_set(path)
    values.update(overrides)
    return validate(values, source=str(path))
