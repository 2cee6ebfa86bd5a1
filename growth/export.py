"""Export the network a run found: its masked weights and masks as safetensors, a provenance JSON,
and a model whose masked layers hold their weights as sparse CSR tensors (docs/export.md).

    python -m growth.export RUN_DIR [--round N] [--as-grown] [--out DIR] [--sparse-check]

Which weights: by default the run's trained network. For a growth run that is the discovered
round's extensively trained network, which checkpoint.pt holds when that training was the last one
the run finished; otherwise (extensive.which=none, or a later training overwrote it) the discovered
round's snapshot as grown, with a note saying so. `--round N` picks round N the same way
(trained when the checkpoint holds its extensive training, else its snapshot); `--as-grown`
always takes the snapshot. A fixed-density, dense or pruning run exports the network its
checkpoint holds: the last one it trained.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from growth import records
from growth.errors import ConfigError
from growth.masks import check_masks_fit, count_active, count_total, dense_masks, density, layer_densities
from growth.migrate import typed_config

WEIGHTS, MASKS, PROVENANCE = "weights.safetensors", "masks.safetensors", "provenance.json"
FORMAT = 1  # provenance.json's "format": raised when what the files hold changes


@dataclass
class Network:
    """The weights chosen for export and what the run's records say about them."""

    state: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] | None  # None: a dense run (every weight trained)
    round: int | None
    point: str | None  # the curve point these weights are (e.g. "extensive:3", "train", "level:5")
    trained: bool
    source: str
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    accuracy_source: str = ""
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------- reading a run


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """(summary, config.yaml as a dict) of a finished run; ConfigError naming RUN_DIR otherwise."""
    if not run_dir.is_dir():
        raise ConfigError(f"RUN_DIR {run_dir}: no such directory; give a run directory (one of output.root's "
                          "<method>-<dataset>-<model>-s<seed>-<hash> folders)")
    summary = records.read_summary(run_dir)
    if summary is None or not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"RUN_DIR {run_dir}: not a run directory (it needs summary.json and config.yaml)")
    if summary.get("status") != "finished":
        raise ConfigError(f"RUN_DIR {run_dir}: the run is {summary.get('status')!r}, not 'finished'; "
                          "only a finished run can be exported (relaunch it to finish)")
    if summary.get("not_applicable"):
        raise ConfigError(f"RUN_DIR {run_dir}: nothing was trained ({summary['not_applicable']})")
    return summary, OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)


def model_shape(cfg) -> tuple[tuple[int, ...], int]:
    from growth.data import build_dataset, dataset_shape

    shape = dataset_shape(cfg.dataset)
    if shape is None:  # a dataset without a static shape: read it once
        data = build_dataset(cfg.dataset)
        shape = (data.input_shape, data.num_classes)
    return tuple(int(s) for s in shape[0]), int(shape[1])


def rebuild_model(cfg, input_shape, num_classes, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    from growth.models import build_model

    torch.manual_seed(int(cfg.seed))  # the weights are replaced; the seed only keeps building deterministic
    model = build_model(cfg.model, tuple(input_shape), int(num_classes))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{source}: its weights do not fit model={cfg.model.name}: "
                          f"{' '.join(line.strip() for line in first[:3])}") from None
    return model.eval()


def growth_rounds(run_dir: Path) -> list[dict]:
    path = run_dir / "rounds.csv"
    if not path.is_file():
        return []
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float(value) -> float | None:
    return None if value in (None, "") else float(value)


def checkpoint_network(run_dir: Path) -> tuple[Network | None, str]:
    """The network checkpoint.pt holds when it was written right after a finished training (a
    curve point), else None and why. Every method checkpoints right after adding a curve point,
    so the newest point is what the weights are; a checkpoint written mid-training (the previous
    one, used when the latest is damaged) or after a pruning step does not qualify."""
    problems: list[str] = []
    with warnings.catch_warnings():  # a damaged checkpoint is reported once, in the export's notes
        warnings.simplefilter("ignore")
        saved = records.load_checkpoint(run_dir, problems)
    if saved is None:
        return None, "the run has no intact checkpoint.pt"
    state = saved.get("state") or {}
    curve = state.get("curve") or []
    if not curve:
        return None, "checkpoint.pt holds no trained network (no extensive training was run)"
    point = curve[-1]
    unfinished = sorted(k for k, p in (state.get("progress") or {}).items() if p.get("result") is None)
    masks = saved.get("masks")
    current = density(masks) if masks is not None else 1.0
    if unfinished or abs(current - float(point["density"])) > 1e-12:
        return None, f"checkpoint.pt was written during a training ({', '.join(unfinished) or 'masks changed'}), not after one"
    r = point.get("round")
    return Network(
        state=saved["model"], masks=masks, round=None if r is None else int(r), point=point.get("point"), trained=True,
        source=f"checkpoint.pt (the trained network of curve point {point.get('point')})",
        val_accuracy=point.get("val_accuracy"), test_accuracy=point.get("test_accuracy"),
        accuracy_source=f"the run's records (curve point {point.get('point')})", notes=list(problems),
    ), ""


