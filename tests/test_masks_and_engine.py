"""Masks and the engine's invariant: absent weights, gradients and optimizer state stay exactly 0."""

import pytest
import torch

from growth.cost import CostLedger, forward_flops_per_sample
from growth.data import load_digits
from growth.masks import (
    check_masks_fit,
    density,
    growable_weight_names,
    layer_densities,
    load_masks,
    save_masks,
)
from growth.models.mlp import MLP
from growth.train import Callback, Engine
from tests.conftest import compose_cfg


def random_masks(model, keep, seed=99):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < keep for n, p in model.named_parameters() if n in growable_weight_names(model)}


def test_growable_weights_are_declared_by_the_model_and_default_to_linear_conv():
    mlp = MLP((8,), 3, [5])
    assert growable_weight_names(mlp) == ["layers.0.weight", "layers.1.weight"]
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    assert growable_weight_names(plain) == ["0.weight", "3.weight"]


def test_density_overall_and_per_layer():
    m = {"a": torch.tensor([True, False, False, False]), "b": torch.ones(2, 2, dtype=torch.bool)}
    assert density(m) == pytest.approx(5 / 8)
    assert layer_densities(m) == {"a": 0.25, "b": 1.0}


def test_masks_save_load_roundtrip_and_shape_check(tmp_path):
    model = MLP((8,), 3, [5])
    masks = random_masks(model, 0.3)
    save_masks(tmp_path / "m.pt", masks)
    loaded = load_masks(tmp_path / "m.pt", model)
    assert all(torch.equal(loaded[n], masks[n]) for n in masks)
    with pytest.raises(ValueError, match="does not fit"):
        load_masks(tmp_path / "m.pt", MLP((8,), 3, [6]))
    with pytest.raises(ValueError, match="missing"):
        check_masks_fit({"layers.0.weight": masks["layers.0.weight"]}, model)


class InvariantCheck(Callback):
    """Checks the invariant after every optimizer step."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.checked = 0

    def after_step(self, engine):
        params = dict(engine.model.named_parameters())
        for name, mask in engine.masks.items():
            p = params[name]
            absent = ~mask
            assert torch.all(p.detach()[absent] == 0), name
            assert torch.all(p.grad[absent] == 0), name
            for value in self.optimizer.state[p].values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    assert torch.all(value[absent] == 0), name
            assert p.detach()[mask].abs().sum() > 0
        self.checked += 1


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_absent_weights_grads_and_optimizer_state_stay_zero_after_every_step(optimizer):
    cfg = compose_cfg([f"trainer.optimizer={optimizer}", "trainer.weight_decay=0.01"])
    data = load_digits(cfg.dataset)
    torch.manual_seed(0)
    model = MLP(data.input_shape, 10, [32])
    masks = random_masks(model, 0.2)
    ledger = CostLedger(len(data.train_x), 10, *forward_flops_per_sample(model, data.train_x[:1], list(masks)))
    from growth.train import make_optimizer

    opt = make_optimizer(cfg.trainer, model, 0.05)
    check = InvariantCheck(opt)
    engine = Engine(model, data, cfg.trainer, ledger, torch.Generator().manual_seed(0), callbacks=[check])
    engine.set_masks(masks, opt)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    acc_before = engine.evaluate("val")["accuracy"]
    epochs = [engine.train_epoch(opt) for _ in range(3)]
    # accuracy on the batches as trained, counted on the device without a per-step sync
    assert 0.0 < epochs[0].train_accuracy < epochs[-1].train_accuracy <= 1.0
    assert check.checked == 3 * len(engine.batches)
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed, "training must change the present weights"
    acc = engine.evaluate("val")["accuracy"]
    assert acc > acc_before + 0.1


def test_ledger_counts_hand_computed_flops_for_a_small_mlp():
    model = MLP((4,), 2, [3])
    layer, other = forward_flops_per_sample(model, torch.ones(1, 4), growable_weight_names(model))
    # Forward FLOPs of a Linear are 2 * in * out per sample (multiply and add).
    assert layer == {"layers.0.weight": 2 * 4 * 3, "layers.1.weight": 2 * 3 * 2}
    ledger = CostLedger(train_size=100, full_epochs=10, layer_flops=layer, other_flops=other)
    ledger.set_phase("growth")
    ledger.set_densities({"layers.0.weight": 0.5, "layers.1.weight": 1.0})
    for _ in range(5):
        ledger.count_step(20)
    t = ledger.totals()
    assert t["steps"] == 5 and t["samples"] == 100
    assert t["epochs"] == 1.0 and t["cost_epochs"] == pytest.approx(0.1)
    assert t["flops"] == pytest.approx(3 * (0.5 * 24 + 12 + other) * 100)
    ledger.set_phase("extensive:0")
    ledger.count_step(100)
    assert ledger.totals(["growth"])["samples"] == 100
    assert ledger.totals()["samples"] == 200
    restored = CostLedger(100, 10, layer, other)
    restored.load_state_dict(ledger.state_dict())
    assert restored.totals() == ledger.totals()
