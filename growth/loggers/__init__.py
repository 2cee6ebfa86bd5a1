"""Run loggers: mirrors of the run records to an experiment tracker.

The run directory stays the source of truth; a logger only mirrors what the records hold, and a
failing logger must never stop or slow training. Methods call the hooks of
:class:`RunLogger` at their boundaries (a growth round, an epoch of fixed-length training, the
end of the run).

| ``logger.name`` | logger | schema (conf/logger/<name>.yaml) |
|---|---|---|
| ``none`` | no-op: local records only (base) | ``none_schema`` (growth.config.LoggerConfig) |
| ``wandb`` | one Weights & Biases run per run, offline by default (wandb_logger) | ``wandb_schema`` |

Each logger registers itself on growth.kinds.LOGGERS in its own module; the registry finds
them by importing this package's modules, so a new logger is one new module here.
"""

from growth.loggers.base import RunLogger, build_logger, flat_config, flatten, no_logger
from growth.loggers.wandb_logger import (
    WANDB_ID_FILE,
    WandbLogger,
    WandbLoggerConfig,
    WandbMode,
    derive_wandb_id,
    wandb_run_id,
)

__all__ = [
    "WANDB_ID_FILE", "RunLogger", "WandbLogger", "WandbLoggerConfig", "WandbMode", "build_logger",
    "derive_wandb_id", "flat_config", "flatten", "no_logger", "wandb_run_id",
]
