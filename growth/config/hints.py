"""Hints for keys that do not exist: which key was meant, and the valid keys of its section."""

from __future__ import annotations

import dataclasses
import difflib

from omegaconf import DictConfig, OmegaConf


def _schema_fields(node: DictConfig) -> list[str] | None:
    """The keys a section's dataclass declares; None for a section without a schema."""
    kind = OmegaConf.get_type(node)
    return [f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind) else None


def _key_hint(path: str, given: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(given, valid, n=1)
    where = path or "the top level"
    guess = f"did you mean {'.'.join(p for p in (path, close[0]) if p)}? " if close else ""
    return f"{'.'.join(p for p in (path, given) if p)} is not a key of {where}: {guess}valid keys are {sorted(valid)}"


def unknown_key_problems(cfg: DictConfig, path: str = "") -> list[str]:
    """Keys no schema declares (a `+key=value` override adds one past Hydra's own check)."""
    problems = []
    fields = _schema_fields(cfg)
    for key in cfg:
        if key in ("hydra", "defaults"):
            continue
        if fields is not None and key not in fields:
            problems.append(_key_hint(path, str(key), fields))
            continue
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and _schema_fields(child) is not None:
            problems += unknown_key_problems(child, f"{path}.{key}" if path else str(key))
    return problems


def override_hints(args: list[str], compose) -> list[str]:
    """For command-line overrides Hydra refused: which key was meant and which keys are valid.

    `compose(overrides)` composes the config (it is given the group choices among `args`)."""
    groups, keys = [], []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.lstrip("+~").split("=", 1)
        if key.startswith("hydra") or "/" in key:
            continue
        (keys if "." in key else groups).append((key, value.split(",")[0]))
    try:
        base = compose([f"{k}={v}" for k, v in groups])
    except Exception:
        return []
    hints = []
    for key, _ in keys:
        node, path = base, []
        for part in key.split("."):
            if not isinstance(node, DictConfig):
                break
            if part not in node:
                valid = _schema_fields(node) or [str(k) for k in node]
                hints.append(_key_hint(".".join(path), part, valid))
                break
            node, path = node._get_node(part), path + [part]
    return hints
