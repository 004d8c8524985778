"""Where trials train: device names as users write them (``HPT_DEVICE``, ``hpt worker --device``)
and the torch devices they resolve to.

``auto`` is CUDA when torch sees a GPU, else the CPU; ``cpu``; ``cuda`` (the current CUDA device);
``cuda:N`` (GPU number N). A name is checked when it is read (a typo fails at start-up, on any
machine) and resolved where the trial runs (a worker on a GPU machine), so a GPU name refused on a
CPU-only machine says why.
"""

from __future__ import annotations

import re

import torch

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def check_device_name(name: str) -> str:
    """``name`` normalized (lower case, no spaces) if it is a device name users may write.

    Raises:
        ValueError: anything but auto, cpu, cuda or cuda:N; the message lists them.
    """
    normalized = name.strip().lower()
    if not DEVICE_PATTERN.match(normalized):
        raise ValueError(f"unknown device {name!r}; use {DEVICE_NAMES}")
    return normalized


def cuda_device_count() -> int:
    """GPUs torch can use here (0 on a CPU-only build or machine)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device a worker trains on.

    Args:
        name: ``auto`` (also ``None``), ``cpu``, ``cuda``, ``cuda:N``, or a ``torch.device``.

    Returns:
        ``cpu``, or ``cuda:N`` with its index (``cuda`` is the current CUDA device).

    Raises:
        ValueError: an unknown name, or a CUDA device this machine does not have; the message
            says what is there.
    """
    if isinstance(name, torch.device):
        name = str(name)
    normalized = check_device_name("auto" if name is None else name)
    if normalized == "cpu":
        return torch.device("cpu")
    count = cuda_device_count()
    if normalized == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if count else torch.device("cpu")
    if not count:
        raise ValueError(
            f"device {name!r}: torch sees no CUDA device here (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'no'}); use 'cpu' or 'auto'"
        )
    index = int(normalized.split(":")[1]) if ":" in normalized else torch.cuda.current_device()
    if index >= count:
        raise ValueError(
            f"device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def worker_devices(name: str, workers: int | None, cores: int) -> list[str]:
    """The device of each embedded worker of ``hpt serve``.

    Args:
        name: The device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        workers: How many workers were asked for; ``None``: the default, which is one per GPU
            when training on GPUs (``auto`` on a GPU machine, ``cuda``), one for ``cuda:N``, and
            one per core on the CPU.
        cores: CPU cores of the machine.

    Returns:
        One device name per worker, spread round-robin over the GPUs when there are several.

    Raises:
        ValueError: an unknown name, or a CUDA device this machine does not have.
    """
    normalized = check_device_name(name)
    gpus = cuda_device_count() if normalized != "cpu" else 0
    if normalized == "cpu" or (normalized == "auto" and not gpus):
        return ["cpu"] * (max(cores, 1) if workers is None else workers)
    if normalized.startswith("cuda:"):
        device = str(resolve_device(normalized))
        return [device] * (1 if workers is None else workers)
    resolve_device(normalized)  # "cuda" without a GPU: refused, with the reason
    count = gpus if workers is None else workers
    return [f"cuda:{index % gpus}" for index in range(count)]