def snapshot_val_column(cfg) -> str | None:
    """Which rounds.csv column is the validation accuracy of the snapshot's own weights: the
    proxy is read after an anneal (restored unless anneal_continue) or from a moving average."""
    proxy = cfg.growth.proxy
    if proxy.anneal_epochs > 0 and not proxy.anneal_continue:
        return "unannealed_accuracy"
    return "proxy_accuracy" if proxy.source == "weights" else None


def snapshot_network(run_dir: Path, cfg, row: dict, note: str = "") -> Network:
    r = int(row["round"])
    path = run_dir / "snapshots" / f"round_{r:03d}.pt"
    try:
        snap = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any damage: say which file
        raise ConfigError(f"--round {r}: {path} cannot be read ({type(exc).__name__}: {exc})") from None
    column = snapshot_val_column(cfg)
    return Network(
        state=snap["model"], masks=snap["masks"], round=r, point=None, trained=False,
        source=f"snapshots/round_{r:03d}.pt (round {r} as grown: not extensively trained)",
        val_accuracy=_float(row.get(column)) if column else None, test_accuracy=None,
        accuracy_source=f"rounds.csv {column} of round {r} (the test set is not read during growth)" if column
        else "none recorded for these weights (the proxy was read from a moving average)",
        notes=[note] if note else [],
    )


def select_network(run_dir: Path, summary: dict, cfg, round: int | None, as_grown: bool) -> Network:
    rows = growth_rounds(run_dir)
    if not rows:
        flag = "--round" if round is not None else "--as-grown" if as_grown else None
        if flag:
            raise ConfigError(f"{flag}: {run_dir.name} is a {summary.get('method')} run, which has no growth rounds; "
                              f"omit {flag} (its checkpoint's network is exported)")
        network, why = checkpoint_network(run_dir)
        if network is None:
            raise ConfigError(f"RUN_DIR {run_dir}: {why}")
        return network
    available = [int(x["round"]) for x in rows if (run_dir / "snapshots" / f"round_{int(x['round']):03d}.pt").is_file()]
    target = summary.get("discovered_round") if round is None else round
    if target not in available:
        valid = f"{min(available)}-{max(available)}" if available else "none (snapshots/ is missing)"
        which = f"--round {target}" if round is not None else f"RUN_DIR {run_dir} (its discovered round {target})"
        raise ConfigError(f"{which}: {run_dir.name} has no snapshot of round {target}; valid rounds: {valid}")
    row = next(x for x in rows if int(x["round"]) == target)
    if as_grown:
        return snapshot_network(run_dir, cfg, row)
    network, why = checkpoint_network(run_dir)
    if network is not None and network.round == target and str(network.point).startswith("extensive:"):
        return network
    if network is not None:
        why = f"checkpoint.pt holds curve point {network.point}, the last network trained"
    return snapshot_network(run_dir, cfg, row, note=f"round {target}'s extensively trained weights were not kept ({why}): "
                                                    "its snapshot as grown is exported")


# ----------------------------------------------------------------------- writing an export


