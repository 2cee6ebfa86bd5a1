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

from growth import distributed, records
from growth.errors import DivergedError
from growth.masks import Masks, count_active, count_total, density, growable_parameters, layer_densities
from growth.methods import MethodRun, RunContext, register_method
from growth.sampling import sample_without_replacement, topk_indices, uniform_without_replacement
from growth.scores import pwmp_scores
from growth.stopping import StopRule
from growth.train import Callback, Engine

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
        # Through the training module: with several ranks, the gradient of the global batch.
        loss, _, global_len = engine.batch_loss(engine.forward_module(engine.format_input(x)), y, batches)
        loss.backward()
        for n, p in params.items():
            totals[n] += p.grad.detach().abs().double()
        batches += 1
        # Dense gradient pass: forward + backward at full density.
        run.ledger.add_extra_flops(3.0 * run.ledger.dense_forward_flops * global_len)
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
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, int]:
    """Indices into the candidate list, and how many of them were drawn with zero score.

    ``sample`` draws proportional to score^(1/temperature) without replacement; edges of score 0
    (no path through them) cannot be drawn by that law, so when fewer positive-score edges remain
    than requested, the rest are drawn uniformly among the zero-score ones (recorded).

    The work runs where the scores are (on ``device``, default the CPU, when there are none).
    Every random draw comes from ``generator``; with the run's CPU generator the uniforms are
    drawn on the host and copied to the device, so the stream (and, but for the last bit of the
    device's log in the sampling keys, the edges drawn) is the same on every device.
    """
    if candidate_scores is None:
        device = torch.device("cpu") if device is None else torch.device(device)
        return uniform_without_replacement(n_candidates, k, generator, generator.device).to(device), 0
    # Softmax attention (kept in the ViT's scoring pass) has a derivative of either sign, so a
    # few path sums come out negative; such edges count as score 0 (no positive path through them).
    scores = candidate_scores.detach().to(torch.float64).clamp(min=0.0)
    if selection == "topk":
        return topk_indices(scores, k), 0
    # Normalise before the power: PWMP scores reach 1e51 and would overflow for temperature < 1.
    top = scores.max() if len(scores) else scores.new_zeros(())
    weights = (scores / top).pow(1.0 / temperature) if top > 0 else torch.zeros_like(scores)
    positive = int((weights > 0).sum())
    take = min(k, positive)
    chosen = (
        sample_without_replacement(weights, take, generator)
        if take
        else torch.empty(0, dtype=torch.long, device=scores.device)
    )
    fill = k - take
    if fill:
        zero = torch.nonzero(weights <= 0).squeeze(1)
        picks = uniform_without_replacement(len(zero), fill, generator, generator.device).to(scores.device)
        chosen = torch.cat([chosen, zero[picks]])
    return chosen, fill


def grow_masks(
    masks: Masks, scores: Mapping[str, torch.Tensor] | None, k: int, selection: str, temperature: float, generator
) -> tuple[Masks, int]:
    """New masks with k absent edges added, chosen globally over all layers.

    Runs on the scores' device (the masks' for random growth): nothing of the size of the network
    goes to the host. The new masks are on the devices of the old ones."""
    names = list(masks)
    if not names:
        return {}, 0
    source = scores[names[0]] if scores is not None else masks[names[0]]
    device = source.device
    flat_mask = torch.cat([masks[n].detach().flatten().to(device) for n in names])
    candidates = torch.nonzero(~flat_mask).squeeze(1)
    cand_scores = None
    if scores is not None:
        flat_scores = torch.cat([scores[n].detach().flatten().to(device, torch.float64) for n in names])
        cand_scores = flat_scores[candidates]
    chosen, zero_filled = select_edges(cand_scores, len(candidates), k, selection, temperature, generator, device)
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

