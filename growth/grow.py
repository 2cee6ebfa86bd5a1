"""The growth paradigm: PWMPR and the variants that share its loop (PWMP, RG, GG).

Seed -> [train a round -> record (density, proxy accuracy, cost) -> snapshot -> stop? -> grow]*
-> extensive training of the discovered density (or of every snapshot).
The variants differ only in the grow score (``method.score``) and the selection
(``method.selection``), both looked up in registries below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from growth import records
from growth.errors import DivergedError
from growth.masks import Masks, count_active, count_total, density, growable_parameters, layer_densities
from growth.methods import RunContext, register_method
from growth.sampling import sample_without_replacement, topk_indices, uniform_without_replacement
from growth.scores import pwmp_scores
from growth.stopping import StopRule
from growth.train import Callback, Engine, lr_at, make_optimizer, set_lr

# ------------------------------------------------------------------ grow scores

ScoreFn = Callable[["GrowthRun", Masks], "dict[str, torch.Tensor] | None"]
GROW_SCORES: dict[str, ScoreFn] = {}


def grow_score(name: str) -> Callable[[ScoreFn], ScoreFn]:
    def decorate(fn: ScoreFn) -> ScoreFn:
        GROW_SCORES[name] = fn
        return fn

    return decorate


@grow_score("pwmp")
def _pwmp_score(run: "GrowthRun", masks: Masks) -> dict[str, torch.Tensor]:
    scores = pwmp_scores(run.model, masks, run.ctx.example_input)
    # One forward and one backward pass of a single sample through the dense graph.
    run.ledger.add_extra_flops(3.0 * run.ledger.dense_forward_flops)
    return scores


@grow_score("random")
def _random_score(run: "GrowthRun", masks: Masks) -> None:
    return None  # no score: selection is uniform over absent edges


@grow_score("gradient")
def _gradient_score(run: "GrowthRun", masks: Masks) -> dict[str, torch.Tensor]:
    """|dLoss/dw| over absent edges, averaged over a few training batches (taken only when growing)."""
    model, engine = run.model, run.engine
    params = growable_parameters(model)
    totals = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    batches = 0
    model.train()
    for x, y in engine.batches:
        model.zero_grad(set_to_none=True)
        engine.loss_fn(model(x), y).backward()
        for n, p in params.items():
            totals[n] += p.grad.detach().abs().double()
        batches += 1
        # Dense gradient pass: forward + backward at full density.
        run.ledger.add_extra_flops(3.0 * run.ledger.dense_forward_flops * len(x))
        if batches >= run.cfg.growth.gradient_batches:
            break
    model.zero_grad(set_to_none=True)
    scores = {n: t / batches for n, t in totals.items()}
    if not all(bool(torch.isfinite(s).all()) for s in scores.values()):
        raise DivergedError("non-finite gradient scores", {"phase": "growth", "round": run.round})
    return scores


# ------------------------------------------------------------------ selection

def select_edges(
    candidate_scores: torch.Tensor | None,
    n_candidates: int,
    k: int,
    selection: str,
    temperature: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, int]:
    """Indices into the candidate list, and how many of them were drawn with zero score.

    ``sample`` draws proportional to score^(1/temperature) without replacement; edges of score 0
    (no path through them) cannot be drawn by that law, so when fewer positive-score edges remain
    than requested, the rest are drawn uniformly among the zero-score ones (recorded).
    """
    if candidate_scores is None:
        return uniform_without_replacement(n_candidates, k, generator, torch.device("cpu")), 0
    scores = candidate_scores.detach().to("cpu", torch.float64)
    if selection == "topk":
        return topk_indices(scores, k), 0
    # Normalise before the power: PWMP scores reach 1e51 and would overflow for temperature < 1.
    top = scores.max() if len(scores) else scores.new_zeros(())
    weights = (scores / top).pow(1.0 / temperature) if top > 0 else torch.zeros_like(scores)
    positive = int((weights > 0).sum())
    take = min(k, positive)
    chosen = sample_without_replacement(weights, take, generator) if take else torch.empty(0, dtype=torch.long)
    fill = k - take
    if fill:
        zero = torch.nonzero(weights <= 0).squeeze(1)
        chosen = torch.cat([chosen, zero[uniform_without_replacement(len(zero), fill, generator, torch.device("cpu"))]])
    return chosen, fill


def grow_masks(
    masks: Masks, scores: Mapping[str, torch.Tensor] | None, k: int, selection: str, temperature: float, generator
) -> tuple[Masks, int]:
    """New masks with k absent edges added, chosen globally over all layers."""
    names = list(masks)
    flat_mask = torch.cat([masks[n].detach().flatten().cpu() for n in names])
    candidates = torch.nonzero(~flat_mask).squeeze(1)
    cand_scores = None
    if scores is not None:
        flat_scores = torch.cat([scores[n].detach().flatten().to("cpu", torch.float64) for n in names])
        cand_scores = flat_scores[candidates]
    chosen, zero_filled = select_edges(cand_scores, len(candidates), k, selection, temperature, generator)
    flat_mask[candidates[chosen]] = True
    out, offset = {}, 0
    for n in names:
        size = masks[n].numel()
        out[n] = flat_mask[offset : offset + size].view_as(masks[n]).to(masks[n].device)
        offset += size
    return out, zero_filled


def edges_to_grow(masks: Masks, growth_ratio: float, max_density: float) -> int:
    active, total = count_active(masks), count_total(masks)
    cap = min(total, math.floor(max_density * total + 1e-9)) - active
    n_new = round((growth_ratio - 1.0) * active)
    return max(0, min(max(n_new, 1), cap))


# ------------------------------------------------------------------ seed

def random_seed_masks(model: nn.Module, density_: float, generator: torch.Generator) -> Masks:
    out = {}
    for n, p in growable_parameters(model).items():
        k = max(1, round(density_ * p.numel()))
        idx = uniform_without_replacement(p.numel(), k, generator, torch.device("cpu"))
        m = torch.zeros(p.numel(), dtype=torch.bool)
        m[idx] = True
        out[n] = m.view_as(p).to(p.device)
    return out


SEED_BUILDERS: dict[str, Callable[..., Masks]] = {
    "phew": lambda model, d, gen, example: __import__("baselines.phew", fromlist=["phew_masks"]).phew_masks(
        model, d, gen, example
    ),
    "random": lambda model, d, gen, example: random_seed_masks(model, d, gen),
}


@torch.no_grad()
def rescale_fan_in(model: nn.Module, masks: Masks) -> None:
    """Scale each unit's surviving incoming weights by sqrt(fan_in / active fan_in), so a sparse
    seed's pre-activations keep the variance of the dense initialisation."""
    for n, p in growable_parameters(model).items():
        rows = masks[n].view(p.shape[0], -1)
        active = rows.sum(dim=1).to(p.dtype)
        factor = torch.where(active > 0, (rows.shape[1] / active.clamp(min=1)).sqrt(), torch.ones_like(active))
        p.mul_(factor.view(-1, *([1] * (p.dim() - 1))))


