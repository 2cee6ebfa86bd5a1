"""What the records say of each method, so that analysis never names one.

A method writes into its run's summary.json (and every curve.csv row) its ``family`` (``growth``,
``fixed_density``, ``pruning`` or ``dense``), display ``label`` and ``short_label``, ``color``
(or null: a palette colour is picked), ``headline`` (the method the paper is about) and
``order`` (legends and tables, smaller first). Figure membership, the dense reference, ordering,
labels and colours all come from these fields; the ``method`` column stays the series key.

Records written before these fields existed still read: the family is inferred from the
record's shape (growth rounds -> growth, pruning levels -> pruning, a maskless run at density 1
-> dense, anything else -> fixed_density), the label is the method's name, and headline is
unknown (then every growth method counts as headline, so none disappears from the figures).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

FAMILIES = ("growth", "fixed_density", "pruning", "dense")
CURVE_PHASES = ("extensive", "level", "train")
META_COLUMNS = ["family", "label", "short_label", "color", "headline", "order"]
# Where a method without a recorded `order` goes: by family, then headline first, then by name.
_FAMILY_RANK = {f: i for i, f in enumerate(("growth", "pruning", "fixed_density", "dense"))}
# Colours for methods that record none, given in the sorted order of their names.
PALETTE = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray", "darkblue", "darkgreen", "goldenrod", "teal", "indigo", "crimson"]


def _num(value: Any) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def phase_of(point: Mapping[str, Any]) -> str:
    """A curve row's phase: its recorded ``phase``, else from its ``point`` name (``extensive:3``,
    ``level:2``, ``train``), else from which of ``level`` / ``round`` it has."""
    if point.get("phase") in CURVE_PHASES:
        return str(point["phase"])
    name = str(point.get("point") or "")
    if name.startswith("extensive"):
        return "extensive"
    if name.startswith("level"):
        return "level"
    if name == "train":
        return "train"
    if point.get("level") not in (None, ""):
        return "level"
    if point.get("round") not in (None, ""):
        return "extensive"
    return "train"


def infer_family(summary: Mapping[str, Any], rounds: Sequence[Mapping], curve: Sequence[Mapping]) -> str:
    """The family of a run whose records do not say it, from their shape."""
    if rounds or summary.get("discovered_density") is not None or "discovered_round" in summary or "growth_cost" in summary:
        return "growth"
    phases = {phase_of(c) for c in curve}
    if "levels" in summary or "level" in phases:
        return "pruning"
    if "extensive" in phases:
        return "growth"
    densities = [d for d in (_num(c.get("density")) for c in curve) if math.isfinite(d)]
    if not curve and math.isfinite(_num(summary.get("density"))):
        densities = [_num(summary.get("density"))]
    # A run trained on given masks (its summary names their file) is fixed-density, even at density 1.
    maskless = not any(str(k).startswith("masks") for k in summary)
    if maskless and densities and all(math.isclose(d, 1.0, rel_tol=1e-9) for d in densities):
        return "dense"
    return "fixed_density"


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _flag(value: Any) -> bool | None:
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return bool(value)


def record_meta(method: Any, summary: Mapping[str, Any], rounds: Sequence[Mapping], curve: Sequence[Mapping]) -> dict:
    """The method fields of one run's table rows: recorded (summary first, then curve rows), else inferred."""
    row = next((c for c in curve if c.get("family") or c.get("label")), {})
    family = summary.get("family") or row.get("family")
    if family not in FAMILIES:
        family = infer_family(summary, rounds, curve)
    label = _text(summary.get("label") or row.get("label")) or _text(method)
    order = _num(summary.get("order"))
    return {
        "family": family,
        "label": label,
        "short_label": _text(summary.get("short_label")) or label,
        "color": _text(summary.get("color")),
        "headline": _flag(summary.get("headline")),
        "order": int(order) if math.isfinite(order) else None,
    }


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str
    label: str
    short_label: str
    color: str
    headline: bool | None  # None: the records do not say
    order: int | None

    def sort_key(self) -> tuple:
        return (self.order is None, self.order or 0, _FAMILY_RANK.get(self.family, len(_FAMILY_RANK)), not self.headline, self.name)


def _family_from_rows(g: pd.DataFrame) -> str:
    """For a table without a family column (written before it existed): from its phases."""
    phases = set(g["phase"].dropna()) - {"run"}
    if phases & {"growth round", "extensive"}:
        return "growth"
    if "level" in phases:
        return "pruning"
    dens = g.loc[g["phase"] == "train", "density"].dropna()
    return "dense" if not dens.empty and bool((dens - 1.0).abs().lt(1e-9).all()) else ("fixed_density" if phases else "")


def _col(g: pd.DataFrame, name: str) -> pd.Series:
    return g[name] if name in g.columns else pd.Series([None] * len(g), index=g.index, dtype=object)


def _first(values: Iterable[Any], skip: Iterable[str] = ()) -> str:
    skip = set(skip)
    texts = [_text(v) for v in values]
    return next((t for t in texts if t and t not in skip), next((t for t in texts if t), ""))


def method_info(table: pd.DataFrame) -> dict[str, MethodInfo]:
    """Per method of the table: what its records say (finished runs first), colours resolved."""
    found = {}
    for method, g in table.dropna(subset=["method"]).groupby("method", sort=True):
        method = str(method)
        fin = g[g["status"] == "finished"] if "status" in g.columns else g
        rows = pd.concat([fin, g.drop(fin.index)])
        families = [f for f in _col(rows, "family") if _text(f) in FAMILIES]
        family = families[0] if families else _family_from_rows(rows)
        label = _first(_col(rows, "label"), skip=[method]) or method
        flags = [f for f in map(_flag, _col(rows, "headline")) if f is not None]
        orders = pd.to_numeric(_col(rows, "order"), errors="coerce").dropna()
        found[method] = dict(
            name=method, family=family, label=label, short_label=_first(_col(rows, "short_label"), skip=[method]) or label,
            color=_first(_col(rows, "color")), headline=(any(flags) if flags else None),
            order=int(orders.iloc[0]) if not orders.empty else None,
        )
    for f in found.values():
        if not f["color"] and f["family"] == "dense":
            f["color"] = "black"  # the dense reference is drawn in black
    taken = {f["color"] for f in found.values() if f["color"]}
    free = [c for c in PALETTE if c not in taken] or PALETTE
    for i, name in enumerate(sorted(n for n, f in found.items() if not f["color"])):
        found[name]["color"] = free[i % len(free)]
    return {name: MethodInfo(**f) for name, f in found.items()}


def info_of(info: Mapping[str, MethodInfo], method: str) -> MethodInfo:
    """The method's info (for a method the table never saw: its name, no family)."""
    return info.get(method) or MethodInfo(method, "", method, method, PALETTE[0], None, None)


def ordered(info: Mapping[str, MethodInfo], methods: Iterable[str]) -> list[str]:
    return sorted(set(methods), key=lambda m: info_of(info, m).sort_key())


def of_family(info: Mapping[str, MethodInfo], *families: str) -> list[str]:
    return ordered(info, [m for m, i in info.items() if i.family in families])


def headline_growth(info: Mapping[str, MethodInfo]) -> list[str]:
    """Growth methods recorded as headline; if none is, those whose records do not say (old records)."""
    growth = of_family(info, "growth")
    marked = [m for m in growth if info[m].headline]
    return marked or [m for m in growth if info[m].headline is None]
