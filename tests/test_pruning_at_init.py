"""Pruning at initialisation (SNIP, GraSP, SynFlow): scores against hand computations, exact
counts, the global threshold, SynFlow's schedule."""

import copy

import pytest
import torch

from baselines.grasp import TEMPERATURE, GraspRun
from baselines.snip import SnipRun
from baselines.synflow import SynflowRun, round_density
from growth.masks import count_active, growable_parameters, masks_keeping_highest
from growth.methods import RunContext
from growth.records import run_dir_for
from growth.run import run


def test_keeping_the_highest_scores_is_exact_globally_and_per_layer():
    scores = {"a": torch.tensor([[5.0, 1.0], [4.0, 0.5]]), "b": torch.tensor([3.0, 2.0, 0.1, 0.2])}
    glob = masks_keeping_highest(scores, 0.5)
    assert glob["a"].tolist() == [[True, False], [True, False]] and glob["b"].tolist() == [True, True, False, False]
    layer = masks_keeping_highest(scores, 0.25, "layer")
    assert layer["a"].sum() == 1 and layer["b"].sum() == 1 and layer["a"][0, 0] and layer["b"][0]
    # a layer the global threshold would empty keeps its best edge
    lopsided = masks_keeping_highest({"big": torch.arange(10.0) + 10, "small": torch.tensor([1.0, 2.0])}, 0.25)
    assert lopsided["small"].tolist() == [False, True] and int(lopsided["big"].sum()) == 3


def _run(make_cfg, cls, *overrides):
    cfg = make_cfg(*overrides)
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    r = cls(RunContext(cfg, run_dir))
    r.density_target = float(cfg.method.density)
    return r


def _fixed_batches(r, n=2, size=16):
    g = torch.Generator().manual_seed(3)
    data = r.ctx.data
    batches = []
    for _ in range(n):
        idx = torch.randint(0, len(data.train_y), (size,), generator=g)
        batches.append((data.train_x[idx], data.train_y[idx]))
    r.engine.batches = batches
    return batches


def test_snip_keeps_the_largest_gradient_times_weight(make_cfg):
    r = _run(make_cfg, SnipRun, "method=snip", "method.density=0.1", "method.samples_per_class=3")
    batches = _fixed_batches(r)  # 32 samples >= 3 x 10 classes: both batches
    model = copy.deepcopy(r.model)
    loss = sum(torch.nn.functional.cross_entropy(model(x), y) for x, y in batches)
    loss.backward()
    expected = {n: (p.grad * p).abs().double() for n, p in growable_parameters(model).items()}
    masks = r.build_masks()
    assert all(torch.equal(masks[n], m) for n, m in masks_keeping_highest(expected, 0.1).items())
    assert count_active(masks) == round(0.1 * sum(m.numel() for m in masks.values()))


def test_grasp_keeps_the_largest_weight_times_hessian_gradient(make_cfg):
    r = _run(make_cfg, GraspRun, "method=grasp", "method.density=0.2", "method.samples_per_class=1", "model.hidden=[6]")
    batches = _fixed_batches(r, n=1)
    model = copy.deepcopy(r.model)
    params = growable_parameters(model)
    names = list(params)
    shapes = [params[n].shape for n in names]
    flat0 = torch.cat([params[n].detach().flatten() for n in names])

    def loss_of(flat):
        ws, start = [], 0
        for s in shapes:
            ws.append(flat[start:start + s.numel()].view(s))
            start += s.numel()
        out = torch.func.functional_call(model, {**dict(model.named_parameters()), **dict(zip(names, ws))}, (batches[0][0],))
        return torch.nn.functional.cross_entropy(out / TEMPERATURE, batches[0][1])

    g = torch.autograd.functional.jacobian(loss_of, flat0)
    hessian = torch.autograd.functional.hessian(loss_of, flat0)
    score = flat0 * (hessian @ g)
    expected, start = {}, 0
    for n, s in zip(names, shapes):
        expected[n] = score[start:start + s.numel()].view(s).double()
        start += s.numel()
    masks = r.build_masks()
    want = masks_keeping_highest(expected, 0.2)
    agree = sum(int((masks[n] == want[n]).sum()) for n in names) / sum(m.numel() for m in masks.values())
    assert agree > 0.99  # float32 autograd against the explicit Hessian: at most a near-tie differs


def test_synflow_is_weight_times_path_gradient_and_prunes_on_its_schedule(make_cfg):
    one = _run(make_cfg, SynflowRun, "method=synflow", "method.density=0.1", "method.iterations=1")
    model = copy.deepcopy(one.model).double()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.zero_()
    params = growable_parameters(model)
    model(torch.ones(1, *one.ctx.example_input.shape[1:], dtype=torch.float64)).sum().backward()
    expected = {n: (p.grad * p).abs() for n, p in params.items()}
    masks = one.build_masks()
    assert all(torch.equal(masks[n], m) for n, m in masks_keeping_highest(expected, 0.1).items())

    many = _run(make_cfg, SynflowRun, "method=synflow", "method.density=0.05", "method.iterations=5")
    seen = []
    original = masks_keeping_highest
    import baselines.synflow as synflow

    def spy(scores, density, scope="global"):
        out = original(scores, density, scope)
        seen.append((density, out))
        return out

    synflow.masks_keeping_highest = spy
    try:
        final = many.build_masks()
    finally:
        synflow.masks_keeping_highest = original
    assert [d for d, _ in seen] == pytest.approx([0.05 ** ((t + 1) / 5) for t in range(5)])
    for (_, before), (_, after) in zip(seen, seen[1:]):
        assert all(bool((after[n] <= before[n]).all()) for n in after)  # nested: a pruned edge stays pruned
    total = sum(m.numel() for m in final.values())
    assert count_active(final) == round(0.05 * total)
    assert round_density(0.05, 4, 5, "linear") == pytest.approx(0.05)


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
def test_a_pruning_at_init_run_trains_at_its_density_and_charges_its_scoring(make_cfg, method):
    """SNIP: 3 f_D per scoring sample; GraSP: 3 + 6 f_D; SynFlow: 3 f_D (one sample) a round."""
    extra = ["method.iterations=3"] if method == "synflow" else []
    cls = {"snip": SnipRun, "grasp": GraspRun, "synflow": SynflowRun}[method]
    r = _run(make_cfg, cls, f"method={method}", "method.density=0.1", "trainer.epochs=2", *extra)
    charged = []
    r.ledger.add_extra_flops = charged.append
    summary = r.run()
    assert summary["status"] == "finished" and summary["density"] == pytest.approx(0.1, abs=0.002)
    f_d, batch = r.ledger.dense_forward_flops, r.cfg.trainer.batch_size
    samples = batch * -(-10 * 10 // batch)  # whole batches until 10 per class x 10 classes
    expected = {"snip": [3 * f_d * samples], "grasp": [9 * f_d * samples], "synflow": [3 * f_d] * 3}[method]
    assert charged == pytest.approx(expected)
