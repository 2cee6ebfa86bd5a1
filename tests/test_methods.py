"""Every method of the comparison on the one engine: invariants, ledgers, matched budgets."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from baselines.imp import level_densities, magnitude_prune
from baselines.phew import PhewRun
from baselines.rigl import RiglRun, RiglUpdater, SetRun, erk_densities, restart_optimizer_state, rigl_update
from growth.data import load_digits
from growth.errors import ConfigError
from growth.fixed import reference_growth_cost
from growth.masks import count_active, growable_parameters
from growth.methods import RunContext
from growth.records import run_dir_for
from growth.run import prepare, run
from growth.train import Callback


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ RigL

def test_erk_densities_reach_the_target_and_favour_small_layers():
    shapes = {"a": (100, 64), "b": (100, 100), "c": (10, 100)}
    d = erk_densities(shapes, 0.1)
    total = sum(math.prod(s) for s in shapes.values())
    assert sum(d[n] * math.prod(s) for n, s in shapes.items()) / total == pytest.approx(0.1)
    assert d["c"] > d["a"] > d["b"]
    capped = erk_densities({"big": (1000, 1000), "tiny": (2, 2)}, 0.5)
    assert capped["tiny"] == 1.0 and capped["big"] < 0.5


class RiglAudit(Callback):
    """Watches every step of a RigL training: counts, disjointness, grown edges at zero."""

    def __init__(self, run):
        self.run = run
        self.before = None
        self.updates_seen = 0
        self.off_schedule_changes = 0

    def after_backward(self, engine):
        self.before = {n: m.clone() for n, m in self.run.masks.items()}
        self.updates_before = len(self.run.state["rigl_updates"])

    def after_step(self, engine):
        params = growable_parameters(engine.model)
        updated = len(self.run.state["rigl_updates"]) > self.updates_before
        changed = any(not torch.equal(self.before[n], m) for n, m in self.run.masks.items())
        if not updated:
            self.off_schedule_changes += int(changed)
            return
        self.updates_seen += 1
        assert count_active(self.run.masks) == count_active(self.before)
        for n, m in self.run.masks.items():
            grown = m & ~self.before[n]
            dropped = self.before[n] & ~m
            assert not torch.any(grown & dropped)
            assert int(grown.sum()) == int(dropped.sum())
            assert torch.all(params[n].detach()[grown] == 0), "grown weights start at 0"
            for value in self.run.optimizer.state[params[n]].values():
                if torch.is_tensor(value) and value.shape == m.shape:
                    assert torch.all(value[grown] == 0), "grown edges have zero optimizer state"
                    assert torch.all(value[~m] == 0)


def test_rigl_updates_keep_counts_and_start_grown_edges_at_zero(make_cfg, tmp_path):
    cfg = make_cfg("method=rigl", "method.density=0.1", "method.delta_t=5", "trainer.epochs=4")
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    rigl = RiglRun(RunContext(cfg, run_dir))
    audit = RiglAudit(rigl)
    # the audit sees the masks before the updater changes them
    rigl.callbacks = lambda epochs: [audit, RiglUpdater(rigl, epochs * len(rigl.engine.batches))]
    summary = rigl.run()
    steps = 4 * len(rigl.engine.batches)
    expected_updates = len([t for t in range(1, int(0.75 * steps)) if t % 5 == 0])
    assert audit.updates_seen == expected_updates == summary["rigl_updates"]
    assert audit.off_schedule_changes == 0
    assert all(u["step"] < 0.75 * steps for u in rigl.state["rigl_updates"])
    fractions = [u["drop_fraction"] for u in rigl.state["rigl_updates"]]
    assert fractions == sorted(fractions, reverse=True) and fractions[0] <= 0.3
    assert summary["density"] == pytest.approx(0.1, abs=0.005)


def _one_layer(weight, grad, mask):
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    layer.weight.grad = grad.clone()
    return layer, {"weight": mask.clone()}


def test_rigl_may_regrow_a_connection_it_just_dropped_and_it_restarts_at_zero():
    """Algorithm 1: grow among the connections not active after the drop. The weakest active
    weight has the largest gradient, so it is dropped and regrown: weight, gradient and
    optimizer state restart at 0, the mask keeps it, and nothing else changes."""
    weight = torch.tensor([[0.01, 0.5, 0.7, 0.0]])
    grad = torch.tensor([[9.0, 0.1, 0.1, 1.0]])
    mask = torch.tensor([[True, True, True, False]])
    layer, masks = _one_layer(weight, grad, mask)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    optimizer.state[layer.weight]["momentum_buffer"] = torch.ones_like(weight)
    update = rigl_update(layer, masks, 1 / 3)
    assert torch.equal(update.masks["weight"], mask) and update.changed == 0
    assert update.grown["weight"].tolist() == [[True, False, False, False]]
    assert layer.weight[0, 0] == 0 and layer.weight.grad[0, 0] == 0 and layer.weight[0, 1] == 0.5
    restart_optimizer_state(optimizer, layer, update.grown)
    assert optimizer.state[layer.weight]["momentum_buffer"].tolist() == [[0.0, 1.0, 1.0, 1.0]]
    # with the dropped connection's gradient small, the absent one with the larger gradient is grown
    layer, masks = _one_layer(weight, torch.tensor([[0.0, 0.1, 0.1, 1.0]]), mask)
    update = rigl_update(layer, masks, 1 / 3)
    assert update.masks["weight"].tolist() == [[False, True, True, True]] and update.changed == 1


def test_set_grows_at_random_among_the_connections_not_active_after_the_drop():
    weight = torch.linspace(0.1, 1.0, 40).view(4, 10)
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[:, :5] = True
    seen = set()
    for seed in range(20):
        layer, masks = _one_layer(weight, torch.zeros(4, 10), mask)
        update = rigl_update(layer, masks, 0.25, "random", torch.Generator().manual_seed(seed))
        new = update.masks["weight"]
        assert int(new.sum()) == int(mask.sum())
        assert torch.all(new[mask & (weight > weight[mask].sort().values[4])])  # the 15 strongest stay
        seen |= {tuple(i) for i in update.grown["weight"].nonzero().tolist()}
    assert any(j >= 5 for _, j in seen) and any(j < 5 for _, j in seen)  # absent and just dropped both drawn


def test_rigl_charges_the_papers_extra_flops_and_set_none(make_cfg, tmp_path):
    """An update step costs 2 f_S + f_D per sample instead of 3 f_S: the extra is (f_D - f_S)."""
    counts = {}
    for method in ("rigl", "set"):
        cfg = make_cfg(f"method={method}", "method.density=0.1", "method.delta_t=5", "trainer.epochs=2")
        run_dir = run_dir_for(cfg)
        run_dir.mkdir(parents=True)
        r = (RiglRun if method == "rigl" else SetRun)(RunContext(cfg, run_dir))
        extra = []
        r.ledger.add_extra_flops = lambda flops, extra=extra: extra.append(flops)
        summary = r.run()
        ledger = r.ledger
        expected = (ledger.dense_forward_flops - ledger.train_flops_per_sample / 3.0) * cfg.trainer.batch_size
        counts[method] = (extra, summary["rigl_updates"], expected)
    extra, updates, expected = counts["rigl"]
    assert updates > 0 and len(extra) == updates and extra == pytest.approx([expected] * updates)
    extra, updates, _ = counts["set"]
    assert updates > 0 and extra == [0.0] * updates


def test_a_dense_first_layer_keeps_the_overall_density(make_cfg):
    shapes = {"first": (100, 64), "b": (100, 100), "c": (10, 100)}
    total = sum(math.prod(s) for s in shapes.values())
    d = erk_densities(shapes, 0.5, {"first"})
    assert d["first"] == 1.0 and sum(d[n] * math.prod(s) for n, s in shapes.items()) / total == pytest.approx(0.5)
    for distribution in ("erk", "uniform"):
        cfg = make_cfg("method=rigl", "method.density=0.6", "method.dense_first_layer=true", f"method.distribution={distribution}",
                       "model.hidden=[64,64]")
        run_dir = run_dir_for(cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        rigl = RiglRun(RunContext(cfg, run_dir))
        rigl.density_target = 0.6
        masks = rigl.build_masks()
        first, *others = masks
        assert bool(masks[first].all()) and count_active(masks) / sum(m.numel() for m in masks.values()) == pytest.approx(0.6, abs=0.01)
        spread = [float(masks[n].float().mean()) for n in others]
        assert (max(spread) - min(spread) < 0.05) == (distribution == "uniform")  # ERK favours the small last layer
    validate = __import__("growth.config.validation", fromlist=["validate"]).validate
    with pytest.raises(ConfigError, match=r"method.dense_first_layer=true needs method.density >= 0\.\d+"):
        validate(make_cfg("method=rigl", "method.density=0.05", "method.dense_first_layer=true"))


# ------------------------------------------------------------------ IMP-C

def test_imp_levels_go_down_by_the_fraction_to_exactly_min_density():
    levels = level_densities(0.2, 0.01)
    assert levels[0] == 1.0 and levels[-1] == 0.01
    assert all(b == pytest.approx(a * 0.8) for a, b in zip(levels[:-2], levels[1:-1]))
    assert len(levels) == 22


def test_magnitude_pruning_keeps_the_largest_weights_globally_and_per_layer():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(12.0).view(3, 4) - 6)
        model[2].weight.copy_(torch.arange(6.0).view(2, 3) * 0.1)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in growable_parameters(model).items()}
    glob = magnitude_prune(model, masks, 5, "global")
    assert count_active(glob) == 5
    assert glob["2.weight"].sum() == 0  # all small
    kept = model[0].weight.detach().abs()[glob["0.weight"]]
    assert kept.min() >= 4
    layer = magnitude_prune(model, masks, 9, "layer")
    assert int(layer["0.weight"].sum()) == 6 and int(layer["2.weight"].sum()) == 3
    again = magnitude_prune(model, glob, 3, "global")
    assert torch.all(again["0.weight"] <= glob["0.weight"]), "only present weights survive"


def test_imp_c_records_every_level_with_cumulative_cost(make_cfg):
    cfg = make_cfg("method=imp_c", "method.min_density=0.3", "trainer.epochs=4", "method.level_epochs=1")
    summary = run(cfg)
    curve = read_csv(Path(summary["run_dir"]) / "curve.csv")
    curve.sort(key=lambda c: int(c["level"]))
    densities = [float(c["density"]) for c in curve]
    assert densities == pytest.approx([1.0, 0.8, 0.64, 0.512, 0.4096, 0.32768, 0.3], abs=1e-3)
    costs = [float(c["cost_epochs"]) for c in curve]
    # the dense training is one full run; each level adds 1 epoch = 1/4 of a run
    assert costs == pytest.approx([1.0 + 0.25 * i for i in range(7)])


# ------------------------------------------------------------------ dense, PHEW, budgets

def test_dense_costs_exactly_one_unit(make_cfg):
    summary = run(make_cfg("method=dense"))
    assert summary["cost"]["epochs"] == pytest.approx(1.0)
    assert summary["density"] == 1.0
    assert summary["total_cost"]["cost_flops"] == pytest.approx(summary["dense_run_flops"])


def test_reference_cost_interpolates_in_log_density(tmp_path):
    (tmp_path / "rounds.csv").write_text("round,density,cost_epochs,cost_flops\n0,0.01,0.1,10\n1,0.1,0.5,50\n")
    assert reference_growth_cost(tmp_path, 0.01, "cost_epochs") == pytest.approx(0.1)
    assert reference_growth_cost(tmp_path, math.sqrt(0.001), "cost_epochs") == pytest.approx(0.3)
    assert reference_growth_cost(tmp_path, 0.5, "cost_flops") == pytest.approx(50)  # clamped


def test_matched_budget_needs_its_reference_and_names_it(make_cfg):
    cfg = make_cfg("method=phew", "budget.match=pwmpr")
    with pytest.raises(ConfigError) as err:
        run(cfg)
    text = str(err.value)
    assert "budget.match='pwmpr'" in text and "dataset=digits" in text and "seed=0" in text
    assert not run_dir_for(cfg).exists(), "nothing is written for a rejected run"


def test_matched_budget_trains_for_the_references_cost_at_its_density(make_cfg):
    ref = run(make_cfg("growth.max_rounds=6", "extensive.which=none"))
    rounds = read_csv(Path(ref["run_dir"]) / "rounds.csv")
    d = float(rounds[3]["density"])
    summary = run(make_cfg("method=phew", f"method.density={d}", "budget.match=pwmpr"))
    budget = summary["budget"]
    expected = (float(rounds[3]["cost_epochs"]) + 1.0) * 6  # growth cost up to d + one extensive run
    assert budget["reference"] == ref["run_dir"]
    assert budget["given_epochs"] == pytest.approx(expected, rel=0.02)
    assert budget["used_epochs"] == round(budget["given_epochs"])
    assert summary["total_cost"]["cost_epochs"] == pytest.approx(budget["used_epochs"] / 6)
    # Its reference removed later, the finished matched run is still recognised and skipped (a
    # relaunched sweep must not fail on runs it has no need to run), while a new one is refused.
    import shutil

    shutil.rmtree(ref["run_dir"])
    again = run(make_cfg("method=phew", f"method.density={d}", "budget.match=pwmpr"))
    assert again["skipped"] and again["status"] == "finished"
    with pytest.raises(ConfigError, match="budget.match='pwmpr'"):
        prepare(make_cfg("method=phew", f"method.density={d / 2}", "budget.match=pwmpr"), before_submission=True)


def test_a_given_mask_trains_exactly_that_mask(make_cfg, tmp_path):
    """method=masks trains a snapshot's mask (or a masks file's) from this run's initialisation,
    with the fixed-density budgets; the weights outside the mask stay exactly zero."""
    import hashlib

    from growth.masks import save_masks
    from growth.records import load_checkpoint

    ref = run(make_cfg("growth.max_rounds=4", "extensive.which=none"))
    snapshot = Path(ref["run_dir"]) / "snapshots" / "round_002.pt"
    snap = torch.load(snapshot, weights_only=True)
    summary = run(make_cfg("method=masks", f"method.file={snapshot}", "budget.match=pwmpr"))
    assert summary["status"] == "finished" and summary["density"] == pytest.approx(snap["density"])
    assert summary["masks_sha256"] == hashlib.sha256(snapshot.read_bytes()).hexdigest()
    rounds = read_csv(Path(ref["run_dir"]) / "rounds.csv")
    assert summary["budget"]["given_epochs"] == pytest.approx((float(rounds[2]["cost_epochs"]) + 1.0) * 6, rel=0.02)
    ckpt = load_checkpoint(summary["run_dir"])
    assert ckpt["masks"].keys() == snap["masks"].keys()
    for name, mask in snap["masks"].items():
        assert torch.equal(ckpt["masks"][name], mask)
        assert not ckpt["model"][name][~mask].any(), f"{name}: a weight outside the mask is not zero"
    # a masks file written by growth.masks.save_masks works the same
    half = {n: m & (torch.rand(m.shape) < 0.5) for n, m in snap["masks"].items()}
    save_masks(tmp_path / "half.pt", half)
    again = run(make_cfg("method=masks", f"method.file={tmp_path / 'half.pt'}"))
    assert again["density"] == pytest.approx(sum(int(m.sum()) for m in half.values()) / sum(m.numel() for m in half.values()))


def test_the_shuffled_mask_keeps_every_layers_density_and_loses_its_topology(make_cfg, tmp_path):
    """method=shuffled_masks: per layer as many edges as the file's, at other positions; the same
    seed gives the same shuffle, another seed another; it trains with the weights outside zero."""
    from baselines.shuffled_masks import shuffle_within_layers
    from growth.masks import save_masks
    from growth.records import load_checkpoint

    ref = run(make_cfg("growth.max_rounds=4", "extensive.which=none"))
    snapshot = Path(ref["run_dir"]) / "snapshots" / "round_003.pt"
    given = torch.load(snapshot, weights_only=True)["masks"]
    summary = run(make_cfg("method=shuffled_masks", f"method.file={snapshot}", "trainer.epochs=2"))
    assert summary["status"] == "finished" and summary["label"] == "shuffled masks"
    masks = load_checkpoint(summary["run_dir"])["masks"]
    model = load_checkpoint(summary["run_dir"])["model"]
    for name, mask in given.items():
        assert int(masks[name].sum()) == int(mask.sum())
        assert not torch.equal(masks[name], mask)
        assert not model[name][~masks[name]].any()
    overlap = sum(int((masks[n] & given[n]).sum()) for n in given) / sum(int(m.sum()) for m in given.values())
    assert overlap < 0.5  # a uniform shuffle keeps about the layer's density of the edges, here a few %
    a = shuffle_within_layers(given, torch.Generator().manual_seed(1))
    b = shuffle_within_layers(given, torch.Generator().manual_seed(1))
    c = shuffle_within_layers(given, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[n], b[n]) for n in given) and not all(torch.equal(a[n], c[n]) for n in given)


def test_phew_run_trains_at_its_density(make_cfg):
    # (with the fan-in rescale: at 5% of a [32, 32] MLP and 6 epochs, the dense initialisation's
    # scale leaves the network at chance)
    summary = run(make_cfg("method=phew", "method.density=0.05", "method.rescale=fan_in"))
    assert summary["density"] == pytest.approx(0.05, abs=0.003)
    assert summary["test_accuracy"] > 0.2


@pytest.mark.parametrize("method", ["rigl", "set", "phew"])
def test_sparse_baselines_start_from_the_dense_initialisation_unless_rescaled(make_cfg, method):
    """As RigL's and PHEW's code do: the surviving weights are the dense initialisation's own;
    method.rescale=fan_in scales them up as for growth seeds."""
    cfg = make_cfg(f"method={method}", "method.density=0.1")
    assert cfg.method.rescale == "none"
    starts = {}
    for rescale in ("none", "fan_in"):
        cfg = make_cfg(f"method={method}", "method.density=0.1", f"method.rescale={rescale}")
        run_dir = run_dir_for(cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        r = {"rigl": RiglRun, "set": SetRun, "phew": PhewRun}[method](RunContext(cfg, run_dir))
        dense = {n: p.detach().clone() for n, p in growable_parameters(r.model).items()}
        r.state = r.initial_state()
        starts[rescale] = {n: (p.detach(), r.masks[n], dense[n]) for n, p in growable_parameters(r.model).items()}
    for n, (w, m, w0) in starts["none"].items():
        assert torch.equal(w[m], w0[m])
    assert any(bool((w[m].abs() > w0[m].abs()).all()) for w, m, w0 in starts["fan_in"].values())


# ------------------------------------------------------------------ ledger against hand-computed totals

def test_gradient_growth_counts_its_dense_gradient_passes(make_cfg):
    cfg = make_cfg("method=gg", "growth.max_rounds=3", "growth.gradient_batches=2", "extensive.which=none")
    summary = run(cfg)
    rounds = read_csv(Path(summary["run_dir"]) / "rounds.csv")
    # hidden [32, 32]: forward FLOPs per sample = 2 * (64*32 + 32*32 + 32*10)
    dense_fwd = 2 * (64 * 32 + 32 * 32 + 32 * 10)
    layer = {"layers.0.weight": 2 * 64 * 32, "layers.1.weight": 2 * 32 * 32, "layers.2.weight": 2 * 32 * 10}
    train_size = len(load_digits(cfg.dataset).train_x)
    expected = 0.0
    for r in rounds:
        fwd = sum(layer[n] * float(r[f"layer_density:{n}"]) for n in layer)
        expected += 3 * fwd * train_size  # one epoch per round at the round's density
        if r["grown"]:
            expected += 3 * dense_fwd * 64 * 2  # two dense gradient batches of 64 per growth step
    assert float(rounds[-1]["cost_flops"]) == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
def test_compare_study_runs_in_order_and_skips_when_relaunched(small_study):
    from tests.conftest import launch_small_study

    tmp_path, first = small_study
    (study_file,) = (tmp_path / "studies").glob("compare-*/study.json")
    study = json.loads(study_file.read_text())
    jobs = study["jobs"]
    labels = [j["label"] for j in jobs]
    assert {"dense/s0", "imp_c/s0", "pwmpr/s0", "pwmp/s0", "rg/s0", "gg/s0"} <= set(labels)
    matched = [j for j in jobs if j["label"].startswith(("phew/", "rigl/"))]
    assert matched and all(j["stage"] == 2 for j in matched)
    assert labels.index("pwmpr/s0") < min(labels.index(j["label"]) for j in matched)
    assert all(j["status"] == "finished" for j in jobs), [(j["label"], j["status"], j["error"]) for j in jobs]
    ref = next(j for j in jobs if j["label"] == "pwmpr/s0")
    for j in matched:
        summary = json.loads((Path(j["run_dir"]) / "summary.json").read_text())
        assert summary["budget"]["reference"] == ref["run_dir"]
        assert summary["density"] <= 0.02 + 1e-9
    assert "| pwmpr |" in first.stdout and "| rigl |" in first.stdout
    again = launch_small_study(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    # the relaunch finds the same study directory (none beside it) and skips every run
    assert list((tmp_path / "studies").glob("compare-*/study.json")) == [study_file]
    study = json.loads(study_file.read_text())
    assert all(j["status"].startswith("skipped") for j in study["jobs"]), [j["status"] for j in study["jobs"]]


def test_a_study_keeps_its_directory_when_only_its_execution_changes(tmp_path, monkeypatch):
    """A relaunch on another partition, with GROWTH_SLURM_* set, or with W&B on computes the same
    runs: it must find the same study directory (and so skip what finished)."""
    from tests.conftest import compose_cfg

    from growth.study import Study

    def study_dir(*overrides):
        base = ["study=compare", "study.max_density=0.02", *overrides]
        return Study(compose_cfg(base, tmp_path), lambda o: compose_cfg(o, tmp_path), base).dir

    first = study_dir()
    monkeypatch.setenv("GROWTH_SLURM_CPUS", "1")
    monkeypatch.setenv("GROWTH_SLURM_PARTITION", "gpu")
    assert study_dir() == first
    assert study_dir("study.executor=slurm", "study.wait=true", "study.slurm.mem_gb=4", "study.workers=2") == first
    assert study_dir("logger=wandb", "output.progress=false", "trainer.cpu_threads=1") == first
    # what changes the runs changes the study
    assert study_dir("study.max_density=0.05") != first
    assert study_dir("study.seeds=[0,1]") != first
    assert study_dir("trainer.epochs=3") != first


def test_imp_pruning_with_rewind_restores_the_initial_weights(make_cfg):
    from baselines.imp import ImpRun
    from growth.masks import dense_masks

    for rewind in ("init", "none"):
        cfg = make_cfg("method=imp_c", f"method.rewind={rewind}")
        run_dir = run_dir_for(cfg)
        imp = ImpRun(RunContext(cfg, run_dir))
        init = {n: t.clone() for n, t in imp.model.state_dict().items()}
        (run_dir / "snapshots").mkdir(parents=True)
        torch.save(init, run_dir / "snapshots" / "init.pt")
        imp.masks = dense_masks(imp.model)
        with torch.no_grad():  # stands for the dense training
            for p in imp.model.parameters():
                p.add_(1.0)
        trained = {n: t.clone() for n, t in imp.model.state_dict().items()}
        imp.prune_to(0.5)
        assert count_active(imp.masks) == round(0.5 * sum(m.numel() for m in imp.masks.values()))
        now = imp.model.state_dict()
        expected = init if rewind == "init" else trained
        assert all(torch.equal(now[n], expected[n]) for n in now), rewind
        # the survivors were chosen by the trained magnitudes, not the rewound ones
        w = trained["layers.0.weight"].abs()
        kept = imp.masks["layers.0.weight"]
        assert w[kept].min() >= w[~kept].max() - 1e-6 or not kept.any() or kept.all()


def test_matched_budget_in_flops_converts_the_references_flops_to_epochs(make_cfg):
    ref = run(make_cfg("growth.max_rounds=5", "extensive.which=none"))
    rounds = read_csv(Path(ref["run_dir"]) / "rounds.csv")
    d = float(rounds[2]["density"])
    summary = run(make_cfg("method=phew", f"method.density={d}", "budget.match=pwmpr", "budget.unit=flops", "method.rescale=none"))
    budget = summary["budget"]
    assert budget["unit"] == "flops"
    # given = the reference's growth FLOPs up to d, in epochs of this run, plus the full schedule
    per_epoch = summary["total_cost"]["cost_flops"] / budget["used_epochs"]
    growth_flops = float(rounds[2]["cost_flops"])
    assert budget["given_epochs"] == pytest.approx(growth_flops / per_epoch + 6, rel=0.05)


def test_a_new_method_is_one_file_in_a_methods_package(tmp_path, monkeypatch):
    """The method registry imports every module of the packages it searches (baselines/, and those
    GROWTH_PLUGINS names): a method added as one file there is registered without touching the
    framework."""
    import textwrap

    from growth import methods
    from growth.kinds import METHODS

    package = tmp_path / "more_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "half_dense.py").write_text(textwrap.dedent('''
        from baselines.dense import DenseRun
        from growth.config import MethodConfig
        from growth.methods import register_method

        @register_method("half_dense", schema=MethodConfig, family="dense")
        class HalfDenseRun(DenseRun):
            """Dense training for half the schedule."""
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "half_dense" not in methods.load_methods()
    monkeypatch.setenv("GROWTH_PLUGINS", "more_methods")
    try:
        found = methods.load_methods()
        assert found["half_dense"].__name__ == "HalfDenseRun"
    finally:
        METHODS.remove("half_dense")
