"""The bad-input matrix generated from the schemas (issue 15; the cases: tests/schema_matrix.py).

Every key of every schema gets bad values by type (NaN, +-inf, 0, negative and huge numbers; an
unknown choice and an empty string; empty, wrong-type and wrong-length lists; null where null is
not allowed). Each is refused before anything is written, with a message naming the key, or is
listed below as accepted on purpose, with the reason. A key added without its checks fails here
until it has them (or a reason). tests/test_cli_matrix.py runs every case on the command line.
"""

from __future__ import annotations

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from growth.errors import ConfigError
from tests.schema_matrix import Case, cases, schema_keys
from tests.schema_matrix_eval import Evaluator, Outcome, world

ACCEPTED: dict[tuple[str, str], str] = {}


def accept(keys: str, labels: str, reason: str) -> None:
    for key in keys.split():
        for label in labels.split(","):
            ACCEPTED[(key, label.strip())] = reason


LENGTH = ("a length is the researcher's to choose: the run prints its progress and checkpoints as it goes, so a "
          "mistaken one is seen at once and stopped without loss")
DIVERGES = ("training diverges, and the run is recorded as diverged with its phase, round and step, never as a result "
            "(tests/test_faults.py)")
SBATCH = ("the cluster's own names and limits, known only to it: sbatch checks them when a study or sweep submits, and "
          "its refusal is one line naming the resource settings (tests/test_slurm.py: a GPU asked for where there is none)")
RELATIVE = "a relative path, below the working directory (as Hydra's own output directory is)"
accept("trainer.epochs growth.max_rounds growth.timing.epochs growth.timing.max_epochs growth.timing.eval_every "
       "growth.timing.patience growth.proxy.anneal_epochs budget.epochs", "huge", LENGTH)
accept("trainer.batch_size trainer.eval_batch_size", "huge", "a batch larger than the split is the whole split (one step an epoch)")
accept("trainer.lr trainer.round_lr trainer.gamma trainer.weight_decay", "huge", DIVERGES)
accept("trainer.momentum", "zero", "plain SGD, without momentum")
accept("trainer.weight_decay", "zero", "no weight decay")
accept("trainer.milestones", "empty", "no milestones: a step schedule is then constant")
accept("trainer.milestones", "huge item", "milestones are read only by trainer.schedule=step (not the default), which "
       "refuses milestones at or beyond trainer.epochs (the cross-key cases in tests/test_bad_input.py)")
accept("trainer.warmup_epochs", "zero", "no warm-up: the schedule starts at its full rate")
accept("trainer.warmup_epochs", "huge", "documented in the schema: a warm-up is not capped by trainer.epochs, so a "
       "shortened schedule keeps its recipe's warm-up and ends inside it")
accept("trainer.cpu_threads", "zero", "torch's default thread count")
accept("growth.growth_ratio", "huge", "growth reaches growth.max_density in one round, as asked")
accept("growth.temperature", "huge", "sampling becomes uniform (random growth): the limit the temperature is meant to reach")
accept("growth.timing.min_delta", "zero", "any improvement counts")
accept("growth.proxy.anneal_epochs", "zero", "no anneal: METHOD's proxy")
accept("growth.proxy.ema_halflife", "zero", "no moving average (the default)")
accept("study.name", "unknown choice", "a study's name is free: it names the study's directory and records")
accept("study.baselines study.matched_methods", "empty", "a study without baselines, or without matched methods")
accept("study.densities", "wrong length", "any number of densities")
accept("study.slurm.partition study.slurm.account study.slurm.qos study.slurm.constraint", "unknown choice", SBATCH)
accept("study.slurm.time_min study.slurm.gpus_per_task study.slurm.cpus_per_task study.slurm.mem_gb", "huge", SBATCH)
accept("study.slurm.gpus_per_task", "zero", "a CPU job, with no GPU asked for")
accept("study.slurm.max_num_timeout", "zero", "no requeue after a time-out or preemption")
accept("study.slurm.max_num_timeout", "huge", "requeues until the run finishes; each resumes from its checkpoint")
accept("study.slurm.folder output.root output.run_dir", "unknown choice", RELATIVE)
accept("sweep.cost_penalty", "zero", "accuracy alone is the objective")
accept("sweep.cost_penalty", "huge", "cost alone decides, in effect: a valid, if extreme, trade-off")
accept("seed dataset.split_seed", "zero", "a seed like any other")
accept("dataset.num_workers", "zero", "the main process loads the batches")
accept("dataset.crop_padding", "zero", "no random crop")
accept("model.hidden", "empty", "a linear classifier; at the default seed density the path rule refuses it, naming "
       "growth.seed_density (the key to change)")

