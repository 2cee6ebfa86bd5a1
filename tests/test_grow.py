"""The grow step: exact edge counts, new edges at zero, selection laws, seed rescaling."""

import pytest
import torch

from growth.seeds import rescale_fan_in
from growth.selection import edges_to_grow, grow_masks
from growth.masks import count_active, density
from growth.models.mlp import MLP


def masks_of(model, keep, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < keep for n, p in model.named_parameters() if n.endswith("weight")}


def test_edges_to_grow_is_geometric_and_capped():
    m = {"a": torch.zeros(1000, dtype=torch.bool)}
    m["a"][:100] = True
    assert edges_to_grow(m, 1.25, 1.0) == 25
    assert edges_to_grow(m, 1.25, 0.11) == 10  # capped by max_density
    assert edges_to_grow(m, 1.25, 0.1) == 0
    m["a"][:] = True
    assert edges_to_grow(m, 1.25, 1.0) == 0  # nothing absent


@pytest.mark.parametrize("selection", ["sample", "topk"])
def test_grow_adds_exactly_k_absent_edges_and_keeps_present_ones(selection):
    model = MLP((10,), 4, [8])
    masks = masks_of(model, 0.2)
    scores = {n: torch.rand(m.shape, dtype=torch.float64) for n, m in masks.items()}
    new, zero_filled = grow_masks(masks, scores, 17, selection, 1.0, torch.Generator().manual_seed(1))
    assert count_active(new) == count_active(masks) + 17
    assert zero_filled == 0
    for n in masks:
        assert torch.all(new[n][masks[n]]), "present edges must stay present"


def test_topk_takes_the_highest_scores_over_all_layers():
    masks = {"a": torch.zeros(4, dtype=torch.bool), "b": torch.zeros(3, dtype=torch.bool)}
    scores = {"a": torch.tensor([0.1, 5.0, 0.2, 0.3], dtype=torch.float64), "b": torch.tensor([4.0, 0.0, 3.0], dtype=torch.float64)}
    new, _ = grow_masks(masks, scores, 3, "topk", 1.0, torch.Generator())
    assert new["a"].tolist() == [False, True, False, False]
    assert new["b"].tolist() == [True, False, True]


def test_sampling_follows_score_and_temperature():
    masks = {"a": torch.zeros(2, dtype=torch.bool)}
    scores = {"a": torch.tensor([1.0, 9.0], dtype=torch.float64)}
    g = torch.Generator().manual_seed(0)

    def frequency_of_heavy(temperature, n=4000):
        hits = 0
        for _ in range(n):
            new, _ = grow_masks(masks, scores, 1, "sample", temperature, g)
            hits += int(new["a"][1])
        return hits / n

    assert frequency_of_heavy(1.0) == pytest.approx(0.9, abs=0.02)
    # temperature 2: weights 1 and 3 -> 0.75
    assert frequency_of_heavy(2.0) == pytest.approx(0.75, abs=0.025)


def test_zero_score_edges_are_filled_uniformly_only_when_positive_ones_run_out():
    masks = {"a": torch.zeros(6, dtype=torch.bool)}
    scores = {"a": torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)}
    new, zero_filled = grow_masks(masks, scores, 2, "sample", 1.0, torch.Generator().manual_seed(0))
    assert new["a"].tolist()[:2] == [True, True] and zero_filled == 0
    new, zero_filled = grow_masks(masks, scores, 3, "sample", 1.0, torch.Generator().manual_seed(0))
    assert new["a"][:2].all() and int(new["a"].sum()) == 3 and zero_filled == 1


def test_random_growth_is_uniform_over_absent_edges():
    masks = {"a": torch.tensor([True, False, False, False])}
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(3000):
        new, _ = grow_masks(masks, None, 1, "sample", 1.0, g)
        counts += (new["a"] & ~masks["a"]).float()
    assert counts[0] == 0
    assert torch.allclose(counts[1:] / 3000, torch.full((3,), 1 / 3), atol=0.03)


def test_fan_in_rescale_restores_the_dense_preactivation_scale():
    torch.manual_seed(0)
    model = MLP((400,), 10, [300])
    x = torch.randn(2000, 400)

    def preact_std():
        with torch.no_grad():
            return float((model.layers[0](x) - model.layers[0].bias).std())

    dense_std = preact_std()
    masks = masks_of(model, 0.05, seed=12345)  # not the init seed: the mask must not correlate with weights
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    sparse_std = preact_std()
    rescale_fan_in(model, masks)
    rescaled_std = preact_std()
    assert sparse_std < 0.5 * dense_std
    assert rescaled_std == pytest.approx(dense_std, rel=0.1)
    assert density(masks) == pytest.approx(0.05, abs=0.01)


def test_negative_scores_count_as_zero_and_are_drawn_only_after_positive_ones():
    masks = {"a": torch.zeros(4, dtype=torch.bool)}
    scores = {"a": torch.tensor([-3.0, 2.0, -1.0, 1.0], dtype=torch.float64)}
    new, zero_filled = grow_masks(masks, scores, 2, "sample", 1.0, torch.Generator().manual_seed(0))
    assert new["a"].tolist() == [False, True, False, True] and zero_filled == 0
    new, zero_filled = grow_masks(masks, scores, 3, "sample", 1.0, torch.Generator().manual_seed(0))
    assert new["a"][[1, 3]].all() and zero_filled == 1


