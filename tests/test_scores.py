"""PWMP scores against a brute-force oracle that enumerates every input-to-output path."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from growth.errors import DivergedError
from growth.masks import growable_parameters, growable_weight_names
from growth.models.mlp import MLP
from growth.scores import pwmp_scores

RTOL = 1e-10


def random_masks(model: nn.Module, generator: torch.Generator, density: float = 0.5) -> dict[str, torch.Tensor]:
    return {name: torch.rand(p.shape, generator=generator) < density for name, p in growable_parameters(model).items()}


def randomize(model: nn.Module, generator: torch.Generator) -> None:
    """Weights of both signs and large random biases/shifts that the score must ignore."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (3.0 if name.endswith("bias") else 1.0))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) * 2 + 0.3)


def effective(model: nn.Module, masks: dict[str, torch.Tensor], name: str) -> np.ndarray:
    weight = dict(model.named_parameters())[name].detach().double().abs()
    if name in masks:
        weight = weight * masks[name]
    return weight.numpy()


def assert_scores_match(scores: dict[str, torch.Tensor], oracle: dict[str, np.ndarray]) -> None:
    assert list(scores) == list(oracle)
    for name, expected in oracle.items():
        expected = torch.from_numpy(expected)
        assert torch.allclose(scores[name], expected, rtol=RTOL, atol=0), (
            f"{name}: max abs diff {(scores[name] - expected).abs().max().item()}"
        )


# ---------------------------------------------------------------------------------------------
# Layered oracle: every path is one unit per layer; each layer is an explicit edge matrix.


def layered_oracle(layers: list[tuple[np.ndarray, str | None]]) -> dict[str, np.ndarray]:
    """``layers``: (out x in matrix of non-negative edge weights, mask key or None) in order."""
    widths = [layers[0][0].shape[1]] + [m.shape[0] for m, _ in layers]
    scores = {key: np.zeros_like(m) for m, key in layers if key is not None}
    for path in itertools.product(*(range(w) for w in widths)):
        weights = [m[path[k + 1], path[k]] for k, (m, _) in enumerate(layers)]
        for k, (_, key) in enumerate(layers):
            if key is not None:
                scores[key][path[k + 1], path[k]] += np.prod(weights[:k] + weights[k + 1 :])
    return scores


class PartlyGrowableMLP(MLP):
    """The middle layer is declared non-growable: it enters the score as |W| without a mask."""

    def growable_weights(self) -> list[str]:
        return ["layers.0.weight", "layers.2.weight"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLP((4,), 2, hidden=(5, 3)),
        lambda: MLP((3,), 2, hidden=(4, 4)),
        lambda: PartlyGrowableMLP((3,), 2, hidden=(4, 3)),
    ],
    ids=["4-5-3-2", "3-4-4-2", "3-4-3-2-partly-growable"],
)
def test_mlp_scores_match_brute_force_paths(make):
    gen = torch.Generator().manual_seed(1)
    model = make()
    randomize(model, gen)
    masks = random_masks(model, gen)
    names = [f"layers.{i}.weight" for i in range(len(model.layers))]
    oracle = layered_oracle([(effective(model, masks, n), n if n in masks else None) for n in names])

    scores = pwmp_scores(model, masks, torch.randn(1, model.layers[0].in_features))

    assert_scores_match(scores, oracle)
    absent = ~masks["layers.0.weight"]
    assert absent.any() and (scores["layers.0.weight"][absent] > 0).any()


def test_unit_with_all_in_edges_absent_still_passes_paths():
    """ReLU's derivative 0 at 0 must not hide the paths through a unit that has no present in-edge."""
    gen = torch.Generator().manual_seed(12)
    model = MLP((3,), 2, hidden=(4,))
    randomize(model, gen)
    masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in growable_parameters(model).items()}
    masks["layers.0.weight"][1] = False

    scores = pwmp_scores(model, masks, torch.ones(1, 3))

    generality = model.layers[1].weight.detach().double().abs()[:, 1].sum()
    assert torch.allclose(scores["layers.0.weight"][1], generality.expand(3), rtol=RTOL, atol=0)
    assert (scores["layers.1.weight"][:, 1] == 0).all()  # C = 0: no input reaches the dead unit


