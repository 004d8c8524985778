"""What a study tries first: known good configs, fitted to the study's space, as Optuna trials.

A new study does not start from nothing. Before the sampler proposes anything, it tries:

1. ``catalogue``: the best configs of the same task from earlier studies (the caller reads them from
   its storage: for the service, the finished trials behind ``/api/v1/best?task=``). A config that
   was best on this very task is the strongest prior there is, so these come first.
2. ``portfolio``: the configs of the shipped portfolio (:mod:`studies.warm_start`), which do well
   across tasks they were not learned from, in the order they were chosen.

Each config is fitted to the study's (possibly user-narrowed) space by :func:`fit_to_space`:
numbers outside a range are **clipped** to it (the closest point the user allows keeps the other
hyperparameters' good values; a config is a point, not a claim about one coordinate), a value not
among a categorical's choices becomes the nearest choice (on a log scale for positive numbers),
a config with a non-numeric value that is not a choice is **skipped**, a hyperparameter the user
fixed takes the fixed value, and one the space does not search is left to the optimizer's default.
Configs that become identical after fitting are tried once.

How many: :func:`warm_start_budget`, a fifth of ``n_trials``, at most six: the portfolio's
leave-one-task-out score levels off after six configs (0.71 for one, 0.91 for six, 0.94 for eight:
the mean rank of the best of them on a task they were not learned from), and
``bench/time_to_target.py`` measured 3, 6 and 8 configs in 40-trial studies at 1.34x, 1.52x and
1.51x fewer epochs than stock (4 tasks x 2 optimizers x 2 seeds; 6 and 8 tie). Warm-start trials
count towards ``n_trials``; the sampler then has them in its history.

Each trial carries its origin in the user attribute ``origin`` (``catalogue``, ``portfolio``,
``lr_range`` or ``sampler``) and, for warm-start trials, ``origin_source`` (the earlier study's
name, or ``"shipped portfolio"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import optuna

from optim_core.spaces import Categorical, Dimension, Fixed, Float, Int, OneMinus

Origin = Literal["catalogue", "portfolio", "lr_range", "sampler"]
ORIGINS: tuple[Origin, ...] = ("catalogue", "portfolio", "lr_range", "sampler")
ORIGIN_ATTR = "origin"
SOURCE_ATTR = "origin_source"
PORTFOLIO_SOURCE = "shipped portfolio"

CATALOGUE_CONFIGS = 2
"""Catalogue configs tried at most: the best few of a task, not a re-run of an earlier study."""

WARM_START_SHARE = 0.2
"""Share of ``n_trials`` warm-start configs may take (at least one, at most the maximum)."""

MAX_WARM_START = 6


@dataclass(frozen=True)
class KnownConfig:
    """A config from an earlier study of the same task and optimizer (a catalogue entry).

    Attributes:
        values: Its hyperparameters, as the trial's ``hyperparameters`` user attribute holds them
            (``{"lr": 0.001, "beta1": 0.9, "batch_size": 32}``).
        value: Its objective value in that study (same metric as the new study).
        source: Where it came from, recorded as ``origin_source`` (the earlier study's name).
    """

    values: Mapping[str, Any]
    value: float
    source: str


@dataclass(frozen=True)
class WarmStartConfig:
    """One config to try before the sampler.

    Attributes:
        values: Hyperparameter values inside the study's space (fixed ones excluded).
        params: The same as Optuna parameters (``one_minus_beta1`` ...): what
            ``study.enqueue_trial`` takes.
        origin: ``"catalogue"``, ``"portfolio"`` or ``"lr_range"``.
        source: The earlier study's name, or ``"shipped portfolio"``.
    """

    values: Mapping[str, Any]
    params: Mapping[str, Any]
    origin: Origin
    source: str

    @property
    def user_attrs(self) -> dict[str, str]:
        """The user attributes its trial starts with: ``origin`` and ``origin_source``."""
        return {ORIGIN_ATTR: self.origin, SOURCE_ATTR: self.source}


def warm_start_budget(n_trials: int) -> int:
    """How many warm-start configs a study of ``n_trials`` trials tries at most."""
    if n_trials < 1:
        return 0
    return max(1, min(MAX_WARM_START, round(WARM_START_SHARE * n_trials), n_trials))


def _nearest_choice(value: Any, choices: Sequence[Any]) -> Any:
    if value in choices:
        return value
    numeric = [c for c in choices if isinstance(c, int | float) and not isinstance(c, bool)]
    if isinstance(value, bool) or not isinstance(value, int | float) or not numeric:
        return None
    if value > 0 and all(c > 0 for c in numeric):
        return min(numeric, key=lambda c: abs(math.log(c) - math.log(value)))
    return min(numeric, key=lambda c: abs(c - value))


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _fit_dimension(dim: Dimension, value: Any) -> tuple[Any, Any] | None:
    """``(value, optuna_value)`` of ``value`` fitted to ``dim``; ``None`` when it cannot fit."""
    if isinstance(dim, Categorical):
        choice = _nearest_choice(value, dim.choices)
        return None if choice is None else (choice, choice)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if isinstance(dim, OneMinus):
        fitted = _clip(float(value), dim.low, dim.high)
        distance = _clip(1.0 - fitted, 1.0 - dim.high, 1.0 - dim.low)
        return fitted, distance
    if isinstance(dim, Int):
        fitted = int(_clip(round(value), dim.low, dim.high))
        return fitted, fitted
    if isinstance(dim, Float):
        fitted = _clip(float(value), dim.low, dim.high)
        return fitted, fitted
    return None


def fit_to_space(
    values: Mapping[str, Any], space: Mapping[str, Dimension]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A config fitted to ``space``: ``(values, optuna_params)``, or ``None`` to skip it.

    Rules (module docstring): clip to ranges, nearest categorical choice, fixed and unsearched
    keys dropped, skipped when a value cannot be fitted or nothing searched is left.
    """
    fitted: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key, value in values.items():
        dim = space.get(key)
        if dim is None or isinstance(dim, Fixed):
            continue
        result = _fit_dimension(dim, value)
        if result is None:
            return None
        fitted[key], param = result
        prefix = dim.optuna_name_prefix if isinstance(dim, OneMinus) else ""
        params[prefix + key] = param
    if not params:
        return None
    return fitted, params


def _catalogue_order(catalogue: Iterable[KnownConfig], direction: str) -> list[KnownConfig]:
    finite = [c for c in catalogue if isinstance(c.value, int | float) and math.isfinite(c.value)]
    return sorted(finite, key=lambda c: c.value, reverse=direction == "maximize")


def warm_start_configs(
    space: Mapping[str, Dimension],
    n_trials: int,
    *,
    direction: str,
    catalogue: Iterable[KnownConfig] = (),
    portfolio: Sequence[Mapping[str, Any]] = (),
    limit: int | None = None,
    portfolio_origin: Origin = "portfolio",
) -> list[WarmStartConfig]:
    """The configs a new study tries first, in order, each fitted to ``space`` with its origin.

    Args:
        space: The study's resolved space (``optimizer.resolve_space(overrides)``).
        n_trials: The study's trials per optimizer; sets how many configs are taken
            (:func:`warm_start_budget`).
        direction: ``"maximize"`` or ``"minimize"``: orders the catalogue, best first.
        catalogue: Known configs of this task and optimizer from earlier studies (any order;
            non-finite values are ignored). At most :data:`CATALOGUE_CONFIGS` are taken.
        portfolio: Configs of the optimizer's portfolio, most useful first
            (``studies.warm_start.load_portfolio()[optimizer]``); empty for none.
        limit: Overrides :func:`warm_start_budget` (benchmarks measure it with this).
        portfolio_origin: The origin of the portfolio's configs: ``"lr_range"`` when their lr was
            centred on the task by the range test (``bench/lr_range.py``).

    Returns:
        Catalogue configs (best first), then portfolio configs, without duplicates after fitting,
        at most ``limit`` of them.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    budget = warm_start_budget(n_trials) if limit is None else min(limit, n_trials)
    chosen: list[WarmStartConfig] = []
    seen: set[tuple[tuple[str, Any], ...]] = set()

    def add(values: Mapping[str, Any], origin: Origin, source: str) -> bool:
        fitted = fit_to_space(values, space)
        if fitted is None:
            return False
        key = tuple(sorted(fitted[1].items()))
        if key in seen:
            return False
        seen.add(key)
        chosen.append(WarmStartConfig(fitted[0], fitted[1], origin, source))
        return True

    taken = 0
    for known in _catalogue_order(catalogue, direction):
        if len(chosen) >= budget or taken >= CATALOGUE_CONFIGS:
            break
        taken += add(known.values, "catalogue", known.source)
    for values in portfolio:
        if len(chosen) >= budget:
            break
        add(values, portfolio_origin, PORTFOLIO_SOURCE)
    return chosen


def enqueue_warm_start(study: optuna.Study, configs: Iterable[WarmStartConfig]) -> None:
    """Queue ``configs`` as the study's next trials, with their origin as user attributes.

    A config already in the study (same parameters, e.g. a study being continued) is not queued
    again.
    """
    for config in configs:
        study.enqueue_trial(
            dict(config.params), user_attrs=dict(config.user_attrs), skip_if_exists=True
        )


def record_origin(trial: optuna.Trial) -> str:
    """Set the trial's ``origin`` to ``"sampler"`` unless a warm start set it; return it."""
    origin = trial.user_attrs.get(ORIGIN_ATTR)
    if origin is None:
        origin = "sampler"
        trial.set_user_attr(ORIGIN_ATTR, origin)
    return origin
