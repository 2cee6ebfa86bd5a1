"""The tidy table from W&B runs, as the ``logger=wandb`` logger writes them: the flat config, the
summary (a mirror of summary.json, so it carries the method's family, labels, colour, headline and
order too), growth rounds as ``growth/*`` and curve points as ``curve/*`` history rows."""

from __future__ import annotations

import pandas as pd

from analysis.load import _num, finish_table, flatten, run_rows

_WANDB_STATES = {"finished": "finished", "running": "running", "crashed": "failed", "failed": "failed", "killed": "failed"}


def _wandb_summary(run) -> dict:
    summary = getattr(run.summary, "_json_dict", None)
    return dict(summary) if summary is not None else dict(run.summary)


def load_wandb_table(project: str, group: str | None = None, api=None) -> pd.DataFrame:
    """The same table from the W&B runs of ``entity/project`` (optionally one group), as the
    ``logger=wandb`` logger writes them: the flat config, the summary (a mirror of
    summary.json), growth rounds as ``growth/*`` and curve points as ``curve/*`` history rows."""
    if api is None:
        import wandb

        api = wandb.Api()
    filters = {"group": group} if group else {}
    rows: list[dict] = []
    configs: dict[str, dict] = {}
    for run in api.runs(project, filters=filters):
        config = flatten(dict(run.config))
        summary = _wandb_summary(run)
        if not summary.get("status"):
            summary["status"] = _WANDB_STATES.get(getattr(run, "state", ""), "failed")
        for key in ("method", "dataset", "model", "seed"):
            summary.setdefault(key, config.get(key, config.get(f"{key}.name")))
        rounds, curve = [], []
        for item in run.scan_history():
            if item.get("growth/density") is not None:
                row = {k[len("growth/"):]: v for k, v in item.items() if k.startswith("growth/")}
                row.update({"layer_density:" + k[len("layer_density/"):]: row.pop(k) for k in list(row) if k.startswith("layer_density/")})
                rounds.append(row)
            elif item.get("curve/density") is not None:
                curve.append({k[len("curve/"):]: v for k, v in item.items() if k.startswith("curve/")})
        rounds.sort(key=lambda r: _num(r.get("round")))
        # A resumed run may log a round or point twice: keep the last of each.
        rounds = list({_num(r.get("round")): r for r in rounds}.values())
        curve = list({tuple(str(c.get(k)) for k in ("density", "round", "level")): c for c in curve}.values())
        run_dir = str(config.get("run_dir") or "wandb:" + "/".join(getattr(run, "path", [run.id])))
        rows.extend(run_rows(summary, rounds, curve, config, run_dir))
        configs[run_dir] = config
    if not rows:
        raise ValueError(f"no W&B runs in {project}" + (f" with group {group!r}" if group else ""))
    table = finish_table(rows, configs)
    table.attrs["studies"] = {}
    table.attrs["wandb"] = {"project": project, "group": group}
    return table
