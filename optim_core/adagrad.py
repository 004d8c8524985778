"""AdaGrad (Duchi, Hazan & Singer, 2011): a drop-in for ``torch.optim.Adagrad``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optim_core._base import BaseOptimizer, ParamsT, require_non_negative
from optim_core._tensor_lists import GroupCache, Path, gather, group_by_device_and_dtype


class AdaGrad(BaseOptimizer):
    """AdaGrad, as ``torch.optim.Adagrad`` computes it.

    For each parameter with gradient ``g`` (``-g`` if ``maximize``), at step ``t``:

    1. ``g = g + weight_decay * p`` (L2 penalty)
    2. ``G = G + g * g`` (``G`` starts at ``initial_accumulator_value``)
    3. ``p = p - clr * g / (sqrt(G) + eps)`` with ``clr = lr / (1 + (t - 1) * lr_decay)``

    Args:
        params: Parameters or parameter groups (dicts whose settings override the defaults).
        lr: Learning rate.
        lr_decay: Learning-rate decay per step.
        weight_decay: L2 penalty.
        initial_accumulator_value: Starting value of the sum of squared gradients.
        eps: Added to the denominator, outside the square root.
        foreach: ``True`` for the multi-tensor implementation, ``False`` for the single-tensor loop,
            ``None`` for the fastest on the parameters' device.
        maximize: Maximize the objective instead of minimizing it.

    Raises:
        ValueError: an invalid hyperparameter; the message names it and its value.

    State per parameter: ``'step'`` (a float) and ``'sum'``, created in the constructor, as
    torch.optim does, from the group's ``initial_accumulator_value`` (on the first step for a
    group added later). A parameter given data of another dtype before its first step
    (``p.data = p.data.double()``) so keeps the ``'sum'`` of its old dtype, as in torch.optim.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            fill = group["initial_accumulator_value"]
            for p in group["params"]:
                value = complex(fill, fill) if p.is_complex() else fill
                state = self.state[p]
                state["step"] = 0.0
                state["sum"] = torch.full_like(p, value, memory_format=torch.preserve_format)

    @staticmethod
    def _check_settings(settings: Mapping[str, Any]) -> None:
        require_non_negative(
            settings,
            {
                "lr": "learning rate",
                "lr_decay": "lr_decay value",
                "weight_decay": "weight_decay value",
                "initial_accumulator_value": "initial_accumulator_value value",
                "eps": "epsilon value",
            },
        )

    def _update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], cache: GroupCache
    ) -> None:
        states, steps = self._states(params, ("sum",), fill=group["initial_accumulator_value"])
        path = cache.choose_path(group["foreach"])
        tensors = gather(cache, params, grads, states, ("sum",), steps, path=path, ops_per_tensor=4)
        adagrad(
            tensors.params,
            tensors.grads,
            tensors.state["sum"],
            tensors.steps,
            foreach=path is Path.FOREACH,
            lr=float(group["lr"]),
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )
        tensors.scatter()


def adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    steps: list[float],
    *,
    foreach: bool,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """One AdaGrad step over parallel lists (see :class:`AdaGrad`); ``steps`` count this step."""
    impl = _multi_tensor_adagrad if foreach else _single_tensor_adagrad
    impl(
        params,
        grads,
        state_sums,
        steps,
        lr=lr,
        lr_decay=lr_decay,
        weight_decay=weight_decay,
        eps=eps,
        maximize=maximize,
    )


def _single_tensor_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    steps: list[float],
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    for param, grad, state_sum, step in zip(params, grads, state_sums, steps, strict=True):
        if maximize:
            grad = torch.neg(grad)
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum.addcmul_(grad, grad, value=1)
        std = state_sum.sqrt().add_(eps)
        param.addcdiv_(grad, std, value=-clr)


def _multi_tensor_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    steps: list[float],
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    if not params:
        return
    for device_params, device_grads, device_sums, device_steps in group_by_device_and_dtype(
        params, grads, state_sums, steps
    ):
        if maximize:
            device_grads = torch._foreach_neg(device_grads)
        if weight_decay != 0:
            device_grads = torch._foreach_add(device_grads, device_params, alpha=weight_decay)
        minus_clr = [-lr / (1 + (step - 1) * lr_decay) for step in device_steps]
        torch._foreach_addcmul_(device_sums, device_grads, device_grads, value=1)
        std = torch._foreach_sqrt(device_sums)
        torch._foreach_add_(std, eps)
        torch._foreach_addcdiv_(device_params, device_grads, std, minus_clr)
