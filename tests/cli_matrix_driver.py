"""Runs bad-input cases on the command line, as a user runs them: each through growth-launch's own
entry point (growth_cli.launch.cli, what `python launch.py` and the console command call), with
its argv, its exit code and everything it prints captured. One process runs many cases, since
Python's and torch's start-up would otherwise be most of the time.

    python -m tests.cli_matrix_driver CASES.json RESULTS.json

CASES.json: a list of {"id": ..., "argv": [...]}; RESULTS.json: {"id": {"rc", "out"}}.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def run_one(argv: list[str]) -> tuple[int | str, str]:
    from growth_cli.launch import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            rc = cli(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # what Python would print and exit 1 with: a traceback
            traceback.print_exc(file=out)
            rc = 1
    return rc, out.getvalue()


def main(cases_file: str, results_file: str) -> None:
    import logging

    cases = json.loads(open(cases_file).read())
    results = {}
    for i, case in enumerate(cases):
        # Hydra configures logging on every launch; start each from a clean root logger.
        logging.getLogger().handlers.clear()
        rc, out = run_one(case["argv"])
        results[case["id"]] = {"rc": rc, "out": out}
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{len(cases)} cases", file=sys.__stderr__, flush=True)
    with open(results_file, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
