"""Time optimizer.step() of every optim_core optimizer against torch.optim's CPU implementations.

Run: ``python bench/optimizer_step.py [--quick]``

Two shapes, float32, one torch thread:

* ``mlp``: the 64-128-10 MLP of the digits task (4 tensors, 9,610 parameters), where an optimizer
  step is about a third of a training step and the number of tensor ops per step decides;
* ``10M``: 50 linear layers 448x448 with biases (100 tensors, 10.06M parameters), memory-bound.

Gradients are set once to random values and only ``step()`` is timed. Every variant owns a copy of
the same parameters: ours by default, ours with ``foreach=False`` and ``foreach=True``, torch's
default CPU path (its for-loop), its ``foreach=True`` and, where torch has a CPU kernel,
``fused=True``. The variants take turns block by block, so that noise hits all of them alike, and
are built anew in a shuffled order for each of a few rounds, so that no variant keeps a lucky or
unlucky placement in memory. The clock is the CPU time of the benchmarking thread (``--wall`` for
wall-clock time): with one torch thread it is the cost of the step, and other processes on a shared
machine do not count. The table shows the median time per step and the ratios of ours (default)
to torch's paths; below 1.0 is faster.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optim_core


@dataclass(frozen=True)
class Case:
    name: str
    ours: type[torch.optim.Optimizer]
    theirs: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]


CASES = (
    Case("SGD", optim_core.SGD, torch.optim.SGD, {"lr": 1e-3}),
    Case("SGD momentum", optim_core.SGD, torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
    Case(
        "SGD nesterov",
        optim_core.SGD,
        torch.optim.SGD,
        {"lr": 1e-3, "momentum": 0.9, "nesterov": True},
    ),
    Case("Adagrad", optim_core.AdaGrad, torch.optim.Adagrad, {"lr": 1e-2}),
    Case("RMSprop", optim_core.RMSProp, torch.optim.RMSprop, {"lr": 1e-3}),
    Case("Adam", optim_core.Adam, torch.optim.Adam, {"lr": 1e-3}),
    Case("AdamW", optim_core.AdamW, torch.optim.AdamW, {"lr": 1e-3}),
)

SHAPES: dict[str, list[tuple[int, ...]]] = {
    "mlp": [(128, 64), (128,), (10, 128), (10,)],
    "10M": [shape for _ in range(50) for shape in ((448, 448), (448,))],
}

# name -> (which implementation, extra constructor keywords)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ours": ("ours", {}),
    "ours single": ("ours", {"foreach": False}),
    "ours foreach": ("ours", {"foreach": True}),
    "torch default": ("theirs", {}),
    "torch foreach": ("theirs", {"foreach": True}),
    "torch fused": ("theirs", {"fused": True}),
}


def make_params(shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes:
        p = torch.randn(shape, generator=generator).requires_grad_()
        p.grad = torch.randn(shape, generator=generator)
        params.append(p)
    return params


def build(case: Case, variant: str, shapes: list[tuple[int, ...]]) -> Callable[[], Any] | None:
    """The step function of one variant, or None where torch has no such implementation."""
    which, extra = VARIANTS[variant]
    cls = case.ours if which == "ours" else case.theirs
    try:
        optimizer = cls(make_params(shapes), **case.kwargs, **extra)
        optimizer.step()
    except (TypeError, RuntimeError):  # no `fused` keyword, or no CPU kernel for it
        return None
    return optimizer.step


def time_case(
    case: Case, shapes: list[tuple[int, ...]], reps: int, rounds: int, clock: Callable[[], float]
) -> dict[str, float]:
    """Median seconds per step of each variant, measured round-robin.

    Each round builds every variant anew, in a shuffled order: where a variant's tensors land in
    memory (cache-set and page aliasing between a parameter and its gradient) shifts a memory-bound
    step by 10% or more, and must not pass for a difference between implementations.
    """
    shuffle = random.Random(0).shuffle
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        names = list(VARIANTS)
        shuffle(names)
        steps = {name: fn for name in names if (fn := build(case, name, shapes)) is not None}
        # A block of steps per turn, long enough (~2 ms) for the timer's resolution not to matter.
        probe = clock()
        for fn in steps.values():
            fn()
        per_step = max(clock() - probe, 1e-6) / len(steps)
        block = max(1, int(2e-3 / per_step))
        gc.disable()
        try:
            for rep in range(reps // rounds):
                order = list(steps.items())
                if rep % 2:  # alternate the order so no variant always follows the same one
                    order.reverse()
                for name, fn in order:
                    start = clock()
                    for _ in range(block):
                        fn()
                    samples[name].append((clock() - start) / block)
        finally:
            gc.enable()
        del steps
        gc.collect()
    return {name: statistics.median(values) for name, values in samples.items() if values}


def format_row(shape: str, case: Case, medians: dict[str, float]) -> str:
    cells = [f"{shape:<4} {case.name:<13}"]
    for name in VARIANTS:
        value = medians.get(name)
        cells.append(f"{value * 1e6:>13.1f}" if value is not None else f"{'n/a':>13}")
    ours = medians["ours"]
    for name in ("torch default", "torch foreach", "torch fused"):
        theirs = medians.get(name)
        cells.append(f"{ours / theirs:>8.2f}" if theirs is not None else f"{'n/a':>8}")
    return " ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (noisier)")
    parser.add_argument("--wall", action="store_true", help="wall-clock instead of thread CPU time")
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), action="append", help="only these shapes"
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.wall else time.thread_time
    torch.set_num_threads(1)
    reps = {"mlp": 16, "10M": 8} if args.quick else {"mlp": 150, "10M": 60}
    rounds = 2 if args.quick else 4

    header = [f"{'shape':<4} {'optimizer':<13}"]
    header += [f"{name + ' us':>13}" for name in VARIANTS]
    header += [f"{'/default':>8}", f"{'/foreach':>8}", f"{'/fused':>8}"]
    kind = "wall-clock" if args.wall else "thread CPU"
    print(f"torch {torch.__version__}, 1 thread, float32; median {kind} microseconds per step()")
    print(" ".join(header))
    for shape, shapes in SHAPES.items():
        if args.shape and shape not in args.shape:
            continue
        for case in CASES:
            print(
                format_row(shape, case, time_case(case, shapes, reps[shape], rounds, clock)),
                flush=True,
            )


if __name__ == "__main__":
    main()
