"""The schema's core sections: the dataclasses Hydra validates every composed config against.

A leaf of the framework: models, datasets, methods and loggers subclass the base classes here
(DatasetConfig, ModelConfig, MethodConfig, LoggerConfig) in their own modules and register them.
Every default that METHOD.md calls "ours" is a key here, so a user can set the paper's exact value.
A field's value checks travel with it (growth.config.checks); validation walks the schemas.

A default is also what a run's identity leaves out (growth.records.identity): a new key must
default to the behaviour the framework had without it, or it renames every finished run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from growth.config.checks import (
    above, at_least, density, each, fraction, in_range, key, name_or_null, nonempty, one_of, registered, satisfies, seed_value,
)


@dataclass
class DatasetConfig:
    name: str = key(MISSING, registered("dataset"))
    # Data root; null means the dataset's own default (the embedded digits need none).
    root: Optional[str] = key(None, name_or_null("null (the dataset's default) or a directory"))
    # Validation split carved from the training set (stratified, seeded): proxy accuracy and
    # adaptive timing use it; the test split is never used for decisions.
    val_fraction: float = key(0.1, fraction())
    # Only for datasets without an official test split (the embedded digits).
    test_fraction: float = key(0.2, fraction())
    split_seed: int = key(0, seed_value())


@dataclass
class ModelConfig:
    name: str = key(MISSING, registered("model"))


@dataclass
class TrainerConfig:
    # The full schedule: one dense training run of this length is one unit of cost.
    epochs: int = key(100, at_least(1, "at least 1 epoch"))
    batch_size: int = key(64, at_least(1))
    eval_batch_size: int = key(1024, at_least(1))
    # sgd (momentum, Nesterov) | adam (L2 weight decay added to the gradient) | adamw (decoupled
    # weight decay, Loshchilov & Hutter 2019: the usual choice for ViTs).
    optimizer: str = key("sgd", one_of("sgd", "adam", "adamw"))
    lr: float = key(0.05, above(0, "a learning rate above 0"))
    momentum: float = key(0.9, in_range(0, 1, hi_open=True, valid="in [0, 1)"))
    nesterov: bool = True
    weight_decay: float = key(1e-4, at_least(0))
    # Adam/AdamW moment coefficients (beta1, beta2); torch's and most recipes' default.
    betas: list[float] = key(None, each(fraction(lo_open=False), "two coefficients in [0, 1)", lengths=(2,)), factory=lambda: [0.9, 0.999])
    # Which parameters weight decay applies to: all | weights (the growable Linear and Conv
    # weights only; biases, norm scales and position embeddings undecayed, as ViT recipes do).
    decay_scope: str = key("all", one_of("all", "weights"))
    # Learning-rate schedule of extensive (full) training: cosine | step | constant.
    schedule: str = key("cosine", one_of("cosine", "step", "constant"))
    # For schedule=step: epochs at which the lr is multiplied by gamma.
    milestones: list[int] = key(None, each(at_least(1), "a list of epochs, each at least 1"), factory=list)
    gamma: float = key(0.1, above(0))
    # Linear warm-up of the first epochs of every scheduled training (not of growth rounds, which
    # train at a constant round_lr): epoch e < W trains at the schedule's lr x (e + 1) / (W + 1),
    # so the lr ramps up in W steps and the schedule itself runs unchanged from epoch W. A
    # training of another length scales W with its length, like the step milestones. 0: none.
    # Not capped by trainer.epochs: a shortened schedule (trainer.epochs=1 to try a recipe) keeps
    # the recipe's warm-up and simply ends inside it.
    warmup_epochs: int = key(0, at_least(0, "at least 0 (0: no warm-up)"))
    # Speed (they change numerics slightly, so they are part of a run's identity):
    # fp32 | bf16: bf16 autocast for the training forward and loss and for evaluation; weights,
    # gradients, optimizer state and PWMP scoring (float64, outside autocast) are unaffected.
    precision: str = key("fp32", one_of("fp32", "bf16"))
    # Model and image batches in channels-last memory format (conv models; faster convolutions
    # with bf16/TF32 on recent GPUs). Masks, state dicts and scores are unaffected.
    channels_last: bool = False
    # torch.compile the training forward (the first epoch pays the compilation; evaluation and
    # scoring run the plain model). Needs a C++ compiler on the CPU, Triton on CUDA.
    compile: bool = False
    # auto (cuda when present) | cpu | cuda | cuda:N
    device: str = key("auto", satisfies(lambda d: d in ("auto", "cpu") or str(d).startswith("cuda"), "auto, cpu, cuda or cuda:N"))
    # Threads for CPU runs; 0 keeps torch's default. Small models run no faster on more threads,
    # and several runs sharing a machine slow down sharply when each spins on every core.
    cpu_threads: int = key(0, in_range(0, 4096, valid="0 (torch's default) or a thread count up to 4096"))
    # Growth rounds train at this lr (constant); null means trainer.lr.
    round_lr: Optional[float] = key(None, above(0, "null or a learning rate above 0", nullable=True))
    # Data-parallel training of one run (growth/distributed.py): processes per node and nodes.
    # The launcher starts them (hydra/launcher=slurm|local, study.executor=slurm, or torchrun);
    # trainer.batch_size stays the global batch, split evenly over the processes.
    devices: int = key(1, at_least(1, "at least 1 process per node"))
    nodes: int = key(1, at_least(1, "at least 1 node"))
    # How long a rank waits for the others in a collective before the run fails.
    dist_timeout_min: float = key(30.0, in_range(0, 10080, lo_open=True, valid="minutes in (0, 10080] (at most a week)"))


@dataclass
class TimingConfig:
    # fixed: N epochs per round; adaptive: validation early stopping inside each round.
    mode: str = key("fixed", one_of("fixed", "adaptive"))
    epochs: int = key(3, at_least(1, "at least 1 epoch per round"))
    eval_every: int = key(20, at_least(1, "at least 1 batch"))  # adaptive: batches between validation evaluations
    patience: int = key(3, at_least(1, "at least 1 evaluation"))  # adaptive: evaluations without improvement before the round ends
    min_delta: float = key(0.001, fraction(lo_open=False, hi_open=False, what="an accuracy gain"))  # adaptive: improvement in validation accuracy that counts
    max_epochs: int = key(10, at_least(1, "at least 1 epoch"))  # adaptive: cap on a round's length


@dataclass
class StopConfig:
    # A registered stop rule (growth.stopping): logistic, the logistic-fit rule of METHOD.md;
    # none: grow until max_density/max_rounds.
    rule: str = key("logistic", registered("stop_rule"))
    tol: float = key(0.005, fraction(what="an accuracy tolerance"))
    confirm: int = key(3, at_least(0))
    min_points: int = key(4, at_least(4, "at least 4 (the logistic has 4 parameters)"))
    # Record the discovered density where the rule first fires but keep growing to
    # growth.max_density / growth.max_rounds (a full performance-density curve, as in a study).
    keep_growing: bool = False


@dataclass
class ProxyConfig:
    # Epochs at the end of every growth round whose learning rate decays by a cosine from the
    # round's to 0, step by step, before the proxy accuracy is read (growth.proxy): the proxy then
    # reads annealed weights rather than those of constant-rate training. Charged to the growth
    # cost like any training. 0: none (METHOD's proxy).
    anneal_epochs: int = key(0, at_least(0))
    # After the anneal, the next round continues from the annealed weights (true), or from the
    # weights, optimizer state and data stream of before it (false: growth follows the path it
    # would without the anneal; only the proxy, and so the stop, differ).
    anneal_continue: bool = False
    # An exponential moving average of the weights over each round's steps (restarted every round,
    # before any anneal), evaluated at the round's end and recorded as `ema_accuracy`. Its half-life
    # is this fraction of the round's steps (scale-free: the same value on every task). No training
    # cost, one more validation pass a round. 0: off.
    ema_halflife: float = key(0.0, in_range(0, 1, hi_open=True, valid="a fraction of a round in [0, 1)"))
    # Which accuracy the stop rule reads as proxy_accuracy: weights, the round's last weights
    # (annealed when anneal_epochs > 0); ema, the moving average's (needs ema_halflife > 0).
    source: str = key("weights", one_of("weights", "ema"))


@dataclass
class GrowthConfig:
    seed_density: float = key(0.01, density())
    # A registered seed builder (growth.seeds): phew, PHEW random walks on the initial weights;
    # random: uniform per layer.
    seed_builder: str = key("phew", registered("seed_builder"))
    # fan_in: scale each unit's surviving incoming weights by sqrt(fan_in / active fan_in).
    seed_rescale: str = key("fan_in", one_of("fan_in", "none"))
    growth_ratio: float = key(1.25, above(1, "a ratio above 1"))
    temperature: float = key(1.0, above(0, "a temperature above 0"))
    max_density: float = key(1.0, density())
    max_rounds: int = key(40, at_least(1))
    timing: TimingConfig = field(default_factory=TimingConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    # Batches whose gradients are averaged for gradient growth (method=gg).
    gradient_batches: int = key(4, at_least(1))


_DENSITY_LIST = satisfies(lambda xs: xs is None or each(density()).test(xs) and len(xs) > 0,
                          "null or a non-empty list of densities in (0, 1]")


@dataclass
class ExtensiveConfig:
    # discovered: train the discovered density; all: every snapshot; listed: the snapshots nearest
    # extensive.densities (and the discovered one); none: skip.
    which: str = key("discovered", one_of("discovered", "all", "listed", "none"))
    # With which=listed: densities (fractions) whose nearest snapshot is trained, e.g. [0.02,0.05].
    densities: Optional[list[float]] = key(None, _DENSITY_LIST)
    # continue: from the snapshot's weights; rewind: the initial weights; reinit: fresh weights.
    init: str = key("continue", one_of("continue", "rewind", "reinit"))


@dataclass
class MethodConfig:
    name: str = key(MISSING, registered("method"))


@dataclass
class BudgetConfig:
    # Take a fixed-density run's length from a finished reference run of this method (same
    # dataset, model and seed in output.root): its cumulative cost at this run's density.
    match: Optional[str] = None
    # Explicit reference run directory (needed only when several runs could match).
    reference: Optional[str] = key(None, name_or_null("null or a reference run's directory"))
    # Cost unit to match: epochs (in dense-run units) or flops.
    unit: str = key("epochs", one_of("epochs", "flops"))
    # Explicit length in epochs; null means trainer.epochs (or the matched budget). A run trains
    # whole epochs (the nearest whole number), so less than one would silently train one.
    epochs: Optional[float] = key(None, at_least(1, "null or at least 1 epoch (runs train whole epochs)", nullable=True))
    # Train at the density of the reference's growth round `snapshot` instead of
    # method.density (a study submits these before the reference has run). A round the
    # reference never reached makes the run a no-op that says so.
    snapshot: Optional[int] = key(None, at_least(0, "null or a round index >= 0", nullable=True))


@dataclass
class SlurmConfig:
    """Resources of every job a study submits to SLURM (GROWTH_SLURM_* set them per account)."""

    # Names the cluster knows (sbatch checks them when the study submits; a refusal is one line).
    partition: Optional[str] = key("${oc.env:GROWTH_SLURM_PARTITION,null}", name_or_null())
    account: Optional[str] = key("${oc.env:GROWTH_SLURM_ACCOUNT,null}", name_or_null())
    qos: Optional[str] = key("${oc.env:GROWTH_SLURM_QOS,null}", name_or_null())
    constraint: Optional[str] = key("${oc.env:GROWTH_SLURM_CONSTRAINT,null}", name_or_null())
    time_min: int = key("${oc.decode:${oc.env:GROWTH_SLURM_TIME_MIN,720}}", at_least(1, "at least 1 minute"))
    # GPUs per process: a run with trainer.devices=N gets N processes and N x this many GPUs a node.
    gpus_per_task: int = key("${oc.decode:${oc.env:GROWTH_SLURM_GPUS,1}}", at_least(0, "0 (a CPU job) or a GPU count"))
    cpus_per_task: int = key("${oc.decode:${oc.env:GROWTH_SLURM_CPUS,8}}", at_least(1))
    mem_gb: int = key("${oc.decode:${oc.env:GROWTH_SLURM_MEM_GB,32}}", at_least(1, "at least 1 GB"))
    # Requeues after preemption or time-outs; a requeued run resumes from its checkpoint.
    max_num_timeout: int = key(20, at_least(0))
    # Extra sbatch arguments, e.g. {mail-type: END}.
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    # Where submitit keeps job files; null means <output.root>/slurm.
    folder: Optional[str] = key(None, name_or_null("null (<output.root>/slurm) or a directory"))


@dataclass
class LoggerConfig:
    name: str = key("none", registered("logger"))


@dataclass
class OutputConfig:
    # Results root: every run gets its own directory below it, named by the run's identity.
    root: str = key("results", nonempty("a directory (relative to the working directory, or absolute)"))
    # Explicit run directory; null derives it from the config (so a relaunch finds it).
    run_dir: Optional[str] = key(None, name_or_null("null (derived from the config) or a directory"))
    # Print progress lines while training.
    progress: bool = True


@dataclass
class StudyConfig:
    # null: a single run; compare: the runs behind the paper's comparison figures.
    name: Optional[str] = key(None, name_or_null("null (a single run) or the study's name, e.g. compare"))
    # Three seeds: the fewest with a bootstrap interval over seeds in the analysis tables and figures.
    seeds: list[int] = key(None, each(seed_value(), "at least one seed, each in [0, 2**32 - 1]", min_len=1), factory=lambda: [0, 1, 2])
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
    max_density: float = key(0.5, density())
    # null: the growth methods train every snapshot and the matched methods run at every round's
    # density; a list: only the reference's rounds nearest these densities (growth methods train
    # those snapshots and their discovered one), e.g. [0.02,0.05,0.1,0.2].
    densities: Optional[list[float]] = key(None, _DENSITY_LIST)
    # A registered study executor (growth.study): local runs in this process (workers=1) or in
    # local worker processes; slurm: every run a SLURM job, the order expressed as job dependencies.
    executor: str = key("local", registered("executor", "local or slurm"))
    workers: int = key(1, in_range(1, 256, valid="a worker count in [1, 256]"))
    # Runs per SLURM job (executor slurm): k runs of a stage as k processes of one job with one
    # run's resources (its GPU shared, its CPUs split), for runs too small to fill a GPU. With
    # executor local, the same as workers. How a study is executed: not in its identity.
    pack: int = key(1, in_range(1, 256, valid="a run count in [1, 256]"))
    # slurm: after submitting, wait and report as jobs finish (otherwise return at once).
    wait: bool = False
    # slurm: seconds between polls while waiting.
    poll_seconds: float = key(5.0, in_range(0, 3600, lo_open=True, valid="seconds in (0, 3600]"))
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


SWEEP_OBJECTIVES = ("val_at_discovered", "val_minus_cost", "val_and_cost")


@dataclass
class SweepConfig:
    """What the launcher returns to a Hydra sweeper (hydra/sweeper=growth_optuna, docs/sweeps.md).
    It never changes what a run computes, so it is no part of a run's identity."""

    # null: the run's summary, as a plain launch returns it. val_at_discovered: the validation
    # accuracy of the extensive training at the discovered density (summary.json's val_accuracy;
    # never the test split, which would tune on the numbers reported). val_minus_cost: that
    # accuracy less cost_penalty x the cost in dense runs. val_and_cost: [that accuracy, the cost]
    # for a two-objective study with directions [maximize, minimize].
    objective: Optional[str] = key(None, one_of(None, *SWEEP_OBJECTIVES, valid=f"null or one of {list(SWEEP_OBJECTIVES)}"))
    # Accuracy (as a fraction) given up per dense run of cost, for objective=val_minus_cost.
    cost_penalty: float = key(0.0, at_least(0))


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
    sweep: SweepConfig = field(default_factory=SweepConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = key(0, seed_value())
    # Print what would run (jobs, resources, dependencies) and run or submit nothing.
    dry_run: bool = False
