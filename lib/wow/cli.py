"""The ``wow`` command line: ``wow run``, ``wow report``, ``wow params``, ``wow estimate``, ``wow data check``,
``wow compare``.

Errors meant for the user (:class:`wow.WowError`) print as one line and exit with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from wow import WowError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wow`` command."""
    parser = argparse.ArgumentParser(prog="wow", description="Varying shades of wrong: run the pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the notebooks for a parameter set")
    p_run.add_argument("param_file", help="a parameter set, e.g. parameters/demo.yaml")
    p_run.add_argument("--only", action="append", help="run only this notebook (e.g. 03); repeatable")
    p_run.add_argument("--from", dest="start", help="run from this notebook on (e.g. 02)")
    p_run.add_argument("--run-name", help="override run_name of the parameter set")
    p_report = sub.add_parser("report", help="write a run's HTML report (outputs/<run>/report/index.html)")
    p_report.add_argument("run_dir", help="a run folder, e.g. outputs/demo")
    sub.add_parser("params", help="list every parameter with its default and meaning")
    p_cmp = sub.add_parser("compare", help="what changes between two runs (parse rate, pairs, Acc_WoW at M=1)")
    p_cmp.add_argument("run_a", help="a run folder, e.g. outputs/demo")
    p_cmp.add_argument("run_b", help="another run folder, e.g. outputs/paper_protocol_demo")
    p_est = sub.add_parser("estimate", help="model calls, tokens, API cost and local time of a parameter set")
    p_est.add_argument("param_file", help="a parameter set, e.g. parameters/paper/fig3_alignment.yaml")
    p_est.add_argument("--tokens-per-second", type=float, help="generation tok/s of local models on your GPU")
    p_est.add_argument("--train-tokens-per-second", type=float, help="training tok/s (default: half of the above)")
    p_est.add_argument("--batch-api", action="store_true", help="price API calls at the Batch API's half price")
    p_est.add_argument("--only", action="append", help="count only this stage (e.g. 02), as wow run --only")
    p_data = sub.add_parser("data", help="check the data files a parameter set names")
    p_data.add_argument("action", choices=["check"], help="check: every file exists, parses and has its fields")
    p_data.add_argument("param_file", help="a parameter set, e.g. parameters/paper/fig3_alignment.yaml")
    p_data.add_argument("--root", help="resolve relative data paths against this folder (default: the repository)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("papermill", "httpx", "urllib3", "traitlets", "blib2to3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "run":
            from wow import run

            overrides = {"run_name": args.run_name} if args.run_name else {}
            run_dir = run.run(args.param_file, only=args.only, start=args.start, **overrides)
            logging.getLogger("wow").info("outputs in %s", run_dir)
        elif args.command == "report":
            from wow import html_report

            html_report.write_report(args.run_dir)
        elif args.command == "estimate":
            from wow import estimate, params

            P = params.load(args.param_file)
            rows = estimate.estimate(
                P,
                tokens_per_second=args.tokens_per_second,
                batch_api=args.batch_api,
                only=args.only,
                train_tokens_per_second=args.train_tokens_per_second,
            )
            sys.stdout.write(estimate.format_table(rows, args.tokens_per_second, args.train_tokens_per_second) + "\n")
        elif args.command == "data":
            from wow import datacheck, params

            results = datacheck.check(params.load(args.param_file), root=args.root)
            sys.stdout.write(datacheck.format_results(results) + "\n")
            if any(not r.ok for r in results):
                return 1
        elif args.command == "compare":
            from pathlib import Path

            from wow import compare

            rows = compare.compare(args.run_a, args.run_b)
            names = Path(args.run_a).name or "A", Path(args.run_b).name or "B"
            sys.stdout.write(compare.format_table(rows, *names) + "\n")
        elif args.command == "params":
            from wow import params

            sys.stdout.write(params.describe() + "\n")
    except WowError as e:
        sys.stderr.write(f"wow: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("wow: interrupted; finished model calls are cached, rerun to resume\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
