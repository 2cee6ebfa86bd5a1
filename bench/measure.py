"""Measurements shared by bench_cpu.py and gpu_check.py.

Everything is timed through the framework's own pieces (Engine, pwmp_scores, grow_masks, the
dataset classes), with warm-up runs, candidates alternating within each repeat (A B, then B A)
so that a change of machine load hits both sides of a ratio alike, ratios taken as the median of
paired runs and times as medians over repeats. CUDA work is synchronised before every clock read.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from growth.config import TrainerConfig
from growth.cost import CostLedger, forward_flops_per_sample
from growth.data import DatasetSplits, ImageArray
from growth.data.augment import CropFlip
from growth.seeds import random_seed_masks
from growth.selection import edges_to_grow, grow_masks
from growth.masks import apply_masks, growable_weight_names, mask_gradients
from growth.models import build_model
from growth.scores import pwmp_scores
from growth.train import Engine, autocast, make_optimizer, maybe_compile, prepare_model

REPO = Path(__file__).resolve().parents[1]
CIFAR_SHAPE = (3, 32, 32)
CIFAR_TRAIN = 45_000  # CIFAR-10's training split after the 10% validation hold-out
# Per-channel statistics of CIFAR-10's training images, for the synthetic CIFAR-shaped splits.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# ----------------------------------------------------------------------- machine and clocks


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_average": load_average(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], device, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each repeat of every candidate, the candidates alternating within each repeat."""
    for _ in range(warmup):
        for fn in fns.values():
            clock(fn, device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeats):
        # A B, then B A: whoever runs first (after the other's caches and allocations) alternates
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(clock(fns[name], device))
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of the ratios of neighbouring runs: a load change between repeats cancels out."""
    return statistics.median(a / b for a, b in zip(num, den))


# ----------------------------------------------------------------------- models, data, engines


# Speed settings every check's trainer config gets (trainer.precision, channels_last, compile);
# gpu_check.py sets them from its command line.
SPEED: dict = {}


def trainer_recipe(name: str = "cifar_resnet", **overrides) -> DictConfig:
    """A trainer config from conf/trainer/<name>.yaml (the experiments' recipe), schema-checked,
    with the speed settings of SPEED."""
    node = OmegaConf.load(REPO / "conf" / "trainer" / f"{name}.yaml")
    node.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(TrainerConfig), node, SPEED, overrides)


def model_cfg(name: str):
    """The model config of conf/model/<name>.yaml, merged into its schema as Hydra would."""
    from growth.kinds import MODELS

    node = OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml")
    node.pop("defaults")
    return OmegaConf.merge(OmegaConf.structured(MODELS.entry(node.name).schema), node)


def build(name: str, input_shape=CIFAR_SHAPE, num_classes: int = 10, device="cpu", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(model_cfg(name), input_shape, num_classes).to(device)


def tensor_splits(n: int, shape, classes: int, device, seed: int = 0) -> DatasetSplits:
    """Random float inputs (already normalised): batching is a permutation and a gather."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=g).to(device)
    y = torch.randint(0, classes, (n,), generator=g).to(device)
    return DatasetSplits(x, y, x[:256], y[:256], x[:256], y[:256], num_classes=classes, name="random")


def image_splits(n: int, device, data_path: str, workers: int = 0, seed: int = 0, shape=CIFAR_SHAPE) -> DatasetSplits:
    """CIFAR-shaped uint8 images in the framework's ImageArray, with CIFAR's crop-and-flip
    augmentation, on the device path or the DataLoader path."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)

    def split(x, aug):
        return ImageArray(x, CIFAR_MEAN, CIFAR_STD, augment=aug, data_path=data_path, num_workers=workers)

    data = DatasetSplits(
        split(raw, CropFlip(4, True)), y, split(raw[:256], None), y[:256], split(raw[:256], None), y[:256],
        num_classes=10, name="cifar-shaped",
    )
    return data.to(device)


def real_cifar10(root: Path, device, data_path: str = "device", workers: int = 0) -> DatasetSplits:
    from growth.data import build_dataset
    from growth.data.schema import ArrayImageConfig

    cfg = OmegaConf.structured(ArrayImageConfig(name="cifar10", root=str(root), data_path=data_path, num_workers=workers))
    return build_dataset(cfg).to(device)


def engine_for(model, data: DatasetSplits, trainer_cfg, masks=None, seed: int = 0) -> tuple[Engine, torch.optim.Optimizer]:
    """An Engine as a run builds it: the model in channels-last format and the training forward
    compiled when the trainer config asks (trainer.channels_last, trainer.compile)."""
    prepare_model(model, trainer_cfg)
    example = data.example_input()
    layer, other = forward_flops_per_sample(model, example, growable_weight_names(model))
    ledger = CostLedger(data.num_train, trainer_cfg.epochs, layer, other)
    engine = Engine(
        model, data, trainer_cfg, ledger, torch.Generator().manual_seed(seed),
        forward_module=maybe_compile(model, trainer_cfg),
    )
    optimizer = make_optimizer(trainer_cfg, model, trainer_cfg.lr)
    engine.set_masks(masks, optimizer)
    return engine, optimizer


def masks_at(model, density: float, seed: int = 0):
    return random_seed_masks(model, density, torch.Generator().manual_seed(seed))


class FirstBatches:
    """The first `k` batches of each epoch of `batches` (re-iterable, like TensorBatches)."""

    def __init__(self, batches, k: int):
        self.batches, self.k = batches, k

    def __len__(self) -> int:
        return min(self.k, len(self.batches))

    def __iter__(self) -> Iterator:
        for i, batch in enumerate(self.batches):
            if i >= self.k:
                return
            yield batch


def bare_loop(model, batches: list, trainer_cfg) -> Callable[[], None]:
    """The hand-written PyTorch loop the engine is compared with: same optimizer and the same
    speed settings (bf16 autocast, channels-last, torch.compile, written out by hand), no hooks."""
    channels_last = bool(trainer_cfg.channels_last) and any(p.dim() == 4 for p in model.parameters())
    if channels_last:
        model.to(memory_format=torch.channels_last)
        batches = [(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x, y) for x, y in batches]
    forward = torch.compile(model) if trainer_cfg.compile else model
    optimizer = make_optimizer(trainer_cfg, model, trainer_cfg.lr)
    device = next(model.parameters()).device
    precision = trainer_cfg.precision

    def epoch() -> None:
        model.train()
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                loss = F.cross_entropy(forward(x), y)
            loss.backward()
            optimizer.step()

    return epoch


# ----------------------------------------------------------------------- the checks


@dataclass
class Row:
    key: str
    check: str
    value: float
    unit: str
    target: str | None = None
    passed: bool | None = None
    detail: str = ""
    load: str = field(default_factory=load_average)

    def cells(self) -> list[str]:
        fmt = f"{self.value:.3f}" if self.unit in ("x", "s", "ms") else f"{self.value:.2%}" if self.unit == "%" else f"{self.value:g}"
        if self.unit in ("s", "ms"):
            fmt += f" {self.unit}"
        verdict = "-" if self.passed is None else ("PASS" if self.passed else "FAIL")
        return [self.key, self.check, fmt, self.target or "-", verdict, self.detail, self.load]


def ratio_row(key, check, value: float, target: float, detail: str) -> Row:
    return Row(key, check, value, "x", f"<= {target:g}", value <= target, detail)


def check_masked_vs_dense(device, batch: int, batches: int, repeats: int, density: float = 0.1) -> Row:
    """(a) A masked training step over a dense one: ResNet-32, both through the Engine."""
    data = tensor_splits(batch * batches, CIFAR_SHAPE, 10, device)
    cfg = trainer_recipe(batch_size=batch)
    dense_model = build("resnet32", device=device)
    masked_model = copy.deepcopy(dense_model)
    dense, dense_opt = engine_for(dense_model, data, cfg)
    masked, masked_opt = engine_for(masked_model, data, cfg, masks=masks_at(masked_model, density))
    t = interleaved({"dense": lambda: dense.train_epoch(dense_opt), "masked": lambda: masked.train_epoch(masked_opt)}, device, repeats)
    d, m = median(t["dense"]) / batches, median(t["masked"]) / batches
    # The masking work on its own (what the engine adds to a masked step), timed directly.
    for p in masked_model.parameters():
        p.grad = torch.zeros_like(p)

    def mask_work() -> None:
        for _ in range(20):
            mask_gradients(masked_model, masked.masks)
            apply_masks(masked_model, masked.masks)

    work = median(interleaved({"mask": mask_work}, device, repeats)["mask"]) / 20
    return ratio_row(
        "a", f"masked step / dense step (ResNet-32, batch {batch}, density {density:.0%})",
        paired_ratio(t["masked"], t["dense"]), 1.05,
        f"masked {1e3 * m:.1f} ms, dense {1e3 * d:.1f} ms a step (medians); ratio: median over {repeats} paired runs of "
        f"{batches} steps; the masking work alone: {1e3 * work:.2f} ms a step ({work / d:.2%} of the dense step)",
    )


def engine_overhead(device, batch: int, steps: int, repeats: int) -> float:
    """Seconds a step that the Engine adds to a bare loop, measured on a linear classifier so
    small that the difference is not lost in the noise of a real model's step."""
    data = tensor_splits(batch * steps, CIFAR_SHAPE, 10, device)
    cfg = trainer_recipe(batch_size=batch)
    torch.manual_seed(0)
    tiny = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).to(device)
    engine, opt = engine_for(tiny, data, cfg)
    fixed = [(data.train_x[s : s + batch], data.train_y[s : s + batch]) for s in range(0, batch * steps, batch)]
    bare = bare_loop(copy.deepcopy(tiny), fixed, cfg)
    t = interleaved({"engine": lambda: engine.train_epoch(opt), "bare": bare}, device, repeats)
    return (median(t["engine"]) - median(t["bare"])) / steps


