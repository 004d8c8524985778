"""Reference pools: per (task, optimizer), configs drawn uniformly from the default space, each
trained once at full epochs with a fixed seed. A study's best value is read against its pool
(:func:`transfer.measure.quantile_regret`).

Drawn uniformly, log-uniformly where the space is on a log scale (``OneMinus`` dimensions on the
log of their distance to one, as the sampler draws them), categorical choices with equal chances.
One file, ``bench/transfer/pools.json.gz``, holds every pool with its configs, values, the seconds
it took and the SHA-256 of the frozen test suite; missing pools are computed and added, and the
file is rewritten after each one, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import gzip
import json
import math
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from optim_core.registry import get_optimizer
from optim_core.spaces import Categorical, Dimension, Fixed, Float, Int, OneMinus
from studies.objective import task_space
from studies.tasks.base import Task
from studies.training import single_thread, train

POOLS_FILE = Path(__file__).with_name("pools.json.gz")
POOL_SIZE = 256
TRAINING_SEED = 0
FORMAT = 1


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def draw(dim: Dimension, rng: np.random.Generator) -> Any:
    """One value of ``dim``, uniform on its (log) scale."""
    if isinstance(dim, Fixed):
        return dim.value
    if isinstance(dim, Categorical):
        return dim.choices[int(rng.integers(len(dim.choices)))]
    if isinstance(dim, OneMinus):
        low, high = 1.0 - dim.high, 1.0 - dim.low  # the distance to one
        distance = _log_uniform(rng, low, high) if dim.log else float(rng.uniform(low, high))
        return 1.0 - distance
    if isinstance(dim, Int):
        value = (
            _log_uniform(rng, dim.low, dim.high + 1)
            if dim.log
            else rng.uniform(dim.low, dim.high + 1)
        )
        return min(int(value), dim.high)
    if isinstance(dim, Float):
        return (
            _log_uniform(rng, dim.low, dim.high)
            if dim.log
            else float(rng.uniform(dim.low, dim.high))
        )
    raise TypeError(f"no rule to draw {type(dim).__name__}")


def draw_configs(space: Mapping[str, Dimension], n: int, *, seed: int) -> list[dict[str, Any]]:
    """``n`` configs of ``space``, drawn independently and uniformly (keys in sorted order)."""
    rng = np.random.default_rng(seed)
    return [{key: draw(space[key], rng) for key in sorted(space)} for _ in range(n)]


def pool_seed(task: str, optimizer: str) -> int:
    """The seed of a pool's draws: fixed per (task, optimizer)."""
    return zlib.crc32(f"{task}/{optimizer}".encode())


def compute_pool(task: Task, optimizer: str, n: int = POOL_SIZE) -> dict[str, Any]:
    """Draw ``n`` configs and train each once for the task's default epochs (seed
    :data:`TRAINING_SEED`); a diverged run's value is ``None`` (worse than any)."""
    spec = get_optimizer(optimizer)
    configs = draw_configs(task_space(task, spec), n, seed=pool_seed(task.name, optimizer))
    metric = task.default_metric
    values: list[float | None] = []
    started = time.perf_counter()
    with single_thread():
        for config in configs:
            result = train(task, spec, config, epochs=task.default_epochs, seed=TRAINING_SEED)
            value = result.curves[metric][-1] if result.epochs_run else math.nan
            ok = result.stop_reason is None and math.isfinite(value)
            values.append(float(value) if ok else None)
    return {
        "metric": metric,
        "direction": task.metrics[metric],
        "epochs": task.default_epochs,
        "configs": configs,
        "values": values,
        "seconds": round(time.perf_counter() - started, 2),
    }


def load_pools(path: Path = POOLS_FILE) -> dict[str, Any]:
    """The pools file as ``{"format", "frozen_sha256", "pools": {"task/optimizer": pool}}``."""
    if not path.exists():
        return {"format": FORMAT, "frozen_sha256": None, "pools": {}}
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return json.load(file)


def save_pools(data: Mapping[str, Any], path: Path = POOLS_FILE) -> None:
    # mtime=0: the same pools give the same bytes, so git sees no change when nothing changed.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as file:
        file.write(json.dumps(data, sort_keys=True).encode("utf-8"))


def ensure_pools(
    tasks: Mapping[str, Task],
    optimizers: list[str],
    *,
    frozen_sha256: str,
    n: int = POOL_SIZE,
    path: Path = POOLS_FILE,
    log: Any = print,
) -> dict[str, Any]:
    """The pools of every (task, optimizer), computing and saving the missing ones.

    Raises:
        ValueError: the file's pools were computed on another version of the test suite.
    """
    data = load_pools(path)
    if data["frozen_sha256"] not in (None, frozen_sha256):
        raise ValueError(
            f"{path} holds pools of the test suite {data['frozen_sha256'][:12]}, not "
            f"{frozen_sha256[:12]}: the suite changed after it was frozen"
        )
    data["frozen_sha256"] = frozen_sha256
    for name, task in tasks.items():
        for optimizer in optimizers:
            key = f"{name}/{optimizer}"
            pool = data["pools"].get(key)
            if pool is not None and len(pool["values"]) >= n:
                continue
            pool = compute_pool(task, optimizer, n)
            data["pools"][key] = pool
            save_pools(data, path)
            log(f"  pool {key}: {n} trainings in {pool['seconds']:.0f} s")
    return data
