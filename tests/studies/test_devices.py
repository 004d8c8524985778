"""Device names (HPT_DEVICE, ``hpt worker --device``), what they resolve to, and training on a
device. Everything here runs on the CPU; the CUDA checks run wherever torch sees a GPU and say
why they skip elsewhere."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from optim_core import OPTIMIZERS
from service.config import Settings
from studies import TrialPlan, get_task, train
from studies import devices as devices_module
from studies.devices import check_device_name, resolve_device, worker_devices
from tests.studies.helpers import ADAM

HAS_CUDA = torch.cuda.is_available()
NEEDS_CUDA = pytest.mark.skipif(
    not HAS_CUDA, reason="no CUDA device: torch.cuda.is_available() is False on this machine"
)
NEEDS_NO_CUDA = pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device")


@pytest.mark.parametrize(
    ("name", "normalized"),
    [("auto", "auto"), ("CPU", "cpu"), (" cuda ", "cuda"), ("cuda:0", "cuda:0"),
     ("cuda:12", "cuda:12")],
)  # fmt: skip
def test_device_names_users_may_write(name: str, normalized: str) -> None:
    assert check_device_name(name) == normalized
    assert Settings(device=name).device == normalized


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "cuda:-1", "mps", "", "cpu:0"])
def test_other_names_are_refused_with_the_valid_ones(name: str) -> None:
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        check_device_name(name)
    with pytest.raises(ValidationError, match="use auto, cpu, cuda or cuda:N"):
        Settings(device=name)
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_the_setting_is_read_from_hpt_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().device == "auto"
    monkeypatch.setenv("HPT_DEVICE", "CPU")
    assert Settings().device == "cpu"


def test_cpu_and_auto_resolve_here() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    cpu = torch.device("cpu")
    expected = torch.device("cuda", torch.cuda.current_device()) if HAS_CUDA else cpu
    assert resolve_device("auto") == resolve_device(None) == expected


@NEEDS_NO_CUDA
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_a_gpu_name_on_a_machine_without_one_says_so(name: str) -> None:
    with pytest.raises(ValueError, match=r"torch sees no CUDA device here.*use 'cpu' or 'auto'"):
        resolve_device(name)
    with pytest.raises(ValueError, match="no CUDA device"):
        worker_devices(name, None, 4)


def test_a_gpu_index_past_the_last_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices_module, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_serve_runs_one_worker_per_gpu_or_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices_module, "cuda_device_count", lambda: 0)
    assert worker_devices("auto", None, 3) == ["cpu"] * 3
    assert worker_devices("cpu", 2, 8) == ["cpu"] * 2
    assert worker_devices("auto", 0, 8) == []

    monkeypatch.setattr(devices_module, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert worker_devices("auto", None, 8) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda", None, 8) == ["cuda:0", "cuda:1"]
    assert worker_devices("auto", 5, 8) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda:1", None, 8) == ["cuda:1"]
    assert worker_devices("cuda:1", 2, 8) == ["cuda:1", "cuda:1"]
    assert worker_devices("cpu", None, 3) == ["cpu"] * 3  # a GPU machine told to use its CPU


def test_a_trial_plan_resolves_its_device_once() -> None:
    task, spec = get_task("rosenbrock"), OPTIMIZERS["sgd"]
    plan = TrialPlan(task, spec, spec.space, epochs=1, metric="loss", device="CPU")
    assert plan.device == torch.device("cpu")
    assert TrialPlan(task, spec, spec.space, epochs=1, metric="loss").device is None
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        TrialPlan(task, spec, spec.space, epochs=1, metric="loss", device="gpu")


@pytest.mark.parametrize(
    ("task_name", "optimizer", "values"),
    [
        ("digits_mlp", "adam", {"lr": 1e-3, "batch_size": 64, **ADAM}),  # closed-form gradients
        ("digits_cnn", "momentum", {"lr": 0.05, "momentum": 0.9, "batch_size": 64}),
        ("noisy_quadratic", "sgd", {"lr": 0.5, "batch_size": 32}),
        ("rosenbrock", "adam", {"lr": 1e-2, **ADAM}),
    ],
)
@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_training_on_the_cpu_device_is_the_default(
    task_name: str, optimizer: str, values: dict, device: str | torch.device
) -> None:
    task = get_task(task_name)
    default = train(task, OPTIMIZERS[optimizer], values, epochs=2, seed=3)
    on_cpu = train(task, OPTIMIZERS[optimizer], values, epochs=2, seed=3, device=device)
    assert on_cpu.curves == default.curves and on_cpu.steps == default.steps
    for ours, theirs in zip(on_cpu.model.parameters(), default.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    assert task.device == torch.device("cpu")


def test_a_task_moves_its_data_once() -> None:
    task = get_task("noisy_quadratic")
    data = task.data
    assert task.to(torch.device("cpu")) is task and task.data is data  # there already
    # The meta device holds shapes only: enough to see what moves.
    meta = torch.device("meta")
    task.to(meta)
    moved = task.data
    assert task.device == meta and moved is not data
    assert all(tensor.device == meta for tensor in (*moved.split("train"), *moved.split("test")))
    assert moved.x_train.shape == data.x_train.shape
    assert task.curvature.device == meta  # its own constant moves with it
    task.to(meta)
    assert task.data is moved  # once


@NEEDS_CUDA
@pytest.mark.parametrize(
    ("task_name", "optimizer", "values"),
    [
        ("digits_mlp", "adam", {"lr": 1e-3, "batch_size": 64, **ADAM}),
        ("noisy_quadratic", "sgd", {"lr": 0.5, "batch_size": 32}),
    ],
)
def test_training_on_cuda_follows_the_cpu(task_name: str, optimizer: str, values: dict) -> None:
    cpu = train(get_task(task_name), OPTIMIZERS[optimizer], values, epochs=3, seed=3)
    task = get_task(task_name)
    cuda = train(task, OPTIMIZERS[optimizer], values, epochs=3, seed=3, device="cuda")
    assert task.device.type == "cuda"
    assert next(cuda.model.parameters()).device.type == "cuda"
    assert cuda.steps == cpu.steps
    for name, values_cpu in cpu.curves.items():  # float32 on two devices: close, not equal
        assert cuda.curves[name] == pytest.approx(values_cpu, rel=1e-3, abs=1e-4), name