def check_engine_vs_bare(device, batch: int, batches: int, repeats: int) -> Row:
    """(b) Engine.train_epoch over N batches against a bare PyTorch loop over the same batches."""
    overhead = engine_overhead(device, batch, steps=50, repeats=max(repeats, 5))
    data = tensor_splits(batch * batches, CIFAR_SHAPE, 10, device)
    cfg = trainer_recipe(batch_size=batch)
    engine_model = build("resnet32", device=device)
    bare_model = copy.deepcopy(engine_model)
    engine, opt = engine_for(engine_model, data, cfg)
    fixed = [(data.train_x[s : s + batch], data.train_y[s : s + batch]) for s in range(0, batch * batches, batch)]
    bare = bare_loop(bare_model, fixed, cfg)
    t = interleaved({"engine": lambda: engine.train_epoch(opt), "bare": bare}, device, repeats)
    e, b = median(t["engine"]) / batches, median(t["bare"]) / batches
    return ratio_row(
        "b", f"framework step / bare PyTorch step (ResNet-32, batch {batch})", paired_ratio(t["engine"], t["bare"]), 1.05,
        f"engine {1e3 * e:.1f} ms, bare {1e3 * b:.1f} ms a step (medians); ratio: median over {repeats} paired runs of "
        f"{batches} steps; the engine's own work, timed on a linear model: {1e6 * overhead:.0f} us a step "
        f"({overhead / b:.2%} of the bare step)",
    )


