"""Stochastic gradient descent with heavy-ball or Nesterov momentum: drop-in for torch.optim.SGD."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optim_core._base import BaseOptimizer, ParamsT, require_non_negative
from optim_core._tensor_lists import GroupCache, Path, gather, group_by_device_and_dtype


class SGD(BaseOptimizer):
    """Stochastic gradient descent (optionally with momentum), as ``torch.optim.SGD`` computes it.

    For each parameter with gradient ``g`` (``-g`` if ``maximize``):

    1. ``g = g + weight_decay * p`` (L2 penalty)
    2. with momentum: ``b = g`` on the first step, then ``b = momentum * b + (1 - dampening) * g``;
       ``g = g + momentum * b`` if ``nesterov`` else ``g = b``
    3. ``p = p - lr * g``

    The momentum buffer is kept undamped on its first step, and scales the gradient rather than the
    step (``v = m*v + g; p -= lr*v``, not Sutskever's ``v = m*v + lr*g``), as in torch.

    Args:
        params: Parameters or parameter groups (dicts whose settings override the defaults).
        lr: Learning rate.
        momentum: Momentum factor.
        dampening: Dampening of the gradient added to the momentum buffer.
        weight_decay: L2 penalty.
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
        maximize: Maximize the objective instead of minimizing it.
        foreach: ``True`` for the multi-tensor implementation, ``False`` for the single-tensor loop,
            ``None`` for the fastest on the parameters' device.

    Raises:
        ValueError: an invalid hyperparameter; the message names it and its value.

    State per parameter: ``'momentum_buffer'`` (with momentum), created on its first step.
    """

    _setting_defaults = {"nesterov": False, "maximize": False, "foreach": None}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _check_settings(settings: Mapping[str, Any]) -> None:
        require_non_negative(
            settings,
            {
                "lr": "learning rate",
                "momentum": "momentum value",
                "weight_decay": "weight_decay value",
            },
        )
        momentum, dampening = settings["momentum"], settings["dampening"]
        if settings["nesterov"] and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening, "
                f"got momentum={momentum} and dampening={dampening}"
            )

    def _update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], cache: GroupCache
    ) -> None:
        momentum = group["momentum"]
        path = cache.choose_path(group["foreach"])
        settings = {
            "lr": float(group["lr"]),
            "momentum": momentum,
            "dampening": group["dampening"],
            "weight_decay": group["weight_decay"],
            "nesterov": group["nesterov"],
            "maximize": group["maximize"],
        }
        if momentum == 0:
            # One op per tensor and no state: packing cannot save ops, and one _foreach_add_ is as
            # fast as the loop over a few tensors and faster over many (small) ones.
            sgd(params, grads, [], foreach=path is not Path.SINGLE, **settings)
            return
        states = [self.state[p] for p in params]
        ops = 2 + group["nesterov"] + (group["dampening"] != 0) + (group["weight_decay"] != 0)
        tensors = gather(
            cache,
            params,
            grads,
            states,
            ("momentum_buffer",),
            None,
            path=path,
            ops_per_tensor=ops,
            real=False,
        )
        sgd(
            tensors.params,
            tensors.grads,
            tensors.state["momentum_buffer"],
            foreach=path is Path.FOREACH,
            **settings,
        )
        tensors.scatter()


def sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    foreach: bool,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """One SGD step over parallel lists (see :class:`SGD`).

    ``momentum_buffers`` is read only with momentum; ``None`` entries are replaced by new buffers.
    """
    impl = _multi_tensor_sgd if foreach else _single_tensor_sgd
    impl(
        params,
        grads,
        momentum_buffers,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        maximize=maximize,
    )


def _single_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        grad = grads[i]
        if maximize:
            grad = torch.neg(grad)
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:
                buf = momentum_buffers[i] = grad.clone()
            elif dampening == 0 and buf.dtype == grad.dtype:
                # b = g + m*b in one pass (a fused multiply-add) instead of two. A buffer of
                # another dtype (its parameter's data changed dtype after it was made) takes
                # torch.optim's two in-place ops, which round m*b to its dtype first.
                torch.add(grad, buf, alpha=momentum, out=buf)
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            if nesterov:
                # p - lr*(g + m*b) as two multiply-adds into p: no temporary the size of p.
                param.add_(grad, alpha=-lr).add_(buf, alpha=-lr * momentum)
                continue
            grad = buf
        param.add_(grad, alpha=-lr)


def _multi_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    if not params:
        return
    if momentum == 0:
        momentum_buffers = [None] * len(params)
    indices = range(len(params))
    for device_params, device_grads, device_bufs, device_indices in group_by_device_and_dtype(
        params, grads, momentum_buffers, indices
    ):
        if maximize:
            device_grads = torch._foreach_neg(device_grads)
        if weight_decay != 0:
            device_grads = torch._foreach_add(device_grads, device_params, alpha=weight_decay)
        if momentum != 0:
            if any(buf is None for buf in device_bufs):
                # First step (of some): the buffer starts as the gradient itself.
                for j, grad in enumerate(device_grads):
                    buf = device_bufs[j]
                    if buf is None:
                        momentum_buffers[device_indices[j]] = grad.clone()
                    else:
                        buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                device_bufs = [momentum_buffers[i] for i in device_indices]
            else:
                torch._foreach_mul_(device_bufs, momentum)
                torch._foreach_add_(device_bufs, device_grads, alpha=1 - dampening)
            if nesterov:
                # As in the single-tensor loop: two multiply-adds into p, no temporaries.
                torch._foreach_add_(device_params, device_grads, alpha=-lr)
                torch._foreach_add_(device_params, device_bufs, alpha=-lr * momentum)
                continue
            device_grads = device_bufs
        torch._foreach_add_(device_params, device_grads, alpha=-lr)
