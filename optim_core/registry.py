"""The optimizers a study can tune, by name: class, default search space, and keyword mapping.

``OPTIMIZERS`` is read-only. Names that come from a request are looked up here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from optim_core.spaces import (
    Categorical,
    Dimension,
    Domain,
    Float,
    OneMinus,
    Space,
    SpaceError,
    apply_overrides,
    space_to_json,
    validate_space,
)

if TYPE_CHECKING:
    import torch

# Keys of a space that configure the training loop rather than the optimizer's constructor.
TRAINING_KEYS = frozenset({"batch_size"})

BATCH_SIZES = Categorical((16, 32, 64, 128, 256))

_UNIT = Domain("float", 0.0, 1.0, high_open=True)  # momentum, betas: [0, 1)
_NON_NEGATIVE = Domain("float", 0.0)
_POSITIVE = Domain("float", 0.0, low_open=True)
_NESTEROV_MOMENTUM = Domain("float", 0.0, 1.0, low_open=True, high_open=True)  # (0, 1)
_BOOL = Domain("bool")

DOMAINS: Mapping[str, Domain] = MappingProxyType(
    {
        "lr": _NON_NEGATIVE,
        "batch_size": Domain("int", 1),
        "momentum": _UNIT,
        "dampening": Domain("float", 0.0, 1.0),
        "weight_decay": _NON_NEGATIVE,
        "beta1": _UNIT,
        "beta2": _UNIT,
        "alpha": Domain("float", 0.0, 1.0),
        "eps": _POSITIVE,
        "lr_decay": _NON_NEGATIVE,
        "initial_accumulator_value": _NON_NEGATIVE,
        "amsgrad": _BOOL,
        "centered": _BOOL,
    }
)


@dataclass(frozen=True)
class OptimizerSpec:
    """One tunable optimizer.

    The registry reads without torch (the API describes optimizers, it never builds one): a spec
    names its class, and :attr:`cls` imports it on first use.

    Args:
        name: Registry key (``"adam"``).
        class_name: The ``optim_core`` class that trains with it (``"Adam"``).
        description: One line for people choosing between optimizers.
        space: Default search space (DESIGN.md §3).
        keys: Hyperparameters a study may search or fix for it (the default space's keys and a few
            more the constructor takes, such as ``eps``).
        constructor_defaults: Keywords always passed (``nesterov=True`` for ``nesterov``).
        full_batch: Trains on the whole training set as one batch (``gd``).
        domain_overrides: Narrower domains than ``DOMAINS`` for this optimizer (``nesterov`` needs
            ``momentum > 0``).
    """

    name: str
    class_name: str
    description: str
    space: Mapping[str, Dimension]
    keys: frozenset[str]
    constructor_defaults: Mapping[str, Any] = field(default_factory=dict)
    full_batch: bool = False
    domain_overrides: Mapping[str, Domain] = field(default_factory=dict)

    @property
    def cls(self) -> type[torch.optim.Optimizer]:
        """The ``optim_core`` class that trains with it (importing it imports torch)."""
        import optim_core

        return getattr(optim_core, self.class_name)

    @property
    def domains(self) -> dict[str, Domain]:
        return {key: self.domain_overrides.get(key, DOMAINS[key]) for key in sorted(self.keys)}

    def resolve_space(
        self, overrides: Mapping[str, Any] | None = None, *, batch_size: bool = True
    ) -> dict[str, Dimension]:
        """The default space with a user's JSON overrides applied and validated.

        Args:
            overrides: The user's JSON overrides (``{"lr": {"low": 1e-4, ...}}``).
            batch_size: ``False`` for a task where the batch size does nothing (no data): the
                space has no ``batch_size``, and an override of it is refused.

        Raises:
            SpaceError: the message names the offending key and says what to fix.
        """
        overrides = overrides or {}
        if batch_size:
            return apply_overrides(self.space, overrides, self.domains)
        if "batch_size" in overrides:
            raise SpaceError(
                "batch_size: this task has no data, every step sees the same batch, so a batch "
                "size does nothing; drop it from the search space"
            )
        domains = {key: domain for key, domain in self.domains.items() if key != "batch_size"}
        default = {key: dim for key, dim in self.space.items() if key != "batch_size"}
        return apply_overrides(default, overrides, domains)

    def to_kwargs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor keywords from sampled values: ``beta1``/``beta2`` become ``betas``;
        training keys (``batch_size``) are left out."""
        kwargs = dict(self.constructor_defaults)
        for key, value in values.items():
            if key in TRAINING_KEYS or key in ("beta1", "beta2"):
                continue
            kwargs[key] = value
        if "beta1" in values or "beta2" in values:
            default_beta1, default_beta2 = _ADAM_BETAS
            kwargs["betas"] = (
                values.get("beta1", default_beta1),
                values.get("beta2", default_beta2),
            )
        return kwargs

    def build(
        self, params: Iterable[torch.Tensor], values: Mapping[str, Any]
    ) -> torch.optim.Optimizer:
        """The optimizer for ``params`` configured with sampled ``values``."""
        return self.cls(params, **self.to_kwargs(values))

    def python_line(self, values: Mapping[str, Any]) -> str:
        """The line of Python that builds this optimizer with ``values``."""
        args = ["model.parameters()"]
        args += [f"{key}={value!r}" for key, value in self.to_kwargs(values).items()]
        return f"optim_core.{self.class_name}({', '.join(args)})"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": self.class_name,
            "description": self.description,
            "full_batch": self.full_batch,
            "default_space": space_to_json(self.space),
            "tunable": sorted(self.keys),
        }


