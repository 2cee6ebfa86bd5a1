"""The registry of every kind of plugin, in one leaf module: a plugin module imports its kind's
registry from here and registers itself; validation and Hydra's store read all of them.

| kind | selected by | Hydra group (schemas stored as ``<name>_schema``) | found in |
|---|---|---|---|
| method | ``method.name`` | method | ``growth.grow``, ``growth.fixed``, every module of ``baselines`` |
| score | ``method.score`` (growth methods) | - | ``growth.scores`` |
| seed_builder | ``growth.seed_builder`` | - | ``growth.seeds`` |
| stop_rule | ``growth.stop.rule`` | growth/stop | ``growth.stopping`` |
| dataset | ``dataset.name`` | dataset | ``growth.data.sets`` |
| model | ``model.name`` | model | ``growth.models`` |
| logger | ``logger.name`` | logger | ``growth.loggers`` |
| executor | ``study.executor`` | - | ``growth.study`` |

Packages named in GROWTH_PLUGINS are searched by every registry too (one's own plugins outside
this repository).
"""

from __future__ import annotations

from growth.registry import Registry

# "baselines" is named, not imported: growth/ never imports the layers above it, it only finds
# the plugins they register when a registry is first asked for its entries.
METHODS = Registry("method", "method.name", group="method", packages=["growth.grow", "baselines"])
SCORES = Registry("score", "method.score", packages=["growth.scores"])
SEED_BUILDERS = Registry("seed_builder", "growth.seed_builder", packages=["growth.seeds"])
STOP_RULES = Registry("stop_rule", "growth.stop.rule", group="growth/stop", packages=["growth.stopping"])
DATASETS = Registry("dataset", "dataset.name", group="dataset", packages=["growth.data.sets"])
MODELS = Registry("model", "model.name", group="model", packages=["growth.models"])
LOGGERS = Registry("logger", "logger.name", group="logger", packages=["growth.loggers"])
EXECUTORS = Registry("executor", "study.executor", packages=["growth.study"])
