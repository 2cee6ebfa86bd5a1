"""The config: schema (the leaf every section's dataclass derives from), the value checks fields
carry, Hydra's config store (growth.config.store) and validation (growth.config.validation).

Only the leaf modules are imported here, so a model, dataset or method module can import its base
schema from ``growth.config`` without pulling in the validators that look at every component.
"""

from growth.config.checks import Check, key
from growth.config.schema import (
    BudgetConfig,
    Config,
    DatasetConfig,
    ExtensiveConfig,
    GrowthConfig,
    LoggerConfig,
    MethodConfig,
    ModelConfig,
    OutputConfig,
    SlurmConfig,
    StopConfig,
    StudyConfig,
    TimingConfig,
    TrainerConfig,
)

__all__ = [
    "BudgetConfig", "Check", "Config", "DatasetConfig", "ExtensiveConfig", "GrowthConfig", "LoggerConfig",
    "MethodConfig", "ModelConfig", "OutputConfig", "SlurmConfig", "StopConfig", "StudyConfig", "TimingConfig",
    "TrainerConfig", "key",
]