# ------------------------------------------------------------------ adaptive timing

class AdaptiveRoundTimer(Callback):
    """Ends a round when validation accuracy stops improving (evaluated every `eval_every` batches)."""

    def __init__(self, timing):
        self.timing = timing
        self.reset()

    def reset(self) -> None:
        self.best = -1.0
        self.bad = 0
        self.batches = 0

    def after_step(self, engine: Engine) -> None:
        self.batches += 1
        if self.batches % self.timing.eval_every:
            return
        acc = engine.evaluate("val")["accuracy"]
        engine.model.train()
        if acc > self.best + self.timing.min_delta:
            self.best, self.bad = acc, 0
        else:
            self.bad += 1
        if self.bad >= self.timing.patience:
            engine.stop_requested = True


# ------------------------------------------------------------------ the growth run

def _rng_state(gens: Mapping[str, torch.Generator]) -> dict:
    return {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}


def _set_rng_state(gens: Mapping[str, torch.Generator], state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    for k, g in gens.items():
        g.set_state(state[k])


@register_method("pwmpr", "pwmp", "rg", "gg")
class GrowthRun:
    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.run_dir = ctx.run_dir
        self.score_fn = GROW_SCORES[self.cfg.method.score]
        self.stop_rule = StopRule(
            tol=self.cfg.growth.stop.tol, confirm=self.cfg.growth.stop.confirm, min_points=self.cfg.growth.stop.min_points
        )

    # ---------------------------------------------------------------- state

    def _fresh_state(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        self.model = ctx.build_model()
        records.atomic_torch_save({n: t.cpu() for n, t in self.model.state_dict().items()}, self.run_dir / "snapshots" / "init.pt")
        builder = SEED_BUILDERS[cfg.growth.seed_builder]
        masks = builder(self.model, cfg.growth.seed_density, self.gens["grow"], ctx.example_input)
        if cfg.growth.seed_rescale == "fan_in":
            rescale_fan_in(self.model, masks)
        return {"phase": "growth", "round": 0, "masks": masks, "rounds": [], "snapshots": [], "extensive": {}}

    def _checkpoint(self) -> None:
        self.ledger.add_seconds(self.ctx.elapsed())
        state = {
            "version": 1,
            "phase": self.state["phase"],
            "round": self.state["round"],
            "masks": {n: m.cpu() for n, m in self.masks.items()},
            "model": {n: t.cpu() for n, t in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "rng": _rng_state(self.gens),
            "ledger": self.ledger.state_dict(),
            "rounds": self.state["rounds"],
            "snapshots": self.state["snapshots"],
            "extensive": self.state["extensive"],
            "discovered_round": self.state.get("discovered_round"),
            "stop_reason": self.state.get("stop_reason"),
        }
        self.ctx.save_checkpoint(state)
        self.write_records(status="running")

    # ---------------------------------------------------------------- run

    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        self.gens = {"data": ctx.generator("data"), "grow": ctx.generator("grow")}
        saved = ctx.load_checkpoint()
        if saved is None:
            self.state = self._fresh_state()
        else:
            self.model = ctx.build_model()
            self.model.load_state_dict(saved["model"])
            self.state = saved
            ctx.progress(f"resuming {self.run_dir} at phase {saved['phase']}, round {saved['round']}")
        self.masks = {n: m.to(ctx.device) for n, m in self.state["masks"].items()}
        self.ledger = ctx.new_ledger(self.model)
        self.timer = AdaptiveRoundTimer(cfg.growth.timing) if cfg.growth.timing.mode == "adaptive" else None
        self.engine = Engine(self.model, ctx.data, cfg.trainer, self.ledger, self.gens["data"], callbacks=[self.timer] if self.timer else [])
        self.optimizer = make_optimizer(cfg.trainer, self.model, cfg.trainer.round_lr or cfg.trainer.lr)
        if saved is not None:
            self.ledger.load_state_dict(saved["ledger"])
            if saved["optimizer"] is not None and saved["phase"] == "growth":
                self.optimizer.load_state_dict(saved["optimizer"])
            _set_rng_state(self.gens, saved["rng"])
        self.ledger.set_phase("growth")
        self.engine.set_masks(self.masks, self.optimizer)
        self.round = self.state["round"]
        ctx.elapsed()
        while self.state["phase"] == "growth":
            self.growth_round()
        if self.state["phase"] == "extensive":
            self.extensive_training(saved if saved is not None and saved["phase"] == "extensive" else None)
        return self.write_records(status="finished")

    def growth_round(self) -> None:
        cfg, ctx, engine, r = self.cfg, self.ctx, self.engine, self.state["round"]
        self.round = r
        engine.context = {"phase": "growth", "round": r}
        epochs_cap = cfg.growth.timing.max_epochs if self.timer else cfg.growth.timing.epochs
        if self.timer:
            self.timer.reset()
        batches = 0
        train_loss = float("nan")
        for epoch in range(epochs_cap):
            engine.context["epoch"] = epoch
            result = engine.train_epoch(self.optimizer)
            batches += result.batches
            train_loss = result.mean_loss
            if result.stopped_early:
                break
        engine.fire("end_of_round")
        val = engine.evaluate("val")
        self.ledger.add_seconds(ctx.elapsed())
        cum = self.ledger.totals(["growth"])
        d = density(self.masks)
        row = {
            "round": r,
            "density": d,
            "edges": count_active(self.masks),
            "proxy_accuracy": val["accuracy"],
            "val_loss": val["loss"],
            "train_loss": train_loss,
            "batches": batches,
            "cost_epochs": cum["cost_epochs"],
            "cost_flops": cum["cost_flops"],
            "wall_seconds": cum["seconds"],
        }
        row.update({f"layer_density:{n}": v for n, v in layer_densities(self.masks).items()})
        self.save_snapshot(r, d)
        history = self.state["rounds"] + [row]
        stop_reason = None
        # The fit is recorded for every round, so a run without the rule can still be audited.
        decision = self.stop_rule.decide([h["density"] for h in history], [h["proxy_accuracy"] for h in history])
        row.update(decision.as_record())
        if cfg.growth.stop.rule == "logistic":
            if decision.stop:
                stop_reason = f"logistic fit: {decision.reason}"
        n_new = edges_to_grow(self.masks, cfg.growth.growth_ratio, cfg.growth.max_density)
        if stop_reason is None and n_new == 0:
            stop_reason = f"reached growth.max_density={cfg.growth.max_density}"
        if stop_reason is None and r + 1 >= cfg.growth.max_rounds:
            stop_reason = f"reached growth.max_rounds={cfg.growth.max_rounds}"
        row["stop"] = stop_reason is not None
        row["stop_reason"] = stop_reason or ""
        ctx.progress(
            f"round {r:3d}  density {100 * d:7.3f}%  proxy acc {val['accuracy']:.4f}  batches {batches:5d}  "
            f"cost {cum['cost_epochs']:.3f} dense runs" + (f"  -> stop ({stop_reason})" if stop_reason else "")
        )
        if stop_reason is None:
            row["grown"], row["grown_zero_score"] = self.grow(n_new)
            self.state["round"] = r + 1
        else:
            self.state.update(phase="extensive", discovered_round=r, stop_reason=stop_reason)
            self.state["extensive"] = {"queue": self.extensive_queue(r), "done": []}
        self.state["rounds"] = history
        self._checkpoint()

    def grow(self, n_new: int) -> tuple[int, int]:
        scores = self.score_fn(self, self.masks)
        new_masks, zero_filled = grow_masks(
            self.masks, scores, n_new, self.cfg.method.selection, self.cfg.growth.temperature, self.gens["grow"]
        )
        # New edges start at weight 0 with zero optimizer state (set_masks keeps absent ones at 0,
        # and a newly present edge was absent, so its weight and state are already 0).
        self.masks = new_masks
        self.engine.set_masks(self.masks, self.optimizer)
        return n_new, zero_filled

    def save_snapshot(self, r: int, d: float) -> None:
        path = self.run_dir / "snapshots" / f"round_{r:03d}.pt"
        records.atomic_torch_save(
            {
                "round": r,
                "density": d,
                "masks": {n: m.cpu() for n, m in self.masks.items()},
                "model": {n: t.cpu() for n, t in self.model.state_dict().items()},
            },
            path,
        )
        self.state["snapshots"] = [s for s in self.state["snapshots"] if s["round"] != r] + [
            {"round": r, "density": d, "path": str(path.relative_to(self.run_dir))}
        ]

    def extensive_queue(self, discovered_round: int) -> list[int]:
        which = self.cfg.extensive.which
        if which == "none":
            return []
        if which == "all":
            return [s["round"] for s in self.state["snapshots"]]
        return [discovered_round]

    # ---------------------------------------------------------------- extensive training

    def extensive_training(self, saved: dict | None) -> None:
        ext = self.state["extensive"]
        while ext["queue"]:
            r = ext["queue"][0]
            resume = saved if (saved is not None and ext.get("current") == r) else None
            self.train_snapshot(r, resume)
            saved = None

    def train_snapshot(self, r: int, saved: dict | None) -> None:
        cfg, ctx, ext = self.cfg, self.ctx, self.state["extensive"]
        snap = torch.load(self.run_dir / "snapshots" / f"round_{r:03d}.pt", map_location="cpu", weights_only=True)
        phase = f"extensive:{r}"
        model = self.model
        start_epoch = 0
        if saved is not None:
            model.load_state_dict(saved["model"])
            start_epoch = int(ext["epoch"])
        elif cfg.extensive.init == "continue":
            model.load_state_dict(snap["model"])
        elif cfg.extensive.init == "rewind":
            model.load_state_dict(torch.load(self.run_dir / "snapshots" / "init.pt", map_location="cpu", weights_only=True))
        else:  # reinit: fresh weights from a seed of their own
            fresh = ctx.build_model(init_seed=int(cfg.seed) * 1_000_003 + 7919 + r)
            model.load_state_dict(fresh.state_dict())
        self.masks = {n: m.to(ctx.device) for n, m in snap["masks"].items()}
        self.optimizer = make_optimizer(cfg.trainer, model, cfg.trainer.lr)
        if saved is not None:
            self.optimizer.load_state_dict(saved["optimizer"])
        self.ledger.set_phase(phase)
        self.engine.callbacks = []  # adaptive round timing is a growth-phase concern
        self.engine.set_masks(self.masks, self.optimizer)
        ext["current"] = r
        for epoch in range(start_epoch, cfg.trainer.epochs):
            self.engine.context = {"phase": "extensive", "round": r, "epoch": epoch}
            set_lr(self.optimizer, lr_at(cfg.trainer, epoch))
            result = self.engine.train_epoch(self.optimizer)
            ext["epoch"] = epoch + 1
            if epoch + 1 < cfg.trainer.epochs:
                if (epoch + 1) % max(1, cfg.trainer.epochs // 10) == 0:
                    ctx.progress(f"extensive r{r} epoch {epoch + 1}/{cfg.trainer.epochs}  loss {result.mean_loss:.4f}")
                self._checkpoint()
        val, test = self.engine.evaluate("val"), self.engine.evaluate("test")
        growth_cost = next(h for h in self.state["rounds"] if h["round"] == r)
        own = self.ledger.totals([phase])
        ext["done"] = [d for d in ext["done"] if d["round"] != r] + [
            {
                "round": r,
                "density": snap["density"],
                "val_accuracy": val["accuracy"],
                "test_accuracy": test["accuracy"],
                "test_loss": test["loss"],
                "extensive_cost_epochs": own["cost_epochs"],
                "cost_epochs": growth_cost["cost_epochs"] + own["cost_epochs"],
                "cost_flops": growth_cost["cost_flops"] + own["cost_flops"],
                "wall_seconds": growth_cost["wall_seconds"] + own["seconds"],
            }
        ]
        ctx.progress(f"extensive r{r}  density {100 * snap['density']:.3f}%  test acc {test['accuracy']:.4f}")
        ext["queue"] = ext["queue"][1:]
        ext.pop("current", None)
        ext["epoch"] = 0
        if not ext["queue"]:
            self.state["phase"] = "done"
        self._checkpoint()

    # ---------------------------------------------------------------- records

    def write_records(self, status: str) -> dict:
        cfg, state = self.cfg, self.state
        records.atomic_write_csv(self.run_dir / "rounds.csv", state["rounds"])
        curve = sorted(state["extensive"].get("done", []), key=lambda c: c["density"])
        records.atomic_write_csv(self.run_dir / "curve.csv", curve)
        disc = state.get("discovered_round")
        disc_row = next((h for h in state["rounds"] if h["round"] == disc), None)
        disc_curve = next((c for c in curve if c["round"] == disc), None)
        totals = self.ledger.totals()
        summary = {
            "method": cfg.method.name,
            "dataset": cfg.dataset.name,
            "model": cfg.model.name,
            "seed": int(cfg.seed),
            "status": status,
            "seed_density": state["rounds"][0]["density"] if state["rounds"] else None,
            "discovered_density": disc_row["density"] if disc_row else None,
            "discovered_round": disc,
            "rounds": len(state["rounds"]),
            "stop_reason": state.get("stop_reason"),
            "proxy_accuracy": disc_row["proxy_accuracy"] if disc_row else None,
            "val_accuracy": disc_curve["val_accuracy"] if disc_curve else None,
            "test_accuracy": disc_curve["test_accuracy"] if disc_curve else None,
            "cost": {
                "epochs": disc_curve["cost_epochs"] if disc_curve else None,
                "flops": disc_curve["cost_flops"] if disc_curve else None,
                "seconds": disc_curve["wall_seconds"] if disc_curve else None,
            },
            "growth_cost": {k: self.ledger.totals(["growth"])[k] for k in ("cost_epochs", "cost_flops", "steps", "seconds")},
            "total_cost": {k: totals[k] for k in ("cost_epochs", "cost_flops", "steps", "samples", "seconds")},
            "dense_run_flops": self.ledger.dense_run_flops(),
        }
        records.atomic_write_json(self.run_dir / "summary.json", summary)
        return summary
