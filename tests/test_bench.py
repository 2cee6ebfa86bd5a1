"""The benchmark scripts run at tiny sizes on the CPU and report every figure they promise."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO

GPU_CHECK_ROWS = {
    "a", "b", "c", "d", "e",
    "f-device-dense", "f-device-10%", "f-loader-dense", "f-loader-10%",
    "g-dense", "g-10%",
    "h",
}
BENCH_CPU_ROWS = {"a", "b", "c", "d", "e"}


def table_rows(markdown: str) -> dict[str, list[str]]:
    """Data rows of the Markdown table, keyed by their first cell."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("|  | check"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


def check_report(rows: list[dict], table: dict[str, list[str]], expected: set[str]) -> None:
    assert {r["key"] for r in rows} == expected
    assert set(table) == expected
    for r in rows:
        assert math.isfinite(r["value"]) and r["value"] > 0, r
        assert r["unit"] in ("x", "s", "%")
        cells = table[r["key"]]
        assert float(cells[2].split()[0].rstrip("%")) > 0  # the table shows the number too
        assert cells[4] in ("PASS", "FAIL", "-")
        # a verdict exactly where there is a target, and it agrees with the JSON
        assert (cells[3] == "-") == (r["target"] is None) == (r["passed"] is None)
        if r["passed"] is not None:
            assert cells[4] == ("PASS" if r["passed"] else "FAIL")
        assert r["load"]  # the load average sits next to every figure


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_runs_tiny_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "gpu"
    assert load_script("gpu_check").main(["--device", "cpu", "--tiny", "--workers", "0", "--out", str(out)]) == 0
    payload = json.loads((out / "gpu_check.json").read_text())
    assert payload["machine"]["device"] == "cpu" and payload["settings"]["tiny"] is True
    assert "float32" in payload["machine"]["precision"]
    markdown = (out / "gpu_check.md").read_text()
    check_report(payload["rows"], table_rows(markdown), GPU_CHECK_ROWS)
    assert markdown in capsys.readouterr().out
    seconds = {r["key"]: r["value"] for r in payload["rows"] if r["unit"] == "s"}
    assert {"d", "f-device-dense", "f-loader-10%", "h"} <= set(seconds)


def test_gpu_check_uses_and_records_the_speed_switches(tmp_path):
    out = tmp_path / "gpu"
    args = ["--device", "cpu", "--tiny", "--workers", "0", "--precision", "bf16", "--channels-last", "--out", str(out)]
    assert load_script("gpu_check").main(args) == 0
    payload = json.loads((out / "gpu_check.json").read_text())
    assert payload["settings"]["precision"] == "bf16" and payload["settings"]["channels_last"] is True
    assert payload["settings"]["compile"] is False
    assert "bf16" in payload["machine"]["precision"] and "float64" in payload["machine"]["precision"]
    check_report(payload["rows"], table_rows((out / "gpu_check.md").read_text()), GPU_CHECK_ROWS)
    # every check's trainer config (the Engines' and the bare loop's) carries the switches
    measure = load_script("measure")
    measure.SPEED.update(precision="bf16", channels_last=True)
    try:
        cfg = measure.trainer_recipe(batch_size=8)
        assert (cfg.precision, cfg.channels_last, cfg.compile) == ("bf16", True, False)
    finally:
        measure.SPEED.clear()


def test_gpu_check_refuses_cuda_where_there_is_none(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SystemExit) as exit_info:
        load_script("gpu_check").main(["--device", "cuda", "--tiny", "--out", str(tmp_path)])
    assert exit_info.value.code != 0 and "--device cpu --tiny" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_bench_cpu_quick_writes_its_table(tmp_path):
    out = tmp_path / "cpu.md"
    proc = run_script("bench/bench_cpu.py", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    check_report(payload["rows"], table_rows(out.read_text()), BENCH_CPU_ROWS)
    assert "load_average" in payload["machine"] and payload["machine"]["cores"] >= 1
