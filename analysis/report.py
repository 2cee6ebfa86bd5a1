"""Everything for one set of runs in one folder: the tidy table (CSV, Parquet when pyarrow is
there), the figures (PNG and PDF), the density tables with the paired comparisons against the
headline method (Markdown, CSV, LaTeX) and one self-contained HTML report (figures embedded,
opens in any browser without the other files)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from analysis import discovery, figures_discovery, plots, tables
from analysis.load import flatten, load_table, read_config


def _pairs(table: pd.DataFrame) -> list[tuple[str, str]]:
    pairs = table.dropna(subset=["dataset", "model"])[["dataset", "model"]].drop_duplicates()
    return [tuple(p) for p in pairs.values.tolist()]


def _configs(table: pd.DataFrame) -> dict[str, dict]:
    """Flat configs of the table's runs: from the table (as loaded) or the run directories."""
    configs = dict(table.attrs.get("configs") or {})
    for run_dir in table["run_dir"].dropna().unique():
        if run_dir not in configs and Path(run_dir).is_dir():
            configs[run_dir] = read_config(Path(run_dir))
    return {k: v for k, v in configs.items() if v}


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="t", na_rep="-", escape=True)


def _config_section(table: pd.DataFrame) -> str:
    parts = []
    for study_dir, study in (table.attrs.get("studies") or {}).items():
        shown = {k: study.get(k) for k in ("study", "overrides", "seconds")}
        parts.append(f"<h3>Study {html.escape(study_dir)}</h3><pre>{html.escape(json.dumps(shown, indent=2, default=str))}</pre>")
        jobs = pd.DataFrame(study.get("jobs", []), columns=["label", "stage", "status", "error", "run_dir"])
        if not jobs.empty:
            parts.append(_html_table(jobs))
    configs = _configs(table)
    if configs:
        flat = {run: flatten(cfg) for run, cfg in configs.items()}
        keys = sorted({k for cfg in flat.values() for k in cfg})
        enc = {run: {k: json.dumps(cfg.get(k), default=str) for k in keys} for run, cfg in flat.items()}
        common = [k for k in keys if len({e[k] for e in enc.values()}) == 1]
        varying = [k for k in keys if k not in common]
        first = next(iter(flat.values()))
        parts.append(f"<h3>Settings shared by all {len(flat)} runs</h3>")
        parts.append(_html_table(pd.DataFrame({"key": common, "value": [json.dumps(first.get(k), default=str) for k in common]})))
        if varying:
            parts.append("<h3>Settings that differ between runs</h3>")
            rows = [{"run": Path(run).name, **{k: cfg.get(k) for k in varying}} for run, cfg in flat.items()]
            parts.append(_html_table(pd.DataFrame(rows)))
    if not parts:
        parts.append("<p>No configuration found (no study.json or config.yaml among the inputs).</p>")
    return "\n".join(parts)


