import math
import warnings

import numpy as np
import pytest

from growth.errors import ConfigError
from growth.stopping import FitDecision, StopRule, logistic

DENSITIES = 0.01 * 1.25 ** np.arange(22)  # geometric growth from a 1% seed, ratio 1.25
X = np.log10(DENSITIES)
A, B, K, X0 = 0.1, 0.95, 6.0, -1.4
TRUE = logistic(X, A, B, K, X0)


def first_stop(rule, densities, accuracies):
    """Feed the points one round at a time; return the number of points at the first stop."""
    for n in range(1, len(densities) + 1):
        if rule.decide(densities[:n], accuracies[:n]).stop:
            return n
    return None


def test_logistic_fed_incrementally_stops_when_confirm_points_reach_the_plateau():
    rule = StopRule()
    within = np.abs(TRUE - B) <= rule.tol
    expected = int(np.argmax(np.cumsum(within) >= rule.confirm)) + 1
    assert 4 < expected < len(DENSITIES)  # the data has a rise, then an observed plateau
    assert first_stop(rule, DENSITIES, TRUE) == expected

    before = rule.decide(DENSITIES[: expected - 1], TRUE[: expected - 1])
    assert not before.stop and before.valid and before.gain_ok and not before.plateau_ok
    assert before.n_plateau == rule.confirm - 1

    at = rule.decide(DENSITIES[:expected], TRUE[:expected])
    assert at.stop and at.fitted and at.valid
    assert at.reason.startswith("plateau observed (3/3")
    # Noise-free data: the fit recovers the generating curve.
    assert at.b == pytest.approx(B, abs=1e-3)
    assert at.k == pytest.approx(K, rel=0.05)
    assert at.x0 == pytest.approx(X0, abs=0.02)
    assert at.residual < 1e-4
    assert at.predicted_gain < rule.tol


def test_rising_part_only_does_not_stop_and_reports_the_gain():
    dec = StopRule().decide(DENSITIES[:10], TRUE[:10])
    assert dec.fitted and dec.valid and not dec.stop
    assert dec.predicted_gain > 0.1
    assert dec.reason.startswith("gain ")


def test_concave_power_law_is_blocked_by_confirm_only():
    # Accuracy rising like a power of log-density: concave, no plateau before density 1.
    acc = 0.6 + 0.05 * (X + 2.05) ** 0.3
    eager = first_stop(StopRule(confirm=0), DENSITIES, acc)
    assert eager is not None
    # Conditions 1-2 alone stop while growth still pays several tol.
    assert acc[-1] - acc[eager - 1] > 3 * 0.005
    blocked = StopRule(confirm=3).decide(DENSITIES[:eager], acc[:eager])
    assert blocked.valid and blocked.gain_ok and not blocked.plateau_ok and not blocked.stop
    assert blocked.n_plateau < 3
    assert "plateau not observed" in blocked.reason
    patient = first_stop(StopRule(confirm=3), DENSITIES, acc)
    assert patient is None or patient > eager + 3


def test_fewer_than_min_points_never_stops():
    flat_top = np.array([0.2, 0.95, 0.95, 0.95, 0.95, 0.95])
    for n in range(1, 4):
        dec = StopRule().decide(DENSITIES[:n], flat_top[:n])
        assert not dec.stop and not dec.fitted
        assert dec.reason == f"too few points ({n} < 4)"
    assert StopRule(min_points=6).decide(DENSITIES[:5], flat_top[:5]).reason == "too few points (5 < 6)"
    assert StopRule(min_points=6).decide(DENSITIES[:6], flat_top[:6]).fitted


def test_noisy_logistic_stops_on_the_plateau_not_before():
    rule = StopRule()
    noisy = np.clip(TRUE + np.random.default_rng(0).normal(0.0, 0.002, TRUE.size), 0.0, 1.0)
    reach = int(np.argmax(TRUE >= B - rule.tol)) + 1  # points needed for the curve to reach the plateau
    n = first_stop(rule, DENSITIES, noisy)
    assert n is not None
    assert reach <= n <= reach + rule.confirm + 1
    dec = rule.decide(DENSITIES[:n], noisy[:n])
    assert dec.b == pytest.approx(B, abs=0.005)
    assert 0.0005 < dec.residual < 0.005


