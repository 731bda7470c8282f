"""The ``wow`` command line: ``wow run``, ``wow report``, ``wow params``.

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