def test_layernorm_is_abs_gamma_scaling():
    gen = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2))
    randomize(model, gen)
    masks = random_masks(model, gen)
    gamma = np.diag(model[1].weight.detach().double().abs().numpy())
    oracle = layered_oracle([(effective(model, masks, "0.weight"), "0.weight"), (gamma, None), (effective(model, masks, "3.weight"), "3.weight")])

    assert_scores_match(pwmp_scores(model, masks, torch.zeros(1, 3)), oracle)


# ---------------------------------------------------------------------------------------------
# Unrolled oracle for conv nets: explicit scalar units, one edge per use of a weight, DFS paths.


class Unrolled:
    """Every edge weighs its weight ** power (power 2: the path-kernel score's graph)."""

    def __init__(self, power: int = 1):
        self.out_edges: dict[tuple, list] = defaultdict(list)
        self.power = power

    def edge(self, src, dst, weight, key=None, index=None):
        self.out_edges[src].append((dst, float(weight) ** self.power, key, index))

    def conv2d(self, src, dst, w_eff, key, size, stride=1, pad=0):
        c_out, c_in, k, _ = w_eff.shape
        out = (size + 2 * pad - k) // stride + 1
        for o, c, ki, kj, y, x in itertools.product(range(c_out), range(c_in), range(k), range(k), range(out), range(out)):
            yy, xx = y * stride - pad + ki, x * stride - pad + kj
            if 0 <= yy < size and 0 <= xx < size:
                self.edge((src, c, yy, xx), (dst, o, y, x), w_eff[o, c, ki, kj], key, (o, c, ki, kj))
        return out

    def channel_scale(self, src, dst, scale, size):
        for c, y, x in itertools.product(range(len(scale)), range(size), range(size)):
            self.edge((src, c, y, x), (dst, c, y, x), scale[c])

    def add(self, a, b, dst, channels, size):
        for c, y, x in itertools.product(range(channels), range(size), range(size)):
            self.edge((a, c, y, x), (dst, c, y, x), 1.0)
            self.edge((b, c, y, x), (dst, c, y, x), 1.0)

    def avg_pool(self, src, dst, channels, size, k, stride, pad):
        """Average pooling with the padding counted: each in-bounds window position weighs 1/k^2."""
        out = (size + 2 * pad - k) // stride + 1
        for c, y, x, ki, kj in itertools.product(range(channels), range(out), range(out), range(k), range(k)):
            yy, xx = y * stride - pad + ki, x * stride - pad + kj
            if 0 <= yy < size and 0 <= xx < size:
                self.edge((src, c, yy, xx), (dst, c, y, x), 1.0 / (k * k))
        return out

    def linear(self, src_units, dst, w_eff, key):
        for o, i in itertools.product(range(w_eff.shape[0]), range(w_eff.shape[1])):
            self.edge(src_units[i], (dst, o), w_eff[o, i], key, (o, i))

    def path_scores(self, inputs, shapes: dict[str, tuple]) -> tuple[dict[str, np.ndarray], int]:
        scores = {key: np.zeros(shape) for key, shape in shapes.items()}
        n_paths = 0
        stack = [(unit, ()) for unit in inputs]
        while stack:
            unit, path = stack.pop()
            nexts = self.out_edges.get(unit)
            if nexts:
                stack.extend((dst, path + ((w, key, index),)) for dst, w, key, index in nexts)
                continue
            assert unit[0] == "out", f"path ends at non-output unit {unit}"
            n_paths += 1
            weights = [w for w, _, _ in path]
            for k, (_, key, index) in enumerate(path):
                if key is not None:
                    scores[key][index] += np.prod(weights[:k] + weights[k + 1 :])
        return scores, n_paths


