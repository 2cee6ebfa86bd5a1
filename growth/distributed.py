"""One run trained data-parallel over several processes (PyTorch DDP).

``trainer.devices`` processes per node times ``trainer.nodes`` nodes train one run. The processes
come from the launcher: the tasks of a SLURM (or submitit local) job, whose environment submitit
describes, or ``torchrun``. NCCL joins them on GPUs, gloo on CPUs.

What stays identical on every rank, and why:
- weights: DDP broadcasts rank 0's at the start and all-reduces every gradient; BatchNorm buffers
  are broadcast from rank 0 at the end of every epoch and before every evaluation;
- every random draw (batch order, augmentation, growth sampling, seeds, RigL's masks): the run's
  CPU generators are seeded from the run's seed, and each rank consumes them in the same order;
- so the growth scores, and the masks grown from them. After every growth step the ranks compare
  a digest of their masks and weights, and stop the run if they differ.

Each rank trains on its share of every global batch (``trainer.batch_size`` samples, every
``world``-th one), and the loss is scaled so that DDP's averaged gradient is the mean over the
global batch: the same step as one process on the same batch, up to float summation order.
Evaluations run on every rank over the whole split (identical results, no communication).
Only rank 0 writes: records, checkpoints, snapshots and the W&B run (see ``growth.records``).
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from growth.errors import ConfigError

log = logging.getLogger("growth")


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: rank ``rank`` of ``world``."""

    rank: int = 0
    world: int = 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


SINGLE = Shard()


def current() -> Shard:
    """The shard of this process: rank and world of the initialised process group, else single."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return SINGLE


def is_writer() -> bool:
    return current().is_writer


def _export_launcher_environment() -> None:
    """MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from the launcher, unless already set."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return  # torchrun, or a launcher that already exported them
    if "SUBMITIT_EXECUTOR" in os.environ or "SLURM_JOB_ID" in os.environ:
        import submitit

        # One job id gives every task the same master port; the first host is the master.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def setup(trainer_cfg, device: torch.device) -> Shard:
    """Join the run's process group when ``trainer.devices * trainer.nodes`` > 1."""
    wanted = int(trainer_cfg.devices) * int(trainer_cfg.nodes)
    if wanted == 1:
        started = int(os.environ.get("WORLD_SIZE", "1"))
        if started > 1 and not (dist.is_available() and dist.is_initialized()):
            # e.g. torchrun --nproc_per_node=4 without trainer.devices=4: four copies of one run
            raise ConfigError(
                f"this process is 1 of {started} (WORLD_SIZE={started}) but trainer.devices x trainer.nodes is 1: "
                f"set trainer.devices={started} (or trainer.devices and trainer.nodes with that product)"
            )
        return SINGLE
    if not (dist.is_available() and dist.is_initialized()):
        try:
            _export_launcher_environment()
        except RuntimeError:
            pass  # not inside a submitit job: the check below explains what to do
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world != wanted:
            raise ConfigError(
                f"trainer.devices={trainer_cfg.devices} x trainer.nodes={trainer_cfg.nodes} needs {wanted} processes, "
                f"but this one was started as 1 of {world}: launch it through SLURM or submitit "
                "(hydra/launcher=slurm or local, or study.executor=slurm, which start one task per device) "
                f"or with torchrun --nproc_per_node={trainer_cfg.devices}"
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(cuda_device(device))
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=float(trainer_cfg.dist_timeout_min)))
        # Tear the group down before the interpreter does: a process leaving with the group alive
        # (sys.exit in submitit's requeue after a preemption signal) aborts in gloo's threads,
        # and the exit code that asks for the requeue is lost.
        atexit.register(_leave)
        log.info("rank %d of %d joined the process group (%s)", dist.get_rank(), dist.get_world_size(), backend)
    shard = current()
    if shard.world != wanted:
        raise ConfigError(f"the process group has {shard.world} processes, trainer.devices x trainer.nodes is {wanted}")
    return shard


def _leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cuda_device(device: torch.device) -> torch.device:
    """This rank's GPU: LOCAL_RANK among the visible ones (a task that sees one GPU uses it)."""
    if device.type != "cuda" or device.index is not None:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local % max(torch.cuda.device_count(), 1))


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around `model` when this process is one of several; the model itself otherwise."""
    if current().world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # DDP broadcasts rank 0's buffers before every forward by default.
    return DistributedDataParallel(model, device_ids=ids)


def barrier() -> None:
    if current().world > 1:
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's `obj` on every rank."""
    if current().world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if current().world > 1:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op])
    return tensor


@torch.no_grad()
def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank."""
    if current().world == 1:
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def check_identical(what: str, value: str) -> None:
    """Stop the run when the ranks disagree on `value` (a digest of their masks and weights)."""
    shard = current()
    if shard.world == 1:
        return
    values: list = [None] * shard.world
    dist.all_gather_object(values, value)
    log.info("rank %d of %d: %s %s", shard.rank, shard.world, what, value)
    if len(set(values)) != 1:
        raise RuntimeError(f"ranks disagree on {what}: {values}; the run is stopped rather than continued inconsistently")
