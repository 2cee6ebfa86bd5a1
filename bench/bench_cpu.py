"""CPU benchmark of the framework's overheads, side by side in one run (bench/README.md).

    .venv/bin/python bench/bench_cpu.py --out bench/results/cpu.md     # about 4 minutes on 2 cores
    .venv/bin/python bench/bench_cpu.py --quick                        # tiny sizes, under a minute

(a) masked / dense training step, (b) Engine step / bare PyTorch step, (c) PWMPR growth step /
training step, (d) 100 float64 PWMP scoring passes, (e) the data path's share of a CIFAR epoch.
Prints a Markdown table with each figure's target and PASS/FAIL, and writes it to --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the machine")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--repeats", type=int, help="timed repeats per figure (median); default 9, quick 2")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument(
        "--cifar-root", type=Path, default=measure.REPO.parent / "shared" / "data",
        help="data root holding CIFAR-10 (cifar10/cifar10.npz); without it (e) uses CIFAR-shaped random uint8",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    quick = args.quick
    repeats = args.repeats or (2 if quick else 9)
    batch = 16 if quick else 128
    batches = 2 if quick else 4
    settings = {"quick": quick, "repeats": repeats, "batch": batch, "batches_per_epoch": batches}
    info = measure.machine(device)
    print(f"# CPU benchmark ({'quick' if quick else 'full'}), load average {info['load_average']}", flush=True)

    rows = []

    def add(row):
        rows.append(row)
        print("  " + " | ".join(row.cells()), flush=True)

    add(measure.check_masked_vs_dense(device, batch, batches, repeats))
    add(measure.check_engine_vs_bare(device, batch, batches, repeats))
    add(measure.check_growth_vs_step(device, batch, batches, repeats))
    add(measure.check_scoring_passes(device, passes=5 if quick else 100, repeats=1 if quick else 3))

    cifar = args.cifar_root / "cifar10" / "cifar10.npz"
    if cifar.is_file() and not quick:
        data = measure.real_cifar10(args.cifar_root, device, data_path="device")
        source = "real CIFAR-10, device path on the CPU"
    else:
        n = 2048 if quick else measure.CIFAR_TRAIN
        data = measure.image_splits(n, device, data_path="device")
        source = f"CIFAR-shaped random uint8, {n} images, device path on the CPU"
    add(measure.check_data_share(device, data, batch, batches=4 if quick else 20, repeats=repeats, source=source))

    info["load_average_end"] = measure.load_average()
    report = "\n".join(
        [
            f"## CPU benchmark ({'quick' if quick else 'full'})",
            "",
            measure.machine_lines(info),
            "",
            measure.markdown(rows),
            "",
        ]
    )
    print()
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        measure.write_json(args.out.with_suffix(".json"), info, rows, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