class ResConv(nn.Module):
    """conv -> BN -> ReLU -> conv, plus a skip from the first conv's output, -> ReLU -> pool -> fc."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.pool = pool
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        c1 = self.conv1(x)
        y = F.relu(self.conv2(F.relu(self.bn(c1))) + c1)
        return self.fc(torch.flatten(self.pool(y), 1))


class PoolConv(nn.Module):
    """conv -> ReLU -> MaxPool(3, stride 2, pad 1) -> conv -> flatten -> fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(3, 2, 2)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv2(self.pool(F.relu(self.conv1(x)))), 1))


def conv_inputs(channels: int, size: int) -> list[tuple]:
    return [("x", c, y, x) for c, y, x in itertools.product(range(channels), range(size), range(size))]


@pytest.mark.parametrize("power", [1, 2], ids=["pwmp", "path_kernel"])
@pytest.mark.parametrize("pool", ["avg", "adaptive-max"])
def test_residual_conv_net_matches_unrolled_paths(pool, power):
    gen = torch.Generator().manual_seed(3)
    model = ResConv(nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1))
    randomize(model, gen)
    model.train()
    masks = random_masks(model, gen)
    masks["conv1.weight"][0] = False  # a dead channel: F.relu sees exact zeros after BN
    w = {name: effective(model, masks, name) for name in masks}
    bn = model.bn
    bn_scale = (bn.weight.detach().double().abs() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()

    g = Unrolled(power)
    g.conv2d("x", "c1", w["conv1.weight"], "conv1.weight", size=4, pad=1)
    g.channel_scale("c1", "b1", bn_scale, size=4)
    g.conv2d("b1", "c2", w["conv2.weight"], "conv2.weight", size=4, pad=1)
    g.add("c2", "c1", "s", channels=3, size=4)
    g.avg_pool("s", "p", channels=3, size=4, k=4, stride=1, pad=0)
    g.linear([("p", c, 0, 0) for c in range(3)], "out", w["fc.weight"], "fc.weight")
    oracle, n_paths = g.path_scores(conv_inputs(2, 4), {n: m.shape for n, m in masks.items()})
    assert n_paths > 1000

    scores = pwmp_scores(model, masks, torch.randn(1, 2, 4, 4), power=power)

    assert_scores_match(scores, oracle)
    for name, mask in masks.items():
        assert (scores[name][~mask] > 0).any(), name


@pytest.mark.parametrize("power", [1, 2], ids=["pwmp", "path_kernel"])
def test_max_pool_is_scored_as_avg_pool_with_same_geometry(power):
    gen = torch.Generator().manual_seed(4)
    model = PoolConv()
    randomize(model, gen)
    masks = random_masks(model, gen)
    w = {name: effective(model, masks, name) for name in masks}

    g = Unrolled(power)
    g.conv2d("x", "c1", w["conv1.weight"], "conv1.weight", size=4, pad=1)
    pooled = g.avg_pool("c1", "p", channels=3, size=4, k=3, stride=2, pad=1)
    assert pooled == 2
    g.conv2d("p", "c2", w["conv2.weight"], "conv2.weight", size=2)
    g.linear([("c2", c, 0, 0) for c in range(2)], "out", w["fc.weight"], "fc.weight")
    oracle, n_paths = g.path_scores(conv_inputs(2, 4), {n: m.shape for n, m in masks.items()})
    assert n_paths > 100

    assert_scores_match(pwmp_scores(model, masks, torch.randn(1, 2, 4, 4), power=power), oracle)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_path_kernel_squares_every_avg_pool_edge_counted_or_not(count_include_pad):
    """An AvgPool of the model (not a replaced max pool): its edges weigh 1/k, or 1/(in-bounds
    inputs) without the padding counted; the path kernel squares each."""
    gen = torch.Generator().manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=count_include_pad),
                          nn.Flatten(), nn.Linear(8, 2))
    randomize(model, gen)
    masks = random_masks(model, gen)
    w = {name: effective(model, masks, name) for name in masks}
    g = Unrolled(2)
    g.conv2d("x", "c1", w["0.weight"], "0.weight", size=4, pad=1)
    for c, y, x, ki, kj in itertools.product(range(2), range(2), range(2), range(3), range(3)):
        yy, xx = 2 * y - 1 + ki, 2 * x - 1 + kj
        if 0 <= yy < 4 and 0 <= xx < 4:
            inside = sum(0 <= 2 * y - 1 + a < 4 and 0 <= 2 * x - 1 + b < 4 for a in range(3) for b in range(3))
            g.edge(("c1", c, yy, xx), ("p", c, y, x), 1.0 / (9 if count_include_pad else inside))
    g.linear([("p", c, y, x) for c, y, x in itertools.product(range(2), range(2), range(2))], "out", w["3.weight"], "3.weight")
    oracle, _ = g.path_scores(conv_inputs(1, 4), {n: m.shape for n, m in masks.items()})
    assert_scores_match(pwmp_scores(model, masks, torch.randn(1, 1, 4, 4), power=2), oracle)


