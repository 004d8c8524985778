"""What the optimizers of optim_core share: the step loop, validation, lazy state, loading."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from optim_core._tensor_lists import GroupCache, State

__all__ = ["BaseOptimizer", "ParamsT", "SparseGradientError", "require_non_negative"]


class SparseGradientError(ValueError, RuntimeError):
    """A sparse gradient reached an optimizer that only handles dense ones.

    Both a ``ValueError`` (what optim_core refuses) and a ``RuntimeError`` (what torch.optim
    raises for it, and so what code written for torch.optim may catch).
    """


class BaseOptimizer(torch.optim.Optimizer, abc.ABC):
    """A ``torch.optim.Optimizer`` whose step updates one group at a time in :meth:`_update_group`.

    Subclasses validate settings in :meth:`_check_settings` (called for the defaults and for every
    parameter group, including ones added later) and read every setting from the group in
    :meth:`_update_group`, never from ``self``: that is what schedulers, per-group settings and
    ``load_state_dict`` rely on.
    """

    #: Group settings a state dict saved by an older version or by torch.optim may lack.
    _setting_defaults: ClassVar[Mapping[str, Any]] = {"foreach": None, "maximize": False}

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self._check_settings(defaults)
        self._caches: dict[int, GroupCache] = {}
        super().__init__(params, defaults)

    @staticmethod
    @abc.abstractmethod
    def _check_settings(settings: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the first invalid hyperparameter in ``settings``."""

    @abc.abstractmethod
    def _update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], cache: GroupCache
    ) -> None:
        """Update ``params`` (those of ``group`` that have a gradient) from ``grads``; ``cache`` is
        the group's, refreshed for ``params``."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after checking its settings, as the constructor checks the defaults.

        Raises:
            ValueError: a setting of the group is invalid; the message names it and its value.
        """
        self._check_settings({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # load_state_dict comes through here too. torch.optim keeps 'step' as a tensor; we keep a
        # float, which its __setstate__ turns back into a tensor when our state goes the other way.
        super().__setstate__(state)
        self._caches = {}
        for group in self.param_groups:
            for key, value in self._setting_defaults.items():
                group.setdefault(key, value)
        for param_state in self.state.values():
            step = param_state.get("step")
            if isinstance(step, Tensor):
                param_state["step"] = float(step)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Args:
            closure: Re-evaluates the model and returns the loss; it runs with gradients enabled.

        Returns:
            What ``closure`` returned, or ``None`` without one.

        Raises:
            SparseGradientError: a parameter has a sparse gradient.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Every group is checked before any is updated, so that a refused step changes nothing.
        updates = []
        for index, group in enumerate(self.param_groups):
            params: list[Tensor] = []
            grads: list[Tensor] = []
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if grad.layout is not torch.strided:
                    raise SparseGradientError(
                        f"{type(self).__name__} does not support sparse gradients "
                        f"(got a {grad.layout} gradient)"
                    )
                params.append(p)
                grads.append(grad)
            updates.append((index, group, params, grads))
        with torch.no_grad():
            for index, group, params, grads in updates:
                if not params:
                    self._caches.pop(index, None)
                    continue
                cache = self._caches.get(index)
                if cache is None:
                    cache = self._caches[index] = GroupCache()
                cache.refresh(params)
                self._update_group(group, params, grads, cache)
        return loss

    def _states(
        self, params: list[Tensor], keys: Sequence[str], *, fill: float = 0.0
    ) -> tuple[list[State], list[float]]:
        """The state dicts of ``params`` and their step counts after this step.

        Missing ``keys`` are created as tensors full of ``fill`` (lazily: on the first step a
        parameter takes part in). ``'step'`` counts in a float (torch.optim: a float tensor).
        """
        states, steps = [], []
        for p in params:
            state = self.state[p]
            for key in keys:
                if key not in state:
                    value = complex(fill, fill) if p.is_complex() else fill
                    state[key] = torch.full_like(p, value, memory_format=torch.preserve_format)
            state["step"] = step = state.get("step", 0.0) + 1.0
            states.append(state)
            steps.append(step)
        return states, steps


def require_non_negative(settings: Mapping[str, Any], names: Mapping[str, str]) -> None:
    """Check that the settings named in ``names`` (key -> name in messages) are >= 0.

    Raises:
        ValueError: ``"Invalid <name>: <value>"`` for the first that is negative or NaN.
    """
    for key, name in names.items():
        value = settings[key]
        if not value >= 0.0:
            raise ValueError(f"Invalid {name}: {value}")