def check_growth_vs_step(device, batch: int, batches: int, repeats: int, density: float = 0.1) -> Row:
    """(c) One PWMPR growth step (score, sample, install masks and optimizer state) on ResNet-56
    over one masked training step at the same density."""
    data = tensor_splits(batch * batches, CIFAR_SHAPE, 10, device)
    cfg = trainer_recipe(batch_size=batch)
    model = build("resnet56", device=device)
    masks = masks_at(model, density)
    engine, opt = engine_for(model, data, cfg, masks=masks)
    engine.train_epoch(opt)  # optimizer state exists, as after a round
    example = data.example_input()
    k = edges_to_grow(masks, 1.25, 1.0)
    gen = torch.Generator().manual_seed(0)

    def grow() -> None:
        scores = pwmp_scores(model, masks, example)
        new, _ = grow_masks(masks, scores, k, "sample", 1.0, gen)
        engine.set_masks(new, opt)

    def train() -> None:
        engine.set_masks(masks, opt)  # back to the round's masks (one pass of apply, cheap)
        engine.train_epoch(opt)

    t = interleaved({"grow": grow, "train": train}, device, repeats)
    g, s = median(t["grow"]), median(t["train"]) / batches
    return ratio_row(
        "c", f"PWMPR growth step / training step (ResNet-56, density {density:.0%}, +{k} edges)",
        paired_ratio(t["grow"], [x / batches for x in t["train"]]), 1.0,
        f"growth {1e3 * g:.1f} ms, step {1e3 * s:.1f} ms (batch {batch}, medians); ratio: median over {repeats} pairs",
    )


