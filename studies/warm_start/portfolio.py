"""Portfolios: a few configs per optimizer that train well across many tasks, tried first.

A portfolio is learned offline (``python -m studies.warm_start.learn``) from a grid of candidate
configs trained on every built-in task, and ships with the package as two JSON files:

- ``evaluations.json``: every candidate's validation figure on every task (the raw data);
- ``portfolio.json``: per optimizer, the configs :func:`greedy_portfolio` chose from it, in the
  order they were chosen (so every prefix is itself a greedy portfolio), with the
  leave-one-task-out score of each prefix length.

Scores are per-task ranks: a candidate's score on a task is the fraction of the other candidates it
beats there (1 = best of all, 0 = worst; a diverged run counts as worst). Ranks make tasks with
accuracies near 1 and tasks with losses over orders of magnitude comparable. A portfolio's score on
a task is the score of its best member there, which is what a study that tries it first gets.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from optim_core.registry import OPTIMIZERS

PORTFOLIO_FILE = "portfolio.json"
EVALUATIONS_FILE = "evaluations.json"
FORMAT = 1


class PortfolioError(ValueError):
    """A portfolio file that cannot be used; the message says which entry and why."""


@dataclass(frozen=True)
class Evaluations:
    """Candidate configs of one optimizer and their validation figures per task.

    Attributes:
        candidates: Hyperparameter values (``{"lr": 0.01, "batch_size": 32}``), one per candidate.
        values: Per task, one figure per candidate (``None``: diverged or pruned).
        directions: Per task, ``"maximize"`` or ``"minimize"``.
    """

    candidates: tuple[Mapping[str, Any], ...]
    values: Mapping[str, tuple[float | None, ...]]
    directions: Mapping[str, str]


def rank_scores(values: Sequence[float | None], direction: str) -> list[float]:
    """Each value's score on one task: the fraction of the others it beats, ties sharing.

    ``None`` and non-finite values rank below every finite one.
    """
    sign = 1.0 if direction == "maximize" else -1.0
    keys = [-math.inf if v is None or not math.isfinite(v) else sign * v for v in values]
    n = len(keys)
    if n < 2:
        return [1.0] * n
    ordered = sorted(keys)
    scores = []
    for key in keys:
        below = bisect.bisect_left(ordered, key)
        tied = bisect.bisect_right(ordered, key) - below - 1
        scores.append((below + tied / 2) / (n - 1))
    return scores


def score_matrix(evaluations: Evaluations, tasks: Sequence[str]) -> list[list[float]]:
    """``scores[c][t]``: rank score of candidate ``c`` on ``tasks[t]``."""
    columns = [rank_scores(evaluations.values[t], evaluations.directions[t]) for t in tasks]
    return [[column[c] for column in columns] for c in range(len(evaluations.candidates))]


def greedy_portfolio(scores: Sequence[Sequence[float]], size: int) -> list[int]:
    """Indices of ``size`` candidates, chosen greedily to maximise the mean best score over tasks.

    Each step adds the candidate that raises ``mean_t max_{c in portfolio} scores[c][t]`` most
    (the first such candidate on ties), so the order is the order of usefulness.
    """
    if not scores:
        return []
    best = [-math.inf] * len(scores[0])
    chosen: list[int] = []
    for _ in range(min(size, len(scores))):
        gains = [
            (-math.inf if c in chosen else sum(max(b, s) for b, s in zip(best, row, strict=True)))
            for c, row in enumerate(scores)
        ]
        pick = max(range(len(gains)), key=lambda c: (gains[c], -c))
        chosen.append(pick)
        best = [max(b, s) for b, s in zip(best, scores[pick], strict=True)]
    return chosen


def leave_one_task_out(evaluations: Evaluations, size: int) -> list[float]:
    """Mean score on a held-out task of the greedy portfolio learned on the others, per prefix.

    Returns:
        ``curve[k - 1]``: for a portfolio of the first ``k`` greedy picks, the mean over held-out
        tasks of its best member's rank score on that task.
    """
    tasks = sorted(evaluations.values)
    totals = [0.0] * size
    for held_out in tasks:
        others = [t for t in tasks if t != held_out]
        picks = greedy_portfolio(score_matrix(evaluations, others), size)
        held = rank_scores(evaluations.values[held_out], evaluations.directions[held_out])
        running = -math.inf
        for k in range(size):
            if k < len(picks):
                running = max(running, held[picks[k]])
            totals[k] += running
    return [total / len(tasks) for total in totals]


def learn_portfolio(
    evaluations: Evaluations, size: int, *, exclude: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The greedy portfolio of ``size`` configs learned from every task but ``exclude``."""
    tasks = sorted(t for t in evaluations.values if t not in exclude)
    if not tasks:
        raise ValueError("no task left to learn a portfolio from")
    picks = greedy_portfolio(score_matrix(evaluations, tasks), size)
    return [dict(evaluations.candidates[c]) for c in picks]


