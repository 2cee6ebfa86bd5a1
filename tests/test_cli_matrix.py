"""Both bad-input matrices on the command line (issue 15): every generated case
(tests/schema_matrix.py, as a dry run) and every hand-written case (tests/test_bad_input.py) is
given to growth-launch's entry point as argv, the way a user types it, and what it prints must
hold no Python traceback: a refused input exits 2 with a line naming its key, an input accepted
on purpose exits 0 (its dry run) or 2 with a one-line error (e.g. a dataset that is not here).

Two processes share the cases (tests/cli_matrix_driver.py), one core each."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import FAST, REPO
from tests.schema_matrix import cases
from tests.schema_matrix_eval import world as matrix_world
from tests.test_bad_input import CASES as HAND_CASES
from tests.test_bad_input import world  # noqa: F401  (the fixture: interrupted runs and data files)
from tests.test_schema_matrix import ACCEPTED

pytestmark = pytest.mark.slow

TRACEBACK = "Traceback (most recent call last)"


def run_cases(items: list[dict], tmp_path) -> dict[str, dict]:
    halves = [items[0::2], items[1::2]]
    procs = []
    for i, half in enumerate(halves):
        (tmp_path / f"cases{i}.json").write_text(json.dumps(half))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.cli_matrix_driver", str(tmp_path / f"cases{i}.json"), str(tmp_path / f"results{i}.json")],
            # From a scratch directory: cases with relative paths (output.root=no_such_value) write there.
            cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        ))
    for proc in procs:
        assert proc.wait(timeout=1800) == 0
    results = {}
    for i in range(len(halves)):
        results.update(json.loads((tmp_path / f"results{i}.json").read_text()))
    assert len(results) == len(items)
    return results


def test_every_generated_case_on_the_command_line_says_one_line_and_never_a_traceback(tmp_path):
    fill = matrix_world(tmp_path)
    generated = cases()
    # (the case's own override last, so that output.root's cases are what they say)
    items = [{"id": c.id, "argv": [f"output.root={fill['root']}", "dry_run=true", "output.progress=false", *c.overrides(fill)]}
             for c in generated]
    results = run_cases(items, tmp_path)
    problems = []
    for case in generated:
        rc, out = results[case.id]["rc"], results[case.id]["out"]
        if TRACEBACK in out:
            problems.append(f"{case.id}: a traceback:\n{out[-1500:]}")
        elif (case.leaf.key, case.label) in ACCEPTED:
            if rc not in (0, 2) or (rc == 2 and "error" not in out.lower()):
                problems.append(f"{case.id}: accepted on purpose, but exit {rc}:\n{out[-800:]}")
        elif rc != 2 or case.leaf.key not in out:
            problems.append(f"{case.id}: exit {rc}, and the output does not name {case.leaf.key}:\n{out[-800:]}")
    assert not problems, f"{len(problems)} of {len(generated)}:\n" + "\n".join(problems[:40])
    # A dry run writes no run: nothing but Hydra's own log folder under the results root.
    from pathlib import Path

    root = Path(fill["root"])
    assert not root.exists() or {p.name for p in root.iterdir()} <= {"hydra"}
    assert not list(root.rglob("summary.json"))


def test_every_hand_written_case_on_the_command_line_exits_2_naming_the_problem_without_a_traceback(world):  # noqa: F811
    fill = world["paths"]
    items = []
    for case in HAND_CASES:
        overrides = [o.format(**fill) for o in case.overrides]
        base = [o for o in FAST if not (o.startswith("model.") and any(x.startswith("model=") for x in overrides))]
        items.append({"id": case.id, "argv": [f"output.root={world['root']}", *base, "growth.max_rounds=3", *overrides]})
    results = run_cases(items, world["root"].parent)
    problems = []
    for case in HAND_CASES:
        rc, out = results[case.id]["rc"], results[case.id]["out"]
        expect = case.expect[0].format(**fill)
        if TRACEBACK in out or rc != 2 or expect not in out:
            problems.append(f"{case.id}: exit {rc}, expected {expect!r}:\n{out[-1200:]}")
    assert not problems, "\n".join(problems)
