"""Optimizers written from the maths, drop-in twins of torch.optim, and their search spaces."""

from optim_core.adagrad import AdaGrad
from optim_core.adam import Adam, AdamW
from optim_core.registry import OPTIMIZERS, OptimizerSpec, get_optimizer, resolve_space
from optim_core.rmsprop import RMSProp
from optim_core.sgd import SGD
from optim_core.spaces import SpaceError

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
