"""Speed options of the trainer (issue 6): bf16 autocast, channels-last, torch.compile, AdamW with
a linear warm-up, fused mask application, and growth sampling on the scores' device. Each keeps
the framework's invariants: absent weights, gradients and optimizer state exactly 0; PWMP scores
float64 and independent of the precision; growth draws identical to the host implementation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from growth.config.validation import validate
from growth.cost import CostLedger, forward_flops_per_sample
from growth.data import DatasetSplits, load_digits
from growth.errors import ConfigError
from growth.selection import grow_masks
from growth.masks import apply_masks, growable_weight_names, mask_gradients, masked_pairs
from growth.models.mlp import MLP
from growth.sampling import sample_without_replacement, topk_indices, uniform_without_replacement
from growth.scores import pwmp_scores
from growth.train import (
    Engine,
    compile_problem,
    lr_at,
    make_optimizer,
    maybe_compile,
    prepare_model,
)
from tests.conftest import compose_cfg
from tests.test_masks_and_engine import InvariantCheck

CL = torch.channels_last


def trainer(*overrides):
    return compose_cfg(["trainer.device=cpu", *overrides]).trainer


def random_masks(model, keep, seed=99):
    g = torch.Generator().manual_seed(seed)
    names = growable_weight_names(model)
    return {n: torch.rand(p.shape, generator=g) < keep for n, p in model.named_parameters() if n in names}


def engine_for(model, data, cfg, masks=None, callbacks=(), forward_module=None):
    ledger = CostLedger(data.num_train, 10, *forward_flops_per_sample(model, data.train_x[:1], growable_weight_names(model)))
    engine = Engine(
        model, data, cfg, ledger, torch.Generator().manual_seed(0), callbacks=callbacks, forward_module=forward_module
    )
    opt = make_optimizer(cfg, model, cfg.lr)
    engine.set_masks(masks, opt)
    return engine, opt


def small_convnet():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4),
    )


def image_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return DatasetSplits(x, y, x[:32], y[:32], x[:32], y[:32], num_classes=4, name="random-images")


# ----------------------------------------------------------------------- 1. precision


def test_bf16_autocast_runs_forward_and_evaluation_in_bf16_and_trains():
    data = load_digits(compose_cfg().dataset)
    results = {}
    for precision in ("fp32", "bf16"):
        cfg = trainer(f"trainer.precision={precision}", "trainer.batch_size=64")
        torch.manual_seed(0)
        model = MLP(data.input_shape, 10, [32])
        seen = []
        model.layers[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        engine, opt = engine_for(model, data, cfg, masks=random_masks(model, 0.5))
        seen.clear()  # (the FLOP count's forward runs outside the engine)
        before = engine.evaluate("val")
        epochs = [engine.train_epoch(opt) for _ in range(3)]
        after = engine.evaluate("val")
        expected = torch.bfloat16 if precision == "bf16" else torch.float32
        assert set(seen) == {expected}  # training and evaluation forwards alike
        assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
        assert math.isfinite(epochs[-1].mean_loss) and epochs[-1].mean_loss < epochs[0].mean_loss
        assert after["accuracy"] > before["accuracy"] + 0.2
        results[precision] = (epochs[-1].mean_loss, after["accuracy"])
    # bf16 trains about as well as fp32 (a few bits of mantissa, not a different model)
    assert results["bf16"][0] == pytest.approx(results["fp32"][0], rel=0.1, abs=0.05)
    assert abs(results["bf16"][1] - results["fp32"][1]) < 0.05


def test_pwmp_scores_are_float64_and_identical_inside_bf16_autocast():
    torch.manual_seed(0)
    model = small_convnet()
    masks = random_masks(model, 0.3)
    example = torch.randn(1, 3, 8, 8)
    plain = pwmp_scores(model, masks, example)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = pwmp_scores(model, masks, example)
    assert plain.keys() == inside.keys()
    for name in plain:
        assert plain[name].dtype == inside[name].dtype == torch.float64
        assert torch.equal(plain[name], inside[name]), name


def test_a_bf16_growth_run_scores_outside_autocast_in_float64(make_cfg, monkeypatch):
    import dataclasses

    from growth.kinds import SCORES
    from growth.run import run

    entry = SCORES.entry("pwmp")
    calls = []

    def checked(inputs):
        scores = entry.obj(inputs)
        assert not torch.is_autocast_enabled("cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            again = pwmp_scores(inputs.model, inputs.masks, inputs.example_input)
        assert all(s.dtype == torch.float64 for s in scores.values())
        assert all(torch.equal(scores[n], again[n]) for n in scores)
        calls.append(len(scores))
        return scores

    monkeypatch.setitem(SCORES._entries, "pwmp", dataclasses.replace(entry, obj=checked))
    summary = run(make_cfg("trainer.precision=bf16", "trainer.device=cpu", "growth.max_rounds=3", "extensive.which=none"))
    assert summary["status"] == "finished" and len(calls) == 2


# ----------------------------------------------------------------------- 2. channels-last


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_channels_last_keeps_the_mask_invariant(optimizer):
    data = image_data()
    cfg = trainer("trainer.channels_last=true", f"trainer.optimizer={optimizer}", "trainer.weight_decay=0.05",
                  "trainer.batch_size=16", "trainer.lr=0.01")
    torch.manual_seed(0)
    model = small_convnet()
    masks = random_masks(model, 0.3)
    seen = []
    model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=CL)))
    check = InvariantCheck(None)
    engine, opt = engine_for(model, data, cfg, masks=masks, callbacks=[check])
    check.optimizer = opt
    seen.clear()  # (the FLOP count's forward runs outside the engine)
    assert model[0].weight.is_contiguous(memory_format=CL) and not model[0].weight.is_contiguous()
    # the cached mask factors are laid out like their parameters (one fused multiply)
    params, factors = masked_pairs(model, masks)
    assert all(p.stride() == f.stride() for p, f in zip(params, factors))
    for _ in range(2):
        engine.train_epoch(opt)
    assert check.checked == 2 * len(engine.batches)
    assert seen and all(seen)  # every training batch reached the model channels-last
    assert model[0].weight.is_contiguous(memory_format=CL)  # still channels-last after the steps
    assert model[0].weight.grad.is_contiguous(memory_format=CL)
    seen.clear()
    engine.evaluate("val")
    assert seen and all(seen)


def test_channels_last_trains_like_the_default_layout():
    data = image_data()
    torch.manual_seed(0)
    base = small_convnet()
    masks = random_masks(base, 0.4)
    finals = {}
    for cl in (False, True):
        cfg = trainer(f"trainer.channels_last={str(cl).lower()}", "trainer.batch_size=16", "trainer.lr=0.01")
        model = copy.deepcopy(base)
        engine, opt = engine_for(model, data, cfg, masks={n: m.clone() for n, m in masks.items()})
        losses = [engine.train_epoch(opt).mean_loss for _ in range(2)]
        finals[cl] = (losses, {n: p.detach().contiguous() for n, p in model.named_parameters()})
    assert finals[True][0] == pytest.approx(finals[False][0], rel=1e-4)
    for n, p in finals[False][1].items():
        torch.testing.assert_close(finals[True][1][n], p, rtol=1e-4, atol=1e-5)


def test_prepare_model_is_idempotent_and_leaves_mlps_alone():
    cfg = trainer("trainer.channels_last=true")
    conv = small_convnet()
    ids = [id(p) for p in conv.parameters()]
    prepare_model(conv, cfg)
    prepare_model(conv, cfg)
    assert [id(p) for p in conv.parameters()] == ids  # the same Parameter objects
    assert conv[0].weight.is_contiguous(memory_format=CL)
    mlp = MLP((8,), 3, [5])
    prepare_model(mlp, cfg)
    assert all(p.is_contiguous() for p in mlp.parameters())


# ----------------------------------------------------------------------- 3. torch.compile


def test_compile_is_off_by_default_and_wraps_only_the_training_forward():
    model = MLP((8,), 3, [5])
    assert maybe_compile(model, trainer()) is model
    if compile_problem("cpu"):
        pytest.skip(f"torch.compile cannot run here: {compile_problem('cpu')}")
    wrapped = maybe_compile(model, trainer("trainer.compile=true"))  # lazy: compiles on first call
    assert wrapped is not model and isinstance(wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert all(a is b for a, b in zip(wrapped.parameters(), model.parameters()))


def test_compile_problems_are_clear_config_errors(monkeypatch):
    import growth.recipe as recipe

    monkeypatch.setattr(recipe.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    problem = compile_problem("cpu")
    assert "C++ compiler" in problem and "trainer.compile=false" in problem
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        maybe_compile(MLP((8,), 3, [5]), trainer("trainer.compile=true"))
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        validate(compose_cfg(["trainer.compile=true", "trainer.device=cpu"]))
    validate(compose_cfg(["trainer.compile=false", "trainer.device=cpu"]))  # only asked-for compilation matters


def test_run_context_compiles_the_training_module(tmp_path):
    if compile_problem("cpu"):
        pytest.skip(f"torch.compile cannot run here: {compile_problem('cpu')}")
    from growth.methods import RunContext

    ctx = RunContext(compose_cfg(["trainer.compile=true", "trainer.device=cpu"]), tmp_path)
    model = ctx.build_model()
    assert isinstance(ctx.training_module(model), torch._dynamo.eval_frame.OptimizedModule)
    ctx = RunContext(compose_cfg(["trainer.device=cpu"]), tmp_path)
    assert ctx.training_module(model) is model


def test_compiled_training_matches_eager_on_the_mlp():
    problem = compile_problem("cpu")
    if problem:
        pytest.skip(f"torch.compile cannot run here: {problem}")
    data = load_digits(compose_cfg().dataset)
    torch.manual_seed(0)
    base = MLP(data.input_shape, 10, [32])
    masks = random_masks(base, 0.3)
    batches = [(data.train_x[s : s + 64], data.train_y[s : s + 64]) for s in (0, 64, 128)]
    out = {}
    for compiled in (False, True):
        cfg = trainer(f"trainer.compile={str(compiled).lower()}")
        model = copy.deepcopy(base)
        forward = maybe_compile(model, cfg)
        engine, opt = engine_for(model, data, cfg, masks={n: m.clone() for n, m in masks.items()}, forward_module=forward)
        engine.batches = batches  # a couple of steps
        losses = [engine.train_epoch(opt).mean_loss for _ in range(2)]
        out[compiled] = (losses, model)
        assert engine.model is model and all("_orig_mod" not in k for k in model.state_dict())
        for n, m in masks.items():
            assert torch.all(dict(model.named_parameters())[n].detach()[~m] == 0)
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5)
    for (n, a), (_, b) in zip(out[False][1].named_parameters(), out[True][1].named_parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------- 4. AdamW and warm-up


class Sched:
    def __init__(self, schedule, warmup, epochs=10, lr=1.0, milestones=(5,), gamma=0.1):
        self.schedule, self.warmup_epochs, self.epochs, self.lr = schedule, warmup, epochs, lr
        self.milestones, self.gamma = list(milestones), gamma


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_warmup_ramps_linearly_then_hands_over_to_the_schedule(schedule):
    plain, warm = Sched(schedule, 0), Sched(schedule, 4)
    for e in range(10):
        expected = lr_at(plain, e) * ((e + 1) / 5 if e < 4 else 1.0)
        assert lr_at(warm, e) == pytest.approx(expected)
    ramp = [lr_at(warm, e) for e in range(5)]
    assert all(a < b for a, b in zip(ramp, ramp[1:])) or schedule == "step"
    # stateless: the same epoch gives the same lr whatever was asked before (resumable)
    assert [lr_at(warm, e) for e in (3, 0, 3)] == [lr_at(warm, 3), lr_at(warm, 0), lr_at(warm, 3)]
    # a training of twice the length keeps the shape: twice the warm-up
    assert lr_at(warm, 7, total_epochs=20) == pytest.approx(lr_at(plain, 7, total_epochs=20) * 8 / 9)
    assert lr_at(warm, 8, total_epochs=20) == pytest.approx(lr_at(plain, 8, total_epochs=20))


def test_adamw_with_betas_and_weight_decay_on_weights_only():
    from omegaconf import OmegaConf

    from growth.models import build_model
    from growth.models.vit import ViTConfig

    vit = build_model(OmegaConf.structured(ViTConfig(dim=32, depth=1, heads=2)), (3, 16, 16), 5)
    cfg = trainer("trainer.optimizer=adamw", "trainer.betas=[0.8,0.95]", "trainer.weight_decay=0.05",
                  "trainer.decay_scope=weights")
    opt = make_optimizer(cfg, vit, 1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    assert all(g["betas"] == (0.8, 0.95) for g in opt.param_groups)
    decayed, undecayed = opt.param_groups
    names = {id(p): n for n, p in vit.named_parameters()}
    assert decayed["weight_decay"] == 0.05 and undecayed["weight_decay"] == 0.0
    assert {names[id(p)] for p in decayed["params"]} == set(growable_weight_names(vit))
    assert {"token_bias", "norm.weight", "head.bias"} <= {names[id(p)] for p in undecayed["params"]}
    everything = make_optimizer(trainer("trainer.optimizer=adamw"), vit, 1e-3)
    assert len(everything.param_groups) == 1 and isinstance(everything, torch.optim.AdamW)


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.optimizer=lion", "trainer.optimizer"),
        ("trainer.betas=[0.9,1.0]", "trainer.betas"),
        ("trainer.betas=[0.9]", "trainer.betas"),
        ("trainer.warmup_epochs=-1", "trainer.warmup_epochs"),
        ("trainer.precision=fp16", "trainer.precision"),
        ("trainer.decay_scope=norms", "trainer.decay_scope"),
    ],
)
def test_bad_trainer_values_are_rejected(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", "\\.")):
        validate(compose_cfg([override]))


def test_a_warmup_longer_than_a_shortened_schedule_is_allowed():
    validate(compose_cfg(["trainer.epochs=1", "trainer.warmup_epochs=5"]))


# ----------------------------------------------------------------------- 5. fused mask application


def test_fused_masking_equals_the_per_tensor_bool_multiply_bit_for_bit():
    torch.manual_seed(0)
    model = small_convnet()
    masks = random_masks(model, 0.3)
    params = dict(model.named_parameters())
    with torch.no_grad():
        # special values: -x * 0 is -0.0, inf * 0 and nan * 0 are nan, as with a bool mask
        w = params["0.weight"]
        w.view(-1)[:3] = torch.tensor([float("inf"), float("nan"), -2.0])
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    model.get_submodule("1").weight.grad = None  # a parameter without a gradient (not masked anyway)
    params["3.weight"].grad = None  # a masked one without a gradient
    expected_w = {n: params[n].detach() * m for n, m in masks.items()}
    expected_g = {n: (params[n].grad * m if params[n].grad is not None else None) for n, m in masks.items()}
    apply_masks(model, masks)
    mask_gradients(model, masks)

    def bits(t):
        return t.view(torch.int32)

    for n in masks:
        assert torch.equal(bits(params[n].detach()), bits(expected_w[n])), n
        if expected_g[n] is None:
            assert params[n].grad is None
        else:
            assert torch.equal(bits(params[n].grad), bits(expected_g[n])), n


def test_the_mask_cache_follows_every_change_of_the_masks():
    torch.manual_seed(0)
    model = MLP((6,), 3, [5])
    params = dict(model.named_parameters())
    masks = random_masks(model, 0.5)
    name = "layers.0.weight"

    def refill():
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(1.0)

    refill()
    apply_masks(model, masks)
    assert torch.equal(params[name].detach() != 0, masks[name])
    assert masked_pairs(model, masks)[1][0] is masked_pairs(model, masks)[1][0]  # cached
    masks[name][0, 0] = not bool(masks[name][0, 0])  # changed in place
    refill()
    apply_masks(model, masks)
    assert torch.equal(params[name].detach() != 0, masks[name])
    masks[name] = torch.zeros_like(masks[name])  # replaced in the same dict
    refill()
    apply_masks(model, masks)
    assert torch.all(params[name].detach() == 0)
    other = random_masks(model, 0.5, seed=5)  # a new dict
    refill()
    apply_masks(model, other)
    assert torch.equal(params[name].detach() != 0, other[name])


# ----------------------------------------------------------------------- 6. growth sampling on the device


def _host_grow_masks(masks, scores, k, selection, temperature, generator):
    """The host implementation growth used before sampling moved to the scores' device."""
    names = list(masks)
    flat_mask = torch.cat([masks[n].detach().flatten().cpu() for n in names])
    candidates = torch.nonzero(~flat_mask).squeeze(1)
    cpu = torch.device("cpu")
    if scores is None:
        chosen, fill = uniform_without_replacement(len(candidates), k, generator, cpu), 0
    else:
        flat = torch.cat([scores[n].detach().flatten().to("cpu", torch.float64) for n in names])
        s = flat[candidates].clamp(min=0.0)
        if selection == "topk":
            chosen, fill = topk_indices(s, k), 0
        else:
            top = s.max() if len(s) else s.new_zeros(())
            w = (s / top).pow(1.0 / temperature) if top > 0 else torch.zeros_like(s)
            take = min(k, int((w > 0).sum()))
            chosen = sample_without_replacement(w, take, generator) if take else torch.empty(0, dtype=torch.long)
            fill = k - take
            if fill:
                zero = torch.nonzero(w <= 0).squeeze(1)
                chosen = torch.cat([chosen, zero[uniform_without_replacement(len(zero), fill, generator, cpu)]])
    flat_mask[candidates[chosen]] = True
    out, offset = {}, 0
    for n in names:
        out[n] = flat_mask[offset : offset + masks[n].numel()].view_as(masks[n])
        offset += masks[n].numel()
    return out, fill


