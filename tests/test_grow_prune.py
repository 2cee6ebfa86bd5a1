"""Hybrid grow-prune: IMP-C's levels below the discovered density, their cumulative cost, and
pruning within growth."""

import csv
from pathlib import Path

import pytest
import torch

from growth.records import load_checkpoint, run_name
from growth.run import run
from tests.conftest import compose_cfg


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_levels_go_down_from_the_discovered_density_with_cumulative_cost(make_cfg):
    summary = run(make_cfg("method=grow_prune", "method.min_density=0.02", "method.level_epochs=1", "growth.max_rounds=6",
                           "growth.stop.rule=none"))
    assert summary["status"] == "finished"
    run_dir = Path(summary["run_dir"])
    rounds = _rows(run_dir / "rounds.csv")
    disc = summary["discovered_round"]
    assert disc == len(rounds) - 1  # rule none: growth ends at max_rounds, the last round is the discovered one
    curve = sorted(_rows(run_dir / "curve.csv"), key=lambda c: -float(c["density"]))
    assert [c["point"] for c in curve][0] == f"extensive:{disc}" and {c["phase"] for c in curve[1:]} == {"level"}
    d = float(rounds[disc]["density"])
    expected = []
    while not expected or expected[-1] > 0.02:
        expected.append(max((expected[-1] if expected else d) * 0.8, 0.02))
    assert [float(c["density"]) for c in curve[1:]] == pytest.approx(expected, abs=2e-4)
    growth_cost = float(rounds[disc]["cost_epochs"])
    # the discovered network's full training is one unit (trainer.epochs=6), each level 1/6 of one
    assert [float(c["cost_epochs"]) for c in curve] == pytest.approx(
        [growth_cost + 1.0 + i / 6 for i in range(len(curve))], rel=1e-6)
    assert summary["levels"] == len(expected) and summary["density"] == pytest.approx(0.02, abs=2e-4)
    assert all(c["family"] == "pruning" and c["label"] == "PWMPR + pruning" for c in curve)


def test_pruning_within_growth_removes_the_weakest_old_edges(make_cfg, monkeypatch):
    from baselines.grow_prune import GrowPruneRun

    seen = []
    grow = GrowPruneRun.grow

    def spy(self, n_new):
        before = {n: m.clone() for n, m in self.masks.items()}
        weights = {n: p.detach().abs().clone() for n, p in self.model.named_parameters() if n in before}
        out = grow(self, n_new)
        seen.append((before, weights, {n: m.clone() for n, m in self.masks.items()}, n_new))
        return out

    monkeypatch.setattr(GrowPruneRun, "grow", spy)
    run(make_cfg("method=grow_prune", "method.prune_in_growth=0.5", "method.min_density=0.5", "growth.max_rounds=4",
                 "extensive.which=none"))
    assert len(seen) == 3
    for before, weights, after, k in seen:
        active = lambda m: sum(int(x.sum()) for x in m.values())
        assert active(after) == active(before) + k - round(0.5 * k)
        dropped = torch.cat([w[before[n] & ~after[n]] for n, w in weights.items()])
        kept = torch.cat([w[before[n] & after[n]] for n, w in weights.items()])
        assert len(dropped) == round(0.5 * k) and dropped.max() <= kept.min()


def test_grow_prune_reads_the_growth_sections_a_baseline_does_not(tmp_path):
    a = run_name(compose_cfg(["method=grow_prune"], tmp_path))
    b = run_name(compose_cfg(["method=grow_prune", "growth.stop.tol=0.03"], tmp_path))
    c, d = (run_name(compose_cfg(["method=imp_c", *x], tmp_path)) for x in ([], ["growth.stop.tol=0.03"]))
    assert a != b and c == d


def test_a_study_takes_the_new_methods_in_its_lists(tmp_path):
    """study.baselines runs any method once; study.matched_methods any fixed-density method at
    the reference's densities with matched budgets; study_problems accepts them all."""
    from growth.config.validation import validate
    from growth.study.plan import plan_independent, plan_matched

    cfg = compose_cfg(["study=compare", "study.baselines=[dense,imp_c,grow_prune]",
                       "study.matched_methods=[phew,rigl,set,snip,grasp,synflow]"], tmp_path)
    validate(cfg)
    stage1 = {j.label for j in plan_independent(cfg.study)}
    assert {"grow_prune/s0", "imp_c/s0", "dense/s0", "pwmpr/s0"} <= stage1
    stage2 = plan_matched(cfg.study, 0, tmp_path / "ref", [0, 1], ["pwmpr/s0"])
    assert {j.label.split("/")[0] for j in stage2} == {"phew", "rigl", "set", "snip", "grasp", "synflow"}
    assert all("budget.match=pwmpr" in j.overrides and j.depends_on == ["pwmpr/s0"] for j in stage2)
