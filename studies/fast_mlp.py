"""Closed-form gradients of plain MLPs: the training step of the small models without autograd.

What it covers
    A model that is an ``nn.Sequential`` of ``nn.Linear`` layers (with or without bias) and
    elementwise activations of :data:`ACTIVATIONS` (ReLU, LeakyReLU, Tanh, Sigmoid, GELU, SiLU,
    and Identity), or a single ``nn.Linear``: a chain whose widths match, each linear layer used
    once and no parameter shared between two of them (one used twice would get the sum of two
    gradients, where the backward here writes one over the other), the linear layers' weights and
    biases being all the model's parameters, every one trainable, float32 or float64 and dense; no
    hook on any module or parameter and no ``forward`` replaced on an instance. None of these
    layers depends on training mode. It is trained on a loss the task declares in
    :attr:`studies.tasks.base.Task.loss_kind`:
    ``"cross_entropy"`` on int64 class indices (``ClassificationTask``) or ``"mse"`` on a target
    shaped like the output (``RegressionTask``). Among the built-in tasks: digits_mlp, wine_mlp,
    diabetes_mlp and breast_cancer_logreg. Anything else (digits_cnn, the point tasks, dropout or
    batch norm, a ``Sequential`` or ``Linear`` subclass, a task that overrides ``batch_loss``
    without declaring its loss again, plugins that declare nothing) gets ``None`` from
    :func:`closed_form_for` and trains through autograd exactly as before.

Why
    At batch 32 on a 64-128-10 MLP, forward and backward cost per-operation dispatch and autograd's
    bookkeeping (graph nodes, saved tensors, gradient accumulation, a fresh tensor per
    intermediate), not arithmetic. Written out, the backward is a few matrix products. With
    ``Z_i = A_{i-1} W_i^T + b_i`` and ``A_i = f(Z_i)``:

    - cross-entropy, mean over the batch of B: ``dZ_out = (softmax(Z_out) - onehot(y)) / B``; mean
      squared error over ``n`` outputs: ``dZ_out = 2 (Z_out - y) / n``;
    - ``dW_i = dZ_i^T A_{i-1}``, ``db_i = dZ_i^T 1`` and ``dA_{i-1} = dZ_i W_i``;
    - ``dZ_i = dA_i * f'(Z_i)``, by the kernel autograd uses (``threshold_backward`` ...).

    Each product is written by one kernel into buffers allocated once per batch size (the last
    batch of an epoch may be smaller) and straight into the parameters' gradient tensors: with
    :func:`studies.training.flatten_parameters` those are views of the one flat gradient the
    optimizer steps. Every gradient is overwritten each step, so nothing needs zeroing. For
    digits_mlp a step's loss and gradients are 16 calls (the loss read included) that allocate
    nothing but the 0-d loss, and no graph: about 70 us against about 230 us through autograd
    (one thread, thread CPU time).

Checked
    What :func:`closed_form_for` accepts is checked once per trial: :class:`FirstStepChecked`
    computes the first step's loss and gradients through autograd as well, and on a difference
    beyond round-off (:data:`CHECK_TOLERANCE_ULPS`) logs a warning and trains the trial through
    autograd from that step on. One autograd step per trial is the price.

Same training
    The forward is the one ``nn.Linear`` runs (``addmm``); the loss value is computed every step
    from the log-softmax (cross-entropy) or the residual (MSE) already at hand, so the training
    loop's divergence checks see it as before. The gradients are autograd's up to summation order:
    the tests hold them to 1e-12 (float64) and 1e-5 (float32) of autograd's for every supported
    layer, activation and loss, and train digits_mlp to the same accuracy. The model stays an
    ordinary ``nn.Module``: this class only reads its parameters and writes their gradients.
    One difference: the cross-entropy is summed over all classes against the one-hot targets, so
    a logit of -inf (only an overflowing model has one) makes the loss nan and training stops as
    diverged, where ``F.cross_entropy`` would ignore it unless it is the target's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as nn_module

from studies.tasks.base import LOSS_KINDS, LossKind, Task

_aten = torch.ops.aten
_logger = logging.getLogger(__name__)

SUPPORTED_DTYPES = (torch.float32, torch.float64)
"""Parameter dtypes computed here; the first-step check's tolerance is set for each."""

