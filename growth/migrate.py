"""Rename run directories named by an earlier identity rule to the current one.

    python -m growth.migrate RESULTS_ROOT            # say what would be renamed
    python -m growth.migrate RESULTS_ROOT --apply    # rename

Before, a run directory's hash covered every resolved key, defaults included, so any new key
renamed every run. Now it covers the settings that differ from their schema defaults
(growth.records.identity), and a baseline's leaves out the growth-only sections. This finds the
run directories directly under RESULTS_ROOT named by this framework (the earlier rule's hash of
their own config.yaml, or `<method>-<dataset>-<model>-s<seed>-<hash>` of it) whose name is not the
one the current rule gives their config.yaml, and renames each to it. A matched run's budget.reference pointing at a renamed run is rewritten in its
config.yaml first (its identity includes it), and studies' study.json follow the renames. It
refuses, renaming nothing, when a new name is taken or two runs would get the same name.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from growth.errors import ConfigError


@dataclass
class Rename:
    old: Path
    new: Path
    reference_fix: tuple[str, str] | None = None  # (old, new) budget.reference


def typed_config(container: dict):
    """A stored config.yaml as the current schemas type it (each section by its registry entry)."""
    from growth import kinds
    from growth.config.schema import Config

    cfg = OmegaConf.structured(Config)
    sections = {"dataset": kinds.DATASETS, "model": kinds.MODELS, "method": kinds.METHODS, "logger": kinds.LOGGERS}
    for section, registry in sections.items():
        name = (container.get(section) or {}).get("name")
        schema = registry.entry(name).schema if name in registry else None
        if schema is not None:
            cfg[section] = OmegaConf.structured(schema)
    stop = ((container.get("growth") or {}).get("stop")) or {}
    if stop:  # the stop section by the schema that holds its keys: its rule's, or its group's choice
        import dataclasses

        rule = stop.get("rule")
        schemas = ([kinds.STOP_RULES.entry(rule).schema] if rule in kinds.STOP_RULES else []) + [
            e.schema for e in kinds.STOP_RULES.entries()]
        for schema in schemas:
            if dataclasses.is_dataclass(schema) and set(stop) <= {f.name for f in dataclasses.fields(schema)}:
                cfg.growth.stop = OmegaConf.structured(schema)
                break
    return OmegaConf.merge(cfg, {k: v for k, v in container.items() if k != "defaults"})


def _name_parts(name: str) -> tuple[str, str] | None:
    stem, sep, digest = name.rpartition("-")
    return (stem, digest) if sep and len(digest) == 10 else None


def _stem(container: dict) -> str | None:
    try:
        return f"{container['method']['name']}-{container['dataset']['name']}-{container['model']['name']}-s{container['seed']}"
    except (KeyError, TypeError):
        return None


def plan(root: Path) -> list[Rename]:
    from growth.records.identity import legacy_identity, run_name

    root = Path(root)
    renames: list[Rename] = []
    by_old: dict[str, Rename] = {}
    containers: dict[Path, dict] = {}
    for config_path in sorted(root.glob("*/config.yaml")):
        run_dir = config_path.parent
        parts = _name_parts(run_dir.name)
        if parts is None:
            continue
        container = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
        if parts[1] != legacy_identity(container) and parts[0] != _stem(container):
            continue  # not a run directory named by this framework (e.g. output.run_dir)
        containers[run_dir] = container
    # References first: a matched run's identity includes its budget.reference, which moves.
    order = sorted(containers, key=lambda d: (containers[d].get("budget") or {}).get("reference") is not None)
    for run_dir in order:
        container = containers[run_dir]
        fix = None
        ref = (container.get("budget") or {}).get("reference")
        if ref is not None:
            # By name: a relative reference was relative to wherever the study was launched.
            moved = by_old.get(Path(ref).name)
            if moved is not None:
                new_ref = str(moved.new if Path(ref).is_absolute() else Path(ref).parent / moved.new.name)
                container["budget"]["reference"] = new_ref
                fix = (ref, new_ref)
        new = run_dir.parent / run_name(typed_config(container))
        if new == run_dir:
            continue
        item = Rename(run_dir, new, fix)
        renames.append(item)
        by_old[run_dir.name] = item
    targets: dict[Path, Path] = {}
    for item in renames:
        if item.new in targets:
            raise ConfigError(f"{item.old.name} and {targets[item.new].name} would both become {item.new.name}: nothing renamed")
        if item.new.exists():
            raise ConfigError(f"{item.old.name} would become {item.new.name}, which exists already: nothing renamed")
        targets[item.new] = item.old
    return renames


def apply(root: Path, renames: list[Rename]) -> None:
    from growth.records import atomic_write_json, atomic_write_text

    for item in renames:
        if item.reference_fix is not None:
            config_path = item.old / "config.yaml"
            text = OmegaConf.load(config_path)
            text.budget.reference = item.reference_fix[1]
            atomic_write_text(config_path, OmegaConf.to_yaml(text))
        item.old.rename(item.new)
    moved = {item.old.name: item.new.name for item in renames}
    for study_json in Path(root).glob("studies/*/study.json"):
        data = json.loads(study_json.read_text(encoding="utf-8"))
        changed = False
        for job in data.get("jobs", []):
            if job.get("run_dir") and Path(job["run_dir"]).name in moved:
                job["run_dir"] = str(Path(job["run_dir"]).parent / moved[Path(job["run_dir"]).name])
                changed = True
            overrides = [_moved_override(o, moved) for o in job.get("overrides", [])]
            changed |= overrides != job.get("overrides", [])
            job["overrides"] = overrides
        if changed:
            atomic_write_json(study_json, data)


def _moved_override(override: str, moved: dict[str, str]) -> str:
    key, sep, value = override.partition("=")
    if key == "budget.reference" and sep and Path(value).name in moved:
        return f"{key}={Path(value).parent / moved[Path(value).name]}"
    return override


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m growth.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a results root (output.root)")
    parser.add_argument("--apply", action="store_true", help="rename (without it, only say what would be renamed)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a directory", file=sys.stderr)
        return 2
    try:
        renames = plan(args.root)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for item in renames:
        note = f"  (budget.reference -> {item.reference_fix[1]})" if item.reference_fix else ""
        print(f"{'renamed' if args.apply else 'would rename'} {item.old.name} -> {item.new.name}{note}")
    if args.apply:
        apply(args.root, renames)
    print(f"{len(renames)} run director{'y' if len(renames) == 1 else 'ies'} "
          f"{'renamed' if args.apply else 'to rename (run again with --apply)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
