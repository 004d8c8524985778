"""Training on a GPU, checked end to end: run this on a machine with one.

1. optim_core's parity tests on CUDA (every optimizer and option against torch.optim in float64),
   and the CUDA tests of studies/test_devices.py (training on CUDA follows the CPU);
2. a short study through ``hpt serve --workers 1 --device cuda:0`` on a fresh SQLite file: it must
   complete, and the worker must say it trains on the GPU;
3. one trial (digits_mlp, Adam, batch 64, 20 epochs) timed on the CPU and on CUDA, interleaved,
   with the spread over repetitions and the ratio.

On a machine without a GPU it says so and exits 0 (``make bench`` runs every script here).

Run: .venv/bin/python bench/device_check.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _processes as processes
import httpx
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
STUDY = {
    "name": "device-check", "task": "digits_mlp", "optimizers": ["sgd", "adam"], "n_trials": 3,
    "epochs": 5, "sampler": "random", "pruner": "none", "seed": 0,
}  # fmt: skip


def run_cuda_tests() -> bool:
    print("== 1. parity and device tests on CUDA", flush=True)
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-k", "cuda",
        "tests/optim_core/test_parity.py", "tests/studies/test_devices.py",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, check=False)
    return result.returncode == 0


def run_gpu_study(timeout: float = 600.0) -> bool:
    print("== 2. a short study with a GPU worker", flush=True)
    hpt = Path(sys.executable).with_name("hpt")
    port = processes.free_port()
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "serve.log"
        env = {**os.environ, "HPT_DATABASE_URL": f"sqlite:///{directory}/hpt.db"}
        with log.open("w") as output:
            serve = subprocess.Popen(
                [str(hpt), "serve", "--port", str(port), "--workers", "1", "--device", "cuda:0"],
                env=env, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout
            status = None
            with httpx.Client(base_url=url, timeout=10) as client:
                while time.monotonic() < deadline and serve.poll() is None:
                    try:
                        if status is None:
                            if client.get("/healthz").status_code != 200:
                                raise httpx.TransportError("not up")
                            client.post("/api/v1/studies", json=STUDY).raise_for_status()
                        status = client.get(f"/api/v1/studies/{STUDY['name']}").json()["status"]
                    except httpx.TransportError:
                        pass
                    if status in ("completed", "stopped", "failed"):
                        break
                    time.sleep(1.0)
                best = client.get(f"/api/v1/studies/{STUDY['name']}/best").json() if status else {}
        finally:
            serve.terminate()
            serve.wait(timeout=60)
        text = log.read_text()
    on_gpu = "trains on cuda:0" in text
    print(f"study status: {status}; worker trains on cuda:0: {on_gpu}")
    if best.get("winner"):
        print(f"winner: {best['winner']['optimizer']} {best['winner']['value']:.4f}")
    if status != "completed" or not on_gpu:
        print(text[-4000:])
    return status == "completed" and on_gpu


def time_trials(repeats: int) -> None:
    print("== 3. one trial on the CPU and on CUDA (digits_mlp, Adam, batch 64, 20 epochs)")
    from optim_core import OPTIMIZERS
    from studies.tasks import get_task
    from studies.training import train

    values = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "batch_size": 64}
    tasks = {"cpu": get_task("digits_mlp"), "cuda": get_task("digits_mlp")}
    seconds: dict[str, list[float]] = {"cpu": [], "cuda": []}
    accuracy: dict[str, float] = {}
    for repeat in range(repeats + 1):  # the first round warms up (data moved, kernels loaded)
        for device, task in tasks.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            result = train(task, OPTIMIZERS["adam"], values, epochs=20, seed=0, device=device)
            torch.cuda.synchronize()
            if repeat:
                seconds[device].append(time.perf_counter() - start)
            accuracy[device] = result.curves["val_accuracy"][-1]
    for device, times in seconds.items():
        spread = statistics.stdev(times) if len(times) > 1 else 0.0
        print(
            f"{device:>4}: {statistics.median(times):.3f} s median (+- {spread:.3f} s sd over "
            f"{len(times)}), val_accuracy {accuracy[device]:.4f}"
        )
    ratio = statistics.median(seconds["cuda"]) / statistics.median(seconds["cpu"])
    print(f"cuda / cpu time: {ratio:.2f} (below 1: the GPU is faster on this small model)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            f"device_check: no CUDA device on this machine (torch {torch.__version__}, CUDA "
            f"build: {torch.version.cuda or 'no'}); nothing to check. Run it on a GPU machine."
        )
        return 0
    print(f"device_check: {torch.cuda.device_count()} CUDA device(s): "
          f"{torch.cuda.get_device_name(0)}", flush=True)  # fmt: skip
    parity = run_cuda_tests()
    study = run_gpu_study()
    time_trials(args.repeats)
    print(f"parity and device tests on CUDA: {'passed' if parity else 'FAILED'}; "
          f"study with a GPU worker: {'completed' if study else 'FAILED'}")  # fmt: skip
    return 0 if parity and study else 1


if __name__ == "__main__":
    sys.exit(main())
