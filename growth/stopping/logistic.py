"""The logistic-fit stopping rule: stop growing once proxy accuracy has plateaued.

After each growth round the (density, proxy accuracy) points so far are fitted with

    acc(x) = a + (b - a) / (1 + exp(-k (x - x0))),   x = log10(density)

and growth stops when (1) the fit is valid, (2) the predicted remaining gain b - acc(x_now) is
below ``tol`` and (3) at least ``confirm`` observed accuracies lie within ``tol`` of b. Condition 3
is what keeps a concave, still-rising curve from stopping: a logistic fitted to the rising part
alone puts b just above the last point, which passes (1) and (2).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from growth.config.schema import StopConfig
from growth.errors import ConfigError
from growth.kinds import STOP_RULES

__all__ = ["FitDecision", "StopRule", "logistic"]

K_MAX = 50.0  # per decade of density: a transition narrower than one 1.25x growth step
K_VALID_MIN = 1e-6  # below this the fitted curve is flat and b is not an asymptote
X0_MARGIN_MIN = 0.5  # decades
MAX_NFEV = 400  # per start; data a logistic describes converges in far fewer


def logistic(x, a, b, k, x0):
    """acc(x) = a + (b - a) / (1 + exp(-k (x - x0))); overflow-safe for large |k (x - x0)|."""
    z = np.clip(-k * (np.asarray(x, dtype=float) - x0), -700.0, 700.0)
    return a + (b - a) / (1.0 + np.exp(z))


def _logistic_jac(x, a, b, k, x0):
    z = np.clip(-k * (x - x0), -700.0, 700.0)
    s = 1.0 / (1.0 + np.exp(z))
    ds = s * (1.0 - s)
    return np.stack([1.0 - s, s, (b - a) * ds * (x - x0), -(b - a) * ds * k], axis=1)


@dataclass
class FitDecision:
    """One stop decision and the fit behind it (recorded every round so it can be audited)."""

    stop: bool
    fitted: bool  # a fit was attempted and converged
    reason: str
    a: float | None = None
    b: float | None = None
    k: float | None = None
    x0: float | None = None
    residual: float | None = None  # RMS of fit - observed
    predicted_gain: float | None = None  # b - acc_fit(x_now)
    n_plateau: int | None = None  # observed accuracies within tol of b
    valid: bool = False  # condition 1
    gain_ok: bool | None = None  # condition 2
    plateau_ok: bool | None = None  # condition 3
    n_points: int = 0

    def as_record(self) -> dict:
        """Flat dict of primitives, keys prefixed 'fit_', for one CSV row."""
        return {f"fit_{key}": value for key, value in asdict(self).items()}


@dataclass
class StopRule:
    """Logistic-fit stopping rule (defaults; the paper's exact form is not available).

    Parameters: ``tol`` (accuracy as a fraction; 0.005 = 0.5 points), ``confirm`` (observed points
    needed within tol of b), ``min_points`` (no fit before this many points; at least 4, the
    number of parameters).

    Fit: scipy ``curve_fit`` (trust-region reflective, bounded) with bounds
    a in [0, 1], b in [0, 1], k in [0, 50] per decade (50 is a step within one 1.25x growth step),
    x0 in [x_min - m, x_max + m] with m = max(x_max - x_min, 0.5) decades (a midpoint further out
    is not identifiable from the data). Several deterministic starts, best sum of squares kept:
    a = min(acc), b = max(acc), k = 4 / (x range) clipped to the bounds, and x0 at the first point
    reaching half-way from min to max, at the last point, and half a margin beyond it (for a
    curve still rising at its last point). The covariance is not used, so scipy's
    OptimizeWarning about it (always raised with 4 points and 4 parameters) is not a failure;
    non-convergence (RuntimeError) and any other error are, and give stop=False.

    Condition 1 (valid) requires converged, finite parameters, k > 1e-6 and b > a (a rising
    curve: for a falling or flat one b is not a ceiling) and b in [max observed - tol, 1].
    Condition 2 uses x_now = log10 of the last density (the current round).

    Flat data: if all observed accuracies lie within ``tol`` of each other, no fit is attempted
    and the rule does not stop. A flat history has no rise for a logistic to saturate (a, k, x0
    are unidentifiable), and the usual flat history is a sparse seed stuck near chance accuracy
    for a few rounds, where stopping would end growth at its worst point. A network that is
    already at its plateau at the seed density keeps growing until ``max_density`` or
    ``max_rounds``, which is the cheap error.

    Deterministic: the same inputs give the same decision. ``decide`` never raises on valid input;
    it raises ValueError for mismatched lengths, non-finite values, densities outside (0, 1] or
    accuracies outside [0, 1] (a percentage passed as accuracy would make tol meaningless).
    """

    tol: float = 0.005
    confirm: int = 3
    min_points: int = 4

    def __post_init__(self):
        if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and 0 < self.tol < 1):
            raise ConfigError(f"stop rule tol must be in (0, 1) (accuracy as a fraction), got {self.tol!r}")
        if isinstance(self.confirm, bool) or not isinstance(self.confirm, int) or self.confirm < 0:
            raise ConfigError(f"stop rule confirm must be an integer >= 0, got {self.confirm!r}")
        if isinstance(self.min_points, bool) or not isinstance(self.min_points, int) or self.min_points < 4:
            raise ConfigError(f"stop rule min_points must be an integer >= 4 (the logistic has 4 "
                              f"parameters), got {self.min_points!r}")

    def decide(self, densities: Sequence[float], accuracies: Sequence[float]) -> FitDecision:
        d = np.asarray(densities, dtype=float).ravel()
        acc = np.asarray(accuracies, dtype=float).ravel()
        if d.shape != acc.shape:
            raise ValueError(f"got {d.size} densities but {acc.size} accuracies")
        if not (np.isfinite(d).all() and np.isfinite(acc).all()):
            raise ValueError("densities and accuracies must be finite")
        if ((d <= 0) | (d > 1)).any():
            raise ValueError(f"densities must be in (0, 1], got {d.tolist()}")
        if ((acc < 0) | (acc > 1)).any():
            raise ValueError(f"accuracies must be fractions in [0, 1], got {acc.tolist()}")
        n = int(d.size)
        if n < self.min_points:
            return FitDecision(False, False, f"too few points ({n} < {self.min_points})", n_points=n)
        spread = float(acc.max() - acc.min())
        if spread <= self.tol:
            return FitDecision(False, False, f"no rise observed: accuracy range {spread:.4f} <= tol "
                               f"{self.tol:g} (a flat start is not a plateau)", n_points=n)

        x = np.log10(d)
        try:
            params, rms = _fit(x, acc)
        except Exception as exc:  # the rule must never raise on a failed fit
            return FitDecision(False, False, f"fit failed: {type(exc).__name__}: {exc}", n_points=n)
        a, b, k, x0 = (float(p) for p in params)
        gain = float(b - logistic(x[-1], a, b, k, x0))
        n_plateau = int(np.sum(np.abs(acc - b) <= self.tol))
        max_acc = float(acc.max())

        problems = []
        if not all(math.isfinite(v) for v in (a, b, k, x0, rms, gain)):
            problems.append("non-finite parameters")
        if not k > K_VALID_MIN:
            problems.append(f"k={k:.3g} not > 0")
        if not b > a:
            problems.append(f"b={b:.4f} not above a={a:.4f} (not rising)")
        if not (max_acc - self.tol <= b <= 1.0):
            problems.append(f"b={b:.4f} outside [max observed {max_acc:.4f} - tol, 1]")
        valid = not problems
        gain_ok = gain < self.tol
        plateau_ok = n_plateau >= self.confirm
        stop = valid and gain_ok and plateau_ok

        if not valid:
            reason = "fit invalid: " + "; ".join(problems)
        elif not gain_ok:
            reason = f"gain {gain:.4f} >= tol {self.tol:g}"
        elif not plateau_ok:
            reason = f"plateau not observed ({n_plateau}/{self.confirm} points within tol of b)"
        else:
            reason = (f"plateau observed ({n_plateau}/{self.confirm} points within tol of b), "
                      f"gain {gain:.4f} < tol {self.tol:g}")
        return FitDecision(stop=stop, fitted=True, reason=reason, a=a, b=b, k=k, x0=x0, residual=rms,
                           predicted_gain=gain, n_plateau=n_plateau, valid=valid, gain_ok=gain_ok,
                           plateau_ok=plateau_ok, n_points=n)


def _fit(x: np.ndarray, acc: np.ndarray) -> tuple[np.ndarray, float]:
    """Bounded least squares from several starts; returns (a, b, k, x0) and the RMS residual."""
    x_min, x_max = float(x.min()), float(x.max())
    x_range = x_max - x_min
    margin = max(x_range, X0_MARGIN_MIN)
    lower = np.array([0.0, 0.0, 0.0, x_min - margin])
    upper = np.array([1.0, 1.0, K_MAX, x_max + margin])

    lo, hi = float(acc.min()), float(acc.max())
    k_start = min(max(4.0 / max(x_range, 1e-3), 0.1), K_MAX)
    halfway = x[np.argmax(acc >= (lo + hi) / 2)]
    starts = [(lo, hi, k_start, float(halfway)), (lo, hi, k_start, x_max), (lo, hi, k_start, x_max + margin / 2)]

    best, best_sse, last_error = None, math.inf, None
    for start in starts:
        p0 = np.clip(np.array(start, dtype=float), lower, upper)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)  # covariance only; unused
                warnings.simplefilter("ignore", RuntimeWarning)
                params, _ = curve_fit(logistic, x, acc, p0=p0, bounds=(lower, upper), method="trf",
                                      jac=_logistic_jac, x_scale="jac", max_nfev=MAX_NFEV)
        except (RuntimeError, ValueError, FloatingPointError) as exc:
            last_error = exc
            continue
        sse = float(np.sum((logistic(x, *params) - acc) ** 2))
        if math.isfinite(sse) and sse < best_sse:
            best, best_sse = params, sse
    if best is None:
        raise last_error if last_error is not None else RuntimeError("no start converged")
    return best, math.sqrt(best_sse / x.size)


@STOP_RULES.register("logistic", schema=StopConfig)
def logistic_rule(settings) -> Callable[[Sequence[dict]], FitDecision]:
    """The rule of METHOD.md on the rounds so far (growth.stop.tol, confirm, min_points)."""
    rule = StopRule(tol=settings.tol, confirm=settings.confirm, min_points=settings.min_points)
    return lambda history: rule.decide([h["density"] for h in history], [h["proxy_accuracy"] for h in history])
