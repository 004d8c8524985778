"""The measure of ``bench/warm_start_transfer.py``, on plain numbers.

- Budget in full-training equivalents (FTE): every epoch a study trains counts, pruned and
  diverged trials' included; one FTE is the epochs of one full training (the task's default).
- Quantile regret ``q(B)``: the share of the task's reference pool that is better than the study's
  best value after ``B`` FTE (ties count half; a study with nothing completed by then has q = 1).
- ``S10``: 10 divided by the FTE a method needs to reach stock's median best at 10 FTE.
- Win rate: the share of seed-paired comparisons a method wins at equal budget (ties half), with a
  bootstrap interval that resamples tasks.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trace:
    """One study, trial by trial in order: the epochs each trial trained and its value
    (``None`` unless it completed with a finite value).

    Attributes:
        epochs: Epochs of each trial (a pruned trial's epochs up to its pruning).
        values: Each trial's objective value, ``None`` for pruned, diverged or failed trials.
        direction: ``"maximize"`` or ``"minimize"``.
        full_epochs: Epochs of one full training: one FTE.
    """

    epochs: Sequence[int]
    values: Sequence[float | None]
    direction: str
    full_epochs: int

    @property
    def spent(self) -> float:
        """FTE the whole study spent."""
        return sum(self.epochs) / self.full_epochs

    def cumulative(self) -> list[float]:
        """FTE spent by the end of each trial."""
        total, out = 0, []
        for epochs in self.epochs:
            total += epochs
            out.append(total / self.full_epochs)
        return out

    def best_at(self, budget: float) -> float | None:
        """The best value of the trials that ended within ``budget`` FTE (``None``: none did).

        A study that spent less than ``budget`` in all gives its final best: it stopped early,
        and what it has is what it found within the budget."""
        best = None
        for spent, value in zip(self.cumulative(), self.values, strict=True):
            if spent > budget + 1e-9:
                break
            if value is not None and (best is None or better(value, best, self.direction)):
                best = value
        return best

    def fte_to_reach(self, target: float) -> float | None:
        """The FTE spent when the best value first reached ``target``; ``None``: never."""
        for spent, value in zip(self.cumulative(), self.values, strict=True):
            if value is not None and at_least(value, target, self.direction):
                return spent
        return None


def better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def at_least(a: float, target: float, direction: str) -> bool:
    return a >= target if direction == "maximize" else a <= target


def quantile_regret(value: float | None, pool: Sequence[float | None], direction: str) -> float:
    """The share of ``pool`` better than ``value``, ties counted half.

    A ``None`` in the pool (a diverged config) is worse than any value; ``value=None`` (nothing
    completed) has regret 1.
    """
    if value is None:
        return 1.0
    finite = [v for v in pool if v is not None]
    above = sum(better(v, value, direction) for v in finite)
    ties = sum(v == value for v in finite)
    return (above + 0.5 * ties) / len(pool)


def compare(a: float | None, b: float | None, direction: str) -> float:
    """1 when ``a`` is better than ``b``, 0 when worse, 0.5 on a tie (``None`` is worst)."""
    if a is None or b is None:
        return 0.5 if a is None and b is None else float(b is None)
    if a == b:
        return 0.5
    return float(better(a, b, direction))


def bootstrap_interval(
    groups: Sequence[Sequence[float]],
    statistic: Callable[[list[float]], float] = statistics.fmean,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over the pooled values of ``groups``,
    resampling whole groups (tasks) with replacement."""
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(resamples):
        picks = rng.integers(len(groups), size=len(groups))
        stats.append(statistic([v for i in picks for v in groups[i]]))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class WinRate:
    rate: float
    low: float
    high: float
    comparisons: int


def win_rate(
    pairs: Mapping[str, Sequence[tuple[float | None, float | None]]],
    direction: Mapping[str, str],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> WinRate:
    """How often the first of each seed-paired ``(method, baseline)`` value wins, over every
    pair of every task, with a bootstrap 95% interval that resamples tasks.

    Args:
        pairs: Per task, the paired values (one per optimizer and seed).
        direction: Per task, ``"maximize"`` or ``"minimize"``.
    """
    groups = [[compare(a, b, direction[task]) for a, b in rows] for task, rows in pairs.items()]
    pooled = [v for group in groups for v in group]
    low, high = bootstrap_interval(groups, resamples=resamples, seed=seed)
    return WinRate(statistics.fmean(pooled), low, high, len(pooled))


@dataclass(frozen=True)
class Speedup:
    """S10 of one (task, optimizer): ``10 / fte``, where ``fte`` is the median over seeds of the
    FTE a method needs to reach ``target``; ``capped`` when some seed did not reach it within
    10 FTE (its FTE counted as 10, so the speed-up is an upper bound: S10 only looks as far as
    the budget stock had)."""

    target: float
    fte: float
    capped: bool

    @property
    def value(self) -> float:
        return 10.0 / self.fte


def speedup(
    stock_best_at_10: Sequence[float | None], traces: Sequence[Trace], budget: float = 10.0
) -> Speedup | None:
    """S10 of ``traces`` (one per seed) against stock's best values after ``budget`` FTE (one per
    seed); ``None`` when stock completed nothing."""
    finite = sorted(v for v in stock_best_at_10 if v is not None)
    if not finite:
        return None
    direction = traces[0].direction
    # The median seed's own value (median_low), read in the direction of "better".
    ordered = finite if direction == "minimize" else finite[::-1]
    target = ordered[(len(ordered) - 1) // 2]
    costs, capped = [], False
    for trace in traces:
        fte = trace.fte_to_reach(target)
        if fte is None or fte > budget:
            fte, capped = budget, True
        costs.append(fte)
    return Speedup(target, statistics.median(costs), capped)


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))
