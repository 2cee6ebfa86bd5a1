"""Train a given sparse mask: `method=masks method.file=<path>`.

The file is a masks file (`growth.masks.save_masks`: a dict of bool tensors named like the
model's growable weights) or a growth run's snapshot (`snapshots/round_007.pt`, whose `masks`
entry is taken). The model starts from this run's own initialisation (seed), masked, rescaled
like every fixed-density baseline, and trains for the fixed-density budget (trainer.epochs,
budget.epochs or budget.match). Retraining a PWMPR snapshot's mask from scratch is one use.

The file is checked against the model (names and shapes) before anything is written or
submitted, and loaded with weights_only=True: nothing in it is executed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from growth.config import MethodConfig
from growth.config.checks import key, one_of, satisfies
from growth.errors import ConfigError, safe_text
from growth.kinds import DATASETS
from growth.fixed import FixedDensityRun, find_reference
from growth.masks import Masks, check_masks_fit, density
from growth.methods import register_method


def read_masks_file(path: str | Path) -> Masks:
    """The masks in a masks file or a snapshot; ConfigError naming method.file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"method.file={str(path)!r} does not exist (a masks file, or a run's snapshots/round_NNN.pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a pickle that is not plain data
        raise ConfigError(safe_text(f"method.file={str(path)!r} cannot be read as a masks file: {type(exc).__name__}: {exc}")) from None
    masks = obj.get("masks") if isinstance(obj, dict) and "masks" in obj else obj
    if not isinstance(masks, dict) or not masks or not all(torch.is_tensor(m) for m in masks.values()):
        raise ConfigError(
            f"method.file={str(path)!r} holds no masks: expected a dict of bool tensors (growth.masks.save_masks) "
            "or a snapshot with a 'masks' entry"
        )
    return {name: m.to(torch.bool) for name, m in masks.items()}


def masks_source(cfg) -> Path:
    """method.file, or with budget.snapshot=k the reference run's snapshots/round_k.pt."""
    if cfg.method.file is not None:
        return Path(cfg.method.file)
    return find_reference(cfg) / "snapshots" / f"round_{int(cfg.budget.snapshot):03d}.pt"


def source_name(cfg) -> str:
    return f"method.file={cfg.method.file!r}" if cfg.method.file is not None else f"the reference's snapshot budget.snapshot={cfg.budget.snapshot}"


def check_fit(masks: Masks, model, cfg) -> None:
    try:
        check_masks_fit(masks, model, source=source_name(cfg))
    except ValueError as exc:
        raise ConfigError(f"{exc} (model={cfg.model.name}, dataset={cfg.dataset.name})") from None


def check_masks_file(cfg) -> Masks:
    """Read method.file and check it against the model built on the meta device (no memory)."""
    from growth.data import dataset_shape
    from growth.models import build_on_meta

    masks = read_masks_file(masks_source(cfg))
    model = build_on_meta(cfg.model, cfg.dataset)
    if model is not None:
        shape = dataset_shape(cfg.dataset)
        checked = dict(masks)
        if DATASETS.get(cfg.dataset.name).classes_from_files:
            # A subset's class count is known once its folders are read: the output layer's rows
            # are checked then (the run checks every shape against the model it built).
            params = dict(model.named_parameters())
            for n, m in masks.items():
                w = params.get(n)
                if w is not None and w.shape[0] == shape[1] and m.dim() == w.dim() and m.shape[1:] == w.shape[1:]:
                    checked[n] = torch.ones(w.shape, dtype=torch.bool)
        check_fit(checked, model, cfg)
    if not any(bool(m.any()) for m in masks.values()):
        raise ConfigError(f"{source_name(cfg)}: every mask is empty (density 0)")
    return masks


@dataclass
class MasksFileConfig(MethodConfig):
    # A masks file (growth.masks.save_masks) or a growth run's snapshots/round_NNN.pt: the mask
    # to train; its density is the run's density. null with budget.match and budget.snapshot=k:
    # the reference run's snapshot of round k (how a study runs it at the reference's densities).
    file: Optional[str] = key(None, satisfies(lambda x: x is None or x != "", "the path of a masks file or of a run's snapshots/round_NNN.pt"))
    # As for the other fixed-density methods: fan_in rescales the surviving initial weights.
    rescale: str = key("fan_in", one_of("fan_in", "none"))


def masks_problems(cfg) -> list[str]:
    if cfg.method.file is not None and cfg.budget.snapshot is not None:
        return [f"method.file and budget.snapshot={cfg.budget.snapshot} are both set: give the masks one way, "
                "a file or the reference's snapshot, not two"]
    if cfg.method.file is None and cfg.budget.snapshot is None:
        return ["method.file=None is invalid: the path of a masks file or of a run's snapshots/round_NNN.pt "
                "(or budget.match with budget.snapshot=k: the reference's snapshot of round k)"]
    return []


@register_method("masks", schema=MasksFileConfig, validate=masks_problems, family="fixed_density", label="given masks",
                 short_label="masks", color="tab:olive", order=70, matched_budget=True)
class MasksFileRun(FixedDensityRun):
    """Fixed-density training of the mask in `method.file`."""

    @classmethod
    def precheck(cls, cfg) -> None:
        super().precheck(cfg)
        if cfg.method.file is not None or masks_source(cfg).is_file():  # a round never reached is a no-op
            check_masks_file(cfg)

    def target_density(self) -> float | None:
        if self.cfg.method.file is None and not masks_source(self.cfg).is_file():
            return None  # the reference never reached round budget.snapshot
        self.file_masks = check_masks_file(self.cfg)
        check_fit(self.file_masks, self.model, self.cfg)  # the model of the data as loaded (ImageNet's folders decide its class count)
        return density(self.file_masks)

    def initial_state(self) -> dict:
        state = super().initial_state()
        # The run's identity holds the file's path; the content it trained is recorded (a resumed
        # run takes its masks from its checkpoint, not from the file).
        if self.density_target is not None:
            state["masks_sha256"] = hashlib.sha256(masks_source(self.cfg).read_bytes()).hexdigest()
        return state

    def build_masks(self) -> Masks:
        self.ctx.progress(f"masks from {masks_source(self.cfg)}, density {self.density_target:.4%}")
        return {n: m.to(self.ctx.device) for n, m in self.file_masks.items()}

    def summary_fields(self) -> dict:
        source = masks_source(self.cfg)
        source = str(source) if self.cfg.method.file is not None or source.is_file() else None
        return {**super().summary_fields(), "masks_file": source, "masks_sha256": self.state.get("masks_sha256")}
