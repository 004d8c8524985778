"""Declarative search spaces: what a study may try for each hyperparameter of an optimizer.

A space maps a hyperparameter key (``lr``, ``momentum``, ``beta1``, ``batch_size`` ...) to a
dimension. Dimensions are small frozen dataclasses that know how to validate themselves against the
values an optimizer accepts, how to sample themselves from an :class:`optuna.Trial`, and their JSON
form for the REST API:

=================  ==============================================  ===========================
dimension          JSON                                            sampled as
=================  ==============================================  ===========================
``Float``          ``{"low": 1e-4, "high": 1.0, "log": true}``    ``trial.suggest_float``
``Int``            ``{"low": 16, "high": 256, "log": true}``      ``trial.suggest_int``
``Categorical``    ``{"choices": [16, 32, 64]}``                   ``trial.suggest_categorical``
``Fixed``          ``0.9`` (a bare value)                          not sampled
``OneMinus``       ``{"low": 0.5, "high": 0.999, "log": true,      ``1 - suggest_float`` of the
                   "one_minus": true}``                            distance to one
=================  ==============================================  ===========================

``OneMinus`` is how momentum, betas and RMSProp's alpha are searched: the interesting values crowd
against 1 (0.9, 0.99, 0.999), so the sampler works on ``1 - value`` on a log scale. Its bounds are
those of the value itself, so a user writes ``{"low": 0.8, "high": 0.99}`` for momentum
and means it.
The Optuna parameter is then called ``one_minus_<key>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import optuna

Scalar = bool | int | float | str
JSONDimension = Scalar | dict[str, Any]


class SpaceError(ValueError):
    """A search space that cannot be used; the message names the key and says what to fix."""


@dataclass(frozen=True)
class Domain:
    """The values one hyperparameter accepts (what the optimizer's constructor would refuse).

    Args:
        kind: ``"float"``, ``"int"`` or ``"bool"``.
        low: Smallest accepted value, or ``None`` for no bound.
        high: Largest accepted value, or ``None`` for no bound.
        low_open: ``low`` itself is refused (``lr`` must be > 0, not >= 0).
        high_open: ``high`` itself is refused (``beta1`` must be < 1).
    """

    kind: str = "float"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        if self.kind == "bool":
            return "true or false"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        kind = "an integer" if self.kind == "int" else "a number"
        return f"{kind} in {left}{low}, {high}{right}"

    def accepts(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )

    def check(self, key: str, value: Any) -> None:
        if not self.accepts(value):
            raise SpaceError(f"{key}: {value!r} is not accepted; it must be {self.describe()}")


class Dimension(Protocol):
    """What every dimension of a space provides."""

    def validate(self, key: str, domain: Domain) -> None: ...

    def sample(self, trial: optuna.Trial, key: str) -> Any: ...

    def to_json(self) -> JSONDimension: ...


def _check_bounds(key: str, low: Any, high: Any, log: bool, domain: Domain) -> None:
    for bound in ("low", "high"):
        value = low if bound == "low" else high
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpaceError(f"{key}: '{bound}' must be a number, got {value!r}")
    if low >= high:
        raise SpaceError(f"{key}: 'low' ({low:g}) must be smaller than 'high' ({high:g})")
    if log and low <= 0:
        raise SpaceError(f"{key}: a log scale needs 'low' > 0, got {low:g}")
    domain.check(f"{key} low", low)
    domain.check(f"{key} high", high)


@dataclass(frozen=True)
class Float:
    """A float in ``[low, high]``, uniform or log-uniform."""

    low: float
    high: float
    log: bool = False

    def validate(self, key: str, domain: Domain) -> None:
        if domain.kind != "float":
            raise SpaceError(f"{key}: takes {domain.describe()}, not a float range")
        _check_bounds(key, self.low, self.high, self.log, domain)

    def sample(self, trial: optuna.Trial, key: str) -> float:
        return trial.suggest_float(key, self.low, self.high, log=self.log)

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]``, uniform or log-uniform."""

    low: int
    high: int
    log: bool = False

    def validate(self, key: str, domain: Domain) -> None:
        if domain.kind != "int":
            raise SpaceError(f"{key}: takes {domain.describe()}, not an integer range")
        for bound, value in (("low", self.low), ("high", self.high)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpaceError(f"{key}: '{bound}' must be an integer, got {value!r}")
        _check_bounds(key, self.low, self.high, self.log, domain)

    def sample(self, trial: optuna.Trial, key: str) -> int:
        return trial.suggest_int(key, self.low, self.high, log=self.log)

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Categorical:
    """One of a fixed list of values."""

    choices: tuple[Scalar, ...]

    def validate(self, key: str, domain: Domain) -> None:
        if not self.choices:
            raise SpaceError(f"{key}: 'choices' must list at least one value")
        if len(set(self.choices)) != len(self.choices):
            raise SpaceError(f"{key}: 'choices' has duplicates: {list(self.choices)}")
        for choice in self.choices:
            domain.check(f"{key} choice", choice)

    def sample(self, trial: optuna.Trial, key: str) -> Scalar:
        return trial.suggest_categorical(key, list(self.choices))

    def to_json(self) -> dict[str, Any]:
        return {"choices": list(self.choices)}


@dataclass(frozen=True)
class Fixed:
    """A value that is not searched."""

    value: Scalar

    def validate(self, key: str, domain: Domain) -> None:
        domain.check(key, self.value)

    def sample(self, trial: optuna.Trial, key: str) -> Scalar:
        return self.value

    def to_json(self) -> Scalar:
        return self.value


@dataclass(frozen=True)
class OneMinus:
    """A value in ``[low, high]`` below 1, searched as ``1 - value`` (log scale by default)."""

    low: float
    high: float
    log: bool = True

    @property
    def optuna_name_prefix(self) -> str:
        return "one_minus_"

    def validate(self, key: str, domain: Domain) -> None:
        if domain.kind != "float":
            raise SpaceError(f"{key}: takes {domain.describe()}, not a float range")
        _check_bounds(key, self.low, self.high, False, domain)
        if self.high >= 1:
            raise SpaceError(f"{key}: 'one_minus' needs 'high' < 1, got {self.high:g}")

    def sample(self, trial: optuna.Trial, key: str) -> float:
        distance = trial.suggest_float(
            self.optuna_name_prefix + key, 1.0 - self.high, 1.0 - self.low, log=self.log
        )
        # 1 - (1 - x) is not always x in floating point: keep the value inside [low, high].
        return min(max(1.0 - distance, self.low), self.high)

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log, "one_minus": True}


Space = Mapping[str, Dimension]


def dimension_from_json(
    key: str, raw: Any, domain: Domain, default: Dimension | None = None
) -> Dimension:
    """Parse the JSON form of one dimension.

    A range is an ``Int`` when the hyperparameter takes integers, a ``Float`` otherwise. A range
    without ``"log"`` keeps the scale of ``default``; a range over a ``OneMinus`` default stays a
    ``OneMinus`` unless it says ``"one_minus": false``.

    Raises:
        SpaceError: the JSON is not a dimension; the message names ``key``.
    """
    if isinstance(raw, bool | int | float | str):
        return Fixed(raw)
    if not isinstance(raw, dict):
        raise SpaceError(
            f"{key}: expected a value, {{'low', 'high', 'log'}} or {{'choices': [...]}}, "
            f"got {type(raw).__name__}"
        )
    if "choices" in raw:
        extra = set(raw) - {"choices"}
        if extra:
            raise SpaceError(f"{key}: 'choices' cannot be combined with {sorted(extra)}")
        choices = raw["choices"]
        if not isinstance(choices, list) or not all(
            isinstance(c, bool | int | float | str) for c in choices
        ):
            raise SpaceError(f"{key}: 'choices' must be a list of numbers, strings or booleans")
        return Categorical(tuple(choices))
    unknown = set(raw) - {"low", "high", "log", "one_minus"}
    if unknown:
        raise SpaceError(
            f"{key}: unknown field(s) {sorted(unknown)}; use 'low', 'high', 'log', 'one_minus' "
            "or 'choices'"
        )
    if "low" not in raw or "high" not in raw:
        raise SpaceError(f"{key}: a range needs both 'low' and 'high'")
    default_log = getattr(default, "log", False)
    log = raw.get("log", default_log)
    if not isinstance(log, bool):
        raise SpaceError(f"{key}: 'log' must be true or false, got {log!r}")
    one_minus = raw.get("one_minus", isinstance(default, OneMinus))
    if not isinstance(one_minus, bool):
        raise SpaceError(f"{key}: 'one_minus' must be true or false, got {one_minus!r}")
    if one_minus:
        return OneMinus(raw["low"], raw["high"], log=log)
    if domain.kind == "int":
        return Int(raw["low"], raw["high"], log=log)
    return Float(raw["low"], raw["high"], log=log)


def space_to_json(space: Space) -> dict[str, JSONDimension]:
    """The JSON form of a whole space, key by key."""
    return {key: dim.to_json() for key, dim in space.items()}


def validate_space(space: Space, domains: Mapping[str, Domain]) -> None:
    """Check every dimension against the values its optimizer accepts.

    Raises:
        SpaceError: the first bad dimension, with its key.
    """
    for key, dim in space.items():
        if key not in domains:
            raise SpaceError(
                f"{key}: not a hyperparameter of this optimizer; valid keys: {sorted(domains)}"
            )
        dim.validate(key, domains[key])


def apply_overrides(
    default: Space, overrides: Mapping[str, Any], domains: Mapping[str, Domain]
) -> dict[str, Dimension]:
    """A user's JSON overrides applied on top of a default space, validated.

    Keys of ``overrides`` replace the default's dimension (or add one, for a hyperparameter the
    optimizer accepts that the default space leaves at the constructor default).

    Raises:
        SpaceError: unknown key or a dimension that is not valid; the message names the key.
    """
    space: dict[str, Dimension] = dict(default)
    for key, raw in overrides.items():
        if key not in domains:
            raise SpaceError(
                f"{key}: not a hyperparameter of this optimizer; valid keys: {sorted(domains)}"
            )
        space[key] = dimension_from_json(key, raw, domains[key], default.get(key))
    validate_space(space, domains)
    return space


def sample_space(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """Sample every dimension from ``trial``; fixed values are included as they are."""
    return {key: dim.sample(trial, key) for key, dim in space.items()}


def space_from_json(raw: Mapping[str, Any], domains: Mapping[str, Domain]) -> dict[str, Dimension]:
    """A whole space from its JSON form (as stored by the service), validated."""
    return apply_overrides({}, raw, domains)
