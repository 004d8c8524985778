"""Which hyperparameters mattered in one optimizer's search: Optuna's importance evaluators.

``param_importances(trials, direction)`` scores each searched hyperparameter by how much the
best trials' values of it differ from the rest (PED-ANOVA, Optuna's default evaluator), as
shares that sum to 1, most important first. It never raises on thin data: it returns an empty
result whose ``reason`` says why (too few complete trials, one searched hyperparameter, nothing
separates the best trials, the evaluator failed).

Choices:

- Only complete trials with a finite value count (what Optuna's evaluators read); pruned, failed
  and running trials are left out and counted in ``n_excluded``.
- Fewer than ``MIN_TRIALS`` (10) complete trials: no importances. PED-ANOVA compares the top
  ``target_quantile`` of the trials with all of them; its default 10% is one trial below 20
  trials, a density of one point. The quantile is raised so that the top holds at least
  ``MIN_TOP_TRIALS`` (3) trials: 30% at 10 trials, Optuna's 10% from 30 trials on.
- A space with one searched hyperparameter (``gd``: only ``lr``) has nothing to rank it
  against; a share of 100% would say nothing, so the result is empty with that reason.
- Hyperparameters are named by their keys in the optimizer's space: Optuna's ``one_minus_beta1``
  (``optim_core.spaces.OneMinus`` searches 1 - beta1) is reported as ``beta1``, the same
  hyperparameter on a monotone scale.
- The caller picks the trials: confirmation re-runs of a config repeat its parameters and would
  weigh it several times, so the service passes search trials only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna.importance import BaseImportanceEvaluator

# optuna.importance is imported where it is used: it imports scikit-learn (for fANOVA), a second
# of start-up that the API would pay on every start for a report it may never draw.

MIN_TRIALS = 10
MIN_TOP_TRIALS = 3
PED_ANOVA_QUANTILE = 0.1  # Optuna's default target_quantile
ONE_MINUS_PREFIX = "one_minus_"  # optim_core.spaces.OneMinus.optuna_name_prefix


def _ped_anova(n_trials: int) -> BaseImportanceEvaluator:
    from optuna.importance import PedAnovaImportanceEvaluator

    quantile = min(0.5, max(PED_ANOVA_QUANTILE, MIN_TOP_TRIALS / n_trials))
    return PedAnovaImportanceEvaluator(target_quantile=quantile)


def _fanova(n_trials: int) -> BaseImportanceEvaluator:
    from optuna.importance import FanovaImportanceEvaluator

    return FanovaImportanceEvaluator(seed=0)


# Evaluator name -> factory given the number of complete trials; the names are what the result
# reports.
EVALUATORS: dict[str, Callable[[int], BaseImportanceEvaluator]] = {
    "ped_anova": _ped_anova,
    "fanova": _fanova,
}
EVALUATOR_TITLES = {"ped_anova": "PED-ANOVA", "fanova": "fANOVA"}


@dataclass(frozen=True)
class ParamImportances:
    """How much each searched hyperparameter mattered.

    Attributes:
        importances: Hyperparameter key -> share in [0, 1], summing to 1, most important first;
            empty when ``reason`` is set.
        evaluator: Name of the evaluator (a key of ``EVALUATORS``).
        n_trials: Complete trials with a finite value that were evaluated.
        n_excluded: Trials left out (pruned, failed, running, or a non-finite value).
        reason: Why ``importances`` is empty; "" when it is not.
    """

    importances: dict[str, float] = field(default_factory=dict)
    evaluator: str = "ped_anova"
    n_trials: int = 0
    n_excluded: int = 0
    reason: str = ""

    @property
    def title(self) -> str:
        return EVALUATOR_TITLES.get(self.evaluator, self.evaluator)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "title": self.title}


def hyperparameter_key(param: str) -> str:
    """The space key of an Optuna parameter name (``one_minus_beta1`` -> ``beta1``)."""
    return param.removeprefix(ONE_MINUS_PREFIX)


def param_importances(
    trials: Iterable[FrozenTrial],
    direction: str,
    *,
    evaluator: str = "ped_anova",
    min_trials: int = MIN_TRIALS,
) -> ParamImportances:
    """The importance of each searched hyperparameter over ``trials`` of one optimizer.

    Args:
        trials: The trials to judge (any states; only complete ones with a finite value count).
        direction: ``"maximize"`` or ``"minimize"``: which trials are the best.
        evaluator: A key of ``EVALUATORS``.
        min_trials: Fewest complete trials to evaluate at all.

    Returns:
        The shares, or an empty result with the reason.

    Raises:
        ValueError: unknown ``direction`` or ``evaluator`` (the caller's mistake, not the data's).
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if evaluator not in EVALUATORS:
        raise ValueError(f"unknown evaluator {evaluator!r}; choose from {sorted(EVALUATORS)}")
    trials = list(trials)
    usable = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    result = ParamImportances(
        evaluator=evaluator, n_trials=len(usable), n_excluded=len(trials) - len(usable)
    )
    if len(usable) < min_trials:
        return _empty(
            result,
            f"{len(usable)} complete trial{'s' if len(usable) != 1 else ''}; "
            f"importances need at least {min_trials}",
        )
    searched = _searched_params(usable)
    if len(searched) < 2:
        what = f"only {hyperparameter_key(searched[0])}" if searched else "none"
        return _empty(result, f"one searched hyperparameter or fewer ({what}): nothing to rank")
    from optuna.importance import get_param_importances

    study = optuna.create_study(direction=direction)
    study.add_trials(usable)
    try:
        with warnings.catch_warnings():
            # Experimental-argument and thin-data warnings: the reason field says it instead.
            warnings.simplefilter("ignore")
            raw = get_param_importances(
                study,
                evaluator=EVALUATORS[evaluator](len(usable)),
                params=searched,
                normalize=False,
            )
    except (ValueError, RuntimeError, ArithmeticError) as exc:
        return _empty(result, f"the {result.title} evaluator failed: {exc}")
    total = math.fsum(v for v in raw.values() if math.isfinite(v))
    if not total > 0.0:
        return _empty(result, "no hyperparameter separates the best trials from the rest")
    shares = {
        hyperparameter_key(name): (value / total if math.isfinite(value) else 0.0)
        for name, value in raw.items()
    }
    ordered = dict(sorted(shares.items(), key=lambda item: (-item[1], item[0])))
    return ParamImportances(ordered, evaluator, result.n_trials, result.n_excluded)


def study_param_importances(
    study: optuna.Study,
    *,
    include: Callable[[FrozenTrial], bool] | None = None,
    evaluator: str = "ped_anova",
    min_trials: int = MIN_TRIALS,
) -> ParamImportances:
    """``param_importances`` of an Optuna study's trials that ``include`` keeps (default all).

    Raises:
        ValueError: a multi-objective study, or an unknown ``evaluator``.
    """
    if len(study.directions) != 1:
        raise ValueError("importances are for single-objective studies")
    direction = study.direction.name.lower()
    trials: Sequence[FrozenTrial] = study.get_trials(deepcopy=False)
    if include is not None:
        trials = [t for t in trials if include(t)]
    return param_importances(trials, direction, evaluator=evaluator, min_trials=min_trials)


def _searched_params(trials: Sequence[FrozenTrial]) -> list[str]:
    """Parameters that took more than one value somewhere (fixed ones cannot matter)."""
    names: dict[str, None] = {}
    for trial in trials:
        for name, distribution in trial.distributions.items():
            if not distribution.single():
                names.setdefault(name)
    return list(names)


def _empty(result: ParamImportances, reason: str) -> ParamImportances:
    return ParamImportances({}, result.evaluator, result.n_trials, result.n_excluded, reason)
