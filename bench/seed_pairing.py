"""Would pairing confirmation seeds across optimizers sharpen the verdict?

If confirmation seed i gave every optimizer the same model initialisation and batch order, the
verdict could compare optimizers with a paired t-test on the seed-by-seed differences. That pays
only when the same seed moves every optimizer's figure the same way: the variance of a paired
difference is var(a) + var(b) - 2 cov(a, b), against var(a) + var(b) unpaired, while the paired
test has n - 1 degrees of freedom where Welch's has about 2 (n - 1).

On digits_mlp, each optimizer's best portfolio config (the best of its 8 shipped configs on one
seed) is trained on the same ``--seeds`` training seeds; printed: per optimizer the mean and sd
of the validation accuracy and loss, and over the 28 pairs of optimizers the correlation of their
figures across seeds and the ratio var(paired difference) / var(unpaired difference).

Run: ``.venv/bin/python bench/seed_pairing.py [--seeds 10]`` (about 150 trainings of 20 epochs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from importlib import resources

import numpy as np

from optim_core.registry import OPTIMIZERS
from studies.objective import training_seed
from studies.tasks import get_task
from studies.training import train

TASK = "digits_mlp"
EPOCHS = 20
CHOICE_SEED = 12345  # the one seed that picks each optimizer's config
BASE_SEED = 777  # training seeds of the comparison: training_seed(BASE_SEED, i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="training seeds (default 10)")
    seeds = parser.parse_args().seeds
    task = get_task(TASK)
    portfolio = json.loads(
        resources.files("studies.warm_start").joinpath("portfolio.json").read_text()
    )["optimizers"]
    figures: dict[str, dict[str, list[float]]] = {"val_accuracy": {}, "val_loss": {}}
    for name, configs in portfolio.items():
        spec = OPTIMIZERS[name]

        def last(config: dict, seed: int) -> dict[str, float]:
            result = train(task, spec, config, epochs=EPOCHS, seed=seed)  # noqa: B023
            if result.stop_reason is not None:
                return {"val_accuracy": -1.0, "val_loss": float("inf")}
            return {key: result.curves[key][-1] for key in figures}

        config = max(configs, key=lambda c: last(c, CHOICE_SEED)["val_accuracy"])
        runs = [last(config, training_seed(BASE_SEED, i)) for i in range(seeds)]
        for key in figures:
            figures[key][name] = [run[key] for run in runs]
        print(f"{name}: {config}", flush=True)
    for key, by_name in figures.items():
        print(key)
        for name, values in by_name.items():
            print(
                f"  {name:<9} mean {statistics.mean(values):.4f} sd {statistics.stdev(values):.4f}"
            )
        ratios, correlations = [], []
        for a, b in itertools.combinations(by_name, 2):
            x, y = np.array(by_name[a]), np.array(by_name[b])
            ratios.append((x - y).var(ddof=1) / (x.var(ddof=1) + y.var(ddof=1)))
            correlations.append(float(np.corrcoef(x, y)[0, 1]))
        print(
            f"  over {len(ratios)} pairs: correlation median {np.median(correlations):.2f} "
            f"(mean {np.mean(correlations):.2f}); var(paired diff) / var(unpaired diff) median "
            f"{np.median(ratios):.2f} (mean {np.mean(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