def _status_section(table: pd.DataFrame) -> str:
    runs = table.drop_duplicates(subset=["run_dir", "method", "seed", "status"])
    counts = runs.groupby(["method", "status"]).size().rename("runs").reset_index()
    out = [_html_table(counts)]
    bad = runs[runs["status"] != "finished"][["method", "seed", "status", "error", "run_dir"]]
    if not bad.empty:
        out.append("<p>Runs that did not finish (never drawn as points):</p>" + _html_table(bad))
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:2em}figure{margin:1.5em 0}
figure img{max-width:100%;border:1px solid #eee}figcaption{color:#444;font-size:.9em;max-width:1100px}
table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0}table.t td,table.t th{border:1px solid #ddd;padding:2px 6px}
table.t th{background:#f4f4f4}pre{background:#f7f7f7;padding:.7em;overflow-x:auto;font-size:.85em}
"""


def write_report(
    table_or_paths: pd.DataFrame | str | Path | Iterable[str | Path],
    out_dir: str | Path,
    densities: Sequence[float] = tables.DEFAULT_DENSITIES,
    tolerance: float = tables.DEFAULT_TOLERANCE,
) -> list[Path]:
    """Write the table, figures, density tables and report.html to `out_dir`; return the files."""
    table = table_or_paths if isinstance(table_or_paths, pd.DataFrame) else load_table(table_or_paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    path = out / "points.csv"
    table.to_csv(path, index=False)
    written.append(path)
    try:
        import pyarrow  # noqa: F401

        path = out / "points.parquet"
        table.to_parquet(path, index=False)
        written.append(path)
    except ImportError:
        pass

    dt = tables.density_table(table, densities, tolerance)
    paired = tables.paired_table(table, densities, tolerance)
    at = ", ".join(f"{100 * d:g}%" for d in densities)
    caption = (f"Test accuracy and cumulative training cost (dense training runs) at {at}"
               f" density (nearest point within a factor {tolerance:g}) and at each growth method's discovered density;"
               " test accuracy: mean over seeds with its 95% bootstrap interval (3 seeds or more), density and cost: mean"
               " and standard deviation over seeds.")
    paired_caption = f"Paired comparison with the headline method at {at} density. {tables.PAIRED_NOTE}"
    for ext, text in (("md", tables.to_markdown(dt, paired)), ("tex", tables.to_latex(dt, caption, paired, paired_caption))):
        path = out / f"density_table.{ext}"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for name, frame in (("density_table.csv", dt), ("paired_table.csv", paired)):
        path = out / name
        frame.to_csv(path, index=False)
        written.append(path)

    figure_html = []
    pairs = _pairs(table)
    for dataset, model in pairs:
        suffix = f"_{dataset}_{model}"
        figure_html.append(f"<h3>{html.escape(dataset)} / {html.escape(model)}</h3>")
        for key, fn in plots.FIGURES.items():
            fig = fn(table, dataset, model)
            saved = plots.save(fig, out / f"{key}{suffix}")
            written += saved
            png = base64.b64encode(saved[0].read_bytes()).decode("ascii")
            figure_html.append(
                f'<figure><img alt="{key}" src="data:image/png;base64,{png}">'
                f"<figcaption>{html.escape(plots.CAPTIONS[key])}</figcaption></figure>"
            )

    files, discovery_html = _discovery(table, out)
    written += files

    source = table.attrs.get("wandb") or sorted({str(Path(p).parent) for p in table["run_dir"].dropna().unique()})
    n_runs = table["run_dir"].nunique()
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Analysis: {html.escape(', '.join(f'{d}/{m}' for d, m in pairs) or 'no runs')}</title><style>{_CSS}</style></head><body>
<h1>Growth-based density discovery: analysis of {n_runs} runs</h1>
<p>Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from {html.escape(json.dumps(source, default=str))}.
Accuracy is test accuracy after full training (growth rounds' proxy accuracy is on the validation split);
cost is in units of one dense training run; density is the fraction of growable weights kept.</p>
<h2>Runs</h2>{_status_section(table)}
<h2>Accuracy and cost at chosen densities</h2><p>{html.escape(caption)} {html.escape(tables.TABLE_NOTE)}</p>{_html_table(_display(dt))}
<h2>Paired against the headline method</h2>{_paired_section(paired)}
<h2>Figures</h2>{''.join(figure_html) or '<p>No finished runs to draw.</p>'}
{discovery_html}<h2>Configuration</h2>{_config_section(table)}
</body></html>
"""
    path = out / "report.html"
    path.write_text(body, encoding="utf-8")
    written.append(path)
    return written


def _discovery(table: pd.DataFrame, out: Path) -> tuple[list[Path], str]:
    """discovery.md, discovery.csv and one discovery_<run>.png per growth run with its full curve
    (nothing when no run has one); the report's section on them."""
    per_run = discovery.discovery_table(table)
    if per_run.empty:
        return [], ""
    agg = discovery.aggregate_discovery(per_run)
    written = []
    path = out / "discovery.md"
    path.write_text(tables.discovery_markdown(per_run, agg), encoding="utf-8")
    written.append(path)
    path = out / "discovery.csv"
    per_run.to_csv(path, index=False)
    written.append(path)
    figures = figures_discovery.save_discovery_figures(per_run["run_dir"], out)
    written += figures
    shown = [pd.DataFrame(body, columns=header) for header, body in (tables.discovery_rows(agg), tables.discovery_run_rows(per_run))]
    section = (f"<h2>Discovered against oracle density</h2><p>{html.escape(tables.DISCOVERY_NOTE)}</p>"
               f"<h3>Over seeds</h3>{_html_table(shown[0])}<h3>Each run</h3>{_html_table(shown[1])}"
               f"<p>Per-run figures beside this report: {html.escape(', '.join(f.name for f in figures))}.</p>")
    return written, section


def _display(dt: pd.DataFrame) -> pd.DataFrame:
    header, body = tables.display_rows(dt)
    return pd.DataFrame(body, columns=header)


def _paired_section(paired: pd.DataFrame) -> str:
    if paired.empty:
        return "<p>No point of a headline method lies at a chosen density where another method has one.</p>"
    header, body = tables.paired_rows(paired)
    return f"<p>{html.escape(tables.PAIRED_NOTE)}</p>{_html_table(pd.DataFrame(body, columns=header))}"