CHECK_TOLERANCE_ULPS = 4096
"""The first-step check's tolerance in units of the dtype's machine epsilon, relative to the
largest gradient element: about 5e-4 in float32, 9e-13 in float64. Summation order moves the
gradients by far less (the tests hold them to 1e-5 and 1e-12); a model computed wrongly (a layer's
gradient overwritten, a wrong derivative) is off by order one."""


@dataclass(frozen=True)
class Activation:
    """An elementwise activation computed by hand.

    Attributes:
        forward: ``forward(z, a)`` writes ``f(z)`` into ``a`` (``a`` may be ``z`` itself when
            ``backward_needs_input`` is false).
        backward: ``backward(grad, z, a)`` turns ``grad`` (d loss / d a) into d loss / d z, in
            place, from the input ``z`` or the output ``a``.
        backward_needs_input: ``backward`` reads ``z``: the forward then keeps it (out of place).
    """

    forward: Callable[[Tensor, Tensor], object]
    backward: Callable[[Tensor, Tensor, Tensor], object]
    backward_needs_input: bool


def _relu(module: nn.Module) -> Activation:
    return Activation(
        lambda z, a: z.relu_() if z is a else torch.clamp_min(z, 0.0, out=a),  # = relu
        lambda g, z, a: _aten.threshold_backward.grad_input(g, a, 0, grad_input=g),
        backward_needs_input=False,
    )


def _leaky_relu(module: nn.Module) -> Activation:
    slope = module.negative_slope
    return Activation(
        lambda z, a: _aten.leaky_relu.out(z, slope, out=a),
        lambda g, z, a: _aten.leaky_relu_backward.grad_input(g, z, slope, False, grad_input=g),
        backward_needs_input=True,
    )


def _tanh(module: nn.Module) -> Activation:
    return Activation(
        lambda z, a: torch.tanh(z, out=a),
        lambda g, z, a: _aten.tanh_backward.grad_input(g, a, grad_input=g),
        backward_needs_input=False,
    )


def _sigmoid(module: nn.Module) -> Activation:
    return Activation(
        lambda z, a: torch.sigmoid(z, out=a),
        lambda g, z, a: _aten.sigmoid_backward.grad_input(g, a, grad_input=g),
        backward_needs_input=False,
    )


def _gelu(module: nn.Module) -> Activation:
    approximate = module.approximate
    return Activation(
        lambda z, a: _aten.gelu.out(z, approximate=approximate, out=a),
        lambda g, z, a: _aten.gelu_backward.grad_input(g, z, approximate=approximate, grad_input=g),
        backward_needs_input=True,
    )


def _silu(module: nn.Module) -> Activation:
    return Activation(
        lambda z, a: _aten.silu.out(z, out=a),
        lambda g, z, a: _aten.silu_backward.grad_input(g, z, grad_input=g),
        backward_needs_input=True,
    )


ACTIVATIONS: Mapping[type[nn.Module], Callable[[nn.Module], Activation]] = MappingProxyType(
    {
        nn.ReLU: _relu,
        nn.LeakyReLU: _leaky_relu,
        nn.Tanh: _tanh,
        nn.Sigmoid: _sigmoid,
        nn.GELU: _gelu,
        nn.SiLU: _silu,
    }
)
"""Activation module type (exactly; subclasses may compute something else) -> its hand-made form.
``nn.Identity`` is covered too: it is skipped."""


class _Linear:
    """One ``nn.Linear``: its weights as detached views (the optimizer's in-place updates show
    through) and, once bound, the gradient tensors the backward writes into."""

    def __init__(self, module: nn.Linear) -> None:
        self.module = module
        self.weight = module.weight.detach()
        self.weight_t = self.weight.t()
        self.bias = None if module.bias is None else module.bias.detach()
        self.width: int = self.weight.shape[0]
        self.grad_weight: Tensor | None = None
        self.grad_bias: Tensor | None = None

    def bind_gradients(self) -> None:
        self.grad_weight = _gradient_of(self.module.weight)
        if self.module.bias is not None:
            self.grad_bias = _gradient_of(self.module.bias)


def _gradient_of(param: Tensor) -> Tensor:
    """The parameter's gradient tensor (a view of the flat gradient after ``flatten_parameters``),
    created as zeros if it has none; the backward overwrites it in place."""
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    return param.grad


_Stage = _Linear | Activation


