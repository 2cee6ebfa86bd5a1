"""Hydra's config store, derived from the schema and the registries: every registered entry's
schema is stored in its kind's group as ``<name>_schema`` (conf/<group>/<name>.yaml names it in
its defaults list), beside the base schema of each group."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from growth.config.schema import Config, DatasetConfig, LoggerConfig, MethodConfig, ModelConfig, StudyConfig, TrainerConfig

BASE_SCHEMAS = {
    ("dataset", "dataset_schema"): DatasetConfig,
    ("model", "model_schema"): ModelConfig,
    ("method", "method_schema"): MethodConfig,
    ("trainer", "trainer_schema"): TrainerConfig,
    ("logger", "logger_schema"): LoggerConfig,
    ("study", "study_schema"): StudyConfig,
}


def register_configs() -> None:
    """Store the schemas (importing every registry's plugins first, so their schemas are known)."""
    from growth import kinds  # noqa: F401  (creates the registries)
    from growth.registry import load_all

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for (group, name), node in BASE_SCHEMAS.items():
        cs.store(group=group, name=name, node=node)
    for registry in load_all().values():
        if registry.group is None:
            continue
        for entry in registry.entries():
            if entry.schema is not None:
                cs.store(group=registry.group, name=f"{entry.name}_schema", node=entry.schema)