def test_path_kernel_of_an_mlp_matches_brute_force_and_differs_from_pwmp():
    gen = torch.Generator().manual_seed(7)
    model = MLP((4,), 2, hidden=(5, 3))
    randomize(model, gen)
    masks = random_masks(model, gen)
    names = [f"layers.{i}.weight" for i in range(len(model.layers))]
    oracle = layered_oracle([(effective(model, masks, n) ** 2, n) for n in names])
    kernel = pwmp_scores(model, masks, torch.randn(1, 4), power=2)
    assert_scores_match(kernel, oracle)
    l1 = pwmp_scores(model, masks, torch.randn(1, 4))
    middle = lambda s: s["layers.1.weight"].flatten()
    ratio = middle(kernel) / middle(l1)
    assert not torch.allclose(ratio, ratio[0].expand_as(ratio))  # not a rescaling of PWMP
    assert not torch.equal(torch.argsort(middle(kernel)), torch.argsort(middle(l1)))  # another ranking


def test_path_kernel_is_a_registered_score_a_growth_run_can_use(make_cfg):
    from growth.run import run

    summary = run(make_cfg("method.score=path_kernel", "growth.max_rounds=3", "extensive.which=none"))
    assert summary["status"] == "finished" and summary["method"] == "pwmpr"


# ---------------------------------------------------------------------------------------------
# Properties


def test_result_has_the_masks_keys_shapes_and_float64():
    gen = torch.Generator().manual_seed(5)
    model = ResConv(nn.AdaptiveAvgPool2d(1))
    masks = random_masks(model, gen)
    masks = dict(reversed(list(masks.items())))

    scores = pwmp_scores(model, masks, torch.randn(1, 2, 5, 5))

    assert list(scores) == list(masks)
    for name, mask in masks.items():
        assert scores[name].shape == mask.shape
        assert scores[name].dtype == torch.float64
        assert scores[name].device == model.conv1.weight.device
        assert not scores[name].requires_grad


def test_absent_edges_score_positive_and_layers_conserve_total():
    """Every path crosses each layer of an MLP once, so sum(score * |W_eff|) is R in every layer."""
    gen = torch.Generator().manual_seed(6)
    model = MLP((1, 8, 8), 10, hidden=(32, 16))
    masks = random_masks(model, gen)

    scores = pwmp_scores(model, masks, torch.randn(1, 1, 8, 8))

    total = np.ones(64)
    for name in growable_weight_names(model):
        total = effective(model, masks, name) @ total
    for name, mask in masks.items():
        assert (scores[name][~mask] > 0).all(), name
        contribution = (scores[name] * torch.from_numpy(effective(model, masks, name))).sum().item()
        assert contribution == pytest.approx(total.sum(), rel=1e-12), name