def random_case(trial, g):
    shapes = [tuple(int(d) for d in torch.randint(1, 20, (2,), generator=g)) for _ in range(3)]
    masks = {f"l{i}": torch.rand(s, generator=g) < 0.3 for i, s in enumerate(shapes)}
    absent = sum(int((~m).sum()) for m in masks.values())
    k = int(torch.randint(0, absent + 1, (1,), generator=g))
    kind = trial % 3
    scores = None
    if kind:
        # some zero and some negative scores, so the zero-score fill is exercised too
        scores = {n: torch.randn(m.shape, generator=g, dtype=torch.float64).abs()
                  * (torch.rand(m.shape, generator=g) < 0.7) - 0.1 * (torch.rand(m.shape, generator=g) < 0.05)
                  for n, m in masks.items()}
    return masks, scores, k, ("topk" if kind == 2 else "sample"), (1.0, 0.5, 2.0)[trial % 3]


def test_growth_on_the_cpu_is_bit_for_bit_the_host_implementation():
    g = torch.Generator().manual_seed(123)
    for trial in range(120):
        masks, scores, k, selection, temperature = random_case(trial, g)
        ga, gb = torch.Generator().manual_seed(trial), torch.Generator().manual_seed(trial)
        new, fill = grow_masks(masks, scores, k, selection, temperature, ga)
        ref, ref_fill = _host_grow_masks(masks, scores, k, selection, temperature, gb)
        assert fill == ref_fill
        assert all(torch.equal(new[n], ref[n]) for n in masks), trial
        # the generator advanced exactly as before, so every later draw of the run is unchanged
        assert torch.equal(ga.get_state(), gb.get_state())


