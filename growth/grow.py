"""The growth paradigm: PWMPR and the variants that share its loop (PWMP, RG, GG).

Seed -> [train a round -> record (density, proxy accuracy, cost) -> snapshot -> stop? -> grow]*
-> extensive training of the discovered density (or of every snapshot).
The variants differ only in the grow score (``method.score``, a registered score of
growth.scores) and the selection (``method.selection``, growth.selection); the seed
(growth.seeds) and the stop rule (growth.stopping) are registered plugins too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growth import distributed, records
from growth.config import MethodConfig
from growth.config.checks import key, one_of, registered
from growth.kinds import SCORES, STOP_RULES
from growth.masks import count_active, density, layer_densities
from growth.methods import MethodRun, RunContext, register_method
from growth.proxy import PROXY_SIGNALS, read_proxy, weight_average
from growth.scores import ScoreInputs
from growth.seeds import build_seed, rescale_fan_in
from growth.selection import edges_to_grow, grow_masks, nearest_rounds
from growth.timing import AdaptiveRoundTimer


@dataclass
class GrowthMethodConfig(MethodConfig):
    # Score over absent edges used to grow: a registered score (growth.scores): pwmp | random | gradient.
    score: str = key("pwmp", registered("score"))
    # sample: proportional to score^(1/temperature), without replacement; topk: the k best.
    selection: str = key("sample", one_of("sample", "topk"))



@register_method("pwmpr", schema=GrowthMethodConfig, family="growth", label="PWMPR", color="tab:red", headline=True, order=0)
@register_method("pwmp", schema=GrowthMethodConfig, family="growth", label="PWMP (top-k ablation)", short_label="PWMP",
                 color="tab:orange", order=10)
@register_method("rg", schema=GrowthMethodConfig, family="growth", label="RG (random growth)", short_label="RG",
                 color="tab:blue", order=20)
@register_method("gg", schema=GrowthMethodConfig, family="growth", label="GG (gradient growth)", short_label="GG",
                 color="tab:green", order=30)
class GrowthRun(MethodRun):
    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.score_fn = SCORES.get(self.cfg.method.score)
        self.stop_rule = STOP_RULES.get(self.cfg.growth.stop.rule)(self.cfg.growth.stop)
        self.timer = AdaptiveRoundTimer(self.cfg.growth.timing) if self.cfg.growth.timing.mode == "adaptive" else None
        self.round = 0
        self.average = None  # the moving average of a round's weights (growth.proxy.ema_halflife)

    def initial_state(self) -> dict:
        g = self.cfg.growth
        masks = build_seed(g.seed_builder, self.model, g.seed_density, self.gens["grow"], self.ctx.example_input)
        if g.seed_rescale == "fan_in":
            rescale_fan_in(self.model, masks)
        self.masks = masks
        return {"phase": "growth", "round": 0, "rounds": [], "snapshots": [], "discovered_round": None, "stop_reason": None}

    def execute(self) -> None:
        if self.state["phase"] == "growth":
            self.new_optimizer(self.cfg.trainer.round_lr or self.cfg.trainer.lr, resume=True)
            self.engine.set_masks(self.masks, self.optimizer)
            self.average = weight_average(self)
            self.engine.use_callbacks([cb for cb in (self.timer, self.average) if cb is not None])
        while self.state["phase"] == "growth":
            self.growth_round()
        self.engine.use_callbacks([])
        for r in self.state["extensive_queue"]:
            self.train_snapshot(r)

    # ---------------------------------------------------------------- growth rounds

    def growth_round(self) -> None:
        cfg, ctx, engine, r = self.cfg, self.ctx, self.engine, self.state["round"]
        self.round = r
        self.ledger.set_phase("growth")
        engine.locate(phase="growth", round=r)
        epochs_cap = cfg.growth.timing.max_epochs if self.timer else cfg.growth.timing.epochs
        if self.timer:
            self.timer.reset()
        if self.average:
            self.average.restart()
        batches = 0
        train_loss = train_accuracy = float("nan")
        for epoch in range(epochs_cap):
            engine.locate(epoch=epoch)
            result = engine.train_epoch(self.optimizer)
            batches += result.batches
            train_loss, train_accuracy = result.mean_loss, result.train_accuracy
            if result.stopped_early:
                break
        engine.fire("end_of_round")
        val = read_proxy(self, self.average)
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
        row.update({k: val[k] for k in PROXY_SIGNALS if k in val})
        row.update({f"layer_density:{n}": v for n, v in layer_densities(self.masks).items()})
        self.save_snapshot(r, d)
        history = self.state["rounds"] + [row]
        # The fit is recorded for every round, so a run without the rule can still be audited.
        decision = self.stop_rule(history)
        row.update(decision.as_record())
        rule_fired = decision.stop
        if rule_fired and self.state["discovered_round"] is None:
            self.state["discovered_round"] = r
            # "<rule> fit: ..." (the logistic rule's decisions) or "<rule> <kind>: ..." (a rule's own word)
            self.state["stop_reason"] = f"{cfg.growth.stop.rule} {getattr(decision, 'kind', 'fit')}: {decision.reason}"
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
        # Logged before the checkpoint, so the logger's step in it counts this row: a resumed run
        # neither writes it again nor reuses its step.
        self.ctx.logger.log_round(row)
        self.checkpoint()

    def grow(self, n_new: int) -> tuple[int, int]:
        scores = self.score_fn(self.score_inputs())
        new_masks, zero_filled = grow_masks(
            self.masks, scores, n_new, self.cfg.method.selection, self.cfg.growth.temperature, self.gens["grow"]
        )
        # New edges start at weight 0 with zero optimizer state: they were absent, and absent
        # weights and their state are kept at exactly 0.
        self.set_masks(new_masks)
        return n_new, zero_filled

    def score_inputs(self) -> ScoreInputs:
        engine = self.engine

        def batch_losses():
            # Through the training module: with several ranks, the gradient of the global batch.
            for i, (x, y) in enumerate(engine.batches):
                loss, _, global_len = engine.batch_loss(engine.forward_module(engine.format_input(x)), y, i)
                yield loss, global_len

        return ScoreInputs(
            model=self.model, masks=self.masks, example_input=self.ctx.example_input, batch_losses=batch_losses,
            initial_weights=lambda: torch.load(self.run_dir / "snapshots" / "init.pt", map_location="cpu", weights_only=True),
            charge_flops=self.ledger.add_extra_flops, dense_forward_flops=self.ledger.dense_forward_flops,
            settings=self.cfg.growth,
        )

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
        if which == "listed":
            snaps = sorted(self.state["snapshots"], key=lambda s: s["round"])
            near = [snaps[i]["round"] for i in nearest_rounds([s["density"] for s in snaps], list(self.cfg.extensive.densities))]
            discovered = self.state["discovered_round"]
            return sorted(set(near) | ({discovered} if discovered is not None else set()))
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


def register_growth_method(name: str, *, label: str, short_label: str | None = None, color: str | None = None,
                           order: int | None = None) -> None:
    """A growth method: this loop under its own name (its yaml chooses method.score and
    method.selection), e.g. beside a new score in that score's file."""
    register_method(name, schema=GrowthMethodConfig, family="growth", label=label, short_label=short_label,
                    color=color, order=order)(GrowthRun)
