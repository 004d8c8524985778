"""A sampler that explores with a scrambled Sobol sequence first, then hands over to TPE.

TPE's own start-up draws points at random; a low-discrepancy sequence covers the space more evenly
with the same number of trials (no two start-up points crowd the same corner of a log-scaled lr
range). Which phase a trial belongs to depends only on its number, and every random choice is
derived from ``(seed, trial number)``, so the sampler carries no state between trials: workers that
build a fresh sampler per trial, in other processes or on other machines, still walk one Sobol
sequence and make the same choices a single process would.

Trials ``0 .. n_startup_trials - 1`` are the exploration phase. Trials whose parameters were fixed
beforehand (``study.enqueue_trial``: warm-start configs) take those numbers first, so a warm start
shortens the exploration phase rather than delaying TPE: both are history TPE learns from.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.search_space import intersection_search_space
from optuna.trial import FrozenTrial, TrialState


def _derived_seed(seed: int | None, *parts: object) -> int | None:
    if seed is None:
        return None
    return zlib.crc32("/".join(str(p) for p in (seed, *parts)).encode())


def _from_unit(distribution: BaseDistribution, u: float) -> Any:
    """The value of ``distribution`` at quantile ``u`` of its (log) scale."""
    if isinstance(distribution, CategoricalDistribution):
        choices = distribution.choices
        return choices[min(int(u * len(choices)), len(choices) - 1)]
    if isinstance(distribution, FloatDistribution | IntDistribution):
        low, high = distribution.low, distribution.high
        if distribution.log:
            value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            value = low + u * (high - low)
        step = distribution.step
        if step is not None:
            value = low + round((value - low) / step) * step
        value = min(max(value, low), high)
        return round(value) if isinstance(distribution, IntDistribution) else float(value)
    raise TypeError(f"no Sobol rule for {type(distribution).__name__}")


class SobolThenTPESampler(BaseSampler):
    """Scrambled Sobol points for the first ``n_startup_trials`` trials, TPE after them.

    Args:
        n_startup_trials: Trials (by number, warm-start ones included) drawn from the Sobol
            sequence before TPE takes over.
        seed: Seeds the Sobol scramble and, with each trial's number, TPE and the random draws of
            parameters outside the common search space. Give every worker of a study the same
            seed: trials are told apart by their numbers.
        tpe_options: Keyword arguments of :class:`optuna.samplers.TPESampler` (``seed`` and
            ``n_startup_trials`` excepted).

    The exploration phase samples the search space common to the study's completed trials (as
    Optuna's ``QMCSampler`` does); before the first trial completes, and for parameters outside
    that space, it draws at random.
    """

    def __init__(
        self,
        *,
        n_startup_trials: int = 10,
        seed: int | None = None,
        tpe_options: Mapping[str, Any] | None = None,
    ) -> None:
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be >= 0, got {n_startup_trials}")
        options = dict(tpe_options or {})
        for reserved in ("seed", "n_startup_trials"):
            if reserved in options:
                raise ValueError(f"tpe_options may not set {reserved!r}")
        self._n_startup_trials = n_startup_trials
        self._seed = seed
        # Without a seed each sampler object still walks one scramble of its own.
        self._scramble_seed = (
            seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
        )
        self._tpe_options = options

    def _exploring(self, trial: FrozenTrial) -> bool:
        return trial.number < self._n_startup_trials

    def _tpe(self, trial: FrozenTrial, *parts: object) -> TPESampler:
        # Built per call from (seed, number): no state carried between trials or processes.
        return TPESampler(
            n_startup_trials=0,
            seed=_derived_seed(self._seed, trial.number, *parts),
            **self._tpe_options,
        )

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if not self._exploring(trial):
            return self._tpe(trial).infer_relative_search_space(study, trial)
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not completed:
            return {}
        space = intersection_search_space(completed)
        return {name: dist for name, dist in space.items() if not dist.single()}

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        if not self._exploring(trial):
            return self._tpe(trial).sample_relative(study, trial, search_space)
        if not search_space:
            return {}
        # Here, not at the top: scipy.stats takes a second to import, and the API, which makes
        # samplers for every ask, may never sample a Sobol point.
        from scipy.stats import qmc

        names = sorted(search_space)
        engine = qmc.Sobol(d=len(names), scramble=True, seed=self._scramble_seed)
        if trial.number:
            engine.fast_forward(trial.number)
        point = engine.random(1)[0]
        return {
            name: _from_unit(search_space[name], float(u))
            for name, u in zip(names, point, strict=True)
        }

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if not self._exploring(trial):
            return self._tpe(trial, param_name).sample_independent(
                study, trial, param_name, param_distribution
            )
        random = RandomSampler(seed=_derived_seed(self._seed, trial.number, param_name))
        return random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._tpe(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        # Every draw is derived from (seed, trial number); there is no generator to reseed.
        return None
