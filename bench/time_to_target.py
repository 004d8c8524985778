"""Training epochs until a study reaches what stock TPE + Hyperband reaches in 40 trials.

For each built-in task held out in turn, each optimizer and each seed, studies of ``--trials``
trials run with each method:

- ``stock``:   anchor. Optuna's TPE with Hyperband (min resource 1 epoch), no warm start.
- ``random``:  anchor. Random search without pruning.
- ``product``: the product defaults: the portfolio learned *without the held-out task* (from the
               shipped evaluations, ``studies/warm_start/evaluations.json``), centred on the task
               by the learning-rate range test as ``DEFAULT_LR_RANGE`` says (not by default: a
               tie), then ``DEFAULT_SAMPLER`` with ``DEFAULT_PRUNER``, through
               ``studies.run_study``. With a range test, its reference is also learned without
               the held-out task and its sweep's epochs are counted.
- ablations (``--methods``): each lever alone, to choose the defaults by measurement.

The target of a (task, optimizer) is the median over seeds of stock's best after all its trials.
A method's cost is the training epochs (and wall seconds) spent until its best completed trial first
reaches the target; a study that never reaches it counts all its epochs and is marked ``>``. Per
(task, optimizer) the figure is the median over seeds; the ratio is stock's median over the
method's; ratios are summarised by their geometric mean over tasks and optimizers. "final" compares
each method's best after all trials with stock's, seed by seed (the goal: never worse).

Default run: six built-in tasks (digits_cnn only on request: ``--tasks digits_cnn``), sgd, momentum
and adam, 3 seeds, stock / random / product; about 15 minutes on one idle core.

``--diagnose`` adds where the epochs go (trials to the target, what the warm-start trials cost
and whether one of them reached it); ``--save`` writes the traces, ``--load`` reuses the anchors'
(deterministic) and ``--reuse``'s.

Run: python bench/time_to_target.py [--quick] [--workers 2] [--tasks wine_mlp,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import multiprocessing
import statistics
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from lr_range import DEFAULT_LR_RANGE, load_references, reference, run_centred_study

from studies.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER
from studies.tasks import BUILTIN_TASKS
from studies.training import single_thread
from studies.warm_start import MAX_WARM_START, learn_portfolio, load_evaluations

STOCK = {"sampler": "tpe", "pruner": "hyperband", "warm_start": False}
METHODS: Mapping[str, Mapping[str, Any]] = {
    "stock": STOCK,
    "random": {"sampler": "random", "pruner": "none", "warm_start": False},
    "product": {
        "sampler": DEFAULT_SAMPLER,
        "pruner": DEFAULT_PRUNER,
        "warm_start": True,
        "lr_range": DEFAULT_LR_RANGE,
    },
    # Ablations: one lever at a time against stock.
    "portfolio": {**STOCK, "warm_start": True},
    "sobol_tpe": {**STOCK, "sampler": "sobol_tpe"},
    "median": {**STOCK, "pruner": "median"},
    "product_hyperband": {"sampler": DEFAULT_SAMPLER, "pruner": "hyperband", "warm_start": True},
    "product_median": {"sampler": DEFAULT_SAMPLER, "pruner": "median", "warm_start": True},
    "product_w3": {"sampler": DEFAULT_SAMPLER, "pruner": DEFAULT_PRUNER, "warm_start": 3},
    "product_w8": {"sampler": DEFAULT_SAMPLER, "pruner": DEFAULT_PRUNER, "warm_start": 8},
    # The learning-rate range test (bench/lr_range.py), its sweep's epochs counted: alone (the
    # sampler's lr range narrowed around it) and with the portfolio (its lrs centred on it).
    "lr_space": {**STOCK, "lr_range": "space"},
    "lr_portfolio": {**STOCK, "warm_start": True, "lr_range": "portfolio"},
    "lr_both": {**STOCK, "warm_start": True, "lr_range": "both"},
    # TPE's random startup after the warm start instead of counting it.
    "product_startup": {**STOCK, "warm_start": True, "startup_after_warm_start": True},
    "lr_both_startup": {
        **STOCK,
        "warm_start": True,
        "lr_range": "both",
        "startup_after_warm_start": True,
    },
}
ANCHORS = ("stock", "random")
# digits_cnn costs about twenty times any other task per epoch: run it with --tasks digits_cnn.
DEFAULT_TASKS = tuple(name for name in BUILTIN_TASKS if name != "digits_cnn")
DEFAULT_OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass(frozen=True)
class Job:
    task: str
    optimizer: str
    seed: int
    method: str
    trials: int


@dataclass(frozen=True)
class Trace:
    """Per trial, in order: cumulative epochs and seconds, running best (None before any)."""

    epochs: list[int]
    seconds: list[float]
    best: list[float | None]
    direction: str
    # Per trial, in order: where its config came from, its epochs, its state and value.
    origins: list[str] = dataclasses.field(default_factory=list)
    trial_epochs: list[int] = dataclasses.field(default_factory=list)
    states: list[str] = dataclasses.field(default_factory=list)
    values: list[float | None] = dataclasses.field(default_factory=list)

    def reached(self, target: float) -> tuple[int, float, bool]:
        for epochs, seconds, best in zip(self.epochs, self.seconds, self.best, strict=True):
            if best is not None and _at_least(best, target, self.direction):
                return epochs, seconds, True
        return self.epochs[-1], self.seconds[-1], False

    @property
    def final(self) -> float | None:
        return self.best[-1]


def _at_least(value: float, target: float, direction: str) -> bool:
    return value >= target if direction == "maximize" else value <= target


def _better(a: float | None, b: float | None, direction: str) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b) if direction == "maximize" else min(a, b)


def run_job(job: Job) -> Trace:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    settings = METHODS[job.method]
    warm = settings["warm_start"]
    portfolio = None
    limit = None
    if warm:
        # Learned without the held-out task: what a user's unseen task gets.
        portfolio = learn_portfolio(
            load_evaluations()[job.optimizer], max(MAX_WARM_START, 8), exclude=[job.task]
        )
        limit = None if warm is True else int(warm)
    lr_range = settings.get("lr_range", "none")
    # The sweeps' reference learned without the held-out task, like the portfolio.
    lr_reference = (
        reference(load_references()[job.optimizer], exclude=(job.task,))
        if lr_range != "none"
        else None
    )
    with single_thread():
        study = run_centred_study(
            job.task,
            job.optimizer,
            n_trials=job.trials,
            sampler=settings["sampler"],
            pruner=settings["pruner"],
            seed=job.seed,
            warm_start=bool(warm),
            portfolio=portfolio,
            warm_start_limit=limit,
            lr_range=lr_range,
            lr_reference=lr_reference,
            startup_after_warm_start=settings.get("startup_after_warm_start", False),
            # Hyperband assigns brackets from a hash of the study name: a fixed name makes a run
            # reproducible (in memory, Optuna would draw a random one).
            study_name=f"{job.task}/{job.optimizer}/seed{job.seed}",
        )
    direction = study.direction.name.lower()
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    start = trials[0].datetime_start
    epochs, seconds, best = [], [], []
    origins, trial_epochs, states, values = [], [], [], []
    # The range test's sweep runs before the first trial: its epochs count from the start.
    sweep = study.user_attrs.get("lr_range")
    total, running = (math.ceil(sweep["epochs"]) if sweep else 0), None
    for trial in trials:
        total += int(trial.user_attrs.get("epochs_run", 0))
        origins.append(str(trial.user_attrs.get("origin", "sampler")))
        trial_epochs.append(int(trial.user_attrs.get("epochs_run", 0)))
        states.append(trial.state.name)
        values.append(trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None)
        if trial.state == optuna.trial.TrialState.COMPLETE and math.isfinite(trial.value):
            running = _better(running, trial.value, direction)
        epochs.append(total)
        seconds.append((trial.datetime_complete - start).total_seconds())
        best.append(running)
    return Trace(epochs, seconds, best, direction, origins, trial_epochs, states, values)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def report(jobs: list[Job], traces: list[Trace], methods: list[str]) -> None:
    by = {(j.task, j.optimizer, j.method, j.seed): t for j, t in zip(jobs, traces, strict=True)}
    pairs = sorted({(j.task, j.optimizer) for j in jobs})
    seeds = sorted({j.seed for j in jobs})
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    wall_ratios: dict[str, list[float]] = {m: [] for m in methods}
    worse: dict[str, int] = {m: 0 for m in methods}
    worse_median: dict[str, int] = {m: 0 for m in methods}
    print(
        "\nepochs to target (median over seeds [min-max]; '>' = not reached by every seed); "
        "ratio = stock / method"
    )
    for task, optimizer in pairs:
        direction = by[task, optimizer, "stock", seeds[0]].direction
        finals = [by[task, optimizer, "stock", s].final for s in seeds]
        finite = [f for f in finals if f is not None]
        if not finite:
            print(f"{task}/{optimizer}: stock completed no trial; skipped")
            continue
        target = statistics.median_low(sorted(finite))
        print(f"\n{task} / {optimizer}: target {_fmt(target)} ({direction})")
        stock_epochs = statistics.median(
            by[task, optimizer, "stock", s].reached(target)[0] for s in seeds
        )
        stock_wall = statistics.median(
            by[task, optimizer, "stock", s].reached(target)[1] for s in seeds
        )
        for method in methods:
            hits = [by[task, optimizer, method, s].reached(target) for s in seeds]
            epochs = [h[0] for h in hits]
            walls = [h[1] for h in hits]
            mark = "" if all(h[2] for h in hits) else ">"
            med = statistics.median(epochs)
            ratio = stock_epochs / med if med else math.inf
            wall_ratio = stock_wall / statistics.median(walls)
            ratios[method].append(ratio)
            wall_ratios[method].append(wall_ratio)
            finals_m = [by[task, optimizer, method, s].final for s in seeds]
            n_worse = sum(
                fm is None or (fs is not None and not _at_least(fm, fs, direction))
                for fm, fs in zip(finals_m, finals, strict=True)
            )
            worse[method] += n_worse
            finite_m = [f for f in finals_m if f is not None]
            median_m = statistics.median_low(sorted(finite_m)) if finite_m else None
            worse_median[method] += median_m is None or not _at_least(median_m, target, direction)
            final_txt = ", ".join("-" if f is None else _fmt(f) for f in finals_m)
            print(
                f"  {method:20s} {mark}{med:7.0f} epochs [{min(epochs)}-{max(epochs)}]"
                f"  ratio {ratio:6.2f}  wall ratio {wall_ratio:6.2f}"
                f"  final [{final_txt}]  worse than stock: {n_worse}/{len(seeds)}"
            )
    print("\ngeometric mean over (task, optimizer) of stock/method epochs to target:")
    for method in methods:
        values = [r for r in ratios[method] if r > 0 and math.isfinite(r)]
        if not values:
            continue
        gm = math.exp(statistics.fmean(math.log(r) for r in values))
        wall = math.exp(statistics.fmean(math.log(r) for r in wall_ratios[method]))
        print(
            f"  {method:20s} {gm:6.2f}x epochs  (range {min(values):.2f}-{max(values):.2f}), "
            f"{wall:6.2f}x wall;  seeds ending worse than stock: {worse[method]}, "
            f"(task, optimizer) whose median final is worse: {worse_median[method]}/{len(values)}"
        )


def _median_of(rows: list[tuple[Any, ...]], k: int) -> float:
    return statistics.median(r[k] for r in rows)


def diagnose(jobs: list[Job], traces: list[Trace], methods: list[str]) -> None:
    """Where the epochs go: per (task, optimizer) and method, medians over seeds of the trials and
    epochs to the target, the warm-start trials' epochs and prunings, and whether a warm-start
    config itself reached the target."""
    by = {(j.task, j.optimizer, j.method, j.seed): t for j, t in zip(jobs, traces, strict=True)}
    pairs = sorted({(j.task, j.optimizer) for j in jobs})
    seeds = sorted({j.seed for j in jobs})
    print(
        "\ndiagnosis (medians over seeds): trials/epochs to target; warm-start trials: count, "
        "epochs, pruned, reached target; origin of the trial that first reached it"
    )
    for task, optimizer in pairs:
        finals = [by[task, optimizer, "stock", s].final for s in seeds]
        finite = sorted(f for f in finals if f is not None)
        if not finite:
            continue
        target = statistics.median_low(finite)
        print(f"{task} / {optimizer}: target {_fmt(target)}")
        for method in methods:
            rows = []
            for s in seeds:
                t = by[task, optimizer, method, s]
                hit = next(
                    (
                        i
                        for i, b in enumerate(t.best)
                        if b is not None and _at_least(b, target, t.direction)
                    ),
                    None,
                )
                warm = [i for i, o in enumerate(t.origins) if o != "sampler"]
                warm_epochs = sum(t.trial_epochs[i] for i in warm)
                warm_pruned = sum(t.states[i] != "COMPLETE" for i in warm)
                warm_hit = any(
                    t.values[i] is not None and _at_least(t.values[i], target, t.direction)
                    for i in warm
                )
                full = sum(
                    e for e, st in zip(t.trial_epochs, t.states, strict=True) if st == "COMPLETE"
                )
                rows.append(
                    (
                        (hit + 1) if hit is not None else math.inf,
                        t.epochs[hit] if hit is not None else t.epochs[-1],
                        len(warm),
                        warm_epochs,
                        warm_pruned,
                        warm_hit,
                        t.origins[hit] if hit is not None else "-",
                        t.epochs[-1],
                        full,
                    )
                )
            med = functools.partial(_median_of, rows)
            print(
                f"  {method:18s} trials {med(0):5.1f} epochs {med(1):6.0f} | warm {med(2):.0f} "
                f"cost {med(3):4.0f} pruned {med(4):.0f} reached {sum(r[5] for r in rows)}/"
                f"{len(rows)} | hit by {','.join(r[6] for r in rows)} | total {med(7):.0f}, "
                f"in completed trials {med(8):.0f}"
            )


def _load_traces(path: str) -> dict[Job, Trace]:
    with open(path) as file:
        rows = json.load(file)
    job_fields = {f.name for f in dataclasses.fields(Job)}
    return {
        Job(**{k: v for k, v in row.items() if k in job_fields}): Trace(
            **{k: v for k, v in row.items() if k not in job_fields}
        )
        for row in rows
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 small tasks, 2 seeds, adam only")
    parser.add_argument("--tasks", default=None, help="comma-separated; default: all built-ins")
    parser.add_argument("--optimizers", default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--methods", default="stock,random,product")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--diagnose", action="store_true", help="where the epochs go")
    parser.add_argument(
        "--reuse",
        default=None,
        help="methods besides the anchors whose --load traces are reused (their code unchanged)",
    )
    parser.add_argument("--save", default=None, help="write the traces as JSON to this path")
    parser.add_argument(
        "--load",
        default=None,
        help="reuse the anchors' traces (stock, random) of a --save file: they are deterministic",
    )
    args = parser.parse_args(argv)
    if args.quick:
        tasks = ["wine_mlp", "breast_cancer_logreg", "diabetes_mlp"]
        optimizers, seeds = ["adam"], 2
    else:
        tasks, optimizers, seeds = list(DEFAULT_TASKS), list(DEFAULT_OPTIMIZERS), 3
    tasks = args.tasks.split(",") if args.tasks else tasks
    optimizers = args.optimizers.split(",") if args.optimizers else optimizers
    seeds = args.seeds or seeds
    methods = args.methods.split(",")
    for anchor in ANCHORS[:1]:
        if anchor not in methods:
            methods.insert(0, anchor)
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS)}")
    jobs = [
        Job(t, o, s, m, args.trials)
        for t in tasks
        for o in optimizers
        for s in range(seeds)
        for m in methods
    ]
    print(
        f"{len(tasks)} tasks x {len(optimizers)} optimizers x {seeds} seeds x methods {methods}, "
        f"{args.trials} trials each; product = {DEFAULT_SAMPLER} + {DEFAULT_PRUNER} + warm start"
    )
    started = time.perf_counter()
    known = _load_traces(args.load) if args.load else {}
    reuse = set(ANCHORS) | set(args.reuse.split(",") if args.reuse else ())
    known = {job: trace for job, trace in known.items() if job.method in reuse}
    todo = [job for job in jobs if job not in known]
    done: dict[Job, Trace] = {job: known[job] for job in jobs if job in known}
    with multiprocessing.get_context("spawn").Pool(max(1, args.workers)) as pool:
        for job, trace in zip(todo, pool.imap(run_job, todo), strict=True):
            done[job] = trace
            if len(done) % max(1, len(jobs) // 10) == 0:
                print(f"  {len(done)}/{len(jobs)} studies, {time.perf_counter() - started:.0f} s")
    traces = [done[job] for job in jobs]
    print(
        f"ran {len(todo)} studies in {time.perf_counter() - started:.0f} s "
        f"({len(jobs) - len(todo)} reused from {args.load})"
    )
    report(jobs, traces, methods)
    if args.diagnose:
        diagnose(jobs, traces, methods)
    if args.save:
        with open(args.save, "w") as out:
            json.dump(
                [
                    {**dataclasses.asdict(j), **dataclasses.asdict(t)}
                    for j, t in zip(jobs, traces, strict=True)
                ],
                out,
            )


if __name__ == "__main__":
    main()