@register_method("pwmpr", "pwmp", "rg", "gg")
class GrowthRun(MethodRun):
    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.score_fn = GROW_SCORES[self.cfg.method.score]
        stop = self.cfg.growth.stop
        self.stop_rule = StopRule(tol=stop.tol, confirm=stop.confirm, min_points=stop.min_points)
        self.timer = AdaptiveRoundTimer(self.cfg.growth.timing) if self.cfg.growth.timing.mode == "adaptive" else None
        self.round = 0

    def initial_state(self) -> dict:
        g = self.cfg.growth
        masks = SEED_BUILDERS[g.seed_builder](self.model, g.seed_density, self.gens["grow"], self.ctx.example_input)
        if g.seed_rescale == "fan_in":
            rescale_fan_in(self.model, masks)
        self.masks = masks
        return {"phase": "growth", "round": 0, "rounds": [], "snapshots": [], "discovered_round": None, "stop_reason": None}

    def execute(self) -> None:
        if self.state["phase"] == "growth":
            self.new_optimizer(self.cfg.trainer.round_lr or self.cfg.trainer.lr, resume=True)
            self.engine.set_masks(self.masks, self.optimizer)
            self.engine.callbacks = [self.timer] if self.timer else []
        while self.state["phase"] == "growth":
            self.growth_round()
        self.engine.callbacks = []
        for r in self.state["extensive_queue"]:
            self.train_snapshot(r)

    # ---------------------------------------------------------------- growth rounds

    def growth_round(self) -> None:
        cfg, ctx, engine, r = self.cfg, self.ctx, self.engine, self.state["round"]
        self.round = r
        self.ledger.set_phase("growth")
        engine.context = {"phase": "growth", "round": r}
        epochs_cap = cfg.growth.timing.max_epochs if self.timer else cfg.growth.timing.epochs
        if self.timer:
            self.timer.reset()
        batches = 0
        train_loss = train_accuracy = float("nan")
        for epoch in range(epochs_cap):
            engine.context["epoch"] = epoch
            result = engine.train_epoch(self.optimizer)
            batches += result.batches
            train_loss, train_accuracy = result.mean_loss, result.train_accuracy
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
            "train_accuracy": train_accuracy,
            "batches": batches,
            "cost_epochs": cum["cost_epochs"],
            "cost_flops": cum["cost_flops"],
            "wall_seconds": cum["seconds"],
        }
        row.update({f"layer_density:{n}": v for n, v in layer_densities(self.masks).items()})
        self.save_snapshot(r, d)
        history = self.state["rounds"] + [row]
        # The fit is recorded for every round, so a run without the rule can still be audited.
        decision = self.stop_rule.decide([h["density"] for h in history], [h["proxy_accuracy"] for h in history])
        row.update(decision.as_record())
        rule_fired = cfg.growth.stop.rule == "logistic" and decision.stop
        if rule_fired and self.state["discovered_round"] is None:
            self.state["discovered_round"] = r
            self.state["stop_reason"] = f"logistic fit: {decision.reason}"
        n_new = edges_to_grow(self.masks, cfg.growth.growth_ratio, cfg.growth.max_density)
        stop_reason = None
        if rule_fired and not cfg.growth.stop.keep_growing:
            stop_reason = self.state["stop_reason"]
        elif n_new == 0:
            stop_reason = f"reached growth.max_density={cfg.growth.max_density}"
        elif r + 1 >= cfg.growth.max_rounds:
            stop_reason = f"reached growth.max_rounds={cfg.growth.max_rounds}"
        row["stop"] = stop_reason is not None
        row["stop_reason"] = stop_reason or ""
        ctx.progress(
            f"round {r:3d}  density {100 * d:7.3f}%  proxy acc {val['accuracy']:.4f}  batches {batches:5d}  "
            f"cost {cum['cost_epochs']:.3f} dense runs" + (f"  -> stop ({stop_reason})" if stop_reason else "")
        )
        if stop_reason is None:
            row["grown"], row["grown_zero_score"] = self.grow(n_new)
            # Comparable across runs (one process or several); ranks check they agree.
            row["masks_digest"] = distributed.digest(self.masks)
            if ctx.shard.world > 1:
                weights = {f"weight:{n}": t for n, t in self.model.state_dict().items()}
                distributed.check_identical(f"masks and weights after growth round {r}", distributed.digest({**self.masks, **weights}))
            self.state["round"] = r + 1
        else:
            if self.state["discovered_round"] is None:
                self.state["discovered_round"] = r
                self.state["stop_reason"] = stop_reason
            self.state["phase"] = "extensive"
            self.state["extensive_queue"] = self.extensive_queue()
        self.state["rounds"] = history
        self.checkpoint()
        self.ctx.logger.log_round(row)

    def grow(self, n_new: int) -> tuple[int, int]:
        scores = self.score_fn(self, self.masks)
        new_masks, zero_filled = grow_masks(
            self.masks, scores, n_new, self.cfg.method.selection, self.cfg.growth.temperature, self.gens["grow"]
        )
        # New edges start at weight 0 with zero optimizer state: they were absent, and absent
        # weights and their state are kept at exactly 0.
        self.set_masks(new_masks)
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

    def extensive_queue(self) -> list[int]:
        which = self.cfg.extensive.which
        if which == "none":
            return []
        if which == "all":
            return [s["round"] for s in self.state["snapshots"]]
        return [self.state["discovered_round"]]

    # ---------------------------------------------------------------- extensive training

    def train_snapshot(self, r: int) -> None:
        cfg, ctx = self.cfg, self.ctx
        key = f"extensive:{r}"

        def setup() -> None:
            distributed.barrier()  # rank 0 has finished writing the snapshot the other ranks read
            snap = torch.load(self.run_dir / "snapshots" / f"round_{r:03d}.pt", map_location="cpu", weights_only=True)
            if cfg.extensive.init == "continue":
                self.model.load_state_dict(snap["model"])
            elif cfg.extensive.init == "rewind":
                init = torch.load(self.run_dir / "snapshots" / "init.pt", map_location="cpu", weights_only=True)
                self.model.load_state_dict(init)
            else:  # reinit: fresh weights from a seed of their own
                fresh = ctx.build_model(init_seed=int(cfg.seed) * 1_000_003 + 7919 + r)
                self.model.load_state_dict(fresh.state_dict())
            self.masks = {n: m.to(ctx.device) for n, m in snap["masks"].items()}

        done_before = self.state["progress"].get(key, {}).get("result") is not None
        result = self.train_fixed(key, cfg.trainer.epochs, setup, label=f"extensive r{r}")
        if done_before:
            return
        growth_row = next(h for h in self.state["rounds"] if h["round"] == r)
        self.add_curve_point(
            {
                "point": key,
                "round": r,
                "density": growth_row["density"],
                **result,
                "extensive_cost_epochs": self.ledger.totals([key])["cost_epochs"],
                **self.point_cost([key], base=growth_row),
            }
        )
        ctx.progress(f"extensive r{r}  density {100 * growth_row['density']:.3f}%  test acc {result['test_accuracy']:.4f}")
        self.checkpoint()

    # ---------------------------------------------------------------- records

    def write_records(self, status: str) -> dict:
        records.atomic_write_csv(self.run_dir / "rounds.csv", self.state["rounds"])
        return super().write_records(status)

    def summary_fields(self) -> dict:
        state = self.state
        disc = state.get("discovered_round")
        disc_row = next((h for h in state["rounds"] if h["round"] == disc), None)
        disc_point = next((c for c in state["curve"] if c["round"] == disc), None)
        growth = self.ledger.totals(["growth"])
        return {
            "seed_density": state["rounds"][0]["density"] if state["rounds"] else None,
            "discovered_density": disc_row["density"] if disc_row else None,
            "discovered_round": disc,
            "rounds": len(state["rounds"]),
            "stop_reason": state.get("stop_reason"),
            "proxy_accuracy": disc_row["proxy_accuracy"] if disc_row else None,
            "val_accuracy": disc_point["val_accuracy"] if disc_point else None,
            "test_accuracy": disc_point["test_accuracy"] if disc_point else None,
            "cost": self.summary_cost(disc_point),
            "growth_cost": {k: growth[k] for k in ("cost_epochs", "cost_flops", "steps", "seconds")},
        }
