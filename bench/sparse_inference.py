"""CPU inference latency of masked networks as sparse CSR layers (growth.export.to_sparse_model)
against the same masked networks run dense, side by side in one run (docs/export.md).

    .venv/bin/python bench/sparse_inference.py --run RUN_DIR --out bench/results/sparse.md   # about a minute
    .venv/bin/python bench/sparse_inference.py --quick                                      # tiny, a few seconds

Models: LeNet-300-100 (784-300-100-10, MNIST's shape) and a wider MLP (784-1024-1024-10), at 1%,
5%, 10% and 20% density and at the run's discovered density (with --run), every layer at that
density with its edges drawn uniformly (random masks: latency depends on the count and layout of
the entries, not on which edges training chose); with --run also the run's own exported network
with its own masks. Batch sizes 1 and 256, random normal inputs, eval mode, no autograd.

Method (as bench/measure.py): one warm-up, then repeats in which dense and sparse alternate
(A B, then B A); each timing is enough forward passes for about 20 ms; times are medians per
forward pass, the ratio the median of the paired ratios. Every row also checks that the sparse
logits equal the dense ones to 1e-5.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402

from growth.export import export_run, load_export, to_sparse_model  # noqa: E402
from growth.masks import growable_parameters  # noqa: E402
from growth.models import build_model  # noqa: E402

MNIST_SHAPE = (1, 28, 28)
DENSITIES = (0.01, 0.05, 0.10, 0.20)


def reference_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "lenet300":
        return build_model(measure.model_cfg("lenet300"), MNIST_SHAPE, 10).eval()
    cfg = measure.model_cfg("mlp")
    cfg.hidden = [1024, 1024]
    return build_model(cfg, MNIST_SHAPE, 10).eval()


def masked(model: torch.nn.Module, masks) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in growable_parameters(model).items():
            p.mul_(masks[name])
    return model


def time_pair(dense, sparse, x, repeats: int, target_s: float) -> dict:
    with torch.no_grad():
        single = measure.clock(lambda: dense(x), torch.device("cpu"))
        calls = max(1, math.ceil(target_s / max(single, 1e-7)))

        def many(model):
            return lambda: [model(x) for _ in range(calls)]

        times = measure.interleaved({"dense": many(dense), "sparse": many(sparse)}, torch.device("cpu"), repeats)
        gap = float((dense(x) - sparse(x)).abs().max())
    return {
        "dense_us": 1e6 * measure.median(times["dense"]) / calls,
        "sparse_us": 1e6 * measure.median(times["sparse"]) / calls,
        "ratio": measure.paired_ratio(times["sparse"], times["dense"]),
        "calls": calls,
        "max_logit_gap": gap,
        "load": measure.load_average(),
    }


def cases(run_dir: Path | None, quick: bool):
    """(label, model, masks, input shape) of every network measured."""
    densities = list(DENSITIES[:2] if quick else DENSITIES)
    if run_dir is not None:
        with tempfile.TemporaryDirectory() as tmp:  # the run directory itself is left untouched
            out = export_run(run_dir, out=Path(tmp) / "export")
            provenance = json.loads((out / "provenance.json").read_text())
            own, own_masks = load_export(out)
        discovered = provenance["density"]
        label = f"{provenance['method']} {provenance['dataset']}/{provenance['model']} (its own masks)"
        yield label, discovered, own, own_masks, tuple(provenance["input_shape"])
        densities.append(discovered)
    for name in ("lenet300",) if quick else ("lenet300", "mlp 784-1024-1024-10"):
        for d in sorted(densities):
            model = reference_model(name.split()[0])
            masks = measure.masks_at(model, d)
            yield name, d, masked(model, masks), masks, MNIST_SHAPE


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a finished run: its discovered density, and its own network")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, help="timed repeats per row (median); default 11, quick 3")
    parser.add_argument("--batches", default="1,256", help="batch sizes, comma-separated (default 1,256)")
    parser.add_argument("--quick", action="store_true", help="tiny timings: checks the script, not the machine")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here (and .json beside it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 11)
    target_s = 0.002 if args.quick else 0.02
    batches = [int(b) for b in args.batches.split(",")]
    info = measure.machine(torch.device("cpu"))
    mode = "quick" if args.quick else "full"
    print(f"# sparse inference ({mode}), {args.threads} thread(s), load average {info['load_average']}", flush=True)

    rows = []
    generator = torch.Generator().manual_seed(0)
    for label, d, model, masks, shape in cases(args.run, args.quick):
        sparse = to_sparse_model(model, masks)
        for batch in batches:
            x = torch.randn(batch, *shape, generator=generator)
            row = {"model": label, "density": d, "batch": batch, **time_pair(model, sparse, x, repeats, target_s)}
            if row["max_logit_gap"] > 1e-5:
                raise SystemExit(f"sparse and dense logits differ by {row['max_logit_gap']:.2e} "
                                 f"({label}, density {d}, batch {batch})")
            rows.append(row)
            print(f"  {label} {100 * d:.2f}% batch {batch}: sparse/dense {row['ratio']:.3f}", flush=True)

    info["load_average_end"] = measure.load_average()
    header = "| model | density | batch | dense (us) | sparse (us) | sparse / dense | load avg (1/5/15 min) |"
    lines = [header, "|---|---|---|---|---|---|---|"] + [
        f"| {r['model']} | {100 * r['density']:.2f}% | {r['batch']} | {r['dense_us']:.1f} | {r['sparse_us']:.1f} | "
        f"{r['ratio']:.3f} | {r['load']} |"
        for r in rows
    ]
    report = "\n".join([f"## Sparse inference on the CPU ({mode})", "",
                        measure.machine_lines(info), "", *lines, ""])
    print()
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        settings = {"threads": args.threads, "repeats": repeats, "target_s": target_s, "run": str(args.run) if args.run else None}
        args.out.with_suffix(".json").write_text(json.dumps({"machine": info, "settings": settings, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