class _Buffers:
    """Every intermediate of one batch size, allocated once.

    ``values[i]`` is the output of stage ``i`` (an activation computed in place shares its input's
    tensor); ``grads[i]`` is d loss / d ``values[i]``, ``None`` before the first linear layer
    (nothing there needs a gradient). An activation's backward turns its ``grads[i]`` into
    ``grads[i - 1]`` in place, so the two are one tensor. Transposes are views made here, once.

    For cross-entropy the output layer's tensors are class-major: ``(width, batch)`` underneath,
    used through ``(batch, width)`` views. The log-softmax over the classes is then a reduction
    over the first dimension of a contiguous tensor, about 3x faster than over a last dimension
    of 10; the matrix products take either layout at the same cost.
    """

    def __init__(self, plan: ClosedFormMLP, size: int) -> None:
        like = plan.like
        cross_entropy = plan.loss_kind == "cross_entropy"
        class_major_from = plan.last_linear if cross_entropy else len(plan.stages)

        def new(width: int, class_major: bool) -> Tensor:
            return like.new_empty(width, size).t() if class_major else like.new_empty(size, width)

        self.values: list[Tensor] = []
        self.grads: list[Tensor | None] = []
        width = plan.input_width
        for index, stage in enumerate(plan.stages):
            class_major = index >= class_major_from
            if isinstance(stage, _Linear):
                width = stage.width
            if plan.in_place[index]:
                self.values.append(self.values[-1])
            else:
                self.values.append(new(width, class_major))
            if index < plan.first_linear:
                self.grads.append(None)
            elif isinstance(stage, Activation):
                self.grads.append(self.grads[-1])
            else:
                self.grads.append(new(width, class_major))
        self.grads_t = [None if g is None else g.t() for g in self.grads]
        self.ones = like.new_ones(size)
        out_grad = self.grads[-1]
        assert out_grad is not None  # the last stage is at or after the first linear layer
        self.out_grad = out_grad
        if cross_entropy:
            self.out_t = self.values[-1].t()  # contiguous, class-major
            self.out_grad_t = out_grad.t()
            self.log_probs = new(width, class_major=True)
            self.log_probs_t = self.log_probs.t()
            self.product = like.new_empty(size, width)
        else:
            self.out_grad_flat = out_grad.view(-1)
        # d loss / d output = scale * (softmax - onehot) or scale * (output - target), as a 0-d
        # tensor: a Python number would be wrapped into one at every call.
        self.count = size if cross_entropy else out_grad.numel()
        self.scale = like.new_tensor(1.0 / self.count if cross_entropy else 2.0 / self.count)


def _in_place(stages: list[_Stage], index: int) -> bool:
    """Whether activation ``index`` may overwrite its input: the input is a linear layer's output
    (which nothing else reads) and the backward needs only the activation's output."""
    stage = stages[index]
    return (
        isinstance(stage, Activation)
        and not stage.backward_needs_input
        and index > 0
        and isinstance(stages[index - 1], _Linear)
    )


# Instance attributes that would replace what calling a module runs.
_CALL_OVERRIDES = ("forward", "_call_impl", "_wrapped_call_impl")


def _sequence(model: nn.Module) -> list[nn.Module] | None:
    """The layers of a plain MLP (``None`` if ``model`` is not one), nn.Identity included.

    A plain MLP is a chain this module computes exactly: an ``nn.Linear`` or an ``nn.Sequential``
    (exactly these types: a subclass may run another forward) of linear layers, each used once,
    whose widths chain, and of covered activations (stateless: one instance may appear several
    times); no module with a forward replaced on the instance.
    """
    modules = [model] if type(model) is nn.Linear else None
    if type(model) is nn.Sequential:
        modules = list(model)
    if not modules or any(name in vars(model) for name in _CALL_OVERRIDES):
        return None
    linears = [m for m in modules if type(m) is nn.Linear]
    if not linears or len({id(m) for m in linears}) < len(linears):
        return None  # a linear layer used twice gets the sum of two gradients
    width = None
    for module in modules:
        if any(name in vars(module) for name in _CALL_OVERRIDES):
            return None
        if type(module) is nn.Linear:
            if not _plain_linear(module, width):
                return None
            width = module.weight.shape[0]
        elif type(module) is not nn.Identity and type(module) not in ACTIVATIONS:
            return None
    return modules


