"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), drop-ins for torch.optim's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optim_core._base import BaseOptimizer, ParamsT, require_non_negative
from optim_core._tensor_lists import GroupCache, Path, gather, group_by_device_and_dtype


class Adam(BaseOptimizer):
    """Adam, as ``torch.optim.Adam`` computes it.

    For each parameter with gradient ``g`` (``-g`` if ``maximize``), at step ``t``:

    1. ``g = g + weight_decay * p`` (L2 penalty), or with ``decoupled_weight_decay``
       ``p = p * (1 - lr * weight_decay)`` (AdamW)
    2. ``m = beta1 * m + (1 - beta1) * g``; ``v = beta2 * v + (1 - beta2) * g * g``
    3. ``v_max = max(v_max, v)`` and ``v = v_max`` if ``amsgrad`` (Reddi et al., 2018)
    4. ``p = p - lr * (m / bc1) / (sqrt(v / bc2) + eps)`` with ``bc1 = 1 - beta1**t``,
       ``bc2 = 1 - beta2**t``: Algorithm 1 of the paper, with ``eps`` outside the square root

    Args:
        params: Parameters or parameter groups (dicts whose settings override the defaults).
        lr: Learning rate.
        betas: Decay rates ``(beta1, beta2)`` of the first and second moment estimates, in [0, 1).
        eps: Added to the denominator, outside the square root.
        weight_decay: L2 penalty, or decoupled decay rate with ``decoupled_weight_decay``.
        amsgrad: Use the maximum of the second moment estimates so far (AMSGrad).
        foreach: ``True`` for the multi-tensor implementation, ``False`` for the single-tensor loop,
            ``None`` for the fastest on the parameters' device.
        maximize: Maximize the objective instead of minimizing it.
        decoupled_weight_decay: Decay the parameters directly, as :class:`AdamW` does.

    Raises:
        ValueError: an invalid hyperparameter; the message names it and its value.

    State per parameter, created on its first step: ``'step'`` (a float), ``'exp_avg'``,
    ``'exp_avg_sq'``, ``'max_exp_avg_sq'`` (amsgrad).
    """

    _setting_defaults = {
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "decoupled_weight_decay": False,
    }

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _check_settings(settings: Mapping[str, Any]) -> None:
        require_non_negative(settings, {"lr": "learning rate", "eps": "epsilon value"})
        betas = settings["betas"]
        if len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas} (expected two values)")
        for index, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
        require_non_negative(settings, {"weight_decay": "weight_decay value"})

    def _update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], cache: GroupCache
    ) -> None:
        amsgrad = group["amsgrad"]
        keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else ("exp_avg", "exp_avg_sq")
        states, steps = self._states(params, keys)
        path = cache.choose_path(group["foreach"])
        ops = 6 + amsgrad + (group["weight_decay"] != 0)
        tensors = gather(cache, params, grads, states, keys, steps, path=path, ops_per_tensor=ops)
        beta1, beta2 = group["betas"]
        adam(
            tensors.params,
            tensors.grads,
            tensors.state["exp_avg"],
            tensors.state["exp_avg_sq"],
            tensors.state.get("max_exp_avg_sq", []),
            tensors.steps,
            foreach=path is Path.FOREACH,
            amsgrad=amsgrad,
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            maximize=group["maximize"],
        )
        tensors.scatter()


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay ``p = p * (1 - lr * weight_decay)``, as
    ``torch.optim.AdamW`` computes it (see :class:`Adam`; the default ``weight_decay`` is 1e-2)."""

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            decoupled_weight_decay=True,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A state dict of torch.optim.Adam (or an old one) must not make AdamW an L2-penalized Adam.
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[float],
    *,
    foreach: bool,
    amsgrad: bool,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """One Adam step over parallel lists (see :class:`Adam`); ``steps`` count this step.

    ``max_exp_avg_sqs`` is read only with ``amsgrad``.
    """
    impl = _multi_tensor_adam if foreach else _single_tensor_adam
    impl(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        steps,
        amsgrad=amsgrad,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )


def _single_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[float],
    *,
    amsgrad: bool,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        grad = grads[i]
        if maximize:
            grad = torch.neg(grad)
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if amsgrad:
            exp_avg_sq = torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])

        step = steps[i]
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        # The paper's "more efficient" order (end of its section 2): the bias corrections move into
        # the step size and eps, which saves a pass over the tensor. It is the same expression as
        # lr * (m / bc1) / (sqrt(v) / sqrt(bc2) + eps), to round-off.
        step_size = lr * bias_correction2_sqrt / bias_correction1
        denom = exp_avg_sq.sqrt().add_(eps * bias_correction2_sqrt)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _multi_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[float],
    *,
    amsgrad: bool,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    if not params:
        return
    for (
        device_params,
        device_grads,
        device_exp_avgs,
        device_exp_avg_sqs,
        device_max_exp_avg_sqs,
        device_steps,
    ) in group_by_device_and_dtype(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs if amsgrad else [None] * len(params),
        steps,
    ):
        if maximize:
            device_grads = torch._foreach_neg(device_grads)
        if weight_decay != 0:
            if decoupled_weight_decay:
                torch._foreach_mul_(device_params, 1 - lr * weight_decay)
            else:
                device_grads = torch._foreach_add(device_grads, device_params, alpha=weight_decay)
        torch._foreach_lerp_(device_exp_avgs, device_grads, 1 - beta1)
        torch._foreach_mul_(device_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(device_exp_avg_sqs, device_grads, device_grads, value=1 - beta2)
        if amsgrad:
            torch._foreach_maximum_(device_max_exp_avg_sqs, device_exp_avg_sqs)
            device_exp_avg_sqs = device_max_exp_avg_sqs

        bias_corrections2_sqrt = [(1 - beta2**step) ** 0.5 for step in device_steps]
        minus_step_sizes = [
            -lr * bc2_sqrt / (1 - beta1**step)
            for step, bc2_sqrt in zip(device_steps, bias_corrections2_sqrt, strict=True)
        ]
        denoms = torch._foreach_sqrt(device_exp_avg_sqs)
        torch._foreach_add_(denoms, [eps * bc2_sqrt for bc2_sqrt in bias_corrections2_sqrt])
        torch._foreach_addcdiv_(device_params, device_exp_avgs, denoms, minus_step_sizes)
