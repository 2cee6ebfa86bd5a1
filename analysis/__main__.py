"""python -m analysis <results root | study dir | run dirs...> [--out DIR]
python -m analysis --wandb ENTITY/PROJECT [--group G] [--out DIR]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.tables import DEFAULT_DENSITIES, DEFAULT_TOLERANCE


def default_out(paths: list[Path]) -> Path:
    """<input>/analysis; for several run directories, beside them in their common parent."""
    if len(paths) == 1:
        return paths[0] / "analysis"
    parents = {p.resolve().parent for p in paths}
    return (parents.pop() if len(parents) == 1 else Path.cwd()) / "analysis"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Turn run records (a results root, a study directory, run directories, or W&B runs) into one "
        "table, the performance-density / cost-density / timing / per-layer figures, density tables and an HTML report.",
    )
    parser.add_argument("paths", nargs="*", type=Path, help="results root, study directory (with study.json) or run directories")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B instead (needs W&B access)")
    parser.add_argument("--group", help="with --wandb: only the runs of this group (a study or sweep name)")
    parser.add_argument("--out", type=Path, help="output folder (default: <input>/analysis; with --wandb: ./analysis-<project>[-<group>])")
    parser.add_argument("--densities", type=float, nargs="+", default=list(DEFAULT_DENSITIES),
                        help="densities of the table, as fractions (default: 0.1 0.2)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="a point counts for density d when it lies within this factor of d (default: 1.12)")
    args = parser.parse_args(argv)
    if bool(args.paths) == bool(args.wandb):
        parser.error("give either run record paths or --wandb ENTITY/PROJECT")

    from analysis import load_table, load_wandb_table, write_report

    try:
        if args.wandb:
            try:
                table = load_wandb_table(args.wandb, args.group)
            except ValueError:
                raise
            except Exception as exc:  # no login, no network, unknown project: say so, no traceback
                print(f"error: could not read W&B runs of {args.wandb}: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 2
            out = args.out or Path.cwd() / ("analysis-" + args.wandb.split("/")[-1] + (f"-{args.group}" if args.group else ""))
        else:
            table = load_table(args.paths)
            out = args.out or default_out(args.paths)
        files = write_report(table, out, args.densities, args.tolerance)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "density_table.md").read_text(encoding="utf-8"))
    print(f"{len(table)} rows from {table['run_dir'].nunique()} runs; {len(files)} files in {out}:")
    for f in files:
        print(f"  {f.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