def _plain_linear(module: nn.Linear, in_width: int | None) -> bool:
    """Whether ``module`` holds a (width, ``in_width``) weight and a matching bias or none, both
    registered parameters; ``in_width=None`` takes any input width."""
    weight, bias = module.weight, module.bias
    if type(weight) is not nn.Parameter or weight.dim() != 2:
        return False
    if in_width is not None and weight.shape[1] != in_width:
        return False  # autograd raises its error for this model
    return bias is None or (type(bias) is nn.Parameter and bias.shape == weight.shape[:1])


def _has_hooks(model: nn.Module) -> bool:
    """Any forward or backward hook, on a module, globally, or on a parameter's gradient."""
    global_hooks = (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    )
    if any(getattr(nn_module, name, None) for name in global_hooks):
        return True
    module_hooks = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
    )
    for module in model.modules():
        if any(getattr(module, name, None) for name in module_hooks):
            return True
    return any(
        p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None)
        for p in model.parameters()
    )


class ClosedFormMLP:
    """Loss and gradients of a plain MLP computed by hand (see the module docstring).

    Build it with :meth:`build` (or :func:`closed_form_for` from a task); then per step
    ``value = loss(x, targets)`` and, unless training stops there, ``backward()``, which writes the
    gradient of that loss into every parameter's ``.grad``.
    """

    def __init__(self, stages: list[_Stage], loss_kind: LossKind) -> None:
        self.stages = stages
        self.loss_kind: LossKind = loss_kind
        linears = [i for i, stage in enumerate(stages) if isinstance(stage, _Linear)]
        self.first_linear, self.last_linear = linears[0], linears[-1]
        first, last = stages[self.first_linear], stages[self.last_linear]
        assert isinstance(first, _Linear) and isinstance(last, _Linear)
        self.input_width: int = first.weight.shape[1]
        self.output_width: int = last.width
        self.like = first.weight  # dtype and device of every buffer
        self.in_place = [_in_place(stages, i) for i in range(len(stages))]
        self._buffers: dict[int, _Buffers] = {}
        self._last: tuple[_Buffers, Tensor] | None = None
        self._bound = False

    @classmethod
    def build(cls, model: nn.Module, loss_kind: str) -> ClosedFormMLP | None:
        """The closed form of ``model`` trained on ``loss_kind``, or ``None`` if not covered.

        Changes nothing; the first :meth:`backward` gives every parameter that has none a
        gradient tensor and from then on overwrites the parameters' gradient tensors in place, so
        build it once the parameters have their final storage (after ``flatten_parameters``).
        """
        modules = _sequence(model)
        if loss_kind not in LOSS_KINDS or modules is None or _has_hooks(model):
            return None
        params = list(model.parameters())
        owned = [
            p
            for m in dict.fromkeys(modules)  # each module once (activations may repeat)
            if type(m) is nn.Linear
            for p in (m.weight, m.bias)
            if p is not None
        ]
        if len({id(p) for p in owned}) < len(owned):
            return None  # a tied weight gets the sum of its uses' gradients
        if {id(p) for p in owned} != {id(p) for p in params} or len(owned) != len(params):
            return None  # a parameter elsewhere than in the linear layers
        if any(
            not p.requires_grad
            or p.dtype not in SUPPORTED_DTYPES
            or p.layout is not torch.strided
            or p.dtype != params[0].dtype
            or p.device != params[0].device
            for p in params
        ):
            return None
        stages: list[_Stage] = []
        for module in modules:
            if type(module) is nn.Linear:
                stages.append(_Linear(module))
            elif type(module) is not nn.Identity:
                stages.append(ACTIVATIONS[type(module)](module))
        return cls(stages, loss_kind)  # type: ignore[arg-type]

    def accepts(self, x: Tensor, y: Tensor) -> bool:
        """Whether training data ``x`` (inputs) and ``y`` (targets as the task gives them) fit:
        rows of ``input_width`` values of the parameters' dtype, and int64 class indices within
        the outputs (cross-entropy; ``F.cross_entropy``'s ``ignore_index`` and probability
        targets are left to autograd) or a target shaped like the outputs (MSE, no broadcasting).
        """
        like = self.like
        if x.dim() != 2 or x.shape[1] != self.input_width or x.dtype != like.dtype:
            return False
        if x.device != like.device or y.device != like.device or len(y) != len(x):
            return False
        if self.loss_kind == "cross_entropy":
            return (
                y.dtype == torch.int64
                and y.dim() == 1
                and (len(y) == 0 or (int(y.min()) >= 0 and int(y.max()) < self.output_width))
            )
        return y.dtype == like.dtype and y.shape == (len(x), self.output_width)

    def train_targets(self, y: Tensor) -> Tensor:
        """The training targets as :meth:`loss` takes them: one-hot rows for cross-entropy (made
        once, then shuffled and batched like the class indices were), ``y`` itself for MSE."""
        if self.loss_kind == "cross_entropy":
            return F.one_hot(y, self.output_width).to(self.like.dtype)
        return y

    def loss(self, x: Tensor, targets: Tensor) -> float:
        """Forward one batch (``targets`` from :meth:`train_targets`): its mean loss, and what
        :meth:`backward` needs."""
        size = x.shape[0]
        buffers = self._buffers.get(size)
        if buffers is None:
            buffers = self._buffers[size] = _Buffers(self, size)
        values = buffers.values
        inputs = x
        for stage, value in zip(self.stages, values, strict=True):
            if isinstance(stage, _Linear):
                if stage.bias is None:
                    torch.mm(inputs, stage.weight_t, out=value)
                else:
                    torch.addmm(stage.bias, inputs, stage.weight_t, out=value)
            else:
                stage.forward(inputs, value)
            inputs = value
        out_grad = buffers.out_grad
        if self.loss_kind == "cross_entropy":
            # log p = z - logsumexp(z); loss = -mean(log p[y]); d loss / dz = (p - onehot) / B
            torch.log_softmax(buffers.out_t, 0, out=buffers.log_probs_t)
            total = -torch.mul(buffers.log_probs, targets, out=buffers.product).sum().item()
            torch.exp(buffers.log_probs_t, out=buffers.out_grad_t)
            out_grad.sub_(targets)
        else:
            # loss = mean((z - y)^2) over n values; d loss / dz = 2 (z - y) / n
            torch.sub(inputs, targets, out=out_grad)
            total = torch.dot(buffers.out_grad_flat, buffers.out_grad_flat).item()
        out_grad.mul_(buffers.scale)
        self._last = (buffers, x)
        return total / buffers.count

    def backward(self) -> None:
        """Write the gradient of the last :meth:`loss` into the parameters' ``.grad``."""
        if self._last is None:
            raise RuntimeError("backward() needs a loss() first")
        if not self._bound:
            for stage in self.stages:
                if isinstance(stage, _Linear):
                    stage.bind_gradients()
            self._bound = True
        buffers, x = self._last
        values, grads, grads_t, ones = buffers.values, buffers.grads, buffers.grads_t, buffers.ones
        for index in range(len(self.stages) - 1, self.first_linear - 1, -1):
            stage = self.stages[index]
            grad = grads[index]
            inputs = x if index == 0 else values[index - 1]
            if isinstance(stage, _Linear):
                grad_t = grads_t[index]
                torch.mm(grad_t, inputs, out=stage.grad_weight)
                if stage.grad_bias is not None:
                    torch.mv(grad_t, ones, out=stage.grad_bias)  # the sum over the batch
                if index > self.first_linear:
                    torch.mm(grad, stage.weight, out=grads[index - 1])
            else:
                stage.backward(grad, inputs, values[index])  # grad becomes grads[index - 1]


