"""The learning-rate range test (Smith 2017; fastai's ``lr_find``): where the lr of a task lies.

One short run on the user's task with the learning rate growing exponentially, step by step, from
the low end of the space's ``lr`` range to its high end. The training loss of each step (before
its update), smoothed by a bias-corrected moving average, falls slowly while the lr is too small,
fastest around a good lr, then turns up and blows up. The sweep stops once the smoothed loss
exceeds :data:`STOP_FACTOR` times its minimum (or is not finite).

Two readings of the curve, both clipped to the space's bounds:

- ``steepest``: the lr where the smoothed loss falls fastest per decade of lr, before its
  minimum (fastai's ``steep``);
- ``valley``: a tenth of the lr at the smoothed minimum, an order below divergence (fastai's
  ``minimum / 10``).

:attr:`RangeTest.lr` is the ``valley``. Measured on the six learning tasks of the portfolio
(``python bench/lr_range.py`` prints it): the spread (sd of log10) over tasks of the best lr
among the portfolio's candidates, 0.84 for sgd, 0.86 momentum, 0.56 adam, 0.45 rmsprop and 0.58
adagrad, shrinks around the valley to 0.31, 0.31, 0.50, 0.32 and 0.44: the valley says where a
task's lr lies, for adam only a little. Around ``steepest`` it grows (1.1 to 1.6): on a 40-step
sweep the steepest point is mostly noise. Sweeping 10x or 100x past the space's high end (to meet
divergence more often) did worse (0.30 to 0.66), and so did reading the curve smoothed forwards
and backwards, without the running average's lag (sgd 0.68, momentum 0.60).

Cost: the steps taken, in epochs of the task (a step sees one batch; an epoch is a pass over the
training set, ``steps_per_epoch`` steps on a task without data, one step for a full-batch
optimizer). ``bench/time_to_target.py`` counts it against the study. Deterministic given the
seed: the model's initialisation and the batch order come from it; the caller's random generators
are untouched.

What a study does with it (:func:`centre_configs`, :func:`centred_space`): the warm start's lrs
move by the ratio of this task's sweep to the :class:`Reference` of the tasks they were learned
on (kept in ``bench/lr_range.json``), and the sampler's lr range narrows around
the expected best lr.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from optim_core.registry import OPTIMIZERS, OptimizerSpec
from optim_core.spaces import Categorical, Dimension, Fixed, Float, Int, OneMinus
from studies.tasks.base import Task
from studies.training import single_thread

MAX_STEPS = 40
"""Steps of a full sweep, spread evenly over the lr range on a log scale."""

SMOOTHING = 0.9
"""Weight of the past in the exponential moving average of the loss. fastai's 0.98 averages over
about 50 steps, longer than a whole sweep of :data:`MAX_STEPS`; 0.9 averages over about ten."""

STOP_FACTOR = 4.0
"""The sweep stops once the smoothed loss exceeds this many times its minimum (fastai's
``stop_div``)."""

LR_KEY = "lr"


@dataclass(frozen=True)
class RangeTest:
    """The curve of one sweep and what it says.

    Attributes:
        lrs: The lr of each step taken.
        losses: The training loss of each step (before its update).
        smoothed: The bias-corrected moving average of ``losses``.
        steepest: The lr of steepest descent of ``smoothed`` (per log lr) before its minimum.
        valley: A tenth of the lr at the minimum of ``smoothed``, clipped to the range.
        lr: The suggestion: ``valley``.
        epochs: What the sweep cost, in epochs of the task (fractional).
        diverged: Whether the sweep stopped on divergence before its last step.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    steepest: float
    valley: float
    lr: float
    epochs: float
    diverged: bool

    @property
    def steps(self) -> int:
        return len(self.lrs)