def test_flat_history_is_not_a_plateau():
    # A seed stuck at chance for several rounds must keep growing.
    chance = [0.1, 0.1, 0.101, 0.1, 0.1, 0.1]
    dec = StopRule().decide(DENSITIES[:6], chance)
    assert not dec.stop and not dec.fitted and dec.b is None
    assert "no rise observed" in dec.reason
    # The same flat points after a rise are a plateau.
    risen = [0.1, 0.5, 0.9, 0.95, 0.95, 0.95, 0.95]
    assert StopRule().decide(DENSITIES[:7], risen).stop


def test_record_is_flat_primitives_with_fit_prefix():
    n = 19
    rec = StopRule().decide(DENSITIES[:n], TRUE[:n]).as_record()
    for key in ("stop", "fitted", "reason", "a", "b", "k", "x0", "residual", "predicted_gain",
                "n_plateau", "valid", "gain_ok", "plateau_ok", "n_points"):
        assert f"fit_{key}" in rec
    assert all(k.startswith("fit_") for k in rec)
    assert all(v is None or isinstance(v, (bool, int, float, str)) for v in rec.values())
    assert rec["fit_b"] == pytest.approx(B, abs=1e-3) and rec["fit_n_points"] == n
    assert rec["fit_stop"] is True
    empty = FitDecision(False, False, "too few points (1 < 4)").as_record()
    assert empty["fit_b"] is None and empty["fit_reason"] == "too few points (1 < 4)"


@pytest.mark.parametrize("densities, accuracies", [
    ([0.01, 0.0125, 0.015, 0.02, 0.03], [0.5] * 5),  # constant
    ([0.01, 0.01, 0.02, 0.02, 0.02], [0.1, 0.1, 0.9, 0.9, 0.9]),  # two distinct x values
    ([0.1] * 5, [0.1, 0.5, 0.9, 0.3, 0.2]),  # one x value
    ([0.01, 0.02, 0.04, 0.08], [0.0, 0.0, 1.0, 1.0]),  # extremes, exact step
    ([0.01, 0.02, 0.04, 0.08, 0.16], [0.9, 0.8, 0.7, 0.6, 0.5]),  # falling
    ([1e-9, 1e-6, 1e-3, 1.0], [0.1, 0.2, 0.9, 0.95]),  # wide x range
])
def test_degenerate_inputs_never_raise_and_do_not_stop(densities, accuracies):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning leaks either
        dec = StopRule().decide(densities, accuracies)
    assert isinstance(dec, FitDecision)
    assert dec.stop is False
    assert dec.reason
    if dec.fitted:
        assert all(math.isfinite(v) for v in (dec.a, dec.b, dec.k, dec.x0, dec.residual))


