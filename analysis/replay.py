"""Replay stop rules on the records of finished growth runs, without training.

    python -m analysis.replay RUN_DIR_OR_ROOT ... [--rule NAME ...] [--set key=value ...] [--proxy COLUMN] [--csv PATH]

Any rule registered on ``growth.kinds.STOP_RULES`` (``--rule`` may be given several times; by
default each run's own ``growth.stop.rule``) decides again on a run's rounds.csv, with the run's
own ``growth.stop`` settings overridden by ``--set`` (``--set tol=0.005 --set confirm=2``). The
settings the rule's factory gets are built as the run's were: the run's config.yaml
``growth.stop`` merged with the overrides into ``OmegaConf.structured(StopConfig)`` (the rule's
registered schema), with the same field checks, so an unknown or mistyped key is refused.

The rule is fed what the growth loop (``growth.grow.GrowthRun.growth_round``) feeds it: after each
round, the history up to and including that round, the earlier rows complete (with the replayed
rule's own recorded columns) and this round's row as it was at decision time, i.e. without the
columns the decision and the growth step add afterwards; CSV text converted back to the numbers
(int, float, bool, None) the loop had. Replay stops at the first round the rule fires; a rule
that never fires ends at the last recorded round, reason "never fired". A run that has not
finished is replayed on the rounds it recorded, and the table shows its status. ``--proxy COLUMN``
feeds the rule another recorded signal as ``proxy_accuracy`` (``unannealed_accuracy``,
``ema_accuracy``: what the round's weights, or their moving average, gave), so the proxies of a
run recorded with several of them are compared on the same growth path.

Per run and rule it reports the discovered round and density, the cost of the discovery (the
round's growth cost ``cost_epochs`` plus 1.0 for one full training, in dense runs) and, for a run
with its full curve, the oracle density, the error in growth steps and the accuracy shortfall of
:mod:`analysis.discovery` (the oracle at the run's own ``growth.stop.tol``, or ``--oracle-tol``,
so every rule and setting of a run is measured against the same oracle).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import numbers
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from growth.proxy import PROXY_SIGNALS

__all__ = ["ReplayError", "ROUND_COLUMNS", "AFTER_DECISION", "read_rounds", "decision_row", "parse_sets", "stop_settings",
           "with_proxy", "replay_rule", "replay_run", "replay", "format_table", "rule_summary", "format_summary", "main"]

# The row growth_round builds before it asks the rule (keep in step with growth/grow.py) ...
ROUND_COLUMNS = ("round", "density", "edges", "proxy_accuracy", "val_loss", "train_loss", "train_accuracy", "batches",
                 "cost_epochs", "cost_flops", "wall_seconds")
# Columns a round has only with some settings: the proxy signals beside the one the rule read.
OPTIONAL_ROUND_COLUMNS = PROXY_SIGNALS
# What --proxy may name: a recorded accuracy a rule could read instead of proxy_accuracy.
PROXY_COLUMNS = ("proxy_accuracy",) + OPTIONAL_ROUND_COLUMNS
LAYER_PREFIX = "layer_density:"
# ... and what it adds after the rule's own columns (decision.as_record()).
AFTER_DECISION = ("stop", "stop_reason", "grown", "grown_zero_score", "masks_digest")
# Text columns the loop writes, never numbers even when they look like one.
TEXT_COLUMNS = {"stop_reason", "fit_reason", "masks_digest"}
NEVER_FIRED = "never fired"
_INT = re.compile(r"[+-]?\d+")

COLUMNS = [
    "run", "run_dir", "source", "method", "dataset", "status", "rule", "settings", "proxy", "fired", "discovered_round", "discovered_density",
    "proxy_accuracy", "cost_dense_runs", "reason", "recorded_round", "recorded_density", "oracle_tol", "oracle_density",
    "error_steps", "val_shortfall", "test_shortfall",
]


class ReplayError(ValueError):
    """A user error of the replay, in one line."""


# ---------------------------------------------------------------- records as the loop had them


def _value(column: str, text: Any) -> Any:
    if not isinstance(text, str):
        return text
    if column in TEXT_COLUMNS:
        return text
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def read_rounds(run_dir: Path) -> list[dict]:
    """rounds.csv as the loop's row dicts (numbers, bools and None where it had them)."""
    import csv

    path = Path(run_dir) / "rounds.csv"
    if not path.exists():
        raise ReplayError(f"{run_dir}: no rounds.csv (replay needs the recorded rounds of a growth run)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [{k: _value(k, v) for k, v in row.items()} for row in csv.DictReader(f)]
    if not rows:
        raise ReplayError(f"{path}: no rounds recorded")
    return rows


def decision_row(row: Mapping[str, Any]) -> dict:
    """A round's row as it stood when the loop asked the rule (the columns built before the decision)."""
    return {k: v for k, v in row.items() if k in ROUND_COLUMNS or k in OPTIONAL_ROUND_COLUMNS or k.startswith(LAYER_PREFIX)}


# ---------------------------------------------------------------- settings


def _rule_entry(name: str):
    from growth.errors import ConfigError
    from growth.kinds import STOP_RULES

    try:
        return STOP_RULES.entry(name)
    except ConfigError:
        raise ReplayError(f"unknown stop rule {name!r}: valid are {STOP_RULES.names()}") from None


def _schema(entry) -> type:
    from growth.config.schema import StopConfig

    schema = entry.schema
    return schema if isinstance(schema, type) and dataclasses.is_dataclass(schema) and issubclass(schema, StopConfig) else StopConfig


def parse_sets(items: Iterable[str]) -> dict[str, str]:
    """``key=value`` strings -> {key: value text}; a malformed one, or ``rule``, is refused."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ReplayError(f"--set {item!r}: expected key=value (e.g. --set tol=0.005)")
        if key == "rule":
            raise ReplayError(f"--set {item}: the rule is chosen with --rule NAME")
        out[key] = value
    return out


def stop_settings(run_stop: Mapping[str, Any] | None, rule: str, overrides: Mapping[str, str]):
    """The growth.stop section a rule gets: the schema's defaults, the run's own settings, the
    overrides, rule = `rule`; every field checked as when a config is composed."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from growth import kinds  # noqa: F401  (the registries the field checks name)
    from growth.config.validation import field_problems

    schema = _schema(_rule_entry(rule))
    fields = [f.name for f in dataclasses.fields(schema)]
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ReplayError(f"--set {key}={overrides[key]}: growth.stop has no key {key!r}: {hint}"
                              f"valid keys are {sorted(f for f in fields if f != 'rule')}")
    settings = OmegaConf.structured(schema)
    own = {k: v for k, v in (run_stop or {}).items() if k in fields and k != "rule"}  # another rule's own keys stay with it
    try:
        settings = OmegaConf.merge(settings, own)
    except OmegaConfBaseException as exc:
        raise ReplayError(f"the run's growth.stop settings do not fit rule {rule!r}: {str(exc).splitlines()[0]}") from None
    for key, value in overrides.items():
        try:
            settings = OmegaConf.merge(settings, OmegaConf.from_dotlist([f"{key}={value}"]))
        except OmegaConfBaseException as exc:
            raise ReplayError(f"--set {key}={value}: {str(exc).splitlines()[0]}") from None
    settings.rule = rule
    problems = field_problems(settings, "growth.stop")
    if problems:
        raise ReplayError("; ".join(problems))
    return settings


def _settings_text(settings) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items() if k not in ("rule", "keep_growing"))


