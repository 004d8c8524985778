"""The fast training loop of one trial.

On models this small, time goes to per-step overhead (Python, dispatch, one kernel launch per tensor
per operation), not to arithmetic. So the loop:

1. holds the data as tensors and takes each epoch's batches as views of one shuffled copy (a seeded
   permutation per epoch, no ``DataLoader``);
2. re-homes every trainable parameter of the model into one flat float32 buffer
   (:func:`flatten_parameters`): the model stays an ordinary ``nn.Module`` whose parameters are
   views into it, autograd accumulates into views of one flat gradient, and the optimizer steps a
   single tensor, a handful of kernels per step instead of a handful per parameter tensor;
3. zeroes that gradient with one ``zero_()``, calls the optimizer's step without torch's per-call
   profiler-and-hooks wrapper when no hook is registered (:func:`_bare_step`), runs on one torch
   thread and evaluates under :func:`torch.inference_mode`;
4. reads each step's loss as a float (on the CPU that is a plain read, not a device sync) to stop at
   once on divergence: a nan/inf loss, or a loss ``DIVERGENCE_FACTOR`` times the first one;
5. for a plain MLP on a declared cross-entropy or MSE loss, computes the loss and the gradients
   by hand instead of through autograd, overwriting the gradient instead of zeroing it
   (:func:`studies.fast_mlp.closed_form_for` says which models and tasks it covers), its first step
   checked against autograd (:class:`studies.fast_mlp.FirstStepChecked`); every other model and
   task goes through autograd.

The optimizers of the registry update each coordinate from its own gradient and state only, so
stepping the flat buffer gives the same numbers as stepping the tensors one by one.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim import optimizer as torch_optimizer

from optim_core.registry import OptimizerSpec
from studies.devices import resolve_device
from studies.fast_mlp import FirstStepChecked, closed_form_for
from studies.tasks.base import Split, Task

DIVERGENCE_FACTOR = 1e3

EpochCallback = Callable[[int, Mapping[str, float]], "str | None"]
"""Called after each epoch with (epoch, validation metrics); a returned string stops training."""


@dataclass(frozen=True)
class TrainingResult:
    """What one training run produced.

    Attributes:
        model: The trained model (an ordinary ``nn.Module``).
        curves: Per completed epoch: ``"train_loss"`` (mean loss of the epoch's batches) and every
            validation metric of the task.
        epochs_run: Completed epochs (the length of every curve).
        steps: Optimizer steps taken.
        stop_reason: Why training stopped early (divergence, time limit, the epoch callback), or
            ``None`` when it ran all epochs.
    """

    model: nn.Module
    curves: dict[str, list[float]]
    epochs_run: int
    steps: int
    stop_reason: str | None = None


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (workers run one process per core)."""
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


def flatten_parameters(params: Sequence[torch.Tensor]) -> nn.Parameter | None:
    """Move ``params`` into one flat buffer; each becomes a view of it, its gradient a view too.

    After this, the returned flat parameter and the original parameters share memory, and so do
    their gradients: ``backward()`` accumulates into the flat gradient (zero it with
    ``flat.grad.zero_()``; an optimizer's ``zero_grad()`` would unlink it), and an optimizer built
    on ``[flat]`` updates every parameter of the model in place.

    Args:
        params: Leaf parameters of one dtype and device.

    Returns:
        The flat parameter, or ``None`` when ``params`` cannot share one buffer (empty, mixed
        dtypes or devices, sparse); the caller then trains the parameters as they are.
    """
    if not params:
        return None
    dtype, device = params[0].dtype, params[0].device
    if any(p.dtype != dtype or p.device != device or p.is_sparse or not p.is_leaf for p in params):
        return None
    flat = torch.empty(sum(p.numel() for p in params), dtype=dtype, device=device)
    grad = torch.zeros_like(flat)
    offset = 0
    with torch.no_grad():
        for p in params:
            size = p.numel()
            flat[offset : offset + size].copy_(p.reshape(-1))
            p.data = flat[offset : offset + size].view_as(p)
            p.grad = grad[offset : offset + size].view_as(p)
            offset += size
    flat_param = nn.Parameter(flat)
    flat_param.grad = grad
    return flat_param


def evaluate(task: Task, model: nn.Module, split: Split) -> dict[str, float]:
    """The task's metrics of ``model`` on ``split``, in eval mode, without autograd."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return task.evaluate(model, split)
    finally:
        model.train(was_training)


def _epoch_batches(
    task: Task,
    targets: torch.Tensor,
    batch_size: int | None,
    generator: torch.Generator,
) -> Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]:
    """A function giving one epoch's batches of the training inputs and ``targets`` (the training
    targets as the gradients take them); ``batch_size=None`` means the whole training set."""
    x, y = task.data.split("train")[0], targets
    if task.steps_per_epoch is not None:
        return lambda: [(x, y)] * task.steps_per_epoch
    if batch_size is None or batch_size >= len(x):
        return lambda: [(x, y)]

    def shuffled() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        # One gather per epoch; the batches are then views of it.
        order = torch.randperm(len(x), generator=generator)
        if order.device != x.device:  # drawn on the CPU: the same batches on every device
            order = order.to(x.device)
        return zip(x[order].split(batch_size), y[order].split(batch_size), strict=True)

    return shuffled


class _Gradients(Protocol):
    """How a step gets its loss and gradients: through autograd, or in closed form."""

    def train_targets(self, y: torch.Tensor) -> torch.Tensor:
        """The training targets as :meth:`loss` takes them."""
        ...

    def loss(self, x: torch.Tensor, targets: torch.Tensor) -> float:
        """The loss of one batch, as a float."""
        ...

    def backward(self) -> None:
        """Put the gradient of the last :meth:`loss` in the parameters' gradients."""
        ...


