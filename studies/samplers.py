"""Optuna samplers and pruners by name, seeded.

Samplers: ``tpe`` (Optuna's TPE, stock), ``sobol_tpe`` (scrambled Sobol points for the first
:data:`SOBOL_STARTUP_TRIALS` trials, then multivariate TPE with the constant liar:
:class:`studies.sobol_tpe.SobolThenTPESampler`), ``random``, ``cmaes``, ``qmc`` (scrambled Sobol),
``gp`` (Gaussian process) and ``grid``. :data:`DEFAULT_SAMPLER` and :data:`DEFAULT_PRUNER` are what
a request that names none gets; ``bench/time_to_target.py`` measured them. CMA-ES and QMC work on
continuous dimensions only: categorical ones such as
``batch_size`` are drawn by their independent (random) sampler, a documented fallback, so its
per-trial warning is switched off. ``grid`` needs a finite grid, derived from the search space
(:func:`grid_from_space`).

Pruners: ``none``, ``median``, ``sha`` (successive halving) and ``hyperband``; a trial's step is its
epoch (1, 2, ...).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import optuna

from optim_core.spaces import Categorical, Dimension, Fixed, Float, Int, OneMinus
from studies.sobol_tpe import SobolThenTPESampler

GRID_POINTS = 4
"""Points per continuous range of a derived grid (log-spaced on a log scale)."""

SOBOL_STARTUP_TRIALS = 8
"""Trials (warm-start ones included) ``sobol_tpe`` explores with Sobol points before TPE."""

SamplerFactory = Callable[[int | None, Mapping[str, Dimension] | None], optuna.samplers.BaseSampler]
PrunerFactory = Callable[[int | None], optuna.pruners.BasePruner]


def _range(low: float, high: float, log: bool) -> list[float]:
    points = np.geomspace(low, high, GRID_POINTS) if log else np.linspace(low, high, GRID_POINTS)
    return [float(point) for point in points]


def _float_grid(key: str, dim: Float) -> dict[str, list[Any]]:
    return {key: _range(dim.low, dim.high, dim.log)}


def _int_grid(key: str, dim: Int) -> dict[str, list[Any]]:
    return {key: sorted({round(point) for point in _range(dim.low, dim.high, dim.log)})}


def _one_minus_grid(key: str, dim: OneMinus) -> dict[str, list[Any]]:
    # The Optuna parameter is the distance to one (see optim_core.spaces.OneMinus).
    return {dim.optuna_name_prefix + key: _range(1.0 - dim.high, 1.0 - dim.low, dim.log)}


def _categorical_grid(key: str, dim: Categorical) -> dict[str, list[Any]]:
    return {key: list(dim.choices)}


def _fixed_grid(key: str, dim: Fixed) -> dict[str, list[Any]]:
    return {}  # not an Optuna parameter


_GRID_BY_DIMENSION: Mapping[type, Callable[[str, Any], dict[str, list[Any]]]] = MappingProxyType(
    {
        Float: _float_grid,
        Int: _int_grid,
        OneMinus: _one_minus_grid,
        Categorical: _categorical_grid,
        Fixed: _fixed_grid,
    }
)


def grid_from_space(space: Mapping[str, Dimension]) -> dict[str, list[Any]]:
    """A finite grid over ``space``, keyed by Optuna parameter name.

    Categorical dimensions give their choices, continuous ranges :data:`GRID_POINTS` points
    (log-spaced on a log scale, both ends included), fixed values nothing.

    Raises:
        ValueError: a dimension type without a grid rule.
    """
    grid: dict[str, list[Any]] = {}
    for key, dim in space.items():
        rule = _GRID_BY_DIMENSION.get(type(dim))
        if rule is None:
            raise ValueError(f"{key}: no grid rule for {type(dim).__name__}")
        grid.update(rule(key, dim))
    return grid


def _tpe(seed: int | None, space: Mapping[str, Dimension] | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed)


def _random(seed: int | None, space: Mapping[str, Dimension] | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(seed: int | None, space: Mapping[str, Dimension] | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _qmc(seed: int | None, space: Mapping[str, Dimension] | None) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        # Experimental since optuna 3.0 and stable in use; one warning per study says nothing new.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(
            qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False
        )


def _gp(seed: int | None, space: Mapping[str, Dimension] | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed)


def _sobol_tpe(
    seed: int | None, space: Mapping[str, Dimension] | None
) -> optuna.samplers.BaseSampler:
    return SobolThenTPESampler(
        n_startup_trials=SOBOL_STARTUP_TRIALS,
        seed=seed,
        # Optuna 5's defaults, stated because they are chosen: multivariate TPE models the joint
        # lr/batch-size/beta shape; the constant liar keeps parallel workers apart.
        tpe_options={"multivariate": True, "constant_liar": True},
    )


def _grid(seed: int | None, space: Mapping[str, Dimension] | None) -> optuna.samplers.BaseSampler:
    if space is None:
        raise ValueError("the grid sampler needs the search space to derive its grid from")
    return optuna.samplers.GridSampler(grid_from_space(space), seed=seed)


SAMPLERS: Mapping[str, SamplerFactory] = MappingProxyType(
    {
        "tpe": _tpe,
        "sobol_tpe": _sobol_tpe,
        "random": _random,
        "cmaes": _cmaes,
        "qmc": _qmc,
        "gp": _gp,
        "grid": _grid,
    }
)


PRUNERS: Mapping[str, PrunerFactory] = MappingProxyType(
    {
        "none": lambda epochs: optuna.pruners.NopPruner(),
        "median": lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=5),
        "sha": lambda epochs: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=3
        ),
        "hyperband": lambda epochs: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=epochs or "auto", reduction_factor=3
        ),
    }
)

DEFAULT_SAMPLER = "tpe"
"""The sampler of a request that names none.