def masked_state(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with every masked weight set to +0 outside its mask (torch.where: a product
    would leave -0 for negative weights)."""
    out = {}
    for name, tensor in state.items():
        t = tensor.detach().cpu()
        if name in masks:
            t = torch.where(masks[name].cpu(), t, torch.zeros((), dtype=t.dtype))
        out[name] = t.contiguous().clone()  # safetensors refuses views and shared storage
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_out(run_dir: Path, round: int | None, as_grown: bool) -> Path:
    name = "export" if round is None else f"export_round_{round:03d}"
    return run_dir / (name + ("_as_grown" if as_grown else ""))


def export_run(run_dir, round: int | None = None, out=None, as_grown: bool = False) -> Path:
    """Write weights.safetensors, masks.safetensors and provenance.json of a finished run's network
    (see the module's docstring for which) into `out` (default <run_dir>/export, or
    export_round_NNN with a round); returns `out`. Raises ConfigError naming the bad argument."""
    import safetensors
    from safetensors.torch import save

    run_dir = Path(run_dir).resolve()
    summary, container = read_run(run_dir)
    cfg = typed_config(container)
    network = select_network(run_dir, summary, cfg, round, as_grown)
    input_shape, num_classes = model_shape(cfg)
    model = rebuild_model(cfg, input_shape, num_classes, network.state, network.source)
    # A dense run has no masks: every growable weight is present.
    masks = {n: m.to(torch.bool).cpu() for n, m in (network.masks or dense_masks(model)).items()}
    try:
        check_masks_fit(masks, model, source=network.source)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out = Path(out) if out is not None else default_out(run_dir, round, as_grown)
    weights = masked_state(network.state, masks)
    try:
        out.mkdir(parents=True, exist_ok=True)
        records.atomic_write_bytes(out / WEIGHTS, save(weights, metadata={"format": "pt", "run_dir": str(run_dir)}))
        records.atomic_write_bytes(out / MASKS, save({n: m.contiguous() for n, m in masks.items()}, metadata={"format": "pt"}))
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose a writable directory") from None
    provenance = {
        "format": FORMAT,
        "run_dir": str(run_dir),
        **{k: summary.get(k) for k in ("method", "dataset", "model", "seed", "family", "label")},
        "round": network.round,
        "point": network.point,
        "discovered_round": summary.get("discovered_round"),
        "discovered_density": summary.get("discovered_density"),
        "weights": "trained" if network.trained else "as grown",
        "source": network.source,
        "extensive_init": cfg.extensive.init if network.trained and network.round is not None else None,
        "density": density(masks),
        "edges": count_active(masks),
        "total_edges": count_total(masks),
        "layer_density": layer_densities(masks),
        "layer_edges": {n: [int(m.sum()), m.numel()] for n, m in masks.items()},
        "val_accuracy": network.val_accuracy,
        "test_accuracy": network.test_accuracy,
        "accuracy_source": network.accuracy_source,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "files": {name: {"sha256": sha256(out / name), "bytes": (out / name).stat().st_size} for name in (WEIGHTS, MASKS)},
        "notes": network.notes,
        "exported": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "config": container,
    }
    records.atomic_write_json(out / PROVENANCE, provenance)
    return out


def load_export(export_dir) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(the rebuilt model in eval mode with the exported weights, the masks), after checking both
    files against the SHA-256 in provenance.json."""
    from safetensors.torch import load_file

    export_dir = Path(export_dir)
    try:
        provenance = json.loads((export_dir / PROVENANCE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"EXPORT_DIR {export_dir}: no readable {PROVENANCE} ({exc}); "
                          "give a directory growth.export wrote") from None
    for name in (WEIGHTS, MASKS):
        expected = (provenance.get("files") or {}).get(name, {}).get("sha256")
        if not (export_dir / name).is_file() or sha256(export_dir / name) != expected:
            raise ConfigError(f"EXPORT_DIR {export_dir}: {name} is missing or does not match its SHA-256 in {PROVENANCE}")
    cfg = typed_config(provenance["config"])
    weights = load_file(export_dir / WEIGHTS)
    model = rebuild_model(cfg, provenance["input_shape"], provenance["num_classes"], weights, str(export_dir / WEIGHTS))
    masks = {n: m.to(torch.bool) for n, m in load_file(export_dir / MASKS).items()}
    return model, masks


# ----------------------------------------------------------------------- the sparse model


def csr_from_mask(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The (rows, columns) matrix of `weight` as CSR with exactly the mask's entries (a masked-in
    weight that happens to be 0 stays an entry: the stored count is the edge count)."""
    matrix, keep = weight.detach().reshape(weight.shape[0], -1), mask.reshape(weight.shape[0], -1).to(weight.device)
    rows, cols = keep.nonzero(as_tuple=True)  # row-major, as CSR stores them
    crow = torch.zeros(matrix.shape[0] + 1, dtype=torch.int64, device=weight.device)
    crow[1:] = torch.cumsum(keep.sum(dim=1), 0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": said on every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, matrix[rows, cols].contiguous(), matrix.shape)


def sparse_times(weight: torch.Tensor, columns: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """weight (CSR) @ columns, plus bias per row; addmm adds it in the product's pass."""
    if bias is None:
        return torch.sparse.mm(weight, columns)
    return torch.addmm(bias[:, None], weight, columns)


class SparseLinear(nn.Module):
    """nn.Linear with its weight as a CSR buffer: y = x W^T + b over the present edges only."""

    def __init__(self, linear: nn.Linear, mask: torch.Tensor):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", csr_from_mask(linear.weight, mask))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = sparse_times(self.weight, x.reshape(-1, self.in_features).t(), self.bias).t()
        return y.reshape(*x.shape[:-1], self.out_features)


class SparseConv2d(nn.Module):
    """nn.Conv2d (groups 1, zero padding) as im2col and a CSR matrix product: the weight as a
    (out_channels, in_channels x kh x kw) CSR matrix times F.unfold's columns."""

    def __init__(self, conv: nn.Conv2d, mask: torch.Tensor):
        super().__init__()
        self.out_channels, self.kernel_size = conv.out_channels, conv.kernel_size
        self.stride, self.padding, self.dilation = conv.stride, (0, 0) if conv.padding == "valid" else conv.padding, conv.dilation
        self.register_buffer("weight", csr_from_mask(conv.weight, mask))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    @staticmethod
    def supports(conv: nn.Conv2d) -> bool:
        return conv.groups == 1 and conv.padding_mode == "zeros" and conv.padding != "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        y = sparse_times(self.weight, cols.transpose(0, 1).reshape(cols.shape[1], -1), self.bias)  # (out, n x L)
        y = y.reshape(self.out_channels, n, -1).transpose(0, 1)
        out_h, out_w = (
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip((h, w), self.padding, self.dilation, self.kernel_size, self.stride)
        )
        return y.reshape(n, self.out_channels, out_h, out_w)


def to_sparse_model(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of `model` (eval mode, for inference) in which every masked nn.Linear, and every
    masked nn.Conv2d with groups 1 and zero padding, is a SparseLinear / SparseConv2d holding the
    mask's entries of its weight as CSR; it computes what the masked dense model computes. Other
    masked weights (subclasses such as attention's out_proj, whose weight is read directly;
    grouped or 'same'-padded convolutions) stay dense, masked; `sparse_model.dense_masked` lists them."""
    sparse = copy.deepcopy(model).eval()
    kept_dense = []
    for name, mask in masks.items():
        module_name, _, attr = name.rpartition(".")
        module = sparse.get_submodule(module_name)
        if attr == "weight" and type(module) is nn.Linear:
            replacement = SparseLinear(module, mask)
        elif attr == "weight" and type(module) is nn.Conv2d and SparseConv2d.supports(module):
            replacement = SparseConv2d(module, mask)
        else:
            with torch.no_grad():
                getattr(module, attr).mul_(mask.to(getattr(module, attr).device))
            kept_dense.append(name)
            continue
        parent_name, _, child = module_name.rpartition(".")
        setattr(sparse.get_submodule(parent_name), child, replacement)
    sparse.dense_masked = kept_dense
    return sparse


@torch.no_grad()
def predict(model: nn.Module, batches) -> torch.Tensor:
    """The logits of every batch of (inputs, labels), concatenated, in eval mode."""
    model.eval()
    return torch.cat([model(x) for x, _ in batches])


def sparse_check(export_dir: Path, batch_size: int = 1024) -> tuple[bool, str]:
    """The sparse model against the masked dense one on the run's test split."""
    from growth.data import build_dataset

    model, masks = load_export(export_dir)
    provenance = json.loads((export_dir / PROVENANCE).read_text())
    data = build_dataset(typed_config(provenance["config"]).dataset)
    sparse = to_sparse_model(model, masks)
    dense_logits = predict(model, data.eval_batches("test", batch_size))
    sparse_logits = predict(sparse, data.eval_batches("test", batch_size))
    labels = data.test_y
    same = bool(torch.equal(dense_logits.argmax(1), sparse_logits.argmax(1)))
    gap = float((dense_logits - sparse_logits).abs().max())
    accuracy = float((dense_logits.argmax(1) == labels).float().mean())
    layers = len(masks) - len(sparse.dense_masked)
    line = (f"sparse check: {len(labels)} test inputs, predictions {'identical' if same else 'DIFFERENT'}, "
            f"max |logit difference| {gap:.2e}, test accuracy {100 * accuracy:.2f}%, "
            f"{layers}/{len(masks)} masked layers sparse"
            + (f" (dense: {', '.join(sparse.dense_masked)})" if sparse.dense_masked else ""))
    return same and gap <= 1e-4, line


# ----------------------------------------------------------------------- command line


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, as every other bad input
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m growth.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a finished run's directory")
    parser.add_argument("--round", type=int, help="a growth round (default: the discovered one)")
    parser.add_argument("--as-grown", action="store_true",
                        help="the round's snapshot as grown, even when its trained weights were kept")
    parser.add_argument("--out", type=Path, help="where to write (default: RUN_DIR/export or RUN_DIR/export_round_NNN)")
    parser.add_argument("--sparse-check", action="store_true",
                        help="compare the sparse model with the masked dense one on the test split")
    args = parser.parse_args(argv)
    if args.round is not None and args.round < 0:
        parser.error(f"--round {args.round}: a round is a non-negative integer")
    try:
        out = export_run(args.run_dir, round=args.round, out=args.out, as_grown=args.as_grown)
        for name in (WEIGHTS, MASKS, PROVENANCE):
            print(f"wrote {out / name}")
        for note in json.loads((out / PROVENANCE).read_text())["notes"]:
            print(f"note: {note}", file=sys.stderr)
        if args.sparse_check:
            ok, line = sparse_check(out)
            print(line)
            if not ok:
                return 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
