"""GPU check: bench_cpu.py's ratios on CUDA, plus epoch times of the two data paths and PWMP
scoring on ResNet-50. Sized for under 8 minutes on one H100 (bench/README.md).

    python bench/gpu_check.py --out bench/results/gpu           # on a CUDA machine
    python bench/gpu_check.py --device cpu --tiny --out /tmp/g  # tiny sizes: checks the script

Speed settings (the trainer's own switches, recorded with the figures): on CUDA by default bf16
autocast (trainer.precision=bf16) and channels-last (trainer.channels_last=true); --compile adds
torch.compile of the training forward (every Engine compiles once in its warm-up run, which adds
minutes); --precision fp32 --no-channels-last gives the float32 figures (cuDNN's TF32 default is
recorded). On the CPU the defaults are fp32 without channels-last. PWMP scoring is float64
whatever the settings. Writes gpu_check.md and gpu_check.json under --out.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402


def epoch_rows(device, n_train: int, batch: int, repeats: int, workers: int) -> list[measure.Row]:
    """Epoch seconds of dense and 10%-density ResNet-32 on CIFAR-shaped data, device path against
    the DataLoader path, and the loader/device speed-up of each."""
    rows, times = [], {}
    cfg = measure.trainer_recipe(batch_size=batch)
    for path in ("device", "loader"):
        data = measure.image_splits(n_train, device, data_path=path, workers=workers)
        for label, density in (("dense", None), ("10%", 0.1)):
            model = measure.build("resnet32", device=device)
            masks = measure.masks_at(model, density) if density else None
            engine, opt = measure.engine_for(model, data, cfg, masks=masks)
            t = measure.interleaved({"epoch": lambda e=engine, o=opt: e.train_epoch(o)}, device, repeats)["epoch"]
            times[(path, label)] = measure.median(t)
            target = "<= 3 s" if path == "device" else None
            rows.append(
                measure.Row(
                    f"f-{path}-{label}", f"ResNet-32 epoch, {label}, {path} path ({n_train} images, batch {batch})",
                    times[(path, label)], "s", target, times[(path, label)] <= 3.0 if path == "device" else None,
                    f"median of {repeats} epochs" + (f"; {workers} DataLoader workers" if path == "loader" else ""),
                )
            )
    for label in ("dense", "10%"):
        speedup = times[("loader", label)] / times[("device", label)]
        rows.append(
            measure.Row(
                f"g-{label}", f"loader-path epoch / device-path epoch, {label}", speedup, "x", ">= 3", speedup >= 3.0,
                "the device path's speed-up over the DataLoader path",
            )
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: checks the script, not the machine")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu"), help="folder for gpu_check.md/.json")
    parser.add_argument("--workers", type=int, help="DataLoader workers of the loader path; default min(8, CPUs)")
    parser.add_argument("--repeats", type=int, help="timed repeats per figure (median); default 5, tiny 1")
    parser.add_argument("--precision", choices=("fp32", "bf16"), help="trainer.precision; default bf16 on CUDA, fp32 on the CPU")
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None,
        help="trainer.channels_last; default on for CUDA, off on the CPU",
    )
    parser.add_argument("--compile", action="store_true", help="trainer.compile: torch.compile the training forward")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available here; use --device cpu --tiny to check the script")
    tiny = args.tiny
    repeats = args.repeats or (1 if tiny else 5)
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    batch = 8 if tiny else 128
    batches = 2 if tiny else 20
    n_train = 64 if tiny else measure.CIFAR_TRAIN
    on_cuda = device.type == "cuda"
    precision = args.precision or ("bf16" if on_cuda else "fp32")
    channels_last = on_cuda if args.channels_last is None else args.channels_last
    if args.compile:
        from growth.train import compile_problem

        problem = compile_problem(device.type)
        if problem:
            parser.error(problem.replace("trainer.compile=true", "--compile"))
    measure.SPEED.clear()
    measure.SPEED.update(precision=precision, channels_last=channels_last, compile=args.compile)
    info = measure.machine(device)
    info["precision"] = (
        "bf16 autocast (float32 weights, gradients and optimizer state)" if precision == "bf16" else "float32"
    ) + "; PWMP scoring float64"
    info["channels_last"] = channels_last
    info["compile"] = args.compile
    if device.type == "cuda":
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    settings = {
        "tiny": tiny, "repeats": repeats, "batch": batch, "batches": batches, "n_train": n_train, "workers": workers,
        "precision": precision, "channels_last": channels_last, "compile": args.compile,
    }
    print(
        f"# GPU check on {info.get('gpu', device)} ({'tiny' if tiny else 'full'}; {precision}, "
        f"channels-last {'on' if channels_last else 'off'}, compile {'on' if args.compile else 'off'})",
        flush=True,
    )

    rows: list[measure.Row] = []

    def add(new):
        for row in new if isinstance(new, list) else [new]:
            rows.append(row)
            print("  " + " | ".join(row.cells()), flush=True)

    add(measure.check_masked_vs_dense(device, batch, batches, repeats))
    add(measure.check_engine_vs_bare(device, batch, batches, repeats))
    add(measure.check_growth_vs_step(device, batch, batches, repeats))
    add(measure.check_scoring_passes(device, passes=2 if tiny else 100, repeats=repeats))
    data = measure.image_splits(n_train, device, data_path="device")
    full_epoch = -(-n_train // batch)
    add(measure.check_data_share(device, data, batch, full_epoch, repeats, source="CIFAR-shaped random uint8, device path"))
    add(epoch_rows(device, n_train, batch, repeats if tiny else 2, workers))
    shape, classes = ((3, 64, 64), 10) if tiny else ((3, 224, 224), 1000)
    add(
        measure.check_scoring_passes(
            device, passes=1 if tiny else 3, repeats=repeats if tiny else 3, model_name="resnet50", input_shape=shape,
            num_classes=classes, target_s=None, key="h", per=1,
        )
    )

    info["load_average_end"] = measure.load_average()
    report = "\n".join(
        [f"## GPU check ({'tiny' if tiny else 'full'})", "", measure.machine_lines(info), "", measure.markdown(rows), ""]
    )
    print()
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.md").write_text(report)
    measure.write_json(args.out / "gpu_check.json", info, rows, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