@dataclass
class _Autograd:
    """The task's ``batch_loss`` and autograd's backward into freshly zeroed gradients."""

    task: Task
    model: nn.Module
    zero_grad: Callable[[], Any]
    _loss: torch.Tensor | None = None
    _one: torch.Tensor | None = None  # d loss / d loss, made once instead of once per backward()

    def train_targets(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def loss(self, x: torch.Tensor, targets: torch.Tensor) -> float:
        self.zero_grad()
        self._loss = self.task.batch_loss(self.model, x, targets)
        return self._loss.item()  # on the CPU a plain read, not a device sync

    def backward(self) -> None:
        loss, self._loss = self._loss, None
        if loss is None:
            raise RuntimeError("backward() needs a loss() first")
        if self._one is None:
            self._one = torch.ones_like(loss)
        loss.backward(self._one)


def _bare_step(opt: torch.optim.Optimizer) -> Callable[[], Any]:
    """``opt.step`` without torch's per-call wrapper when the wrapper has nothing to do.

    ``torch.optim.Optimizer`` wraps every subclass's ``step`` in a profiler label and a dispatch of
    step hooks, about 20 us a call: as much as Adam's maths on a small model, 13% of a digits_mlp
    trial (bench/trial_cost.py measures it beside the bare step). With no hook registered, the
    wrapped function is the same step; only the profiler's label is lost. This reads torch
    internals (the hook registries, ``profile_hook_step``'s ``__wrapped__`` and ``hooked``);
    tests/studies/test_training.py fails when they change. Any hook, a step set on the instance
    (an LR scheduler's counter), or a torch that wraps differently gets the ordinary ``opt.step``.
    """
    step = type(opt).step
    bare = getattr(step, "__wrapped__", None)
    hook_registries = (
        getattr(opt, "_optimizer_step_pre_hooks", None),
        getattr(opt, "_optimizer_step_post_hooks", None),
        getattr(torch_optimizer, "_global_optimizer_pre_hooks", None),
        getattr(torch_optimizer, "_global_optimizer_post_hooks", None),
    )
    if (
        bare is None
        or not getattr(step, "hooked", False)  # not torch's profile_hook_step wrapper
        or "step" in vars(opt)
        or any(hooks is None or len(hooks) > 0 for hooks in hook_registries)
    ):
        return opt.step
    return functools.partial(bare, opt)


def _check_metrics(task: Task, metrics: Mapping[str, float], epoch: int) -> str | None:
    """Why validation ``metrics`` stop training (a nan or inf), or ``None``.

    Raises:
        ValueError: the task did not report all the metrics it declares (a bug of the task).
    """
    missing = set(task.metrics) - set(metrics)
    if missing:
        raise ValueError(
            f"task {task.name!r}: evaluate(model, 'val') returned {sorted(metrics)}, "
            f"without {sorted(missing)} of its declared metrics"
        )
    for name, value in metrics.items():
        if not math.isfinite(value):
            return f"diverged: {name} is {value} at epoch {epoch}"
    return None


@dataclass
class _Loop:
    """The per-step state of one training run and its epoch loop."""

    gradients: _Gradients
    step: Callable[[], Any]
    batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
    deadline: float | None
    time_limit: float | None
    first_loss: float | None = None
    # `not loss <= limit` is also true for nan and inf; after the first step the limit is
    # DIVERGENCE_FACTOR x the first loss.
    limit: float = sys.float_info.max
    steps: int = 0

    def run_epoch(self, epoch: int) -> tuple[float, str | None]:
        """One pass over the batches: the mean training loss, or why training must stop."""
        total, count = 0.0, 0
        for x, y in self.batches():
            value = self.gradients.loss(x, y)
            if not value <= self.limit:
                return math.nan, f"diverged: {self._divergence(value)} at epoch {epoch}"
            if self.first_loss is None:
                self.first_loss = value
                if value > 0:
                    self.limit = min(DIVERGENCE_FACTOR * value, sys.float_info.max)
            if self.deadline is not None and time.monotonic() > self.deadline:
                return math.nan, f"time limit {self.time_limit:g} s exceeded at epoch {epoch}"
            self.gradients.backward()
            self.step()
            self.steps += 1
            size = y.shape[0]  # len() of a tensor is a Python-level call
            total += value * size
            count += size
        return total / count, None

    def _divergence(self, loss: float) -> str:
        if not math.isfinite(loss):
            return f"loss is {loss}"
        return f"loss {loss:.3g} exceeds 1e3 x first loss ({self.first_loss:.3g})"


def train(
    task: Task,
    optimizer: OptimizerSpec,
    values: Mapping[str, Any],
    *,
    epochs: int,
    seed: int,
    time_limit: float | None = None,
    on_epoch: EpochCallback | None = None,
    flat: bool = True,
    closed_form: bool = True,
    device: torch.device | str | None = None,
) -> TrainingResult:
    """Train a fresh model of ``task`` with ``optimizer`` configured by ``values``.

    Args:
        task: The task (its data are loaded once and kept by the instance).
        optimizer: The registry spec; ``full_batch`` specs see the whole training set each step.
        values: Sampled hyperparameters (``{"lr": 1e-3, "batch_size": 32, ...}``).
        epochs: Epochs to run unless stopped earlier.
        seed: Seeds the model's initialisation, the batch order and the model's own randomness
            (dropout): the same seed gives the same result. The caller's generator is untouched.
        time_limit: Seconds; checked every step.
        on_epoch: Called after each epoch with the validation metrics; returning a reason stops.
        flat: Step one flat parameter (:func:`flatten_parameters`); ``False`` steps the model's
            tensors one by one (same numbers, slower).
        closed_form: Compute the loss and gradients of a plain MLP by hand when
            :func:`studies.fast_mlp.closed_form_for` covers the model and the task (the same
            gradients up to rounding, faster); ``False`` always goes through autograd.
        device: Where to train (a ``torch.device`` or a name of
            :func:`studies.devices.resolve_device`); default: the CPU. The task's data move there
            once (:meth:`Task.to`) and the model after it is built (on the CPU, so a seed gives
            the same initial weights everywhere). The closed-form gradients are a CPU fast path:
            elsewhere the same loop runs through autograd.

    Returns:
        The model, per-epoch curves and, if training stopped early, why. Divergence reads
        ``"diverged: loss is nan at epoch 3"``, the time limit
        ``"time limit 30 s exceeded at epoch 7"``.
    """
    deadline = None if time_limit is None else time.monotonic() + time_limit
    device = resolve_device("cpu" if device is None else device)
    on_cpu = device.type == "cpu"
    task.to(device)
    # The caller's generators are untouched: the CPU one always, the GPU's when training there.
    forked = () if on_cpu else [device.index]
    with single_thread(), torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        model = task.build_model()
        if not on_cpu:
            model.to(device)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        flat_param = flatten_parameters(params) if flat else None
        opt = optimizer.build([flat_param] if flat_param is not None else params, values)
        if flat_param is not None:
            zero_grad = flat_param.grad.zero_
            for group in opt.param_groups:
                if "foreach" in group:  # one tensor: nothing to pack or batch, the plain loop
                    group["foreach"] = False
        else:
            zero_grad = functools.partial(opt.zero_grad, set_to_none=True)
        batch_size = (
            None if optimizer.full_batch else values.get("batch_size", task.default_batch_size)
        )
        generator = torch.Generator().manual_seed(seed)
        gradients: _Gradients = _Autograd(task, model, zero_grad)
        # Closed-form gradients are a CPU fast path; every other device runs autograd.
        closed = closed_form_for(model, task) if closed_form and on_cpu else None
        if closed is not None:
            gradients = FirstStepChecked(closed, task, model, fallback=gradients)
        targets = gradients.train_targets(task.data.split("train")[1])
        loop = _Loop(
            gradients,
            _bare_step(opt),
            _epoch_batches(task, targets, batch_size, generator),
            deadline,
            time_limit,
        )

        curves: dict[str, list[float]] = {"train_loss": [], **{name: [] for name in task.metrics}}
        for epoch in range(1, epochs + 1):
            train_loss, reason = loop.run_epoch(epoch)
            metrics = {} if reason is not None else evaluate(task, model, "val")
            reason = reason or _check_metrics(task, metrics, epoch)
            if reason is not None:
                return TrainingResult(model, curves, epoch - 1, loop.steps, reason)
            curves["train_loss"].append(train_loss)
            for name, value in metrics.items():
                curves.setdefault(name, []).append(value)
            if on_epoch is not None and (reason := on_epoch(epoch, metrics)) is not None:
                return TrainingResult(model, curves, epoch, loop.steps, reason)
        return TrainingResult(model, curves, epochs, loop.steps)
