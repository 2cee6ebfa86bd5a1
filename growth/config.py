"""Structured-config schema: the dataclasses Hydra validates every composed config against.

Every default that METHOD.md calls "ours" is a key here, so a user can set the paper's exact value.
A typo or a wrongly typed value fails when Hydra composes the config; value ranges and
contradictions are checked by :func:`validate` before a run directory is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from growth.errors import ConfigError


@dataclass
class DatasetConfig:
    name: str = MISSING
    # Data root; null means the dataset's own default (the embedded digits need none).
    root: Optional[str] = None
    # Validation split carved from the training set (stratified, seeded): proxy accuracy and
    # adaptive timing use it; the test split is never used for decisions.
    val_fraction: float = 0.1
    # Only for datasets without an official test split (the embedded digits).
    test_fraction: float = 0.2
    split_seed: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [100, 100])


@dataclass
class TrainerConfig:
    # The full schedule: one dense training run of this length is one unit of cost.
    epochs: int = 100
    batch_size: int = 64
    eval_batch_size: int = 1024
    # sgd (momentum, Nesterov) | adam (L2 weight decay added to the gradient) | adamw (decoupled
    # weight decay, Loshchilov & Hutter 2019: the usual choice for ViTs).
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    # Adam/AdamW moment coefficients (beta1, beta2); torch's and most recipes' default.
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # Which parameters weight decay applies to: all | weights (the growable Linear and Conv
    # weights only; biases, norm scales and position embeddings undecayed, as ViT recipes do).
    decay_scope: str = "all"
    # Learning-rate schedule of extensive (full) training: cosine | step | constant.
    schedule: str = "cosine"
    # For schedule=step: epochs at which the lr is multiplied by gamma.
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    # Linear warm-up of the first epochs of every scheduled training (not of growth rounds, which
    # train at a constant round_lr): epoch e < W trains at the schedule's lr x (e + 1) / (W + 1),
    # so the lr ramps up in W steps and the schedule itself runs unchanged from epoch W. A
    # training of another length scales W with its length, like the step milestones. 0: none.
    warmup_epochs: int = 0
    # Speed (they change numerics slightly, so they are part of a run's identity):
    # fp32 | bf16: bf16 autocast for the training forward and loss and for evaluation; weights,
    # gradients, optimizer state and PWMP scoring (float64, outside autocast) are unaffected.
    precision: str = "fp32"
    # Model and image batches in channels-last memory format (conv models; faster convolutions
    # with bf16/TF32 on recent GPUs). Masks, state dicts and scores are unaffected.
    channels_last: bool = False
    # torch.compile the training forward (the first epoch pays the compilation; evaluation and
    # scoring run the plain model). Needs a C++ compiler on the CPU, Triton on CUDA.
    compile: bool = False
    device: str = "auto"  # auto (cuda when present) | cpu | cuda | cuda:N
    # Threads for CPU runs; 0 keeps torch's default. Small models run no faster on more threads,
    # and several runs sharing a machine slow down sharply when each spins on every core.
    cpu_threads: int = 0
    # Growth rounds train at this lr (constant); null means trainer.lr.
    round_lr: Optional[float] = None
    # Data-parallel training of one run (growth/distributed.py): processes per node and nodes.
    # The launcher starts them (hydra/launcher=slurm|local, study.executor=slurm, or torchrun);
    # trainer.batch_size stays the global batch, split evenly over the processes.
    devices: int = 1
    nodes: int = 1
    # How long a rank waits for the others in a collective before the run fails.
    dist_timeout_min: float = 30.0


@dataclass
class TimingConfig:
    # fixed: N epochs per round; adaptive: validation early stopping inside each round.
    mode: str = "fixed"
    epochs: int = 3
    eval_every: int = 20  # adaptive: batches between validation evaluations
    patience: int = 3  # adaptive: evaluations without improvement before the round ends
    min_delta: float = 0.001  # adaptive: improvement in validation accuracy that counts
    max_epochs: int = 10  # adaptive: cap on a round's length


@dataclass
class StopConfig:
    # logistic: the logistic-fit rule of METHOD.md; none: grow until max_density/max_rounds.
    rule: str = "logistic"
    tol: float = 0.005
    confirm: int = 3
    min_points: int = 4
    # Record the discovered density where the rule first fires but keep growing to
    # growth.max_density / growth.max_rounds (a full performance-density curve, as in a study).
    keep_growing: bool = False


@dataclass
class GrowthConfig:
    seed_density: float = 0.01
    # phew: PHEW random walks on the initial weights; random: uniform per layer.
    seed_builder: str = "phew"
    # fan_in: scale each unit's surviving incoming weights by sqrt(fan_in / active fan_in).
    seed_rescale: str = "fan_in"
    growth_ratio: float = 1.25
    temperature: float = 1.0
    max_density: float = 1.0
    max_rounds: int = 40
    timing: TimingConfig = field(default_factory=TimingConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    # Batches whose gradients are averaged for gradient growth (method=gg).
    gradient_batches: int = 4


@dataclass
class ExtensiveConfig:
    # discovered: train the discovered density; all: every snapshot; none: skip.
    which: str = "discovered"
    # continue: from the snapshot's weights; rewind: the initial weights; reinit: fresh weights.
    init: str = "continue"


@dataclass
class MethodConfig:
    name: str = MISSING


@dataclass
class GrowthMethodConfig(MethodConfig):
    # Score over absent edges used to grow: pwmp | random | gradient.
    score: str = "pwmp"
    # sample: proportional to score^(1/temperature), without replacement; topk: the k best.
    selection: str = "sample"


@dataclass
class FixedDensityConfig(MethodConfig):
    # Fraction of growable edges kept throughout training.
    density: float = 0.1
    # fan_in: scale each unit's surviving incoming weights by sqrt(fan_in / active fan_in), as
    # for growth seeds, so sparse baselines start with the dense initialisation's scale; none.
    rescale: str = "fan_in"


@dataclass
class MasksFileConfig(MethodConfig):
    # A masks file (growth.masks.save_masks) or a growth run's snapshots/round_NNN.pt: the mask
    # to train; its density is the run's density.
    file: Optional[str] = None
    # As for the other fixed-density methods: fan_in rescales the surviving initial weights.
    rescale: str = "fan_in"


@dataclass
class RiglConfig(FixedDensityConfig):
    # erk: Erdos-Renyi-Kernel layer densities; uniform: every layer at `density`.
    distribution: str = "erk"
    delta_t: int = 100  # optimizer steps between mask updates
    drop_fraction: float = 0.3  # at the first update, decayed by a cosine to 0 at t_end
    t_end: float = 0.75  # fraction of training after which the mask is frozen


@dataclass
class ImpConfig(MethodConfig):
    prune_fraction: float = 0.2  # of the remaining weights, per level
    min_density: float = 0.01
    # Epochs of training after each pruning; null means a quarter of trainer.epochs.
    level_epochs: Optional[int] = None
    # global: one magnitude threshold over all layers; layer: prune each layer by the fraction.
    scope: str = "global"
    # none: continue from the pruned weights (IMP-C); init: rewind to the initial weights;
    # epoch: rewind to the weights after `rewind_epoch` epochs of the dense training.
    rewind: str = "none"
    rewind_epoch: int = 1


@dataclass
class BudgetConfig:
    # Take a fixed-density run's length from a finished reference run of this method (same
    # dataset, model and seed in output.root): its cumulative cost at this run's density.
    match: Optional[str] = None
    # Explicit reference run directory (needed only when several runs could match).
    reference: Optional[str] = None
    # Cost unit to match: epochs (in dense-run units) or flops.
    unit: str = "epochs"
    # Explicit length in epochs; null means trainer.epochs (or the matched budget).
    epochs: Optional[float] = None
    # Train at the density of the reference's growth round `snapshot` instead of
    # method.density (a study submits these before the reference has run). A round the
    # reference never reached makes the run a no-op that says so.
    snapshot: Optional[int] = None


@dataclass
class SlurmConfig:
    """Resources of every job a study submits to SLURM (GROWTH_SLURM_* set them per account)."""

    partition: Optional[str] = "${oc.env:GROWTH_SLURM_PARTITION,null}"
    account: Optional[str] = "${oc.env:GROWTH_SLURM_ACCOUNT,null}"
    qos: Optional[str] = "${oc.env:GROWTH_SLURM_QOS,null}"
    constraint: Optional[str] = "${oc.env:GROWTH_SLURM_CONSTRAINT,null}"
    time_min: int = "${oc.decode:${oc.env:GROWTH_SLURM_TIME_MIN,720}}"  # type: ignore[assignment]
    # GPUs per process: a run with trainer.devices=N gets N processes and N x this many GPUs a node.
    gpus_per_task: int = "${oc.decode:${oc.env:GROWTH_SLURM_GPUS,1}}"  # type: ignore[assignment]
    cpus_per_task: int = "${oc.decode:${oc.env:GROWTH_SLURM_CPUS,8}}"  # type: ignore[assignment]
    mem_gb: int = "${oc.decode:${oc.env:GROWTH_SLURM_MEM_GB,32}}"  # type: ignore[assignment]
    # Requeues after preemption or time-outs; a requeued run resumes from its checkpoint.
    max_num_timeout: int = 20
    # Extra sbatch arguments, e.g. {mail-type: END}.
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    # Where submitit keeps job files; null means <output.root>/slurm.
    folder: Optional[str] = None


@dataclass
class LoggerConfig:
    name: str = "none"


@dataclass
class OutputConfig:
    # Results root: every run gets its own directory below it, named by the run's identity.
    root: str = "results"
    # Explicit run directory; null derives it from the config (so a relaunch finds it).
    run_dir: Optional[str] = None
    # Print progress lines while training.
    progress: bool = True


@dataclass
class StudyConfig:
    # null: a single run; compare: the runs behind the paper's comparison figures.
    name: Optional[str] = None
    seeds: list[int] = field(default_factory=lambda: [0])
    # Growth methods: grown to max_density past their discovered density, every snapshot trained.
    growth_methods: list[str] = field(default_factory=lambda: ["pwmpr", "pwmp", "rg", "gg"])
    # Independent baselines (dense defines the cost unit; imp_c prunes down to its min_density).
    baselines: list[str] = field(default_factory=lambda: ["dense", "imp_c"])
    # Fixed-density methods run at the reference's snapshot densities with matched budgets.
    matched_methods: list[str] = field(default_factory=lambda: ["phew", "rigl"])
    reference: str = "pwmpr"
    # Overrides for one method's runs only; on the command line:
    # "study.method_overrides.imp_c=['method.min_density=0.05']"
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    max_density: float = 0.5
    # local: runs in this process (workers=1) or in local worker processes;
    # slurm: every run a SLURM job, the order expressed as job dependencies.
    executor: str = "local"
    workers: int = 1
    # slurm: after submitting, wait and report as jobs finish (otherwise return at once).
    wait: bool = False
    # slurm: seconds between polls while waiting.
    poll_seconds: float = 5.0
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class Config:
    defaults: list[Any] = field(default_factory=lambda: [])
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    extensive: ExtensiveConfig = field(default_factory=ExtensiveConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 0
    # Print what would run (jobs, resources, dependencies) and run or submit nothing.
    dry_run: bool = False


def register_configs() -> None:
    from growth.data import register_dataset_schemas
    from growth.loggers import register_logger_schemas
    from growth.models import register_model_schemas

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="model", name="mlp_schema", node=MLPConfig)
    # Options with settings of their own register a schema (a subclass of the group's base).
    register_dataset_schemas(cs)
    register_model_schemas(cs)
    register_logger_schemas(cs)
    cs.store(group="method", name="method_schema", node=MethodConfig)
    cs.store(group="method", name="growth_method_schema", node=GrowthMethodConfig)
    cs.store(group="method", name="fixed_density_schema", node=FixedDensityConfig)
    cs.store(group="method", name="rigl_schema", node=RiglConfig)
    cs.store(group="method", name="masks_file_schema", node=MasksFileConfig)
    cs.store(group="method", name="imp_schema", node=ImpConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(group="study", name="study_schema", node=StudyConfig)


CHOICES = {
    "trainer.optimizer": ("sgd", "adam", "adamw"),
    "trainer.precision": ("fp32", "bf16"),
    "trainer.decay_scope": ("all", "weights"),
    "trainer.schedule": ("cosine", "step", "constant"),
    "growth.timing.mode": ("fixed", "adaptive"),
    "growth.stop.rule": ("logistic", "none"),
    "growth.seed_builder": ("phew", "random"),
    "growth.seed_rescale": ("fan_in", "none"),
    "extensive.which": ("discovered", "all", "none"),
    "extensive.init": ("continue", "rewind", "reinit"),
    "method.score": ("pwmp", "random", "gradient"),
    "method.selection": ("sample", "topk"),
    "method.distribution": ("erk", "uniform"),
    "method.rescale": ("fan_in", "none"),
    "method.scope": ("global", "layer"),
    "method.rewind": ("none", "init", "epoch"),
    "budget.unit": ("epochs", "flops"),
}


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=True)


def model_fit_problems(cfg: DictConfig) -> list[str]:
    """The model's own checks against the dataset's input shape and class count, by building it on
    the meta device (no memory, no random draws) before anything is written or submitted."""
    import torch

    from growth.data import dataset_shape
    from growth.models import build_model

    shape = dataset_shape(cfg.dataset)
    if shape is None:
        return []
    try:
        with torch.device("meta"):
            build_model(cfg.model, *shape)
    except ConfigError as exc:
        return [
            f"model={cfg.model.name} does not fit dataset={cfg.dataset.name} (inputs of shape {shape[0]}, "
            f"{shape[1]} classes): {exc}"
        ]
    except Exception:  # not a configuration problem: building the real model reports it
        return []
    return []


def output_problems(cfg: DictConfig) -> list[str]:
    """A results root that cannot be created or written (checked without writing anything, so a
    sweep fails before any job is submitted; the run itself probes again before it writes)."""
    import os
    from pathlib import Path

    key = "output.run_dir" if cfg.output.run_dir else "output.root"
    target = Path(os.path.expanduser(str(_get(cfg, key))))
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        why = "is not a directory"
    elif existing in (target, target.parent) and not os.access(existing, os.W_OK | os.X_OK):
        why = "is not writable"
    else:  # (a missing folder further up may exist only where the jobs run)
        return []
    return [f"{key}={str(target)!r} is invalid: {existing} {why}; choose a writable {key} (or set GROWTH_RESULTS)"]


def _schema_fields(node: DictConfig) -> list[str] | None:
    """The keys a section's dataclass declares; None for a section without a schema."""
    import dataclasses

    kind = OmegaConf.get_type(node)
    return [f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind) else None