def declared_loss(task: Task) -> LossKind | None:
    """The loss ``task.batch_loss`` computes, as the task declares it in ``loss_kind``.

    The declaration counts only where it sees the ``batch_loss`` it describes: a subclass that
    overrides ``batch_loss`` below the class declaring ``loss_kind`` (or patches it on the
    instance) gets ``None`` until it declares its loss again.
    """
    mro = type(task).__mro__
    kind_owner = next((c for c in mro if "loss_kind" in vars(c)), None)
    loss_owner = next((c for c in mro if "batch_loss" in vars(c)), None)
    if kind_owner is None or loss_owner is None or not issubclass(kind_owner, loss_owner):
        return None
    if "batch_loss" in vars(task) or "loss_kind" in vars(task):
        return None
    kind = task.loss_kind
    return kind if kind in LOSS_KINDS else None


def closed_form_for(model: nn.Module, task: Task) -> ClosedFormMLP | None:
    """The closed-form gradients of ``model`` trained on ``task``, or ``None`` (use autograd).

    Not ``None`` only when the model is a plain MLP (see the module docstring), the task declares
    a covered loss (:func:`declared_loss`) and its training data fit
    (:meth:`ClosedFormMLP.accepts`). Call it once the parameters have their final storage (after
    ``flatten_parameters``).
    """
    loss_kind = declared_loss(task)
    if loss_kind is None:
        return None
    closed = ClosedFormMLP.build(model, loss_kind)
    if closed is None:  # before loading the data
        return None
    x, y = task.data.split("train")
    return closed if closed.accepts(x, y) else None


