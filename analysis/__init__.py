"""Analysis of run records: tables and performance-density / cost-density plots.

    table = analysis.load_table("results/studies/compare-<hash>")   # or a results root, run dirs
    analysis.write_report(table, "results/studies/compare-<hash>/analysis")

``python -m analysis --help`` does the same from the command line (also from W&B runs).
"""

from analysis.load import COLUMNS, load_table
from analysis.wandb_runs import load_wandb_table
from analysis.report import write_report

__all__ = ["COLUMNS", "load_table", "load_wandb_table", "write_report"]