def _key_hint(path: str, given: str, valid: list[str]) -> str:
    import difflib

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


def validate(cfg: DictConfig) -> None:
    """Check ranges and contradictions; raise ConfigError naming the key and what is valid."""
    from growth.data import DATASETS
    from growth.models import MODELS

    problems: list[str] = []

    def check(ok: bool, key: str, valid: str) -> None:
        if not ok:
            problems.append(f"{key}={_get(cfg, key)!r} is invalid: {valid}")

    check(cfg.dataset.name in DATASETS, "dataset.name", f"one of {sorted(DATASETS)}")
    check(cfg.model.name in MODELS, "model.name", f"one of {sorted(MODELS)}")
    if cfg.model.name in MODELS and cfg.dataset.name in DATASETS:
        problems += model_fit_problems(cfg)
    from growth.loggers import LOGGERS

    check(cfg.logger.name in LOGGERS, "logger.name", f"one of {sorted(LOGGERS)}")
    for key, choices in CHOICES.items():
        if OmegaConf.select(cfg, key) is not None or not key.startswith("method."):
            check(_get(cfg, key) in choices, key, f"one of {list(choices)}")
    m = cfg.method
    if "density" in m:
        check(0 < m.density <= 1, "method.density", "a density in (0, 1]")
    if "delta_t" in m:
        check(m.delta_t >= 1, "method.delta_t", "at least 1 step")
        check(0 <= m.drop_fraction < 1, "method.drop_fraction", "a fraction in [0, 1)")
        check(0 < m.t_end <= 1, "method.t_end", "a fraction of training in (0, 1]")
    if "file" in m:
        check(m.file not in (None, ""), "method.file", "the path of a masks file or of a run's snapshots/round_NNN.pt")
        if cfg.budget.snapshot is not None:
            problems.append(f"budget.snapshot={cfg.budget.snapshot} does not apply to method=masks: the file gives the density")
    if "prune_fraction" in m:
        check(0 < m.prune_fraction < 1, "method.prune_fraction", "a fraction in (0, 1)")
        check(0 < m.min_density < 1, "method.min_density", "a density in (0, 1)")
        check(m.level_epochs is None or m.level_epochs >= 1, "method.level_epochs", "null or at least 1 epoch")
        check(m.rewind_epoch >= 0, "method.rewind_epoch", "at least 0")
    st = cfg.study
    if st.name is not None:
        from growth.methods import load_methods

        known = sorted(load_methods())
        for key in ("growth_methods", "baselines", "matched_methods"):
            unknown = [x for x in st[key] if x not in known]
            if unknown:
                problems.append(f"study.{key} has unknown methods {unknown}: valid are {known}")
        check(st.reference in known, "study.reference", f"one of {known}")
        unknown = [x for x in st.method_overrides if x not in known]
        if unknown:
            problems.append(f"study.method_overrides names unknown methods {unknown}: valid are {known}")
        check(0 < st.max_density <= 1, "study.max_density", "a density in (0, 1]")
        check(st.executor in ("local", "slurm"), "study.executor", "local or slurm")
        check(st.workers >= 1, "study.workers", "at least 1")
        check(len(st.seeds) >= 1, "study.seeds", "at least one seed")
    b = cfg.budget
    check(b.epochs is None or b.epochs > 0, "budget.epochs", "null or a positive number of epochs")
    if b.match is not None and b.epochs is not None:
        problems.append("budget.match and budget.epochs are both set: give the length one way, not two")
    if b.snapshot is not None and b.match is None:
        problems.append(f"budget.snapshot={b.snapshot} needs budget.match (the run whose snapshot it names)")
    check(b.snapshot is None or b.snapshot >= 0, "budget.snapshot", "null or a round index >= 0")
    if b.match is not None and "density" not in m and "file" not in m:
        problems.append(
            f"budget.match={b.match!r} needs a fixed-density method (phew, rigl, masks), not method={m.name!r}"
        )
    g = cfg.growth
    check(0 < g.seed_density <= 1, "growth.seed_density", "a density in (0, 1]")
    check(0 < g.max_density <= 1, "growth.max_density", "a density in (0, 1]")
    check(g.growth_ratio > 1, "growth.growth_ratio", "a ratio above 1")
    check(g.temperature > 0, "growth.temperature", "a temperature above 0")
    check(g.max_rounds >= 1, "growth.max_rounds", "at least 1")
    check(g.gradient_batches >= 1, "growth.gradient_batches", "at least 1")
    check(g.timing.epochs >= 1, "growth.timing.epochs", "at least 1 epoch per round")
    check(g.timing.eval_every >= 1, "growth.timing.eval_every", "at least 1 batch")
    check(g.timing.patience >= 1, "growth.timing.patience", "at least 1 evaluation")
    check(g.timing.min_delta >= 0, "growth.timing.min_delta", "at least 0")
    check(g.timing.max_epochs >= 1, "growth.timing.max_epochs", "at least 1 epoch")
    check(0 < g.stop.tol < 1, "growth.stop.tol", "an accuracy tolerance in (0, 1)")
    check(g.stop.confirm >= 0, "growth.stop.confirm", "at least 0")
    check(g.stop.min_points >= 4, "growth.stop.min_points", "at least 4 (the logistic has 4 parameters)")
    if 0 < g.seed_density <= 1 and 0 < g.max_density <= 1 and g.seed_density > g.max_density:
        problems.append(
            f"growth.seed_density={g.seed_density} is above growth.max_density={g.max_density}: "
            "the seed must not be denser than the largest density growth may reach"
        )
    t = cfg.trainer
    check(t.epochs >= 1, "trainer.epochs", "at least 1 epoch")
    check(t.batch_size >= 1, "trainer.batch_size", "at least 1")
    check(t.eval_batch_size >= 1, "trainer.eval_batch_size", "at least 1")
    check(t.lr > 0, "trainer.lr", "a learning rate above 0")
    check(t.round_lr is None or t.round_lr > 0, "trainer.round_lr", "null or a learning rate above 0")
    check(0 <= t.momentum < 1, "trainer.momentum", "in [0, 1)")
    check(t.cpu_threads >= 0, "trainer.cpu_threads", "0 (torch's default) or a thread count")
    check(t.devices >= 1, "trainer.devices", "at least 1 process per node")
    check(t.nodes >= 1, "trainer.nodes", "at least 1 node")
    check(t.dist_timeout_min > 0, "trainer.dist_timeout_min", "minutes above 0")
    check(
        t.batch_size >= t.devices * t.nodes, "trainer.batch_size",
        f"at least trainer.devices x trainer.nodes = {t.devices * t.nodes} (the global batch is split over the processes)",
    )
    check(t.weight_decay >= 0, "trainer.weight_decay", "at least 0")
    check(t.gamma > 0, "trainer.gamma", "above 0")
    check(
        len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "trainer.betas", "two coefficients in [0, 1)"
    )
    # Not capped by trainer.epochs: a shortened schedule (trainer.epochs=1 to try a recipe) keeps
    # the recipe's warm-up and simply ends inside it.
    check(t.warmup_epochs >= 0, "trainer.warmup_epochs", "at least 0 (0: no warm-up)")
    if t.compile or t.precision == "bf16":
        import torch

        from growth.train import compile_problem

        device = str(t.device)
        kind = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device.split(":")[0]
        problem = compile_problem(kind) if t.compile else None
        if problem:
            problems.append(problem)
        if t.precision == "bf16" and kind == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            problems.append(
                "trainer.precision='bf16' is invalid: this GPU has no bfloat16 support (it needs compute "
                "capability 8.0, Ampere, or newer): use trainer.precision=fp32"
            )
    check(
        t.device == "auto" or t.device == "cpu" or str(t.device).startswith("cuda"),
        "trainer.device",
        "auto, cpu, cuda or cuda:N",
    )
    d = cfg.dataset
    check(0 < d.val_fraction < 1, "dataset.val_fraction", "a fraction in (0, 1)")
    check(0 < d.test_fraction < 1, "dataset.test_fraction", "a fraction in (0, 1)")
    from growth.data import dataset_problems

    problems += dataset_problems(cfg.dataset)
    problems += output_problems(cfg)
    problems += unknown_key_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