Measured by ``bench/time_to_target.py`` (epochs to stock's 40-trial figure, geometric mean over
tasks and optimizers, 3 seeds): ``sobol_tpe`` against ``tpe`` was a tie, 0.97x without a warm start
(4 tasks x 2 optimizers) and 1.28x against 1.30x with one (6 tasks x 3 optimizers), so the simpler
one stays. Optuna 5's TPE is already multivariate with the constant liar; ``group`` changes nothing
on these spaces, which have no conditional dimensions.
"""

DEFAULT_PRUNER = "hyperband"
"""The pruner of a request that names none: Hyperband from one epoch up to the trial's epochs.

Measured by ``bench/time_to_target.py`` against ``median`` (0.79x as fast to the target) and a
Hyperband whose smallest rung is a ninth of the epochs (0.65x): pruning from the first epoch won.
"""


def make_sampler(
    name: str, *, seed: int | None, space: Mapping[str, Dimension] | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler registered as ``name``, seeded.

    Args:
        name: One of :data:`SAMPLERS`.
        seed: Seed of the sampler's random numbers; ``None`` for a random one.
        space: The resolved search space; needed by ``grid``, ignored by the others.

    Raises:
        ValueError: unknown name (the message lists the valid ones), or ``grid`` without a space.
    """
    try:
        factory = SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None
    return factory(seed, space)


def make_pruner(name: str, *, epochs: int | None = None) -> optuna.pruners.BasePruner:
    """The pruner registered as ``name``.

    Args:
        name: One of :data:`PRUNERS`.
        epochs: Epochs per trial, the maximum resource of ``hyperband``.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    try:
        factory = PRUNERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown pruner {name!r}; choose one of {sorted(PRUNERS)}") from None
    return factory(epochs)


SEQUENCE_SAMPLERS = frozenset({"qmc", "sobol_tpe"})
"""Samplers that walk one scrambled sequence through the study's trials (they find their place in
it from the trials already stored): every trial of the study must use the same seed."""


def slot_sampler_seed(
    seed: int | None, optimizer: str, ordinal: int, *, sampler: str = "tpe"
) -> int | None:
    """A reproducible sampler seed for the ``ordinal``-th trial slot of an optimizer.

    A worker (or an ask) loads the study afresh for every trial, so a sampler seeded with the
    study seed alone would propose the same first point every time: each slot gets its own
    seed, except for :data:`SEQUENCE_SAMPLERS`, whose points are only spread out when every trial
    draws from the one sequence. ``None`` stays unseeded.
    """
    if seed is None:
        return None
    if sampler in SEQUENCE_SAMPLERS:
        return zlib.crc32(f"{seed}/{optimizer}".encode())
    return zlib.crc32(f"{seed}/{optimizer}/{ordinal}".encode())