def reference_values(task: Task, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """The values of the non-lr hyperparameters during a sweep: the task's default batch size
    (or the middle choice), fixed values as fixed, and the centre of every other range on its
    scale. A sweep's lr is only comparable across tasks at the same reference values."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if key == LR_KEY:
            continue
        if isinstance(dim, Fixed):
            values[key] = dim.value
        elif isinstance(dim, Categorical):
            choices = list(dim.choices)
            values[key] = (
                task.default_batch_size
                if key == "batch_size" and task.default_batch_size in choices
                else choices[len(choices) // 2]
            )
        elif isinstance(dim, OneMinus):
            low, high = 1.0 - dim.high, 1.0 - dim.low
            values[key] = 1.0 - (math.sqrt(low * high) if dim.log else (low + high) / 2)
        elif isinstance(dim, Float | Int):
            centre = math.sqrt(dim.low * dim.high) if dim.log else (dim.low + dim.high) / 2
            values[key] = round(centre) if isinstance(dim, Int) else centre
    return values


def lr_bounds(space: Mapping[str, Dimension]) -> tuple[float, float] | None:
    """The ``(low, high)`` of the space's lr range, or ``None`` when the lr is not searched over a
    range (fixed, or a list of choices): then there is nothing to centre."""
    dim = space.get(LR_KEY)
    if isinstance(dim, Float):
        return float(dim.low), float(dim.high)
    return None


def _steps_per_epoch(task: Task, spec: OptimizerSpec, batch_size: int) -> float:
    if spec.full_batch:
        return 1.0
    if task.steps_per_epoch is not None:
        return float(task.steps_per_epoch)
    return max(1.0, len(task.data.split("train")[0]) / batch_size)


def _batches(task: Task, spec: OptimizerSpec, batch_size: int, generator: torch.Generator):
    """Endless batches of the training set, reshuffled every pass (the training loop's order)."""
    x, y = task.data.split("train")
    while True:
        if task.steps_per_epoch is not None or spec.full_batch or batch_size >= len(x):
            yield x, y
            continue
        order = torch.randperm(len(x), generator=generator)
        yield from zip(x[order].split(batch_size), y[order].split(batch_size), strict=True)


def _smooth(losses: list[float]) -> list[float]:
    average, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        out.append(average / (1 - SMOOTHING**i))
    return out


def _readings(
    lrs: list[float], smoothed: list[float], low: float, high: float
) -> tuple[float, float]:
    """``(steepest, valley)`` of a smoothed curve (see the module docstring)."""
    lowest = int(np.argmin(smoothed))
    valley = min(max(lrs[lowest] / 10.0, low), high)
    if lowest < 2:
        return valley, valley
    slopes = np.gradient(np.asarray(smoothed[: lowest + 1]), np.log(lrs[: lowest + 1]))
    steepest = lrs[int(np.argmin(slopes))]
    return min(max(steepest, low), high), valley


def lr_range_test(
    task: Task,
    spec: OptimizerSpec,
    space: Mapping[str, Dimension],
    *,
    seed: int,
    steps: int = MAX_STEPS,
    values: Mapping[str, Any] | None = None,
) -> RangeTest | None:
    """Sweep the lr of ``spec`` over the space's lr range on ``task`` (module docstring).

    Args:
        task: The user's task.
        spec: The optimizer's registry spec.
        space: The study's resolved space; its ``lr`` range bounds the sweep.
        seed: Seeds the model's initialisation and the batch order.
        steps: Steps of a full sweep (fewer when it diverges first); at least 3.
        values: The other hyperparameters; :func:`reference_values` when ``None``.

    Returns:
        The sweep, or ``None`` when the space's lr is not a range.
    """
    bounds = lr_bounds(space)
    if bounds is None:
        return None
    if steps < 3:
        raise ValueError(f"a sweep needs at least 3 steps, got {steps}")
    low, high = bounds
    config = dict(reference_values(task, space) if values is None else values)
    batch_size = int(config.get("batch_size", task.default_batch_size))
    schedule = np.geomspace(low, high, steps)
    lrs: list[float] = []
    losses: list[float] = []
    best = math.inf
    diverged = False
    task.to(torch.device("cpu"))
    with single_thread(), torch.random.fork_rng(devices=()):
        torch.manual_seed(seed)
        model = task.build_model()
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = spec.build(params, {**config, LR_KEY: float(schedule[0])})
        generator = torch.Generator().manual_seed(seed)
        batches = _batches(task, spec, batch_size, generator)
        for lr in schedule:
            for group in opt.param_groups:
                group[LR_KEY] = float(lr)
            x, y = next(batches)
            opt.zero_grad(set_to_none=True)
            loss = task.batch_loss(model, x, y)
            value = float(loss.item())
            lrs.append(float(lr))
            losses.append(value)
            smoothed = _smooth(losses)[-1]
            if not math.isfinite(smoothed) or smoothed > STOP_FACTOR * best:
                diverged = True
                break
            best = min(best, smoothed)
            loss.backward()
            opt.step()
    smoothed_curve = _smooth(losses)
    finite = [i for i, s in enumerate(smoothed_curve) if math.isfinite(s)]
    kept = finite[-1] + 1 if finite else 0
    if kept == 0:  # diverged at once: the low end is the only lr that might train
        steepest = valley = low
    else:
        steepest, valley = _readings(lrs[:kept], smoothed_curve[:kept], low, high)
    return RangeTest(
        lrs=tuple(lrs),
        losses=tuple(losses),
        smoothed=tuple(smoothed_curve),
        steepest=steepest,
        valley=valley,
        lr=valley,
        epochs=len(lrs) / _steps_per_epoch(task, spec, batch_size),
        diverged=diverged,
    )


# --- Centring a study on the sweep --------------------------------------------------------------

REFERENCE_FILE = "lr_range.json"
"""Per optimizer and learning task: the sweep's lr and the best lr among the portfolio's
candidates there (``studies/warm_start/``, written by ``python bench/lr_range.py``)."""

LR_RANGE_MODES: Mapping[str, tuple[bool, bool]] = MappingProxyType(
    {
        "none": (False, False),
        "portfolio": (True, False),
        "space": (False, True),
        "both": (True, True),
    }
)
"""What a study centres on the sweep: ``(the warm start's lr, the sampler's lr range)``."""

DEFAULT_LR_RANGE = "none"
"""What a warm-started study of the product centres on the sweep: nothing, by measurement.
``bench/time_to_target.py`` (6 tasks x sgd, momentum, adam x 3 seeds, each task held out of the
portfolio and of the sweeps' reference, the sweep's epochs counted): the warm start alone 1.46x
fewer epochs than stock TPE + Hyperband, with the portfolio's lrs centred 1.60x, with the
sampler's lr range narrowed as well 1.57x (8 seeds ending worse than stock instead of 14), the
narrowed range alone (no portfolio, ungated) 1.12x. The gain of centring is within the spread of
3 seeds (7 of the 12 sgd and momentum pairs faster, 4 slower, 14 seeds ending worse than stock
either way): a tie. And the sweep trains on the task before the first trial, which in the service
would run in the request that creates the study, or hold the first claim; a tie does not pay for
that. ``run_study(lr_range=...)`` and the benchmark keep every mode."""

MAX_SPREAD_LEFT = 0.5
"""A study centres on the sweep only for optimizers whose best lr it explains: at most this share
of the best lr's spread over the learning tasks left around the sweep. On the shipped sweeps that
keeps gd (0.15), sgd (0.37), momentum (0.36) and nesterov (0.37) and leaves out adagrad (0.76),
rmsprop (0.71), adam (0.89) and adamw (0.71): ``bench/time_to_target.py`` measured centring adam
on the sweep as a loss (noisy_quadratic from 14x fewer epochs than stock to under 1x), and
sgd and momentum as a gain."""

MAX_SWEEP_SHARE = 0.5
"""A sweep whose full cost exceeds this share of one trial's epochs is not run (full-batch
``gd`` takes one epoch a step: a 40-step sweep would cost two 20-epoch trials)."""

NARROW_DECADES = 1.0
"""Half-width, in decades, of the lr range a centred space keeps around the expected best lr (the
spread of the best lr around the sweep's prediction is 0.3 to 0.5 decades, see above)."""


@dataclass(frozen=True)
class Reference:
    """What the sweep meant on the learning tasks of one optimizer.

    Attributes:
        lr: Geometric mean over the tasks of the sweep's lr: the lr the portfolio's configs were
            learned at, on average.
        offset: Mean over the tasks of log10(best lr / sweep's lr): where the best lr lies
            relative to the sweep's.
        tasks: The tasks it was learned from.
        spread_left: The spread (sd of log10) over the tasks of the best lr around the sweep's,
            as a share of its spread around their common mean: how much of where the best lr
            lies the sweep leaves unexplained (0: all explained, 1: nothing).
    """

    lr: float
    offset: float
    tasks: tuple[str, ...]
    spread_left: float = 0.0

    @property
    def informative(self) -> bool:
        """Whether the sweep explains enough of the best lr to centre on it
        (:data:`MAX_SPREAD_LEFT`)."""
        return self.spread_left <= MAX_SPREAD_LEFT


def load_references() -> dict[str, dict[str, dict[str, float]]]:
    """The shipped sweeps of the learning tasks: ``{optimizer: {task: {"lr", "best_lr"}}}``."""
    import json
    from pathlib import Path

    raw = json.loads((Path(__file__).with_name(REFERENCE_FILE)).read_text(encoding="utf-8"))
    return raw["optimizers"]


def reference(
    per_task: Mapping[str, Mapping[str, float]], *, exclude: tuple[str, ...] = ()
) -> Reference | None:
    """The :class:`Reference` of one optimizer from its per-task sweeps, without ``exclude``."""
    rows = {t: r for t, r in per_task.items() if t not in exclude}
    if not rows:
        return None
    logs = [math.log10(r["lr"]) for r in rows.values()]
    offsets = [math.log10(r["best_lr"] / r["lr"]) for r in rows.values()]
    spread = statistics.pstdev(math.log10(r["best_lr"]) for r in rows.values())
    left = statistics.pstdev(offsets) / spread if spread > 0 else 1.0
    return Reference(
        10 ** statistics.fmean(logs), statistics.fmean(offsets), tuple(sorted(rows)), left
    )


def centre_configs(
    configs: list[Mapping[str, Any]], test: RangeTest, ref: Reference
) -> list[dict[str, Any]]:
    """``configs`` with each lr moved by the ratio of this task's sweep to the reference lr (the
    configs' other values are kept; the warm start clips the lr to the space)."""
    scale = test.lr / ref.lr
    return [{**c, LR_KEY: c[LR_KEY] * scale} if LR_KEY in c else dict(c) for c in configs]


def centred_space(
    space: Mapping[str, Dimension], test: RangeTest, ref: Reference
) -> dict[str, Dimension]:
    """``space`` with its lr range narrowed to :data:`NARROW_DECADES` either side of the expected
    best lr (the sweep's lr times the reference offset), inside the original range; the space
    itself when the range is not a log-scale float or the narrowed range would be empty."""
    dim = space.get(LR_KEY)
    if not isinstance(dim, Float) or not dim.log:
        return dict(space)
    centre = math.log10(test.lr) + ref.offset
    low = max(dim.low, 10 ** (centre - NARROW_DECADES))
    high = min(dim.high, 10 ** (centre + NARROW_DECADES))
    if not low < high:
        return dict(space)
    return {**space, LR_KEY: Float(float(f"{low:.3g}"), float(f"{high:.3g}"), log=True)}


def _best_lr(evaluations: Any, task: str, top: int = 3) -> float:
    from studies.warm_start import rank_scores

    scores = rank_scores(evaluations.values[task], evaluations.directions[task])
    order = sorted(range(len(scores)), key=lambda c: -scores[c])[:top]
    return 10 ** statistics.fmean(math.log10(evaluations.candidates[c][LR_KEY]) for c in order)


def main(argv: list[str] | None = None) -> None:
    """Sweep every optimizer on every learning task and write :data:`REFERENCE_FILE`."""
    import json
    from pathlib import Path

    from studies.tasks import get_task
    from studies.warm_start import load_evaluations

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args(argv)
    evaluations = load_evaluations()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, spec in OPTIMIZERS.items():
        out[name] = {}
        for task_name in sorted(evaluations[name].values):
            task = get_task(task_name)
            space = spec.resolve_space(None, batch_size=task.batch_size_applies)
            test = lr_range_test(task, spec, space, seed=0)
            if test is None:
                continue
            best = _best_lr(evaluations[name], task_name)
            out[name][task_name] = {
                "lr": float(f"{test.lr:.4g}"),
                "best_lr": float(f"{best:.4g}"),
                "epochs": round(test.epochs, 3),
            }
        rows = out[name].values()
        spread = statistics.pstdev(math.log10(r["best_lr"]) for r in rows)
        residual = statistics.pstdev(math.log10(r["best_lr"] / r["lr"]) for r in rows)
        print(f"{name:9s} sd of log10 best lr over tasks {spread:.2f}, around it {residual:.2f}")
    path = args.out / REFERENCE_FILE
    path.write_text(json.dumps({"format": 1, "seed": 0, "optimizers": out}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()


def centre_on_task(
    task: Task,
    spec: OptimizerSpec,
    space: Mapping[str, Dimension],
    *,
    seed: int,
    epochs: int,
    ref: Reference | None = None,
) -> tuple[RangeTest, Reference] | None:
    """Sweep ``spec`` on ``task`` and pair it with its reference (the shipped one, from every
    learning task, when ``ref`` is ``None``).

    Returns:
        ``None``, without sweeping, when there is nothing to centre: no lr range, no reference
        for this optimizer, a sweep that explains too little of its best lr
        (:attr:`Reference.informative`), or one that would cost more than
        :data:`MAX_SWEEP_SHARE` of a trial of ``epochs`` epochs.
    """
    if ref is None:
        ref = reference(load_references().get(spec.name, {}))
    if ref is None or not ref.informative or lr_bounds(space) is None:
        return None
    batch_size = int(reference_values(task, space).get("batch_size", task.default_batch_size))
    if MAX_STEPS / _steps_per_epoch(task, spec, batch_size) > MAX_SWEEP_SHARE * epochs:
        return None
    sweep = lr_range_test(task, spec, space, seed=seed)
    return None if sweep is None else (sweep, ref)


def run_centred_study(
    task: str,
    optimizer: str,
    *,
    lr_range: str,
    lr_reference: Reference | None = None,
    warm_start: bool = False,
    portfolio: list[Mapping[str, Any]] | None = None,
    seed: int = 0,
    epochs: int | None = None,
    **kwargs: Any,
) -> Any:
    """``studies.run_study`` with the learning-rate range test run on the task first: it centres
    the portfolio's lrs and/or narrows the sampler's lr range (``lr_range``, a name of
    :data:`LR_RANGE_MODES`). The sweep is stored in the study's user attribute ``lr_range``
    (``lr``, ``epochs``), so its epochs can be counted."""
    from studies import run_study
    from studies.objective import task_space
    from studies.tasks import get_task
    from studies.warm_start import load_portfolio

    try:
        centre_portfolio, narrow = LR_RANGE_MODES[lr_range]
    except KeyError:
        raise ValueError(
            f"unknown lr_range {lr_range!r}; choose one of {sorted(LR_RANGE_MODES)}"
        ) from None
    task_ = get_task(task)
    spec = OPTIMIZERS[optimizer]
    space = task_space(task_, spec, kwargs.pop("overrides", None))
    epochs = task_.default_epochs if epochs is None else epochs
    centring = (
        centre_on_task(task_, spec, space, seed=seed, epochs=epochs, ref=lr_reference)
        if centre_portfolio or narrow
        else None
    )
    sweep, ref = centring if centring is not None else (None, None)
    if sweep is not None and narrow:
        space = centred_space(space, sweep, ref)
    known = list(load_portfolio().get(optimizer, ()) if portfolio is None else portfolio)
    centred = sweep is not None and centre_portfolio
    study = run_study(
        task,
        optimizer,
        seed=seed,
        epochs=epochs,
        space=space,
        warm_start=warm_start,
        portfolio=centre_configs(known, sweep, ref) if centred else known,
        portfolio_origin="lr_range" if centred else "portfolio",
        **kwargs,
    )
    if sweep is not None:
        study.set_user_attr("lr_range", {"lr": sweep.lr, "epochs": sweep.epochs})
    return study