def test_sampling_accepts_the_runs_cpu_generator_for_weights_anywhere():
    w = torch.rand(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = sample_without_replacement(w, 50, torch.Generator().manual_seed(1))
    b = sample_without_replacement(w, 50, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_growth_on_cuda_draws_what_the_cpu_draws():
    g = torch.Generator().manual_seed(7)
    for trial in range(30):
        masks, scores, k, selection, temperature = random_case(trial, g)
        cuda_masks = {n: m.cuda() for n, m in masks.items()}
        cuda_scores = {n: s.cuda() for n, s in scores.items()} if scores is not None else None
        ga, gb = torch.Generator().manual_seed(trial), torch.Generator().manual_seed(trial)
        on_gpu, fill_gpu = grow_masks(cuda_masks, cuda_scores, k, selection, temperature, ga)
        on_cpu, fill_cpu = grow_masks(masks, scores, k, selection, temperature, gb)
        assert fill_gpu == fill_cpu and all(on_gpu[n].is_cuda for n in masks)
        assert all(torch.equal(on_gpu[n].cpu(), on_cpu[n]) for n in masks), trial
        assert torch.equal(ga.get_state(), gb.get_state())


# ----------------------------------------------------------------------- end to end on image data


@pytest.mark.parametrize("method", ["pwmpr", "rigl"])
def test_conv_runs_with_bf16_and_channels_last(method, tmp_path):
    from tests.test_experiments import run_tiny, write_cifar10

    root = tmp_path / "data"
    write_cifar10(root, np.random.default_rng(0))
    summary = run_tiny("cifar10_resnet32", method, root, tmp_path, ["trainer.precision=bf16", "trainer.channels_last=true"])
    assert summary["test_accuracy"] is not None and math.isfinite(summary["test_accuracy"])