accept("method.samples_per_class growth.gradient_batches", "huge", "scoring uses at most one pass over the training split")
accept("method.level_epochs method.iterations", "huge", LENGTH)
accept("method.prune_in_growth", "zero", "no pruning within growth: grow-prune prunes only below its discovered density")
accept("method.rewind_epoch", "zero", "rewind to the initial weights")
accept("method.rewind_epoch", "huge", "read only with method.rewind=epoch (not the default), which refuses an epoch at or "
       "beyond trainer.epochs (the cross-key cases)")
accept("method.delta_t", "huge", "the mask is never updated: static sparse training, as RigL's own code allows")
accept("method.drop_fraction", "zero", "no connection is ever swapped: static sparse training")
accept("logger.project logger.entity logger.group logger.job_type logger.dir", "unknown choice",
       "W&B's own names, and a directory relative to the working directory: any string W&B takes")
accept("logger.tags", "empty,unknown choice", "no tags, or any tag")
accept("growth.stop.confirm", "zero", "stop at the first round the rule fires")
accept("growth.stop.confirm growth.stop.min_points growth.stop.noise_factor growth.stop.width_decades "
       "growth.stop.max_gain_per_decade", "huge", "the rule never (or at once) fires: growth runs to growth.max_density "
       "and growth.max_rounds, as growth.stop.rule=none does, and the records say which stop ended it")
accept("growth.stop.noise_factor", "zero", "the plateau tolerance alone, no noise term")


FAILURES = (ConfigError, HydraException, OmegaConfBaseException)  # what a user error may raise


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> list[Outcome]:
    base = tmp_path_factory.mktemp("schema-matrix")
    fill = world(base)
    evaluate = Evaluator(fill)
    results = [evaluate(case) for case in cases()]
    from pathlib import Path

    assert not Path(fill["root"]).exists(), "a case wrote under the results root"
    return results


def judge(outcome: Outcome) -> str | None:
    """What is wrong with an outcome, or None."""
    case = outcome.case
    known = (case.leaf.key, case.label) in ACCEPTED
    if outcome.error is not None and outcome.error not in {e.__name__ for e in _failure_types()}:
        return f"{case.id}: raised {outcome.error} (not a one-line user error): {outcome.text[:300]}"
    if outcome.refused:
        if known:
            return f"{case.id}: refused, but listed as accepted on purpose: drop it from ACCEPTED"
        return None
    if not known:
        why = f"refused without naming {case.leaf.key}: {outcome.text[:300]}" if outcome.error else "accepted"
        return f"{case.id}: {why}; give the key a check, or list the case in ACCEPTED with the reason"
    return None


def _failure_types() -> set[type]:
    found: set[type] = set()
    stack = list(FAILURES)
    while stack:
        t = stack.pop()
        if t not in found:
            found.add(t)
            stack += t.__subclasses__()
    return found


def test_every_key_of_every_schema_has_cases():
    keys = schema_keys()
    covered = {case.leaf.id for case in cases()}
    assert covered == keys
    assert len(keys) >= 150  # the core sections and every registered entry's schema
    # The per-entry schemas are in: a method's, a model's, a dataset's, a stop rule's, a logger's keys.
    names = {k.split("@")[1] for k in keys}
    assert {"method.drop_fraction", "model.patch_size", "dataset.crop_padding", "growth.stop.noise_factor", "logger.project"} <= names


def test_every_generated_bad_value_is_refused_naming_its_key_or_accepted_on_purpose(outcomes):
    problems = [p for p in map(judge, outcomes) if p]
    assert not problems, f"{len(problems)} of {len(outcomes)} cases:\n" + "\n".join(problems)
    # Accepting on purpose stays the exception: most bad values are refused.
    assert sum(o.refused for o in outcomes) > 0.85 * len(outcomes)


def test_every_accepted_case_exists_and_says_why(outcomes):
    ids = {(o.case.leaf.key, o.case.label) for o in outcomes}
    stale = [k for k in ACCEPTED if k not in ids]
    assert not stale, f"ACCEPTED lists cases the matrix no longer has: {stale}"
    assert all(len(reason) > 10 for reason in ACCEPTED.values())


def test_an_unchecked_key_would_fail_the_matrix():
    """The judgement itself: a value nobody refused, and nobody listed, is a failure."""
    from tests.schema_matrix import Leaf

    leaf = Leaf("method.new_knob", "NewConfig", "float", None, False, False, ("method=pwmpr",))
    silent = Outcome(Case(leaf, "nan", "nan"), None, "")
    assert "give the key a check" in judge(silent)
    unnamed = Outcome(Case(leaf, "nan", "nan"), "ConfigError", "invalid configuration:\n  something else")
    assert "refused without naming method.new_knob" in judge(unnamed)
    crashed = Outcome(Case(leaf, "nan", "nan"), "OverflowError", "cannot convert float infinity to integer")
    assert "not a one-line user error" in judge(crashed)
    named = Outcome(Case(leaf, "nan", "nan"), "ConfigError", "method.new_knob=nan is invalid: above 0")
    assert judge(named) is None
