"""What one digits_mlp trial costs: our training loop against the usual ways of writing it.

One trial = Adam (lr 1e-3, betas 0.9/0.999), batch 32, 20 epochs, validation after every epoch (a
trial must report each epoch), one torch thread. Same data, same seeded initial weights; the loops
run in interleaved repetitions so that load on the machine hits them alike:

- ours:            studies.training.train with optim_core's Adam (flat parameters, one shuffled
                   copy per epoch, closed-form gradients of the MLP (studies.fast_mlp),
                   inference-mode evaluation, divergence checks);
- ours, autograd:  the same loop with the gradients through autograd (closed_form=False), to
                   measure what the closed form buys;
- ours, per-tensor: the same loop with the model's tensors stepped one by one (flat=False), to
                   measure what the flat parameter buys;
- ours, torch's step wrapper: the same loop calling ``opt.step`` through torch.optim's per-call
                   profiler-and-hooks wrapper instead of skipping it (studies.training._bare_step,
                   which reads torch internals): what that shortcut is worth, as a share of a trial
                   (paired per repetition; it stays only while worth more than 5%);
- hand-indexed:    the same tensors indexed by hand each step, torch.optim.Adam's default path;
- textbook:        the PyTorch tutorial's loops: DataLoader(TensorDataset, shuffle=True),
                   nn.CrossEntropyLoss, torch.optim.Adam, validation through a DataLoader too;
- hand-indexed, fused Adam: for reference.

Goal: ours >= 1.5x faster than hand-indexed and >= 3x faster than textbook, at the same accuracy.

Run: .venv/bin/python bench/trial_cost.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optim_core import OPTIMIZERS
from studies import training
from studies.tasks import Task, get_task
from studies.training import train

EPOCHS = 20
BATCH_SIZE = 32
LR = 1e-3
SEED = 0
VALUES = {"lr": LR, "beta1": 0.9, "beta2": 0.999, "batch_size": BATCH_SIZE}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).sum().item() / len(y)


def fresh_model(task: Task) -> nn.Module:
    torch.manual_seed(SEED)
    return task.build_model()


def run_ours(task: Task) -> nn.Module:
    return train(task, OPTIMIZERS["adam"], VALUES, epochs=EPOCHS, seed=SEED).model


def run_ours_autograd(task: Task) -> nn.Module:
    return train(
        task, OPTIMIZERS["adam"], VALUES, epochs=EPOCHS, seed=SEED, closed_form=False
    ).model


def run_ours_per_tensor(task: Task) -> nn.Module:
    return train(task, OPTIMIZERS["adam"], VALUES, epochs=EPOCHS, seed=SEED, flat=False).model


def run_ours_wrapped_step(task: Task) -> nn.Module:
    with mock.patch.object(training, "_bare_step", lambda opt: opt.step):
        return run_ours(task)


STEP_CALLS = 2000  # optimizer steps per timed batch of the per-step comparison


def step_wrapper_costs(task: Task, repeats: int) -> list[float]:
    """Seconds torch's step wrapper adds to one step of the trial's optimizer (flat parameter,
    Adam), per repetition: a batch of bare steps and one of ``opt.step`` back to back."""
    model = fresh_model(task)
    flat = training.flatten_parameters(list(model.parameters()))
    assert flat is not None
    opt = OPTIMIZERS["adam"].build([flat], VALUES)
    for group in opt.param_groups:
        group["foreach"] = False  # as train() sets it for one flat tensor
    torch.nn.init.normal_(flat.grad, std=1e-3)
    bare = training._bare_step(opt)
    assert bare != opt.step, "torch's step wrapper is not skipped here"
    costs = []
    for _ in range(repeats + 1):
        start = time.thread_time()
        for _ in range(STEP_CALLS):
            bare()
        middle = time.thread_time()
        for _ in range(STEP_CALLS):
            opt.step()
        costs.append((time.thread_time() - 2 * middle + start) / STEP_CALLS)
    return costs[1:]


def run_hand_indexed(task: Task, *, fused: bool = False) -> nn.Module:
    data = task.data
    model = fresh_model(task)
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=fused or None)
    generator = torch.Generator().manual_seed(SEED)
    n = len(data.x_train)
    for _ in range(EPOCHS):
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, BATCH_SIZE):
            idx = perm[i : i + BATCH_SIZE]
            opt.zero_grad()
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            opt.step()
        accuracy(model, data.x_val, data.y_val)
    return model


def run_textbook(task: Task) -> nn.Module:
    data = task.data
    model = fresh_model(task)
    generator = torch.Generator().manual_seed(SEED)
    train_loader = DataLoader(
        TensorDataset(data.x_train, data.y_train),
        batch_size=BATCH_SIZE,
        shuffle=True,
        generator=generator,
    )
    val_loader = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=BATCH_SIZE)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(EPOCHS):
        model.train()
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        val_loss, correct = 0.0, 0.0
        with torch.no_grad():
            for x, y in val_loader:
                pred = model(x)
                val_loss += loss_fn(pred, y).item()
                correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    return model


LOOPS: dict[str, Callable[[Task], nn.Module]] = {
    "ours (optim_core, flat)": run_ours,
    "ours, autograd path": run_ours_autograd,
    "ours, per-tensor": run_ours_per_tensor,
    "ours, torch's step wrapper": run_ours_wrapped_step,
    "hand-indexed": run_hand_indexed,
    "textbook": run_textbook,
    "hand-indexed, fused Adam": lambda task: run_hand_indexed(task, fused=True),
}
GOALS = {"hand-indexed": 1.5, "textbook": 3.0}
BARE_STEP_THRESHOLD = 0.05  # the share of a trial that justifies reading torch internals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = get_task("digits_mlp")
    data = task.data
    print(
        f"digits_mlp: {len(data.x_train)} train / {len(data.x_val)} val / {len(data.x_test)} test;"
        f" Adam lr {LR}, batch {BATCH_SIZE}, {EPOCHS} epochs; {torch.get_num_threads()} thread;"
        f" torch {torch.__version__}; {args.repeats} interleaved repeats after a warm-up"
    )
    # CPU time of this thread (torch runs on it alone): what a trial costs a worker's core, and
    # less disturbed than wall time when other processes share the machine. Wall time is shown too.
    cpu: dict[str, list[float]] = {name: [] for name in LOOPS}
    wall: dict[str, list[float]] = {name: [] for name in LOOPS}
    models: dict[str, nn.Module] = {}
    for repeat in range(args.repeats + 1):
        for name, loop in LOOPS.items():
            start_cpu, start_wall = time.thread_time(), time.perf_counter()
            models[name] = loop(task)
            if repeat > 0:
                cpu[name].append(time.thread_time() - start_cpu)
                wall[name].append(time.perf_counter() - start_wall)

    medians = {name: statistics.median(runs) for name, runs in cpu.items()}
    ours = medians["ours (optim_core, flat)"]
    print(
        f"{'loop':<28}{'cpu med s':>10}{'cpu min s':>10}{'wall med s':>11}{'ours is':>9}"
        f"{'val acc':>9}{'test acc':>10}"
    )
    for name, model in models.items():
        val = accuracy(model, data.x_val, data.y_val)
        test = accuracy(model, data.x_test, data.y_test)
        print(
            f"{name:<28}{medians[name]:>10.3f}{min(cpu[name]):>10.3f}"
            f"{statistics.median(wall[name]):>11.3f}{medians[name] / ours:>8.2f}x"
            f"{val:>9.4f}{test:>10.4f}"
        )
    for name, goal in GOALS.items():
        ratio = medians[name] / ours
        verdict = "met" if ratio >= goal else "MISSED"
        print(f"speed-up vs {name} (cpu medians): {ratio:.2f}x (goal >= {goal:g}x: {verdict})")
    # Paired per repetition (the two ran back to back), so that load drifting between repetitions
    # cancels out of each ratio.
    bare_runs, wrapped_runs = cpu["ours (optim_core, flat)"], cpu["ours, torch's step wrapper"]
    shares = [1.0 - bare / wrapped for bare, wrapped in zip(bare_runs, wrapped_runs, strict=True)]
    share = statistics.median(shares)
    verdict = "worth it" if share > BARE_STEP_THRESHOLD else "NOT worth it"
    print(
        f"skipping torch's step wrapper saves {100 * share:.1f}% of a trial (cpu, paired trials; "
        f"min {100 * min(shares):.1f}%, max {100 * max(shares):.1f}% over {len(shares)} repeats;"
        f" threshold {100 * BARE_STEP_THRESHOLD:g}%: {verdict})"
    )
    # The same from the cost of one step, less disturbed by the rest of the trial.
    steps = train(task, OPTIMIZERS["adam"], VALUES, epochs=EPOCHS, seed=SEED).steps
    costs = step_wrapper_costs(task, args.repeats)
    per_step = statistics.median(costs)
    print(
        f"torch's step wrapper costs {1e6 * per_step:.1f} us a step (cpu, median of "
        f"{len(costs)} paired batches of {STEP_CALLS}; min {1e6 * min(costs):.1f}, max "
        f"{1e6 * max(costs):.1f}); x {steps} steps = {100 * steps * per_step / ours:.1f}% of "
        f"ours' median trial"
    )


if __name__ == "__main__":
    main()
