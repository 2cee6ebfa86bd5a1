"""A run's identity: the settings that differ from their schema defaults, plus the method.

A run directory is named ``<method>-<dataset>-<model>-s<seed>-<hash>``, the hash taken over the
settings that differ from their schema's defaults (open_lth's rule), less the keys that never
change what a run computes (where results go, logging, devices, threads). So adding a key with a
default renames no finished run: a relaunched sweep skips them and a matched budget finds its
reference. Changing a default renames every run that relied on it, on purpose. Run directories
named by the earlier rule (a hash of every resolved key) are renamed by ``python -m growth.migrate``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

# Keys that never change what a run computes: excluded from the run's identity.
IDENTITY_EXCLUDED = (
    "output", "logger", "trainer.device", "trainer.cpu_threads", "trainer.dist_timeout_min", "dry_run", "study", "sweep",
    "dataset.root", "dataset.download", "dataset.num_workers", "dataset.verify_images",
)
_NOT_SETTINGS = ("defaults", "hydra")


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _schema_defaults(node: DictConfig) -> dict[str, Any] | None:
    kind = OmegaConf.get_type(node)
    if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
        return None
    defaults = {}
    for f in dataclasses.fields(kind):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            defaults[f.name] = _plain(f.default_factory())  # type: ignore[misc]
    return defaults


def non_default_settings(node: DictConfig, path: str = "") -> dict[str, Any]:
    """The settings of `node` (resolved) that differ from its schema's defaults, nested as in the
    config; keys of IDENTITY_EXCLUDED left out. A section without a schema counts whole."""
    defaults = _schema_defaults(node)
    out: dict[str, Any] = {}
    for key in node:
        key = str(key)
        full = f"{path}.{key}" if path else key
        if key in _NOT_SETTINGS or full in IDENTITY_EXCLUDED:
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and _schema_defaults(child) is not None:
            sub = non_default_settings(child, full)
            if sub:
                out[key] = sub
            continue
        value = _plain(node[key])
        if defaults is None or key not in defaults or _plain(defaults[key]) != value:
            out[key] = value
    return out


# Sections only methods that run the growth loop read: another method's identity leaves them out,
# so a growth default changed (the stop rule, the proxy) renames no baseline run.
GROWTH_ONLY_SECTIONS = ("growth", "extensive")


def _reads_growth_sections(method: str) -> bool:
    from growth.kinds import METHODS

    if method not in METHODS:
        return True
    return bool(METHODS.entry(method).info.get("grows", True))


def run_identity(cfg: DictConfig) -> str:
    names = {section: str(cfg[section].name) for section in ("method", "dataset", "model")}
    settings = non_default_settings(cfg)
    if not _reads_growth_sections(names["method"]):
        settings = {k: v for k, v in settings.items() if k not in GROWTH_ONLY_SECTIONS}
    text = json.dumps({"names": names, "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.method.name}-{cfg.dataset.name}-{cfg.model.name}-s{cfg.seed}-{run_identity(cfg)}"


def run_dir_for(cfg: DictConfig) -> Path:
    if cfg.output.run_dir:
        return Path(cfg.output.run_dir)
    return Path(cfg.output.root) / run_name(cfg)


# ---------------------------------------------------------------- the earlier rule (for migration)


def legacy_identity(container: dict) -> str:
    """The identity of the earlier rule: a hash of every resolved key (less the same exclusions)."""
    container = json.loads(json.dumps(container))
    container.pop("defaults", None)
    container.pop("hydra", None)
    for key in IDENTITY_EXCLUDED:
        node = container
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part, {})
        node.pop(parts[-1], None)
    text = json.dumps(container, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
