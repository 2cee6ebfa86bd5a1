"""A comparison at chosen densities: extensive.which=listed, study.densities, and the mask methods
taking the reference's snapshot (budget.snapshot) as their mask."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from growth.config.validation import validate
from growth.errors import ConfigError
from growth.run import run
from growth.selection import nearest_rounds
from growth.study.plan import StudyPlan, matched_rounds, plan_independent, study_identity, user_overrides
from tests.conftest import compose_cfg


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_nearest_rounds_in_log_density():
    densities = [0.01, 0.0125, 0.0156, 0.0195, 0.0244, 0.0305]
    assert nearest_rounds(densities, [0.02]) == [3]
    assert nearest_rounds(densities, [0.011]) == [0]  # log distance: 0.011/0.01 < 0.0125/0.011
    assert nearest_rounds(densities, [0.5, 0.001, 0.03]) == [0, 5]  # once each, in order
    assert nearest_rounds([], [0.1]) == []


def test_listed_extensive_trains_the_nearest_snapshots_and_the_discovered_one(make_cfg):
    summary = run(make_cfg("growth.max_rounds=6", "extensive.which=listed", "extensive.densities=[0.012,0.02]"))
    rounds = read_csv(Path(summary["run_dir"]) / "rounds.csv")
    densities = [float(r["density"]) for r in rounds]
    expected = set(nearest_rounds(densities, [0.012, 0.02])) | {summary["discovered_round"]}
    curve = read_csv(Path(summary["run_dir"]) / "curve.csv")
    trained = {int(c["round"]) for c in curve if c["point"].startswith("extensive:")}
    assert trained == expected and len(trained) < len(rounds)


@pytest.mark.parametrize("overrides, message", [
    (["extensive.which=listed"], "extensive.which='listed' needs extensive.densities"),
    (["extensive.densities=[0.1]"], "extensive.densities=[0.1] applies only with extensive.which=listed (it is 'discovered')"),
    (["extensive.which=listed", "extensive.densities=[0.1,1.5]"], "extensive.densities=[0.1, 1.5] is invalid: null or a non-empty list of densities in (0, 1]"),
    (["study=compare", "study.densities=[]"], "study.densities=[] is invalid: null or a non-empty list of densities in (0, 1]"),
])
def test_bad_density_lists_are_refused_naming_the_key(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        validate(compose_cfg(overrides, tmp_path))


def test_study_densities_plan_the_listed_snapshots_and_the_matched_runs_near_them(tmp_path):
    cfg = compose_cfg(["study=compare", "study.densities=[0.02,0.05]"], tmp_path)
    validate(cfg)
    pwmpr = next(j for j in plan_independent(cfg.study) if j.label == "pwmpr/s0")
    assert "extensive.which=listed" in pwmpr.overrides and "extensive.densities=[0.02,0.05]" in pwmpr.overrides
    rounds = [0.01 * 1.25 ** k for k in range(12)]  # 1%, 1.25%, ... 9.3%
    assert matched_rounds(cfg.study, rounds) == [3, 7]  # 1.95% and 4.77%
    assert matched_rounds(compose_cfg(["study=compare"], tmp_path).study, rounds) == list(range(12))


def test_an_optional_study_key_at_null_or_a_method_without_overrides_renames_no_study(tmp_path):
    # The docs' MNIST comparison command; pinned: this changes only when a study default does.
    overrides = ["experiment=mnist_lenet300", "dataset.root=../shared/data", "study=compare", "trainer.epochs=20",
                 "growth.timing.epochs=2", "trainer.cpu_threads=1", "output.root=results/mnist"]
    cfg = compose_cfg(overrides, tmp_path)
    assert cfg.study.densities is None
    assert study_identity(cfg.study, user_overrides(overrides)) == "c7870fc3db"
    # a key a later version adds, at null, and fewer methods listed without overrides: the same study
    later = OmegaConf.create({**OmegaConf.to_container(cfg.study), "hypothetical_key": None, "method_overrides": {"dense": []}})
    assert study_identity(later, user_overrides(overrides)) == "c7870fc3db"
    listed = compose_cfg([*overrides, "study.densities=[0.02]"], tmp_path)
    assert study_identity(listed.study, user_overrides(overrides)) != "c7870fc3db"
    overridden = compose_cfg([*overrides, "study.method_overrides.set=['method.delta_t=50']"], tmp_path)
    assert study_identity(overridden.study, user_overrides(overrides)) != "c7870fc3db"


@pytest.mark.parametrize("method", ["masks", "shuffled_masks"])
def test_a_mask_method_takes_the_reference_snapshot_of_budget_snapshot(make_cfg, method):
    from growth.records import load_checkpoint

    ref = run(make_cfg("growth.max_rounds=4", "extensive.which=none"))
    snap = torch.load(Path(ref["run_dir"]) / "snapshots" / "round_002.pt", weights_only=True)
    matched = ["budget.match=pwmpr", f"budget.reference={ref['run_dir']}"]
    summary = run(make_cfg(f"method={method}", *matched, "budget.snapshot=2"))
    assert summary["status"] == "finished"
    assert summary["density"] == pytest.approx(snap["density"])
    assert summary["masks_file"] == str(Path(ref["run_dir"]) / "snapshots" / "round_002.pt")
    masks = load_checkpoint(summary["run_dir"])["masks"]
    for name, mask in snap["masks"].items():
        assert int(masks[name].sum()) == int(mask.sum())
        assert torch.equal(masks[name], mask) == (method == "masks")
    # a round the reference never reached is a no-op that says so
    beyond = run(make_cfg(f"method={method}", *matched, "budget.snapshot=40"))
    assert "no round 40" in str(beyond.get("not_applicable"))
    with pytest.raises(ConfigError, match="method.file and budget.snapshot=2 are both set"):
        validate(make_cfg(f"method={method}", *matched, "budget.snapshot=2", f"method.file={ref['run_dir']}/snapshots/round_001.pt"))