def test_an_anneal_before_the_proxy_changes_only_the_proxy_unless_growth_continues_from_it(make_cfg):
    """growth.proxy.anneal_epochs: the proxy is read after a cosine anneal; with anneal_continue
    false the weights, optimizer and data stream are put back, so growth takes exactly the path it
    takes without the anneal; the anneal is charged to the growth cost."""
    import csv
    from pathlib import Path

    import torch

    from growth.run import run

    common = ["growth.max_rounds=4", "extensive.which=none", "growth.seed_builder=random"]
    plain = run(make_cfg(*common))
    annealed = run(make_cfg(*common, "growth.proxy.anneal_epochs=1"))
    rows = lambda s: list(csv.DictReader(open(Path(s["run_dir"]) / "rounds.csv")))
    a, b = rows(plain), rows(annealed)
    assert [r["masks_digest"] for r in a] == [r["masks_digest"] for r in b]
    assert [r["proxy_accuracy"] for r in a] != [r["proxy_accuracy"] for r in b]
    assert [r["unannealed_accuracy"] for r in b] == [r["proxy_accuracy"] for r in a]
    assert "unannealed_accuracy" not in a[0]
    assert float(b[-1]["cost_epochs"]) > float(a[-1]["cost_epochs"])
    snap = lambda s: torch.load(Path(s["run_dir"]) / "snapshots" / "round_003.pt", weights_only=True)["model"]
    assert all(torch.equal(snap(plain)[k], snap(annealed)[k]) for k in snap(plain))
    continued = run(make_cfg(*common, "growth.proxy.anneal_epochs=1", "growth.proxy.anneal_continue=true"))
    assert not all(torch.equal(snap(plain)[k], snap(continued)[k]) for k in snap(plain))


def test_the_weight_average_is_the_exponential_moving_average_and_puts_the_weights_back():
    """growth.proxy.ema_halflife: after steps w1, w2, w3 the average is the EMA started at w1 with
    keep = 0.5 ** (1 / half-life); masked entries stay 0; evaluating it leaves the model as it was."""
    from growth.proxy import WeightAverage

    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, halflife_steps=2.0)
    keep = 0.5 ** 0.5
    seen = []
    for step in range(3):
        with torch.no_grad():
            model.weight.copy_(torch.full((2, 3), float(step + 1)))
            model.weight[0, 0] = 0.0  # an absent edge
        seen.append(model.weight.detach().clone())
        average.after_step(None)
    expected = (seen[0] * keep + seen[1] * (1 - keep)) * keep + seen[2] * (1 - keep)
    assert torch.allclose(average.average["weight"], expected)
    assert average.average["weight"][0, 0] == 0.0
    assert not torch.allclose(average.average["weight"], seen[-1])

    class Engine:
        def evaluate(self, split):
            return {"accuracy": float(model.weight.detach().sum()), "loss": 0.0}

    assert average.evaluate(Engine())["accuracy"] == pytest.approx(float(expected.sum()))
    assert torch.equal(model.weight, seen[-1])
    average.restart()
    assert average.average is None


def test_a_moving_average_proxy_is_recorded_without_changing_growth_and_can_decide(make_cfg):
    """With ema_halflife > 0 every round records ema_accuracy and growth is bit for bit the same;
    source=ema makes it the proxy the rule reads; source=ema without a half-life is refused."""
    import csv
    from pathlib import Path

    from growth.config.validation import validate
    from growth.errors import ConfigError
    from growth.run import run

    common = ["growth.max_rounds=4", "extensive.which=none", "growth.seed_builder=random", "growth.timing.epochs=3"]
    plain = run(make_cfg(*common))
    recorded = run(make_cfg(*common, "growth.proxy.ema_halflife=0.5"))
    deciding = run(make_cfg(*common, "growth.proxy.ema_halflife=0.5", "growth.proxy.source=ema"))
    rows = lambda s: list(csv.DictReader(open(Path(s["run_dir"]) / "rounds.csv")))
    a, b, c = rows(plain), rows(recorded), rows(deciding)
    assert [r["masks_digest"] for r in a] == [r["masks_digest"] for r in b] == [r["masks_digest"] for r in c]
    assert [r["proxy_accuracy"] for r in a] == [r["proxy_accuracy"] for r in b]
    assert [r["ema_accuracy"] for r in b] == [r["proxy_accuracy"] for r in c] == [r["ema_accuracy"] for r in c]
    assert [r["ema_accuracy"] for r in b] != [r["proxy_accuracy"] for r in b]
    assert "ema_accuracy" not in a[0] and a[-1]["cost_epochs"] == b[-1]["cost_epochs"]
    with pytest.raises(ConfigError, match=r"growth.proxy.source='ema' needs growth.proxy.ema_halflife > 0"):
        validate(make_cfg("growth.proxy.source=ema"))
    with pytest.raises(ConfigError, match=r"growth.proxy.ema_halflife=1.0 is invalid"):
        validate(make_cfg("growth.proxy.ema_halflife=1.0"))
