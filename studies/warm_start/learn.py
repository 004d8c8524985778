"""Learn the shipped portfolio: train candidate configs on every built-in task, choose greedily.

For each optimizer, ``--candidates`` configs are drawn from its default space by a scrambled Sobol
sequence (log scales where the space has them), each is trained once on every learning task
(:data:`LEARNING_TASKS`) for the task's default epochs and metric, and the figures are written to
``evaluations.json``. The portfolio (``portfolio.json``) is then the greedy choice of
:func:`studies.warm_start.greedy_portfolio` over all tasks; the leave-one-task-out curve printed
(and stored) says how well a portfolio of each size does on a task it was not learned from.

Run (from the repository; a few minutes per core):

    python -m studies.warm_start.learn [--candidates 32] [--size 8] [--workers 2]
    python -m studies.warm_start.learn --from-evaluations    # re-choose without retraining
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import qmc

from optim_core.registry import OPTIMIZERS
from optim_core.spaces import Categorical, Dimension, Fixed, Float, Int, OneMinus
from studies.tasks import BUILTIN_TASKS
from studies.training import single_thread, train
from studies.warm_start.portfolio import (
    EVALUATIONS_FILE,
    FORMAT,
    PORTFOLIO_FILE,
    learn_portfolio,
    leave_one_task_out,
    parse_evaluations,
)

HERE = Path(__file__).parent
SEED = 0
# digits_cnn is left out: one of its trials costs about twenty of any other task's, and the
# portfolio must be cheap to relearn. It remains a task the portfolio is tested on (held out).
LEARNING_TASKS = tuple(name for name in BUILTIN_TASKS if name != "digits_cnn")


def _unit_to_value(dim: Dimension, u: float) -> Any:
    """The point of ``dim`` at quantile ``u`` of its (log) scale, to 3 significant digits."""
    if isinstance(dim, Fixed):
        return dim.value
    if isinstance(dim, Categorical):
        return dim.choices[min(int(u * len(dim.choices)), len(dim.choices) - 1)]
    if isinstance(dim, OneMinus):
        low, high = 1.0 - dim.high, 1.0 - dim.low
        distance = (
            math.exp(math.log(low) + u * math.log(high / low))
            if dim.log
            else low + u * (high - low)
        )
        return float(f"{1.0 - float(f'{distance:.3g}'):.12g}")
    if isinstance(dim, Float | Int):
        value = (
            math.exp(math.log(dim.low) + u * math.log(dim.high / dim.low))
            if dim.log
            else dim.low + u * (dim.high - dim.low)
        )
        return round(value) if isinstance(dim, Int) else float(f"{value:.3g}")
    raise TypeError(f"no rule for {type(dim).__name__}")


def candidates(optimizer: str, n: int) -> list[dict[str, Any]]:
    """``n`` configs spread over the optimizer's default space (scrambled Sobol, seed 0)."""
    space = OPTIMIZERS[optimizer].space
    keys = sorted(space)
    m = max(1, math.ceil(math.log2(max(n, 2))))
    points = qmc.Sobol(d=len(keys), scramble=True, seed=SEED).random_base2(m)[:n]
    return [
        {k: _unit_to_value(space[k], float(u)) for k, u in zip(keys, p, strict=True)}
        for p in points
    ]


def _evaluate(job: tuple[str, str, list[dict[str, Any]]]) -> tuple[str, str, list[float | None]]:
    """One task, one optimizer, all its candidates: the task's data is built once per job."""
    task_name, optimizer, configs = job
    task = BUILTIN_TASKS[task_name]()
    values: list[float | None] = []
    with single_thread():
        for config in configs:
            result = train(
                task, OPTIMIZERS[optimizer], config, epochs=task.default_epochs, seed=SEED
            )
            value = result.curves[task.default_metric][-1] if result.epochs_run else math.nan
            ok = result.stop_reason is None and math.isfinite(value)
            values.append(float(value) if ok else None)
    return task_name, optimizer, values


def evaluate_all(n_candidates: int, tasks: list[str], workers: int) -> dict[str, Any]:
    """Train every candidate of every optimizer on every task of ``tasks``."""
    configs = {name: candidates(name, n_candidates) for name in OPTIMIZERS}
    jobs = [(t, o, configs[o]) for o in OPTIMIZERS for t in tasks]
    started = time.perf_counter()
    results: dict[tuple[str, str], list[float | None]] = {}
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for task_name, optimizer, values in pool.imap_unordered(_evaluate, jobs):
            results[task_name, optimizer] = values
            elapsed = time.perf_counter() - started
            print(f"{len(results)}/{len(jobs)} {optimizer} on {task_name} ({elapsed:.0f} s)")
    built = {t: BUILTIN_TASKS[t]() for t in tasks}
    return {
        "format": FORMAT,
        "seed": SEED,
        "epochs": {t: task.default_epochs for t, task in built.items()},
        "optimizers": {
            o: {
                "candidates": configs[o],
                "tasks": {
                    t: {
                        "metric": task.default_metric,
                        "direction": task.metrics[task.default_metric],
                        "values": results[t, o],
                    }
                    for t, task in built.items()
                },
            }
            for o in OPTIMIZERS
        },
    }


def portfolio_from(raw_evaluations: Mapping[str, Any], size: int) -> dict[str, Any]:
    """The portfolio JSON learned from all tasks, with each optimizer's leave-one-task-out curve."""
    evaluations = parse_evaluations(raw_evaluations)
    return {
        "format": FORMAT,
        "learned_from": sorted(next(iter(evaluations.values())).values),
        "optimizers": {o: learn_portfolio(e, size) for o, e in evaluations.items()},
        "leave_one_task_out": {
            o: [round(s, 4) for s in leave_one_task_out(e, size)] for o, e in evaluations.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--tasks", default=",".join(LEARNING_TASKS))
    parser.add_argument("--size", type=int, default=8, help="configs kept per optimizer")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--from-evaluations", action="store_true", help="reuse evaluations.json")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    evaluations_path = args.out / EVALUATIONS_FILE
    if args.from_evaluations:
        raw = json.loads(evaluations_path.read_text())
    else:
        raw = evaluate_all(args.candidates, args.tasks.split(","), args.workers)
        evaluations_path.write_text(json.dumps(raw, indent=1) + "\n")
    portfolio = portfolio_from(raw, args.size)
    (args.out / PORTFOLIO_FILE).write_text(json.dumps(portfolio, indent=1) + "\n")
    print("leave-one-task-out mean rank score of the best of the first k configs (1 = best):")
    print("optimizer  " + " ".join(f"k={k:<4d}" for k in range(1, args.size + 1)))
    for name, curve in portfolio["leave_one_task_out"].items():
        print(f"{name:10s} " + " ".join(f"{s:.3f} " for s in curve))
    print(
        "mean       "
        + " ".join(
            f"{s:.3f} " for s in np.mean(list(portfolio["leave_one_task_out"].values()), axis=0)
        )
    )


if __name__ == "__main__":
    main()