# ---------------------------------------------------------------- replay


def replay_rule(rows: Sequence[Mapping[str, Any]], decide: Callable[[list[dict]], Any]) -> tuple[int, Any, list]:
    """Feed `decide` the rounds as the growth loop does, up to the first that fires.

    Returns (index of the deciding round, its decision or None when none fired, every decision made)."""
    history: list[dict] = []
    decisions = []
    for i, recorded in enumerate(rows):
        row = decision_row(recorded)
        decision = decide(history + [row])
        decisions.append(decision)
        if decision.stop:
            return i, decision, decisions
        # The row as the loop kept it: the rule's columns, then what the loop added after deciding.
        row.update(decision.as_record())
        row.update({k: recorded[k] for k in AFTER_DECISION if k in recorded})
        if row.get("stop_reason") is None:
            row["stop_reason"] = ""
        history.append(row)
    return len(rows) - 1, None, decisions


def _run_stop_section(run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:
        raise ReplayError(f"{path}: unreadable: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    node = OmegaConf.select(cfg, "growth.stop", default=None)
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def with_proxy(rows: Sequence[Mapping[str, Any]], column: str, run_dir: Path) -> list[dict]:
    """The rounds with `column` as their proxy_accuracy (the recorded one when column is it)."""
    if column == "proxy_accuracy":
        return [dict(r) for r in rows]
    missing = [r.get("round") for r in rows if not _real(r.get(column))]
    if missing:
        have = [c for c in PROXY_COLUMNS if all(_real(r.get(c)) for r in rows)]
        raise ReplayError(f"{run_dir}: --proxy {column}: not recorded in round(s) {missing[:5]}; this run has {have}")
    return [{**r, "proxy_accuracy": r[column]} for r in rows]


def replay_run(run_dir: str | Path, rules: Sequence[str] | None = None, overrides: Mapping[str, str] | None = None,
               oracle_tol: float | None = None, proxy: str = "proxy_accuracy") -> list[dict]:
    """One row per rule (COLUMNS) for one run directory."""
    from analysis.discovery import discovery_error, full_curve, growth_settings, run_records
    from growth.errors import ConfigError

    run_dir = Path(run_dir)
    rows = with_proxy(read_rounds(run_dir), proxy, run_dir)
    run_stop = _run_stop_section(run_dir)
    rec = run_records(run_dir)
    summary = rec["summary"]
    own_tol, ratio = growth_settings(rec["config"])
    curve = full_curve(rec["curve"])
    out = []
    for rule in rules or [run_stop.get("rule") or _default_rule()]:
        settings = stop_settings(run_stop, rule, overrides or {})
        try:
            decide = _rule_entry(rule).obj(settings)
        except ConfigError as exc:
            raise ReplayError(f"rule {rule!r}: {exc}") from None
        try:
            i, decision, _ = replay_rule(rows, decide)
        except Exception as exc:  # a rule failing on these records: say where, in one line
            raise ReplayError(f"{run_dir}: rule {rule!r} failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        row = rows[i]
        cost = row.get("cost_epochs")
        found = {
            "run": run_dir.name, "run_dir": str(run_dir), "method": summary.get("method"), "dataset": summary.get("dataset"), "status": summary.get("status", ""),
            "rule": rule, "settings": _settings_text(settings), "proxy": proxy, "fired": decision is not None,
            "discovered_round": row.get("round"), "discovered_density": row.get("density"), "proxy_accuracy": row.get("proxy_accuracy"),
            "cost_dense_runs": cost + 1.0 if _real(cost) else math.nan,
            "reason": decision.reason if decision is not None else NEVER_FIRED,
            "recorded_round": summary.get("discovered_round"), "recorded_density": summary.get("discovered_density"),
            "oracle_tol": own_tol if oracle_tol is None else float(oracle_tol),
        }
        found.update({k: v for k, v in settings.items() if k != "rule"})
        density = found["discovered_density"]
        if curve is not None and _real(density) and density > 0:
            err = discovery_error(curve, found["oracle_tol"], float(density), ratio)
            found.update({k: err[k] for k in ("oracle_density", "error_steps", "val_shortfall", "test_shortfall")})
        out.append(found)
    return out


def _run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """The run directories under the paths (as analysis.load finds them) that have rounds.csv;
    a run directory named directly without one is an error."""
    from analysis.load import Sources, _is_run_dir

    if not paths:
        raise ReplayError("give at least one run directory, study directory or results root")
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ReplayError(f"{p}: no such directory")
        if _is_run_dir(p) and not (p / "rounds.csv").exists():
            raise ReplayError(f"{p}: no rounds.csv (replay needs the recorded rounds of a growth run)")
        sources = Sources()
        try:
            sources.add(p)
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        dirs = [d for d in sources.run_dirs if (d / "rounds.csv").exists()]
        if not dirs:
            raise ReplayError(f"{p}: no run directory with rounds.csv in it (replay needs growth runs)")
        found += [d for d in dirs if d.resolve() not in {f.resolve() for f in found}]
    return found


def replay(paths: Sequence[str | Path], rules: Sequence[str] | None = None, overrides: Mapping[str, str] | None = None,
           oracle_tol: float | None = None, proxy: str = "proxy_accuracy") -> pd.DataFrame:
    """Replay `rules` (default: each run's own) with `overrides` on every growth run under `paths`,
    the rules reading the recorded column `proxy` as the proxy accuracy."""
    if proxy not in PROXY_COLUMNS:
        raise ReplayError(f"--proxy {proxy}: not a recorded proxy signal; valid are {list(PROXY_COLUMNS)}")
    for rule in rules or [_default_rule()]:
        stop_settings({}, rule, overrides or {})  # an unknown rule or a bad --set is refused before any run is read
    if oracle_tol is not None and not 0 < oracle_tol < 1:
        raise ReplayError(f"--oracle-tol {oracle_tol}: an accuracy tolerance in (0, 1)")
    rows = []
    extra: list[str] = []
    seen: set[Path] = set()
    for source in paths:  # each run once, under the first path that holds it
        for run_dir in _run_dirs([source]):
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            for row in replay_run(run_dir, rules, overrides, oracle_tol, proxy):
                row["source"] = str(source)
                extra += [k for k in row if k not in COLUMNS and k not in extra]
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS + extra)


def _default_rule() -> str:
    from growth.config.schema import StopConfig

    return StopConfig().rule


# ---------------------------------------------------------------- output


def _real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _pct(x: Any) -> str:
    return f"{100 * x:.2f}%" if _real(x) else "-"


def format_table(df: pd.DataFrame) -> str:
    """The replay as a readable fixed-width table."""
    if df.empty:
        return "(no runs)"

    def num(x: Any, fmt: str) -> str:
        return format(x, fmt) if _real(x) else "-"

    shown = pd.DataFrame({
        "run": df["run"],
        "rule": df["rule"],
        "settings": df["settings"],
        "round": [num(r, ".0f") for r in df["discovered_round"]],
        "density": [_pct(d) for d in df["discovered_density"]],
        "cost": [num(c, ".2f") for c in df["cost_dense_runs"]],
        "recorded": [num(r, ".0f") for r in df["recorded_round"]],
        "oracle": [_pct(d) for d in df["oracle_density"]],
        "steps": [num(s, "+.2f") for s in df["error_steps"]],
        "shortfall": [num(100 * s, ".2f") + " pts" if _real(s) else "-" for s in df["val_shortfall"]],
        "reason": df["reason"],
    })
    if (df["proxy"] != "proxy_accuracy").any():
        shown.insert(3, "proxy", df["proxy"])
    if (df["status"].fillna("") != "finished").any():
        shown.insert(1, "status", df["status"].fillna("").astype(str))
    right = {"round", "density", "cost", "recorded", "oracle", "steps", "shortfall"}
    cells = [[str(c) for c in shown.columns]] + [[str(v) for v in row] for row in shown.itertuples(index=False)]
    widths = [max(len(r[j]) for r in cells) for j in range(len(shown.columns))]
    lines = ["  ".join(c.rjust(w) if name in right else c.ljust(w) for c, w, name in zip(r, widths, shown.columns)).rstrip()
             for r in cells]
    note = ("round, density: where the rule stopped (the first round it fired); cost: the growth cost there plus one full "
            "training, in dense runs; recorded: the run's own discovered round; oracle, steps, shortfall: against the "
            "run's full-training curve (validation accuracy), for runs that have one.")
    return "\n".join(lines) + "\n\n" + textwrap.fill(note, 100)


def rule_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per path given, dataset, method, rule, settings and proxy over the runs (seeds): the
    discovered densities and errors in seed order, the worst error and shortfall, the spread
    (largest / smallest discovered density), the mean cost and how many runs the rule fired on."""
    keys = ["source", "dataset", "method", "rule", "settings", "proxy"]
    rows = []
    for group, part in df.fillna({"source": "", "dataset": "", "method": ""}).groupby(keys, sort=False):
        dens = [d for d in part["discovered_density"] if _real(d)]
        errs = [e for e in part["error_steps"] if _real(e)]
        short = [s for s in part["val_shortfall"] if _real(s)]
        rows.append({
            **dict(zip(keys, group)), "runs": len(part), "fired": int(part["fired"].sum()),
            "discovered": ", ".join(f"{100 * d:.1f}" for d in part["discovered_density"] if _real(d)),
            "errors": ", ".join(f"{e:+.0f}" for e in errs),
            "worst_error": max((abs(e) for e in errs), default=math.nan),
            "within_2_steps": sum(abs(e) <= 2 + 1e-9 for e in errs) if errs else math.nan,
            "worst_shortfall": max(short, default=math.nan),
            "spread": max(dens) / min(dens) if dens and min(dens) > 0 else math.nan,
            "cost": float(pd.to_numeric(part["cost_dense_runs"]).mean()),
        })
    return pd.DataFrame(rows)


def format_summary(summary: pd.DataFrame) -> str:
    """The per-rule summary as a markdown table (densities in %, shortfall in points)."""
    if summary.empty:
        return "(no runs)"

    def num(x: Any, fmt: str) -> str:
        return format(x, fmt) if _real(x) else "-"

    header = ("| runs | dataset | rule | settings | proxy | discovered (%) | error (steps) | worst | within 2 | "
              "worst shortfall (points) | spread | cost | fired |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in summary.itertuples(index=False):
        lines.append(
            f"| {r.source} | {r.dataset} | {r.rule} | {r.settings} | {r.proxy} | {r.discovered} | {r.errors or '-'} | "
            f"{num(r.worst_error, '.0f')} | {num(r.within_2_steps, '.0f')}/{r.runs if r.errors else '-'} | "
            f"{num(100 * r.worst_shortfall if _real(r.worst_shortfall) else math.nan, '.2f')} | {num(r.spread, '.2f')} | "
            f"{num(r.cost, '.2f')} | {r.fired}/{r.runs} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.replay",
        description="Re-decide stop rules on the recorded rounds of finished growth runs (no training): where each "
        "rule, with the given settings, would have stopped, what that discovery cost and, for runs with a full "
        "curve, how far it is from the oracle density.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, study directories or results roots")
    parser.add_argument("--rule", action="append", default=None, metavar="NAME",
                        help="a registered stop rule (growth.kinds.STOP_RULES); repeatable; default: each run's own")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                        help="override a growth.stop setting of the runs (tol, confirm, min_points, ...); repeatable")
    parser.add_argument("--oracle-tol", type=float, default=None,
                        help="tolerance of the oracle density (default: each run's own growth.stop.tol)")
    parser.add_argument("--proxy", default="proxy_accuracy", metavar="COLUMN",
                        help=f"the recorded signal the rules read as the proxy accuracy: one of {list(PROXY_COLUMNS)} "
                        "(default proxy_accuracy, what the run itself decided on)")
    parser.add_argument("--summary", action="store_true",
                        help="print one markdown row per path given, dataset, rule, settings and proxy (over its runs: the "
                        "seeds) instead of one row per run")
    parser.add_argument("--csv", type=Path, default=None, metavar="PATH", help="also write the table as CSV")
    args = parser.parse_args(argv)
    try:
        table = replay(args.paths, args.rule, parse_sets(args.sets), args.oracle_tol, args.proxy)
        if args.csv is not None:
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.csv, index=False)
    except (ReplayError, OSError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    try:
        print(format_summary(rule_summary(table)) if args.summary else format_table(table))
        if args.csv is not None:
            print(f"\n{len(table)} rows written to {args.csv}")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