def test_falling_curve_is_invalid():
    dec = StopRule().decide([0.01, 0.02, 0.04, 0.08, 0.16], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert not dec.valid and dec.reason.startswith("fit invalid")
    assert "not rising" in dec.reason and dec.b < dec.a


def test_random_inputs_never_raise_and_are_deterministic():
    rng = np.random.default_rng(1)
    rule = StopRule()
    for _ in range(40):
        n = int(rng.integers(0, 10))
        d = np.sort(rng.choice([0.01, 0.02, 0.05, 0.3, 1.0], n) if rng.random() < 0.5 else rng.uniform(1e-4, 1, n))
        a = rng.choice([0.0, 0.1, 0.5, 1.0], n) if rng.random() < 0.3 else rng.uniform(0, 1, n)
        first, second = rule.decide(d, a), rule.decide(list(d), list(a))
        assert first == second


def test_invalid_input_and_parameters_raise():
    rule = StopRule()
    with pytest.raises(ValueError, match="densities but"):
        rule.decide([0.1, 0.2], [0.5])
    with pytest.raises(ValueError, match="fractions"):
        rule.decide([0.01, 0.02, 0.04, 0.08], [10.0, 50.0, 90.0, 95.0])
    with pytest.raises(ValueError, match="finite"):
        rule.decide([0.01, 0.02, 0.04, 0.08], [0.1, float("nan"), 0.9, 0.95])
    with pytest.raises(ValueError, match="densities must be in"):
        rule.decide([0.0, 0.02, 0.04, 0.08], [0.1, 0.2, 0.9, 0.95])
    for bad in ({"tol": 0.0}, {"tol": float("nan")}, {"confirm": -1}, {"min_points": 3}, {"confirm": 1.5}):
        with pytest.raises(ConfigError):
            StopRule(**bad)


# ------------------------------------------------------------------ rule recent_plateau (a plugin)


def _history(densities, accuracies):
    return [{"round": i, "density": d, "proxy_accuracy": a} for i, (d, a) in enumerate(zip(densities, accuracies))]


def test_recent_plateau_stops_only_on_a_flat_stretch_of_the_latest_rounds():
    from omegaconf import OmegaConf

    from growth.kinds import STOP_RULES
    from growth.stopping.recent_plateau import RecentPlateauConfig

    decide = STOP_RULES.get("recent_plateau")(OmegaConf.structured(RecentPlateauConfig(tol=0.01, width_decades=0.2)))
    d = [0.01 * 1.25**i for i in range(8)]  # 0.097 decades a step: 0.2 decades is the last 4 rounds
    flat = decide(_history(d, [0.5, 0.7, 0.8, 0.9, 0.950, 0.955, 0.952, 0.958]))
    assert flat.stop and flat.points == 4 and flat.spread == pytest.approx(0.008)
    assert flat.as_record() == {"plateau_points": 4, "plateau_span": pytest.approx(3 * 0.09691, abs=1e-4), "plateau_spread": pytest.approx(0.008)}
    rising = decide(_history(d, [0.5, 0.7, 0.8, 0.9, 0.93, 0.94, 0.95, 0.96]))
    assert not rising.stop and "> tol" in rising.reason
    # two flat rounds are not enough: the window must cover 0.2 decades
    assert not decide(_history(d[:3], [0.95, 0.951, 0.95])).stop
    # a flat stretch below an earlier best (a dip) does not count as the plateau
    assert not decide(_history(d, [0.5, 0.7, 0.99, 0.9, 0.950, 0.955, 0.952, 0.958])).stop


def test_a_rule_with_settings_of_its_own_is_chosen_by_its_group(tmp_path):
    from growth.config.validation import validate
    from growth.errors import ConfigError
    from growth.stopping.recent_plateau import RecentPlateauConfig
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["growth/stop=recent_plateau", "growth.stop.width_decades=0.3"], tmp_path)
    assert OmegaConf_type(cfg.growth.stop) is RecentPlateauConfig
    assert cfg.growth.stop.tol == 0.01 and cfg.growth.stop.width_decades == 0.3  # the embedded default's tol stays
    validate(cfg)
    with pytest.raises(ConfigError, match=r"growth.stop.rule='recent_plateau' needs its own settings \(RecentPlateauConfig\): "
                                          r"choose it with growth/stop=recent_plateau"):
        validate(compose_cfg(["growth.stop.rule=recent_plateau"], tmp_path))
    with pytest.raises(ConfigError, match=r"growth.stop.width_decades=0.0 is invalid: decades of density above 0"):
        validate(compose_cfg(["growth/stop=recent_plateau", "growth.stop.width_decades=0"], tmp_path))


def OmegaConf_type(node):
    from omegaconf import OmegaConf

    return OmegaConf.get_type(node)


