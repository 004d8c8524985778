"""Optimizers written from the maths, drop-in twins of torch.optim, and their search spaces.

The optimizer classes are imported on first use (``optim_core.Adam``, ``from optim_core import
Adam``): they need torch, and a process that only reads the registry (the API) does not.
"""

from importlib import import_module
from typing import Any

from optim_core.registry import OPTIMIZERS, OptimizerSpec, get_optimizer, resolve_space
from optim_core.spaces import SpaceError

# Where each optimizer class is defined.
_CLASS_MODULES = {
    "AdaGrad": "optim_core.adagrad",
    "Adam": "optim_core.adam",
    "AdamW": "optim_core.adam",
    "RMSProp": "optim_core.rmsprop",
    "SGD": "optim_core.sgd",
}


def __getattr__(name: str) -> Any:
    try:
        module = _CLASS_MODULES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLASS_MODULES})


__all__ = [
    "OPTIMIZERS",
    "SGD",
    "AdaGrad",
    "Adam",
    "AdamW",
    "OptimizerSpec",
    "RMSProp",
    "SpaceError",
    "get_optimizer",
    "resolve_space",
]