_ADAM_BETAS = (0.9, 0.999)

_LR_SGD = Float(1e-4, 1.0, log=True)
_MOMENTUM = OneMinus(1.0 - 0.5, 1.0 - 1e-3)
_SGD_KEYS = frozenset({"lr", "batch_size", "weight_decay"})
_MOMENTUM_KEYS = _SGD_KEYS | {"momentum", "dampening"}
_ADAM_SPACE: Mapping[str, Dimension] = MappingProxyType(
    {
        "lr": Float(1e-5, 1e-1, log=True),
        "beta1": OneMinus(1.0 - 0.5, 1.0 - 1e-3),
        "beta2": OneMinus(1.0 - 0.1, 1.0 - 1e-4),
        "batch_size": BATCH_SIZES,
    }
)
_ADAM_KEYS = frozenset({"lr", "batch_size", "beta1", "beta2", "eps", "weight_decay", "amsgrad"})


def _spec(**kwargs: Any) -> OptimizerSpec:
    kwargs["space"] = MappingProxyType(dict(kwargs["space"]))
    kwargs["constructor_defaults"] = MappingProxyType(dict(kwargs.get("constructor_defaults", {})))
    kwargs["domain_overrides"] = MappingProxyType(dict(kwargs.get("domain_overrides", {})))
    spec = OptimizerSpec(**kwargs)
    validate_space(spec.space, spec.domains)
    return spec


OPTIMIZERS: Mapping[str, OptimizerSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _spec(
                name="gd",
                class_name="SGD",
                description="Full-batch gradient descent: every step sees the whole training set.",
                space={"lr": Float(1e-3, 10.0, log=True)},
                keys=frozenset({"lr", "weight_decay"}),
                full_batch=True,
            ),
            _spec(
                name="sgd",
                class_name="SGD",
                description="Mini-batch stochastic gradient descent.",
                space={"lr": _LR_SGD, "batch_size": BATCH_SIZES},
                keys=_SGD_KEYS,
            ),
            _spec(
                name="momentum",
                class_name="SGD",
                description="SGD with heavy-ball momentum: v = m*v + g; w -= lr*v.",
                space={"lr": _LR_SGD, "momentum": _MOMENTUM, "batch_size": BATCH_SIZES},
                keys=_MOMENTUM_KEYS,
            ),
            _spec(
                name="nesterov",
                class_name="SGD",
                description="SGD with Nesterov momentum: w -= lr*(g + m*v).",
                space={"lr": _LR_SGD, "momentum": _MOMENTUM, "batch_size": BATCH_SIZES},
                keys=_MOMENTUM_KEYS - {"dampening"},
                constructor_defaults={"nesterov": True},
                domain_overrides={"momentum": _NESTEROV_MOMENTUM},
            ),
            _spec(
                name="adagrad",
                class_name="AdaGrad",
                description="AdaGrad: per-coordinate steps shrink as squared gradients add up.",
                space={"lr": Float(1e-4, 1.0, log=True), "batch_size": BATCH_SIZES},
                keys=frozenset(
                    {
                        "lr",
                        "batch_size",
                        "lr_decay",
                        "weight_decay",
                        "eps",
                        "initial_accumulator_value",
                    }
                ),
            ),
            _spec(
                name="rmsprop",
                class_name="RMSProp",
                description="RMSProp: steps scaled by a running average of squared gradients.",
                space={
                    "lr": Float(1e-5, 1e-1, log=True),
                    "alpha": OneMinus(1.0 - 0.5, 1.0 - 1e-3),
                    "batch_size": BATCH_SIZES,
                },
                keys=frozenset(
                    {"lr", "batch_size", "alpha", "eps", "weight_decay", "momentum", "centered"}
                ),
            ),
            _spec(
                name="adam",
                class_name="Adam",
                description="Adam (Kingma & Ba): bias-corrected first and second moment estimates.",
                space=_ADAM_SPACE,
                keys=_ADAM_KEYS,
            ),
            _spec(
                name="adamw",
                class_name="AdamW",
                description="AdamW: Adam with decoupled weight decay w *= 1 - lr*wd.",
                space={**_ADAM_SPACE, "weight_decay": Float(1e-5, 1.0, log=True)},
                keys=_ADAM_KEYS,
            ),
        )
    }
)


def get_optimizer(name: str) -> OptimizerSpec:
    """The spec registered as ``name``.

    Raises:
        KeyError: unknown name; the message lists the valid ones.
    """
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise KeyError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}") from None


def resolve_space(
    name: str, overrides: Mapping[str, Any] | None = None, *, batch_size: bool = True
) -> dict[str, Dimension]:
    """The search space of optimizer ``name`` with ``overrides`` applied (without ``batch_size``
    when ``batch_size`` is false: see :meth:`OptimizerSpec.resolve_space`)."""
    return get_optimizer(name).resolve_space(overrides, batch_size=batch_size)


__all__ = [
    "DOMAINS",
    "OPTIMIZERS",
    "TRAINING_KEYS",
    "OptimizerSpec",
    "Space",
    "SpaceError",
    "get_optimizer",
    "resolve_space",
]