def test_callers_model_is_left_unchanged():
    gen = torch.Generator().manual_seed(7)
    model = ResConv(nn.AdaptiveMaxPool2d(1))
    randomize(model, gen)
    model.train()
    masks = random_masks(model, gen)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    pwmp_scores(model, masks, torch.randn(1, 2, 4, 4))

    assert all(m.training for m in model.modules())
    assert isinstance(model.pool, nn.AdaptiveMaxPool2d)
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    for p in model.parameters():
        assert p.grad is None and p.requires_grad and p.is_leaf

    grads = {n: torch.randn(p.shape, generator=gen) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    model.eval()
    pwmp_scores(model, masks, torch.randn(1, 2, 4, 4))
    assert not any(m.training for m in model.modules())
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n


def test_scores_depend_only_on_input_shape():
    gen = torch.Generator().manual_seed(8)
    model = ResConv(nn.AdaptiveAvgPool2d(1))
    randomize(model, gen)
    masks = random_masks(model, gen)

    reference = pwmp_scores(model, masks, torch.randn(1, 2, 4, 4))
    for example in (torch.zeros(1, 2, 4, 4), torch.full((1, 2, 4, 4), -7.0), torch.ones(1, 2, 4, 4, dtype=torch.float16), torch.randn(5, 2, 4, 4)):
        other = pwmp_scores(model, masks, example)
        assert all(torch.equal(other[n], reference[n]) for n in masks)

    larger = pwmp_scores(model, masks, torch.randn(1, 2, 6, 6))
    assert not torch.allclose(larger["conv1.weight"], reference["conv1.weight"])


def test_ambient_no_grad_inference_mode_and_autocast_do_not_change_scores():
    gen = torch.Generator().manual_seed(9)
    model = ResConv(nn.AdaptiveAvgPool2d(1))
    randomize(model, gen)
    masks = random_masks(model, gen)
    x = torch.randn(1, 2, 4, 4)
    reference = pwmp_scores(model, masks, x)

    with torch.no_grad():
        plain = pwmp_scores(model, masks, x)
    with torch.inference_mode():
        inference = pwmp_scores(model, masks, x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        autocast = pwmp_scores(model, masks, x)
    for result in (plain, inference, autocast):
        assert all(torch.equal(result[n], reference[n]) and result[n].dtype == torch.float64 for n in masks)


def test_overflowing_path_sums_raise_diverged():
    # float64 holds path sums up to ~1e308: each layer multiplies them by about 4 * scale here
    gen = torch.Generator().manual_seed(10)
    layers = []
    for _ in range(20):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e16)
    masks = random_masks(model, gen, density=0.9)

    with pytest.raises(DivergedError, match="non-finite") as info:
        pwmp_scores(model, masks, torch.randn(1, 64))
    assert info.value.where["layers"]
    assert all(name in str(info.value) for name in info.value.where["layers"])


def test_bad_masks_raise_value_error_naming_the_key():
    model = MLP((4,), 2, hidden=(3,))
    masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in growable_parameters(model).items()}

    with pytest.raises(ValueError, match="layers.7.weight"):
        pwmp_scores(model, {**masks, "layers.7.weight": torch.ones(3, 4, dtype=torch.bool)}, torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"layers\.1\.weight"):
        pwmp_scores(model, {**masks, "layers.1.weight": torch.ones(3, 2, dtype=torch.bool)}, torch.ones(1, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(11)
    model = ResConv(nn.AdaptiveMaxPool2d(1))
    randomize(model, gen)
    masks = random_masks(model, gen)
    reference = pwmp_scores(model, masks, torch.randn(1, 2, 4, 4))

    scores = pwmp_scores(model.cuda(), {n: m.cuda() for n, m in masks.items()}, torch.randn(1, 2, 4, 4))

    for name in masks:
        assert scores[name].device.type == "cuda" and scores[name].dtype == torch.float64
        assert torch.allclose(scores[name].cpu(), reference[name], rtol=RTOL, atol=0), name