def _check_config(optimizer: str, values: Any, where: str) -> dict[str, Any]:
    spec = OPTIMIZERS[optimizer]
    if not isinstance(values, dict) or not values:
        raise PortfolioError(f"{where}: expected a non-empty object of hyperparameters")
    domains = spec.domains
    for key, value in values.items():
        if key not in domains:
            raise PortfolioError(f"{where}: {key!r} is not a hyperparameter of {optimizer}")
        if not domains[key].accepts(value):
            raise PortfolioError(
                f"{where}: {key}={value!r} is not accepted; it must be {domains[key].describe()}"
            )
    return dict(values)


def parse_portfolio(raw: Any) -> Mapping[str, tuple[Mapping[str, Any], ...]]:
    """Validate the JSON form of a portfolio: ``{"format": 1, "optimizers": {name: [config]}}``.

    Every optimizer must be registered and every config made of values its constructor accepts.

    Raises:
        PortfolioError: the first bad entry, named.
    """
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise PortfolioError(f"not a portfolio of format {FORMAT}")
    optimizers = raw.get("optimizers")
    if not isinstance(optimizers, dict):
        raise PortfolioError("'optimizers' must map optimizer names to lists of configs")
    parsed: dict[str, tuple[Mapping[str, Any], ...]] = {}
    for name, configs in optimizers.items():
        if name not in OPTIMIZERS:
            raise PortfolioError(f"{name!r} is not a registered optimizer")
        if not isinstance(configs, list):
            raise PortfolioError(f"{name}: expected a list of configs")
        parsed[name] = tuple(
            MappingProxyType(_check_config(name, config, f"{name}[{i}]"))
            for i, config in enumerate(configs)
        )
    return MappingProxyType(parsed)


def _read_json(file: str) -> Any:
    return json.loads(resources.files(__package__).joinpath(file).read_text(encoding="utf-8"))


def load_portfolio() -> Mapping[str, tuple[Mapping[str, Any], ...]]:
    """The shipped portfolio: optimizer name -> its configs, most useful first (validated).

    Optimizers without an entry have an empty portfolio. Reads a few kilobytes; callers that
    start many studies may keep the result (it is read-only).

    Raises:
        PortfolioError: the installed file is damaged.
    """
    return parse_portfolio(_read_json(PORTFOLIO_FILE))


def parse_evaluations(raw: Any) -> dict[str, Evaluations]:
    """Validate the JSON form of the evaluations (see :func:`studies.warm_start.learn.main`).

    Raises:
        PortfolioError: the first bad entry, named.
    """
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise PortfolioError(f"not evaluations of format {FORMAT}")
    parsed: dict[str, Evaluations] = {}
    for name, entry in raw.get("optimizers", {}).items():
        if name not in OPTIMIZERS:
            raise PortfolioError(f"{name!r} is not a registered optimizer")
        candidates = tuple(
            _check_config(name, c, f"{name} candidate {i}")
            for i, c in enumerate(entry["candidates"])
        )
        values: dict[str, tuple[float | None, ...]] = {}
        directions: dict[str, str] = {}
        for task, column in entry["tasks"].items():
            if len(column["values"]) != len(candidates):
                raise PortfolioError(f"{name}/{task}: one value per candidate expected")
            if column["direction"] not in ("maximize", "minimize"):
                raise PortfolioError(f"{name}/{task}: bad direction {column['direction']!r}")
            values[task] = tuple(column["values"])
            directions[task] = column["direction"]
        parsed[name] = Evaluations(candidates, values, directions)
    return parsed


def load_evaluations() -> dict[str, Evaluations]:
    """The shipped evaluations the portfolio was learned from, per optimizer."""
    return parse_evaluations(_read_json(EVALUATIONS_FILE))


__all__ = [
    "Evaluations",
    "PortfolioError",
    "greedy_portfolio",
    "learn_portfolio",
    "leave_one_task_out",
    "load_evaluations",
    "load_portfolio",
    "parse_evaluations",
    "parse_portfolio",
    "rank_scores",
    "score_matrix",
]
