"""The wheel: built from the checkout's files, installed (not editable) into a fresh virtual
environment, its console commands run from a directory outside the checkout and find their
configs as package data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_identity import PINNED


def checkout_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.splitlines() if (REPO / f).exists() or (REPO / f).is_symlink()]


def build_wheel(tmp_path: Path) -> Path:
    # Built from a copy, so the checkout gets no build/ or egg-info of its own.
    source = tmp_path / "source"
    for name in checkout_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_symlink():
            target.symlink_to((REPO / name).readlink())
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = dist.glob("growth_density-*.whl")
    return wheel


def test_the_configs_are_package_data_of_the_wheel(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {str(p.relative_to(REPO / "growth_cli")) for p in (REPO / "growth_cli" / "conf").rglob("*.yaml")}
    assert {f"growth_cli/{c}" for c in configs} <= names and "growth_cli/conf/config.yaml" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "growth-launch = growth_cli.launch:cli" in text and "growth-analysis = analysis.__main__:main" in text
    assert "growth-export = growth.export:main" in text
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)
    assert (REPO / "conf").resolve() == (REPO / "growth_cli" / "conf").resolve()  # a checkout's conf/ is the same files


@pytest.mark.slow
def test_the_installed_commands_run_the_embedded_default_outside_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # The dependencies (torch and the rest, gigabytes) are this environment's, seen through a path
    # entry: installing them again would be most of the test's time. Only a plain path, so that
    # this environment's own .pth files (the checkout's editable install) are not read there.
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True, text=True, timeout=1200)
    checked = subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True, text=True, timeout=300)
    assert "growth-density" not in checked.stdout.lower().replace("_", "-"), checked.stdout  # its requirements are all met
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import growth, growth_cli; print(growth.__file__); print(growth_cli.__file__)"],
                           cwd=outside, capture_output=True, text=True, check=True)
    assert all(line.startswith(str(venv)) for line in where.stdout.splitlines())  # the wheel's code, not the checkout's

    done = subprocess.run([str(venv / "bin" / "growth-launch")], cwd=outside, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = outside / "results" / PINNED[()]  # the same run identity as in a checkout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["method"] == "pwmpr" and summary["test_accuracy"] > 0.8
    assert f"run directory       results/{PINNED[()]}" in done.stdout

    report = subprocess.run([str(venv / "bin" / "growth-analysis"), "results"], cwd=outside, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (outside / "results" / "analysis" / "density_table.md").is_file() and (outside / "results" / "analysis" / "report.html").is_file()

    # The packed sweep launcher (hydra_plugins) and the launchers' shared resources are in the wheel too.
    packed = subprocess.run([str(venv / "bin" / "growth-launch"), "-m", "seed=0,1,2", "hydra/launcher=slurm_packed", "dry_run=true"],
                            cwd=outside, capture_output=True, text=True, timeout=300)
    assert packed.returncode == 0 and "3 jobs would be launched in 2 SLURM jobs of up to 2" in packed.stdout, packed.stderr[-2000:]

    refused = subprocess.run([str(venv / "bin" / "growth-launch"), "method=nonsense"], cwd=outside, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "method" in refused.stderr and "Traceback" not in refused.stderr