def test_a_run_stopped_by_recent_plateau_is_replayed_to_the_same_round(tmp_path):
    import subprocess
    import sys

    from growth.run import run
    from tests.conftest import FAST, REPO, compose_cfg

    fast = [o for o in FAST if o != "growth.stop.rule=none"]
    summary = run(compose_cfg([*fast, "growth/stop=recent_plateau", "model.hidden=[100,100]", "growth.timing.epochs=2",
                               "growth.max_rounds=20", "trainer.epochs=2"], tmp_path))
    assert summary["stop_reason"].startswith("recent_plateau test: the last ")
    out = subprocess.run([sys.executable, "-m", "analysis.replay", summary["run_dir"], "--csv", str(tmp_path / "r.csv")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import csv

    row = next(csv.DictReader(open(tmp_path / "r.csv")))
    assert row["rule"] == "recent_plateau" and row["fired"] == "True"
    assert int(row["discovered_round"]) == summary["discovered_round"]
    assert summary["stop_reason"] == f"recent_plateau test: {row['reason']}"


# ------------------------------------------------------------------ rules noise_tol, slope, extrapolate


def _settings(schema, **kw):
    from omegaconf import OmegaConf

    return OmegaConf.structured(schema(**kw))


def test_every_registered_rule_is_a_growth_stop_option_with_its_schema(tmp_path):
    from growth.config.validation import validate
    from growth.kinds import STOP_RULES
    from tests.conftest import compose_cfg

    for entry in STOP_RULES.entries():
        cfg = compose_cfg([f"growth/stop={entry.name}"], tmp_path)
        assert cfg.growth.stop.rule == entry.name
        assert issubclass(OmegaConf_type(cfg.growth.stop), entry.schema), entry.name
        validate(cfg)


def test_noise_tol_is_the_logistic_rule_until_the_residual_exceeds_tol():
    from growth.config.schema import StopConfig
    from growth.kinds import STOP_RULES
    from growth.stopping.noise_tol import NoiseTolConfig

    d = [0.01 * 1.25**i for i in range(10)]
    x = np.log10(d)
    smooth = logistic(x, 0.2, 0.95, 6.0, float(x[3])).tolist()
    plain = STOP_RULES.get("logistic")(_settings(StopConfig, tol=0.01))(_history(d, smooth))
    same = STOP_RULES.get("noise_tol")(_settings(NoiseTolConfig, tol=0.01, noise_factor=2.0))(_history(d, smooth))
    assert same == plain  # residual ~0: nothing changes
    noisy = [a + (0.02 if i % 2 else -0.02) for i, a in enumerate(smooth)]
    raised = STOP_RULES.get("noise_tol")(_settings(NoiseTolConfig, tol=0.01, noise_factor=2.0))(_history(d, noisy))
    assert "tol raised to" in raised.reason and raised.residual > 0.005


def test_slope_reads_the_gain_per_decade_of_the_latest_rounds():
    from growth.kinds import STOP_RULES
    from growth.stopping.slope import SlopeConfig

    decide = STOP_RULES.get("slope")(_settings(SlopeConfig, width_decades=0.3, max_gain_per_decade=0.02))
    d = [0.01 * 1.25**i for i in range(9)]
    x = np.log10(d)
    rising = decide(_history(d, (0.5 + 0.1 * (x - x[0])).tolist()))
    assert not rising.stop and rising.slope == pytest.approx(0.1) and rising.points == 5  # 0.3 decades: 4 steps back
    flat = decide(_history(d, (0.9 + 0.01 * (x - x[0])).tolist()))
    assert flat.stop and flat.as_record()["slope_per_decade"] == pytest.approx(0.01)


def test_extrapolate_stops_at_the_density_the_fit_predicts():
    import math

    from growth.config.schema import StopConfig
    from growth.kinds import STOP_RULES

    decide = STOP_RULES.get("extrapolate")(_settings(StopConfig, tol=0.01))
    d = [0.01 * 1.25**i for i in range(14)]
    x = np.log10(d)
    a, b, k, x0 = 0.2, 0.95, 6.0, float(x[4])
    acc = logistic(x, a, b, k, x0).tolist()
    target = 10 ** (x0 + math.log((b - a) / 0.01 - 1) / k)
    first = next(i for i in range(4, len(d)) if decide(_history(d[: i + 1], acc[: i + 1])).stop)
    assert d[first] >= target * (1 - 1e-6) and d[first - 1] < target * 1.02
    assert decide(_history(d[: first + 1], acc[: first + 1])).predicted_density == pytest.approx(target, rel=0.02)