def check_scoring_passes(device, passes: int, repeats: int, model_name: str = "resnet56", input_shape=CIFAR_SHAPE,
                         num_classes: int = 10, target_s: float | None = 10.0, key: str = "d", per: int = 100) -> Row:
    """(d) `per` float64 PWMP scoring passes (of every edge, at 10% density), from `passes` timed."""
    model = build(model_name, input_shape, num_classes, device=device)
    masks = masks_at(model, 0.1)
    example = torch.zeros((1, *input_shape), device=device)

    def score_all() -> None:
        for _ in range(passes):
            pwmp_scores(model, masks, example)

    t = interleaved({"score": score_all}, device, repeats)
    one = median(t["score"]) / passes
    total = one * per
    scaled = "" if passes == per else f", {passes} timed and scaled"
    return Row(
        key, f"{'one' if per == 1 else per} float64 PWMP scoring pass{'' if per == 1 else 'es'} "
        f"({model_name}, {'x'.join(map(str, input_shape[1:]))})", total, "s",
        f"<= {target_s:g} s" if target_s is not None else None, None if target_s is None else total <= target_s,
        f"{1e3 * one:.1f} ms a pass; median of {repeats}{scaled}",
    )


def check_data_share(device, data: DatasetSplits, batch: int, batches: int, repeats: int, source: str,
                     model_name: str = "resnet32") -> Row:
    """(e) Share of an epoch spent producing batches: the first `batches` batches of an epoch
    produced alone, over the same batches produced and trained on by the Engine. Each epoch's
    set-up (permutation, augmentation draws for the whole split) falls in both, so with fewer
    batches than an epoch the share is overstated, never understated."""
    cfg = trainer_recipe(batch_size=batch)
    model = build(model_name, data.input_shape, data.num_classes, device=device)
    engine, opt = engine_for(model, data, cfg)
    engine.batches = FirstBatches(engine.batches, batches)
    data_only = FirstBatches(data.train_batches(batch, torch.Generator().manual_seed(1)), batches)

    def produce() -> None:
        for x, y in data_only:
            pass

    t = interleaved({"data": produce, "epoch": lambda: engine.train_epoch(opt)}, device, repeats)
    d, e = median(t["data"]), median(t["epoch"])
    share = paired_ratio(t["data"], t["epoch"])
    full = -(-data.num_train // batch)
    span = "a whole epoch" if batches >= full else f"the first {batches} of {full} batches"
    return Row(
        "e", f"data path's share of a CIFAR epoch ({source})", share, "%", "<= 1%", share <= 0.01,
        f"batches {1e3 * d:.1f} ms of {e:.2f} s over {span} ({model_name}, batch {batch}, medians); share: median over {repeats} pairs",
    )


# ----------------------------------------------------------------------- output


HEADER = ["", "check", "measured", "target", "result", "how", "load avg (1/5/15 min)"]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def machine_lines(info: dict) -> str:
    parts = [f"{k}: {v}" for k, v in info.items()]
    return "\n".join(f"- {p}" for p in parts)


def write_json(path: Path, info: dict, rows: list[Row], settings: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "settings": settings, "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
