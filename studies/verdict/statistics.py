"""Statistics of seeds, on plain numbers: a figure's mean, spread and interval
(:func:`summarize`), Welch's test of one optimizer against another (:func:`compare`) and Holm's
correction over many comparisons (:func:`holm`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import special

DIRECTIONS = ("maximize", "minimize")
DEFAULT_ALPHA = 0.05
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean and spread of one figure over seeds.

    Attributes:
        n: Number of seeds.
        mean: Their mean; ``None`` when n = 0.
        std: Sample standard deviation (ddof = 1); ``None`` when n < 2.
        ci_low: Lower end of the Student-t confidence interval of the mean; ``None`` when n < 2.
        ci_high: Upper end; ``None`` when n < 2.
        confidence: Level of the interval (0.95).
        values: The seeds' values, in the order given.
    """

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float = DEFAULT_CONFIDENCE
    values: tuple[float, ...] = ()

    @property
    def half_width(self) -> float | None:
        """Half the width of the interval (the "±" figure); ``None`` when there is none."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "values": list(self.values), "half_width": self.half_width}


@dataclass(frozen=True)
class Comparison:
    """One pair of optimizers, on the seeds' values: the better mean against the other.

    Attributes:
        best: The optimizer of the pair with the better mean (in a standing: the optimizer that
            beats this one most clearly, usually the best mean of all).
        other: The optimizer compared with it.
        difference: How much better ``best``'s mean is, in the metric's units and >= 0
            (best - other when maximizing, other - best when minimizing).
        statistic: Welch's t (of that difference); ``None`` when untestable, ``inf`` when both
            sides have zero variance and the means differ.
        df: Welch-Satterthwaite degrees of freedom; ``None`` when untestable or undefined.
        p_one_sided: P(a difference this large | ``best`` is not better), one-sided.
        p_value: The two-sided p-value (``p_one_sided`` doubled, capped at 1).
        p_adjusted: ``p_value`` after Holm's correction over all testable pairs.
        significant: ``p_adjusted <= alpha``: ``other`` is worse than ``best`` beyond noise.
        note: Why the pair could not be tested, or what was special about it; else "".
    """

    best: str
    other: str
    difference: float
    statistic: float | None
    df: float | None
    p_one_sided: float | None
    p_value: float | None
    p_adjusted: float | None
    significant: bool
    note: str = ""

    @property
    def testable(self) -> bool:
        return self.p_value is not None


def summarize(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> Summary:
    """Mean, sample standard deviation and Student-t interval of the mean of ``values``.

    Args:
        values: Finite floats (one per seed), any length.
        confidence: Level of the interval, in (0, 1).

    Raises:
        ValueError: a value is not finite, or ``confidence`` is outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    data = finite(values)
    n = len(data)
    if n == 0:
        return Summary(0, None, None, None, None, confidence)
    # Equal values have exactly that mean and no spread (fsum / n can be off by an ulp, which
    # would give a spurious spread of 1e-17 and an absurd t statistic).
    mean = data[0] if min(data) == max(data) else math.fsum(data) / n
    if n == 1:
        return Summary(1, mean, None, None, None, confidence, data)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in data) / (n - 1))
    half = float(special.stdtrit(n - 1, 0.5 + confidence / 2)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, confidence, data)


def compare(
    best: str,
    best_values: Sequence[float],
    other: str,
    other_values: Sequence[float],
    direction: str,
) -> Comparison:
    """Welch's test of ``best`` against ``other`` (Holm not applied yet): the one-sided p-value
    that ``best`` is better and the two-sided one (``best`` should have the better mean).

    ``p_adjusted`` and ``significant`` of the result are provisional (``p_value`` and
    ``p_value <= DEFAULT_ALPHA``); ``decide`` sets them after Holm's correction.
    """
    return _compare(best, summarize(best_values), other, summarize(other_values), direction)


def _compare(best: str, a: Summary, other: str, b: Summary, direction: str) -> Comparison:
    if a.mean is None or b.mean is None:
        raise ValueError("both optimizers need at least one value")
    difference = direction_sign(direction) * (a.mean - b.mean)
    if a.n < 2 or b.n < 2:
        lonely = [name for name, s in ((best, a), (other, b)) if s.n < 2]
        note = f"untestable: {' and '.join(lonely)} has one seed, so no spread to test against"
        return Comparison(best, other, difference, None, None, None, None, None, False, note)
    assert a.std is not None and b.std is not None
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        # Every seed of both gave one value: the difference (or its absence) is exact.
        statistic, df = (math.inf if difference > 0 else 0.0), None
        p_one = 0.0 if difference > 0 else 0.5
        note = "zero variance on both sides: every seed gave the same value"
    else:
        statistic = difference / se
        df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
        p_one = float(special.stdtr(df, -statistic))  # Student-t survival function
        note = ""
    p_value = min(1.0, 2.0 * p_one)
    return Comparison(
        best, other, difference, statistic, df, p_one, p_value, p_value,
        p_value <= DEFAULT_ALPHA, note,
    )  # fmt: skip


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * p_values[i]))
        adjusted[i] = running
    return adjusted


def direction_sign(direction: str) -> float:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    return 1.0 if direction == "maximize" else -1.0


def finite(values: Sequence[float]) -> tuple[float, ...]:
    data = tuple(float(v) for v in values)
    bad = [v for v in data if not math.isfinite(v)]
    if bad:
        raise ValueError(f"values must be finite (count a diverged seed before), got {bad}")
    return data