class GradientSource(Protocol):
    """What the training loop steps with (see ``studies.training``): here, autograd's."""

    def loss(self, x: Tensor, targets: Tensor) -> float:
        """The loss of one batch (targets as the task gives them), as a float."""
        ...

    def backward(self) -> None:
        """Put the gradient of the last :meth:`loss` in the parameters' gradients."""
        ...


class FirstStepChecked:
    """The closed form of a trial, its first step checked against autograd.

    The first :meth:`loss` computes the loss and gradients both ways (one autograd pass through
    ``task.batch_loss``, which leaves ``.grad`` alone). If they agree within
    :data:`CHECK_TOLERANCE_ULPS`, training goes on in closed form from the gradients already
    written; if not, a warning is logged, autograd's gradients replace them and every later step
    goes through ``fallback``, so that a trial never trains on gradients autograd would not give.
    The check costs one autograd step per trial.

    Targets come in as :meth:`train_targets` makes them (one-hot rows for cross-entropy);
    ``fallback`` gets them as the task gives them (class indices).
    """

    def __init__(
        self, closed: ClosedFormMLP, task: Task, model: nn.Module, fallback: GradientSource
    ) -> None:
        self.closed = closed
        self.task = task
        self.model = model
        self.fallback = fallback
        self.agrees: bool | None = None  # None until the first step ran
        self._gradients_written = False

    def train_targets(self, y: Tensor) -> Tensor:
        return self.closed.train_targets(y)

    def _task_targets(self, targets: Tensor) -> Tensor:
        # one-hot rows hold a single 1.0: argmax gives back the class index exactly
        return targets.argmax(1) if self.closed.loss_kind == "cross_entropy" else targets

    def loss(self, x: Tensor, targets: Tensor) -> float:
        if self.agrees:
            return self.closed.loss(x, targets)
        if self.agrees is False:
            return self.fallback.loss(x, self._task_targets(targets))
        params = list(self.model.parameters())
        expected = self.task.batch_loss(self.model, x, self._task_targets(targets))
        expected_grads = torch.autograd.grad(expected, params)
        value = self.closed.loss(x, targets)
        self.closed.backward()
        self._gradients_written = True
        problem = _disagreement(value, expected.item(), params, expected_grads)
        self.agrees = problem is None
        if problem is None:
            return value
        if math.isfinite(expected.item()):
            _logger.warning(
                "task %s: the closed-form gradients of %s disagree with autograd's on the first "
                "step (%s); this trial trains through autograd",
                self.task.name,
                type(self.model).__name__,
                problem,
            )
        with torch.no_grad():
            for p, grad in zip(params, expected_grads, strict=True):
                p.grad.copy_(grad)  # type: ignore[union-attr]  # written by closed.backward()
        return expected.item()

    def backward(self) -> None:
        if self._gradients_written:  # the first step: the check wrote them
            self._gradients_written = False
        elif self.agrees:
            self.closed.backward()
        else:
            self.fallback.backward()


def _disagreement(
    value: float, expected: float, params: Sequence[Tensor], expected_grads: Sequence[Tensor]
) -> str | None:
    """How the closed form's loss and gradients differ from autograd's beyond round-off, or
    ``None``. A non-finite loss is a disagreement too: autograd is then the one to report it."""
    if not math.isfinite(expected):
        return f"loss {expected}"
    tolerance = CHECK_TOLERANCE_ULPS * torch.finfo(params[0].dtype).eps
    if not abs(value - expected) <= tolerance * max(abs(expected), 1.0):
        return f"loss {value!r} against {expected!r}"
    scale = max(float(g.abs().max()) for g in expected_grads if g.numel() > 0)
    for index, (p, grad) in enumerate(zip(params, expected_grads, strict=True)):
        error = float((p.grad - grad).abs().max()) if grad.numel() > 0 else 0.0  # type: ignore[operator]
        if not error <= tolerance * scale:
            return (
                f"parameter {index} {tuple(p.shape)}: largest difference {error:.3g}, "
                f"tolerance {tolerance * scale:.3g}"
            )
    return None
