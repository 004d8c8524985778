"""Which configs of an optimizer to confirm: the search's best, and its second only when the search
cannot tell the two apart.

The rule (:func:`configs_to_confirm`), from the optimizer's finished search trials:

1. The best search value's config is always confirmed.
2. The second config is the best trial whose params differ from the first's (a repeat of the
   same config is the same config). It is confirmed too when the search cannot tell it from the
   first: their values are within the larger of

   - the practical-equivalence margin (the race's ``equivalence``): a config the race would call
     tied with the first could just as well be the better one, and
   - the noise the search itself shows, when it ran some config more than once (a warm-start
     config tried again, a sampler's repeat): two standard deviations of the difference of two
     single runs, ``2 * sqrt(2) * s`` with ``s`` the pooled standard deviation of the repeats.
3. Never a third: over 5 studies of 8 optimizers the search's third was the best confirmed config
   in 7 of 40 cases, by less than one seed standard deviation.

How a second config takes part in the race: both run the first look's seeds; the one with the
better mean there (:func:`studies.verdict.representative_config`) represents the optimizer for
the rest of the race, and the other stops. The second config costs the first look's seeds only,
and the choice on those seeds is a little optimistic for that optimizer, as any best-of-two is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from studies.verdict.statistics import direction_sign


@dataclass(frozen=True)
class SearchTrial:
    """One finished search trial: its value and its params."""

    value: float
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigChoice:
    """Which search trials to confirm, and why.

    Attributes:
        confirm: Indexes into the trials given, the best first (one or two).
        gap: How much worse the second-best distinct config's search value is (>= 0); ``None``
            without a second distinct config.
        threshold: The gap up to which a second config is confirmed.
        noise: The pooled standard deviation of repeated configs, ``None`` without repeats.
        reason: The choice in a sentence.
    """

    confirm: tuple[int, ...]
    gap: float | None
    threshold: float
    noise: float | None
    reason: str


def configs_to_confirm(
    trials: Sequence[SearchTrial], direction: str, equivalence: float
) -> ConfigChoice:
    """The search trials of one optimizer to confirm (see the module's docstring for the rule).

    Args:
        trials: Its finished search trials with finite values, in any order (equal values keep
            the order given, the service's search rank).
        direction: ``"maximize"`` or ``"minimize"``.
        equivalence: The race's practical-equivalence margin, in the metric's units.

    Raises:
        ValueError: no trial, a non-finite value, or an unknown direction.
    """
    sign = direction_sign(direction)
    if not trials:
        raise ValueError("configs_to_confirm needs at least one finished search trial")
    if any(not math.isfinite(t.value) for t in trials):
        raise ValueError("search values must be finite")
    order = sorted(range(len(trials)), key=lambda i: -sign * trials[i].value)
    first = order[0]
    key = _config_key(trials[first].params)
    second = next((i for i in order[1:] if _config_key(trials[i].params) != key), None)
    noise = repeat_noise(trials)
    threshold = max(equivalence, 0.0 if noise is None else 2.0 * math.sqrt(2.0) * noise)
    if second is None:
        return ConfigChoice(
            (first,), None, threshold, noise, "one config: the search found no other"
        )
    gap = sign * (trials[first].value - trials[second].value)
    if gap <= threshold:
        basis = f"the margin {threshold:.4g}" if threshold == equivalence else (
            f"the search's own noise ({threshold:.4g}: 2 sd of a difference of single runs)"
        )  # fmt: skip
        reason = (
            f"two configs: the second's search value is {gap:.4g} behind the first, within "
            f"{basis}, so the search cannot tell them apart"
        )
        return ConfigChoice((first, second), gap, threshold, noise, reason)
    reason = f"one config: the next one's search value is {gap:.4g} behind, beyond {threshold:.4g}"
    return ConfigChoice((first,), gap, threshold, noise, reason)


def repeat_noise(trials: Sequence[SearchTrial]) -> float | None:
    """Pooled standard deviation of the values of configs the search ran more than once (same
    params); ``None`` when no config was repeated."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    for trial in trials:
        groups.setdefault(_config_key(trial.params), []).append(trial.value)
    squares, df = 0.0, 0
    for values in groups.values():
        if len(values) < 2:
            continue
        mean = math.fsum(values) / len(values)
        squares += math.fsum((v - mean) ** 2 for v in values)
        df += len(values) - 1
    return math.sqrt(squares / df) if df else None


def _config_key(params: Mapping[str, Any]) -> tuple[Any, ...]:
    """Params as a comparable key; floats to 10 significant digits (a config read back from
    storage may differ in the last bits)."""
    return tuple(
        sorted(
            (name, float(f"{value:.10g}") if isinstance(value, float) else value)
            for name, value in params.items()
        )
    )
