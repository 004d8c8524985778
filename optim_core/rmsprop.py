"""RMSProp (Hinton, Lecture 6e; centered: Graves, 2013): a drop-in for ``torch.optim.RMSprop``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optim_core._base import BaseOptimizer, ParamsT, require_non_negative
from optim_core._tensor_lists import GroupCache, Path, gather, group_by_device_and_dtype


class RMSProp(BaseOptimizer):
    """RMSProp, as ``torch.optim.RMSprop`` computes it.

    For each parameter with gradient ``g`` (``-g`` if ``maximize``):

    1. ``g = g + weight_decay * p`` (L2 penalty)
    2. ``s = alpha * s + (1 - alpha) * g * g``
    3. ``d = sqrt(s) + eps``, or if ``centered`` with ``a = alpha * a + (1 - alpha) * g``:
       ``d = sqrt(s - a * a) + eps`` (the gradient's variance instead of its second moment)
    4. with momentum: ``b = momentum * b + g / d``; ``p = p - lr * b``; else ``p = p - lr * g / d``

    Args:
        params: Parameters or parameter groups (dicts whose settings override the defaults).
        lr: Learning rate.
        alpha: Smoothing constant of the running averages.
        eps: Added to the denominator, outside the square root.
        weight_decay: L2 penalty.
        momentum: Momentum factor.
        centered: Normalize by the estimated variance of the gradient.
        foreach: ``True`` for the multi-tensor implementation, ``False`` for the single-tensor loop,
            ``None`` for the fastest on the parameters' device.
        maximize: Maximize the objective instead of minimizing it.

    Raises:
        ValueError: an invalid hyperparameter; the message names it and its value.

    State per parameter, created on its first step: ``'step'`` (a float), ``'square_avg'``,
    ``'momentum_buffer'`` (with momentum), ``'grad_avg'`` (centered).
    """

    _setting_defaults = {"momentum": 0.0, "centered": False, "foreach": None, "maximize": False}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _check_settings(settings: Mapping[str, Any]) -> None:
        require_non_negative(
            settings,
            {
                "lr": "learning rate",
                "eps": "epsilon value",
                "momentum": "momentum value",
                "weight_decay": "weight_decay value",
                "alpha": "alpha value",
            },
        )

    def _update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], cache: GroupCache
    ) -> None:
        momentum, centered = group["momentum"], group["centered"]
        keys = ("square_avg",)
        if momentum > 0:
            keys += ("momentum_buffer",)
        if centered:
            keys += ("grad_avg",)
        # RMSProp's maths has no step count; it is kept as torch.optim keeps it.
        states, _ = self._states(params, keys)
        path = cache.choose_path(group["foreach"])
        ops = 5 + 2 * centered + 2 * (momentum > 0)
        tensors = gather(cache, params, grads, states, keys, None, path=path, ops_per_tensor=ops)
        rmsprop(
            tensors.params,
            tensors.grads,
            tensors.state["square_avg"],
            tensors.state.get("grad_avg", []),
            tensors.state.get("momentum_buffer", []),
            foreach=path is Path.FOREACH,
            lr=float(group["lr"]),
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=momentum,
            centered=centered,
            maximize=group["maximize"],
        )
        tensors.scatter()


def rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    foreach: bool,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    """One RMSProp step over parallel lists (see :class:`RMSProp`).

    ``grad_avgs`` is read only if ``centered``, ``momentum_buffers`` only if ``momentum > 0``.
    """
    impl = _multi_tensor_rmsprop if foreach else _single_tensor_rmsprop
    impl(
        params,
        grads,
        square_avgs,
        grad_avgs,
        momentum_buffers,
        lr=lr,
        alpha=alpha,
        eps=eps,
        weight_decay=weight_decay,
        momentum=momentum,
        centered=centered,
        maximize=maximize,
    )


def _single_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        grad = grads[i]
        if maximize:
            grad = torch.neg(grad)
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        square_avg = square_avgs[i]
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            grad_avg = grad_avgs[i]
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg.add_(eps)
        if momentum > 0:
            buf = momentum_buffers[i]
            buf.mul_(momentum).addcdiv_(grad, avg)
            param.add_(buf, alpha=-lr)
        else:
            param.addcdiv_(grad, avg, value=-lr)


def _multi_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    if not params:
        return
    n = len(params)
    for (
        device_params,
        device_grads,
        device_square_avgs,
        device_grad_avgs,
        device_bufs,
    ) in group_by_device_and_dtype(
        params,
        grads,
        square_avgs,
        grad_avgs if centered else [None] * n,
        momentum_buffers if momentum > 0 else [None] * n,
    ):
        if maximize:
            device_grads = torch._foreach_neg(device_grads)
        if weight_decay != 0:
            device_grads = torch._foreach_add(device_grads, device_params, alpha=weight_decay)
        torch._foreach_mul_(device_square_avgs, alpha)
        torch._foreach_addcmul_(device_square_avgs, device_grads, device_grads, value=1 - alpha)
        if centered:
            torch._foreach_lerp_(device_grad_avgs, device_grads, 1 - alpha)
            avg = torch._foreach_addcmul(
                device_square_avgs, device_grad_avgs, device_grad_avgs, value=-1
            )
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(device_square_avgs)
        torch._foreach_add_(avg, eps)
        if momentum > 0:
            torch._foreach_mul_(device_bufs, momentum)
            torch._foreach_addcdiv_(device_bufs, device_grads, avg)
            torch._foreach_add_(device_params, device_bufs, alpha=-lr)
        else:
            torch._foreach_addcdiv_(device_params, device_grads, avg, value=-lr)
