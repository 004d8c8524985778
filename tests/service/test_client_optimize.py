"""``HPTClient.optimize`` and ``create_study(load_if_exists=True)``.

- The loop's logic against an in-memory ask/tell service behind ``httpx.MockTransport`` (the
  contract of the ask/report/renew/tell endpoints): values, pruning, exceptions, lease renewals,
  waiting for held slots, ``n_jobs`` threads with exact counts; seeds and phases handed out, and
  confirmation trials never pruned; Ctrl-C inside the objective and during an ask or a tell
  (one line, status 130, nothing lost or left held); the progress bar; the warning about torch
  threads; the service's hiccups (503, no answer) retried, never blamed on the objective.
- In a fresh interpreter: importing the client (and running its loop) imports no server code.
- Against a real API server: a study run to completion twice in a row (the second run finds it
  complete), a client process SIGKILLed mid-trial, whose trial is failed after its lease and
  offered again to the next client, and a client process (one thread or two) stopped by SIGINT,
  whose study holds exactly what it told.
"""

from __future__ import annotations

import _thread
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.client import HPTClient, HPTConnectionError, HPTError, RemoteTrial, TrialPruned
from tests.helpers import free_port, wait_until
from tests.service.support import Processes, Server, assert_exact_trials

# --------------------------------------------------------------------------- a fake service


@dataclass
class FakeService:
    """One external study served in memory, as the API's ask/tell endpoints behave.

    ``prune`` says whether a report of (optimizer, number, step) prunes the trial; trials in
    ``held_by_others`` are running in another client and end when ``release_others`` is called.
    ``handed_out`` adds fields to the ask's answer of (optimizer, number): seed, phase, origin
    (none by default, as an older server answers).
    """

    optimizers: tuple[str, ...] = ("sgd", "adam")
    n_trials: int = 3
    task: str = "external"
    prune: Callable[[str, int, int], bool] = lambda optimizer, number, step: False
    held_by_others: int = 0
    handed_out: Callable[[str, int], dict[str, Any]] = lambda optimizer, number: {}
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    failed: list[tuple[str, int]] = field(default_factory=list)
    held: dict[tuple[str, int], str] = field(default_factory=dict)
    numbers: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    reports: list[tuple[str, int, int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for _ in range(self.held_by_others):
            optimizer = self.optimizers[0]
            self.held[(optimizer, self._number(optimizer))] = "someone-else"

    def _number(self, optimizer: str) -> int:
        number = self.numbers[optimizer]
        self.numbers[optimizer] += 1
        return number

    def _left(self, optimizer: str) -> int:
        done = sum(1 for key in self.finished if key[0] == optimizer)
        running = sum(1 for key in self.held if key[0] == optimizer)
        return self.n_trials - done - running

    @property
    def status(self) -> str:
        total = sum(1 for _ in self.finished)
        return "completed" if total == self.n_trials * len(self.optimizers) else "running"

    def release_others(self, value: float = 1.0) -> None:
        with self.lock:
            for key, lease in list(self.held.items()):
                if lease == "someone-else":
                    del self.held[key]
                    self.finished[key] = {"value": value}

    def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.removeprefix("/api/v1/studies/").split("/")
        body = json.loads(request.content) if request.content else {}
        with self.lock:
            if request.method == "GET" and len(parts) == 1:
                self.calls["get"] += 1
                rows = [{"optimizer": name} for name in self.optimizers]
                study = {"name": parts[0], "task": self.task, "optimizers": rows,
                         "metric": "loss", "direction": "minimize", "best": None}  # fmt: skip
                total = self.n_trials * len(self.optimizers)
                progress = {"finished": len(self.finished), "total": total}
                return httpx.Response(
                    200, json={**study, "status": self.status, "progress": progress}
                )
            if parts[1:] == ["trials", "ask"]:
                return self._ask(parts[0], body)
            _, _, optimizer, number, verb = parts
            key = (optimizer, int(number))
            self.calls[verb] += 1
            if self.held.get(key) != body.get("lease"):
                return httpx.Response(409, json={"detail": f"trial {key} is not held"})
            if verb == "report":
                self.reports.append((optimizer, int(number), body["step"], body["value"]))
                prune = self.prune(optimizer, int(number), body["step"])
                return httpx.Response(200, json={"should_prune": prune, "lease_expires_at": None})
            if verb == "renew":
                return httpx.Response(200, json={"lease_expires_at": "2030-01-01T00:00:00Z"})
            assert verb == "tell", verb
            del self.held[key]
            if body.get("state") == "failed":  # its place goes back to the study
                self.failed.append(key)
            else:
                self.finished[key] = body
            return httpx.Response(200, json={"state": body.get("state", "complete")})

    def _ask(self, name: str, body: dict[str, Any]) -> httpx.Response:
        self.calls["ask"] += 1
        if self.task != "external":
            return httpx.Response(409, json={"detail": "workers run its trials"})
        free = [optimizer for optimizer in self.optimizers if self._left(optimizer) > 0]
        if not free:
            return httpx.Response(409, json={"detail": "no free slot"})
        optimizer = min(free, key=self.numbers.__getitem__)
        number = self._number(optimizer)
        lease = f"lease-{optimizer}-{number}"
        self.held[(optimizer, number)] = lease
        params = self._params(optimizer, number)
        answer = {
            "study": name, "optimizer": optimizer, "number": number, "params": params,
            "python": "optim_core.SGD(...)", "lease": lease,
            "lease_expires_at": "2030-01-01T00:00:00Z", **self.handed_out(optimizer, number),
        }  # fmt: skip
        assert body.get("lease_seconds", 1) > 0
        return httpx.Response(200, json=answer)

    @staticmethod
    def _params(optimizer: str, number: int) -> dict[str, Any]:
        return {"lr": 0.01 * (number + 1), "batch_size": 32}


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


def client_of(service: FakeService) -> HPTClient:
    return HPTClient("http://hpt.test", transport=httpx.MockTransport(service.handle))


def test_each_trial_is_trained_reported_and_told_until_the_study_is_complete(
    fake: FakeService,
) -> None:
    seen: list[RemoteTrial] = []

    def objective(trial: RemoteTrial) -> float:
        seen.append(trial)
        for step in range(3):
            trial.report(step, trial.params["lr"] * (3 - step))
        return trial.params["lr"]

    with client_of(fake) as client:
        assert client.optimize("s", objective, poll_interval=0.01) == 6
    assert fake.status == "completed" and len(fake.finished) == 6 and not fake.held
    for trial in seen:
        assert fake.finished[(trial.optimizer, trial.number)] == {
            "value": trial.params["lr"],
            "lease": trial.lease,
        }
        assert trial.batch_size == 32
    assert len(fake.reports) == 18
    assert fake.calls["ask"] == 7  # the seventh answers 409: the study is complete


def test_a_pruned_trial_is_told_pruned_and_the_loop_goes_on() -> None:
    fake = FakeService(prune=lambda optimizer, number, step: number == 0 and step == 1)
    stopped_at: list[int] = []

    def objective(trial: RemoteTrial) -> float:
        for step in range(5):
            try:
                trial.report(step, 1.0)
            except TrialPruned:
                stopped_at.append(step)
                raise
        return 0.5

    with client_of(fake) as client:
        client.optimize("s", objective, poll_interval=0.01)
    assert stopped_at == [1, 1]  # trial 0 of each optimizer
    states = {key: body.get("state", "complete") for key, body in fake.finished.items()}
    assert states == {
        ("sgd", 0): "pruned", ("adam", 0): "pruned",
        ("sgd", 1): "complete", ("adam", 1): "complete",
        ("sgd", 2): "complete", ("adam", 2): "complete",
    }  # fmt: skip


def test_a_diverged_value_prunes_the_trial_without_reporting_it(fake: FakeService) -> None:
    def objective(trial: RemoteTrial) -> float:
        trial.report(0, 1.0)
        trial.report(1, float("inf"))
        return 1.0

    with client_of(fake) as client:
        client.optimize("s", objective, n_trials=1)
    assert [body["state"] for body in fake.finished.values()] == ["pruned"]
    assert [step for *_, step, _ in fake.reports] == [0]


def test_optunas_trial_pruned_counts_as_pruned_too(fake: FakeService) -> None:
    import optuna

    def objective(trial: RemoteTrial) -> float:
        raise optuna.TrialPruned("my own reason")

    with client_of(fake) as client:
        client.optimize("s", objective, n_trials=1)
    [body] = fake.finished.values()
    assert body["state"] == "pruned"


def test_an_exception_fails_its_trial_and_the_loop_goes_on(
    fake: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Counter[str]()

    def objective(trial: RemoteTrial) -> float:
        calls["all"] += 1
        if calls["all"] in (1, 4):
            raise ValueError("out of memory, say")
        return 1.0

    with client_of(fake) as client:
        assert client.optimize("s", objective, poll_interval=0.01) == 8
    assert len(fake.failed) == 2 and len(fake.finished) == 6 and fake.status == "completed"
    assert "ValueError: out of memory, say" in caplog.text


def test_an_exception_outside_catch_fails_its_trial_and_is_raised(fake: FakeService) -> None:
    def objective(trial: RemoteTrial) -> float:
        raise LookupError("a bug")

    with client_of(fake) as client, pytest.raises(LookupError, match="a bug"):
        client.optimize("s", objective, catch=(ValueError,))
    assert fake.failed == [("sgd", 0)] and not fake.held and fake.calls["ask"] == 1


@pytest.mark.parametrize("returned", [float("nan"), None, "0.5"])
def test_a_value_that_is_not_a_finite_number_fails_the_trial(
    fake: FakeService, returned: Any
) -> None:
    with client_of(fake) as client:
        client.optimize("s", lambda trial: returned, n_trials=1)
    assert fake.failed == [("sgd", 0)] and not fake.finished


def interrupted(run: Callable[[], object], capsys: pytest.CaptureFixture[str]) -> str:
    """What ``run`` printed on stderr as it exited with status 130 after Ctrl-C."""
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == 130
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err.strip()


def test_ctrl_c_fails_the_running_trial_and_exits_with_one_line(
    fake: FakeService, capsys: pytest.CaptureFixture[str]
) -> None:
    def objective(trial: RemoteTrial) -> float:
        if trial.number == 0:
            return 1.0
        trial.report(0, 1.0)
        raise KeyboardInterrupt  # as Ctrl-C does while it trains

    with client_of(fake) as client:
        line = interrupted(lambda: client.optimize("s", objective), capsys)
    assert line == (
        "Interrupted: 2 trials told this run (2 complete); trial sgd/1 was told failed, and "
        "the study runs its config again. The study keeps everything told."
    )
    assert fake.failed == [("sgd", 1)] and len(fake.finished) == 2 and not fake.held
    assert fake.calls["ask"] == 3


def interrupt_during(verb: str, service: FakeService) -> Callable[[httpx.Request], httpx.Response]:
    """A handler of ``service`` that presses Ctrl-C (in the main thread: n_jobs=1) while it
    answers the first ``verb`` request."""
    pressed = threading.Event()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(f"/{verb}") and not pressed.is_set():
            pressed.set()
            _thread.interrupt_main()
        return service.handle(request)

    return handle


@pytest.mark.parametrize("verb", ["ask", "tell"])
def test_ctrl_c_during_an_ask_or_a_tell_lets_it_finish(
    verb: str, fake: FakeService, capsys: pytest.CaptureFixture[str]
) -> None:
    trained: list[RemoteTrial] = []

    def objective(trial: RemoteTrial) -> float:
        trained.append(trial)
        return 0.5

    transport = httpx.MockTransport(interrupt_during(verb, fake))
    with HPTClient("http://hpt.test", transport=transport) as client:
        line = interrupted(lambda: client.optimize("s", objective), capsys)
    assert not fake.held, "a trial was left held"
    if verb == "tell":  # the value being told is kept
        assert fake.finished == {("sgd", 0): {"value": 0.5, "lease": "lease-sgd-0"}}
        assert not fake.failed and len(trained) == 1
        assert line == (
            "Interrupted: 1 trial told this run (1 complete); no trial was running. "
            "The study keeps everything told."
        )
    else:  # the trial asked is told failed, untrained
        assert fake.failed == [("sgd", 0)] and not fake.finished and not trained
        assert line == (
            "Interrupted: no trial told this run; trial sgd/0 was told failed, and the study "
            "runs its config again. The study keeps everything told."
        )


def test_a_second_ctrl_c_quits_at_once_and_says_what_was_not_told(
    fake: FakeService, capsys: pytest.CaptureFixture[str]
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tell"):  # a tell that hangs, and two Ctrl-C's
            _thread.interrupt_main()
            _thread.interrupt_main()
        return fake.handle(request)

    transport = httpx.MockTransport(handle)
    with HPTClient("http://hpt.test", transport=transport) as client:
        line = interrupted(lambda: client.optimize("s", lambda trial: 0.5), capsys)
    assert not fake.finished and not fake.failed and list(fake.held) == [("sgd", 0)]
    assert line == (
        "Interrupted: no trial told this run; trial sgd/0 could not be told: the study runs its "
        "config again once its lease runs out (within 60 s). The study keeps everything told."
    )


def test_ctrl_c_with_threads_fails_the_trials_training_and_waits_for_a_tell_under_way(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeService(n_trials=10)
    both_running, release = threading.Barrier(2), threading.Event()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/sgd/0/tell"):  # Ctrl-C while sgd/0's value is told ...
            _thread.interrupt_main()
            # ... which is slow: it is answered once the interrupt told adam/0 failed.
            wait_until(lambda: fake.failed, 10, 0.01, message="adam/0 told failed")
        return fake.handle(request)

    def objective(trial: RemoteTrial) -> float:
        both_running.wait(timeout=10)
        if trial.optimizer == "adam":
            release.wait(timeout=30)  # still training when Ctrl-C comes
        return 1.0

    transport = httpx.MockTransport(handle)
    with HPTClient("http://hpt.test", transport=transport) as client:
        try:
            line = interrupted(lambda: client.optimize("s", objective, n_jobs=2), capsys)
            # Checked at once: optimize() waited for the tell under way.
            assert list(fake.finished) == [("sgd", 0)] and fake.failed == [("adam", 0)]
            assert not fake.held and fake.calls["ask"] == 2
        finally:
            release.set()
    assert line == (
        "Interrupted: 1 trial told this run (1 complete); trial adam/0 was told failed, and "
        "the study runs its config again. The study keeps everything told."
    )


def test_the_lease_is_renewed_while_the_objective_trains(fake: FakeService) -> None:
    def objective(trial: RemoteTrial) -> float:
        # Trains "longer than its lease": until three renewals of it went out.
        start = fake.calls["renew"]
        wait_until(lambda: fake.calls["renew"] >= start + 3, 10, 0.01)
        return 1.0

    with client_of(fake) as client:
        client.optimize("s", objective, n_trials=2, lease_seconds=0.06)
    assert len(fake.finished) == 2
    renewals = fake.calls["renew"]
    assert renewals >= 6
    # No renewal after the trials ended (the keeper stops before the tell).
    threading.Event().wait(0.2)
    assert fake.calls["renew"] == renewals


def test_a_lost_lease_stops_renewing_and_the_report_says_so(fake: FakeService) -> None:
    def objective(trial: RemoteTrial) -> float:
        with fake.lock:  # the service expired the lease meanwhile
            fake.held[(trial.optimizer, trial.number)] = "expired"
        wait_until(lambda: trial._lost is not None, 10, 0.01)
        trial.report(0, 1.0)
        return 1.0

    with client_of(fake) as client:
        assert client.optimize("s", objective, n_trials=1, lease_seconds=0.03) == 1
    assert not fake.finished and not fake.failed  # its tell was refused: nothing recorded


def test_it_waits_while_every_slot_is_held_by_others() -> None:
    fake = FakeService(optimizers=("sgd",), n_trials=2, held_by_others=2)
    release = threading.Timer(0.3, fake.release_others)
    release.start()
    try:
        with client_of(fake) as client:
            assert client.optimize("s", lambda trial: 0.0, poll_interval=0.02) == 0
    finally:
        release.cancel()
    # It asked again while the others ran, and stopped once they completed the study.
    assert fake.calls["ask"] >= 2 and fake.status == "completed"


def test_n_jobs_threads_share_the_study_with_exact_counts() -> None:
    fake = FakeService(optimizers=("sgd", "adam", "adamw"), n_trials=7)
    running, most = Counter[str](), Counter[str]()
    lock = threading.Lock()

    def objective(trial: RemoteTrial) -> float:
        with lock:
            running["now"] += 1
            most["now"] = max(most["now"], running["now"])
        threading.Event().wait(0.01)
        with lock:
            running["now"] -= 1
        return float(trial.number)

    with client_of(fake) as client:
        assert client.optimize("s", objective, n_jobs=4, poll_interval=0.01) == 21
    assert len(fake.finished) == 21 and not fake.held and not fake.failed
    assert 1 < most["now"] <= 4

    fake = FakeService(optimizers=("sgd", "adam"), n_trials=50)
    with client_of(fake) as client:
        assert client.optimize("s", lambda trial: 1.0, n_trials=9, n_jobs=3) == 9
    assert len(fake.finished) == 9 and fake.calls["ask"] == 9


def test_an_error_in_one_thread_stops_the_others_and_is_raised() -> None:
    fake = FakeService(n_trials=20)

    def objective(trial: RemoteTrial) -> float:
        if trial.number == 3:
            raise LookupError("a bug")
        return 1.0

    with client_of(fake) as client, pytest.raises(LookupError):
        client.optimize("s", objective, n_jobs=2, catch=())
    assert len(fake.finished) + len(fake.failed) < 40 and not fake.held


def test_a_study_that_workers_run_is_refused() -> None:
    fake = FakeService(task="digits_mlp")
    with client_of(fake) as client, pytest.raises(HPTError, match="workers run its trials"):
        client.optimize("s", lambda trial: 1.0)


def test_bad_arguments_are_refused(fake: FakeService) -> None:
    with client_of(fake) as client:
        with pytest.raises(ValueError, match="n_jobs"):
            client.optimize("s", lambda trial: 1.0, n_jobs=0)
        with pytest.raises(ValueError, match="n_trials"):
            client.optimize("s", lambda trial: 1.0, n_trials=-1)
    assert fake.calls["ask"] == 0


def test_build_optimizer_is_the_registrys_configured_optimizer(fake: FakeService) -> None:
    import torch

    import optim_core

    model = torch.nn.Linear(3, 1)
    trial = RemoteTrial("s", "adam", 0, {"lr": 0.01, "beta1": 0.8, "beta2": 0.99,
                        "batch_size": 16}, "", "L", _client=client_of(fake))  # fmt: skip
    optimizer = trial.build_optimizer(model.parameters())
    assert isinstance(optimizer, optim_core.Adam)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"]) == (0.01, (0.8, 0.99)) and trial.batch_size == 16
    full_batch = RemoteTrial("s", "gd", 0, {"lr": 0.5}, "", "L", _client=client_of(fake))
    assert full_batch.batch_size is None


# --------------------------------------------------------------------------- seeds and phases


def confirming(optimizer: str, number: int) -> dict[str, Any]:
    """Seeds and phases as a server hands them out: trial 0 of each optimizer is a search trial
    from the portfolio, the others re-train it on seeds 100, 101, ..."""
    if number == 0:
        return {"seed": 7, "phase": "search", "origin": "portfolio"}
    return {"seed": 99 + number, "phase": "confirm", "origin": "confirm"}


def test_a_trial_carries_the_seed_phase_and_origin_it_was_handed(fake: FakeService) -> None:
    seen: list[RemoteTrial] = []
    fake.handed_out = confirming
    with client_of(fake) as client:
        client.optimize("s", lambda trial: seen.append(trial) or 1.0, n_trials=3)
    assert [(t.optimizer, t.number, t.seed, t.phase, t.origin) for t in seen] == [
        ("sgd", 0, 7, "search", "portfolio"),
        ("adam", 0, 7, "search", "portfolio"),
        ("sgd", 1, 100, "confirm", "confirm"),
    ]

    older = FakeService()  # a server that hands out none of them
    seen.clear()
    with client_of(older) as client:
        client.optimize("s", lambda trial: seen.append(trial) or 1.0, n_trials=1)
    [trial] = seen
    assert (trial.seed, trial.phase, trial.origin) == (None, "search", None)


def test_a_confirmation_trial_is_never_pruned_and_fails_when_it_diverges(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The pruner says prune to every report: only search trials listen.
    fake = FakeService(optimizers=("sgd",), n_trials=6, handed_out=confirming,
                       prune=lambda optimizer, number, step: True)  # fmt: skip

    def objective(trial: RemoteTrial) -> float:
        if trial.number in (0, 1):  # a search trial, then a confirmation seed: pruning asked
            for step in range(3):
                trial.report(step, 1.0)
            return 1.0
        if trial.number == 2:  # a confirmation seed that diverges
            trial.report(0, float("nan"))
        if trial.number == 3:  # nan returned
            return float("inf")
        if trial.number == 4:  # the objective's own pruning: not for a confirmation trial
            raise TrialPruned("my own rule")
        return 0.5

    with client_of(fake) as client:
        assert client.optimize("s", objective, n_trials=6, catch=()) == 6
    assert fake.finished == {
        ("sgd", 0): {"state": "pruned", "lease": "lease-sgd-0"},
        ("sgd", 1): {"value": 1.0, "lease": "lease-sgd-1"},
        ("sgd", 5): {"value": 0.5, "lease": "lease-sgd-5"},
    }
    assert fake.failed == [("sgd", 2), ("sgd", 3), ("sgd", 4)]
    # The confirmation trial reported every step; the nan was never sent.
    assert [(number, step) for _, number, step, _ in fake.reports] == [
        (0, 0), (1, 0), (1, 1), (1, 2)
    ]  # fmt: skip
    assert "confirmation trials are never pruned" in caplog.text


# --------------------------------------------------------------------------- the progress bar


def test_the_progress_bar_counts_trials_of_the_study_and_shows_the_best_value(
    fake: FakeService, capsys: pytest.CaptureFixture[str]
) -> None:
    with client_of(fake) as client:
        client.optimize("s", lambda trial: trial.params["lr"], show_progress_bar=True)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "6/6" in last and "best loss 0.01" in last, err

    fake = FakeService(n_trials=5)
    with client_of(fake) as client:
        client.optimize("s", lambda trial: 2.0, n_trials=3, show_progress_bar=True)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "3/3" in last and "best loss 2" in last


def test_no_progress_bar_unless_asked(
    fake: FakeService, capsys: pytest.CaptureFixture[str]
) -> None:
    with client_of(fake) as client:
        client.optimize("s", lambda trial: 1.0)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- torch threads


@pytest.fixture
def torch_threads() -> Iterator[Callable[[int], None]]:
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def thread_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "torch.set_num_threads(" in r.getMessage()]


def test_torch_on_every_core_next_to_local_workers_is_warned_once(
    torch_threads: Callable[[int], None], caplog: pytest.LogCaptureFixture
) -> None:
    every_core = os.cpu_count() or 1
    for url, threads, warned in [
        ("http://127.0.0.1:8000", every_core, every_core > 1),
        ("http://localhost:8000", 1, False),  # one thread: nothing to say
        ("http://hpt.example.org", every_core, False),  # the workers train elsewhere
    ]:
        torch_threads(threads)
        caplog.clear()
        fake = FakeService()
        with HPTClient(url, transport=httpx.MockTransport(fake.handle)) as client:
            client.optimize("s", lambda trial: 1.0)
        assert len(fake.finished) == 6
        warnings = thread_warnings(caplog)
        assert len(warnings) == (1 if warned else 0), (url, threads, warnings)
        if warned:
            assert f"torch trains with {every_core} threads" in warnings[0]


def test_the_threads_are_looked_at_once_the_objective_imported_torch(
    torch_threads: Callable[[int], None], caplog: pytest.LogCaptureFixture
) -> None:
    torch_threads(1)
    fake = FakeService()

    def objective(trial: RemoteTrial) -> float:
        torch_threads(os.cpu_count() or 1)  # as importing torch in the objective does
        return 1.0

    with HPTClient("http://127.0.0.1:1", transport=httpx.MockTransport(fake.handle)) as client:
        client.optimize("s", objective)
    assert len(thread_warnings(caplog)) == (1 if (os.cpu_count() or 1) > 1 else 0)


# --------------------------------------------------------------------------- the service's hiccups


def hiccups(service: FakeService, failures: int) -> Callable[[httpx.Request], httpx.Response]:
    """``service``, whose first ``failures`` answers to each of ask, report, renew and tell are
    a 503 or no answer at all, in turn."""
    failed = Counter[str]()
    lock = threading.Lock()

    def handle(request: httpx.Request) -> httpx.Response:
        verb = request.url.path.rsplit("/", 1)[-1]
        with lock:
            hiccup = verb in ("ask", "report", "renew", "tell") and failed[verb] < failures
            if hiccup:
                failed[verb] += 1
                unreachable = failed[verb] % 2 == 0
        if hiccup and unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        if hiccup:
            return httpx.Response(503, json={"detail": "the database is not reachable"})
        return service.handle(request)

    return handle


def test_the_services_hiccups_are_retried_and_never_fail_a_trial(fake: FakeService) -> None:
    trained = Counter[tuple[str, int]]()

    def objective(trial: RemoteTrial) -> float:
        trained[(trial.optimizer, trial.number)] += 1
        start = fake.calls["renew"]
        trial.report(0, 1.0)
        # Trains until its lease was renewed (through the renewals' own hiccups).
        wait_until(lambda: fake.calls["renew"] > start, 10, 0.01)
        trial.report(1, 0.5)
        return 0.5

    transport = httpx.MockTransport(hiccups(fake, failures=4))
    with HPTClient("http://hpt.test", transport=transport) as client:
        assert client.optimize("s", objective, lease_seconds=0.06, poll_interval=0.01) == 6
    assert not fake.failed and not fake.held and len(fake.finished) == 6
    assert all(body.get("value") == 0.5 for body in fake.finished.values())
    assert set(trained.values()) == {1}  # no trial trained twice
    assert len(fake.reports) == 12


def test_an_unreachable_service_is_raised_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with HPTClient(url, timeout=2) as client, pytest.raises(HPTConnectionError) as caught:
        client.optimize("s", lambda trial: 1.0)
    assert "is `hpt serve` running?" in caught.value.message


# --------------------------------------------------------------------------- no server code

LIGHT_CLIENT = """
import sys
import httpx
import service.client
from service.client import HPTClient

server_side = {"fastapi", "sqlalchemy", "optuna", "starlette", "uvicorn", "alembic", "torch",
               "tqdm", "pydantic_settings"}
def heavy():
    return sorted(m for m in sys.modules if m.split(".")[0] in server_side)

assert not heavy(), heavy()

def handle(request):  # a study of one trial, done at once
    path = request.url.path
    if path.endswith("/ask"):
        return httpx.Response(200, json={"study": "s", "optimizer": "sgd", "number": 0,
            "params": {}, "python": "", "lease": "L", "lease_expires_at": "2030-01-01T00:00Z"})
    if path.endswith("/tell"):
        return httpx.Response(200, json={})
    return httpx.Response(200, json={"name": "s", "task": "external", "status": "completed"})

with HPTClient("http://127.0.0.1:1", transport=httpx.MockTransport(handle)) as client:
    assert client.optimize("s", lambda trial: 1.0, n_trials=1) == 1
assert not heavy(), heavy()  # torch is only looked at once the user's code imported it
print("light")
"""


def test_the_client_imports_no_server_code() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_CLIENT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout == "light\n", done.stderr


# --------------------------------------------------------------------------- load_if_exists


def existing_study_service(request: httpx.Request) -> httpx.Response:
    if request.method == "POST":
        return httpx.Response(409, json={"detail": "a study named 'x' already exists"})
    rows = [{"optimizer": "sgd"}, {"optimizer": "adam"}]
    return httpx.Response(200, json={"name": "x", "task": "external", "optimizers": rows})


def test_load_if_exists_returns_the_existing_study_when_it_matches() -> None:
    client = HPTClient("http://hpt.test", transport=httpx.MockTransport(existing_study_service))
    with client:
        body = {"name": "x", "task": "external", "optimizers": ["sgd", "adam"], "n_trials": 5}
        assert client.create_study(body, load_if_exists=True)["name"] == "x"
        with pytest.raises(HPTError, match="already exists"):
            client.create_study(body)
        with pytest.raises(HPTError) as caught:
            client.create_study(body, optimizers=["adam"], load_if_exists=True)
        assert caught.value.status_code == 409
        assert "exists with optimizers ['sgd', 'adam'], not ['adam']" in caught.value.message
        with pytest.raises(HPTError, match="task 'external', not 'digits_mlp'"):
            client.create_study(body, task="digits_mlp", load_if_exists=True)


# --------------------------------------------------------------------------- a real server


def decaying_loss(trial: RemoteTrial) -> float:
    for epoch in range(3):
        trial.report(epoch, trial.params["lr"] * (3 - epoch))
    return trial.params["lr"]


def test_optimize_against_a_real_server_twice_in_a_row(
    start_server: Callable[..., Server], sqlite_url: str
) -> None:
    server = start_server(sqlite_url)
    body = {
        "name": "remote", "task": "external", "confirm": {"top_k": 0},
        "optimizers": ["sgd", "adam"], "n_trials": 3,
        "metric": "val_loss", "direction": "minimize", "seed": 0, "pruner": "none",
    }  # fmt: skip
    for run in range(2):
        with HPTClient(server.base_url) as client:
            client.create_study(body, load_if_exists=True)
            ran = client.optimize("remote", decaying_loss, n_jobs=2, lease_seconds=5)
            assert ran == (6 if run == 0 else 0)
            study = client.get_study("remote")
            assert study["status"] == "completed"
            best = client.best("remote")
    assert {row["optimizer"] for row in best["optimizers"]} == {"sgd", "adam"}
    for row in best["optimizers"]:
        assert row["value"] == pytest.approx(row["params"]["lr"])
    assert_exact_trials(sqlite_url, "remote", ["sgd", "adam"], 3)


def test_renew_extends_a_held_lease_only(
    start_server: Callable[..., Server], sqlite_url: str
) -> None:
    server = start_server(sqlite_url)
    body = {
        "name": "renewed", "task": "external", "confirm": {"top_k": 0},
        "optimizers": ["sgd"], "n_trials": 2,
        "metric": "loss", "direction": "minimize",
    }  # fmt: skip
    with HPTClient(server.base_url) as client:
        client.create_study(body)
        asked = client.ask("renewed", lease_seconds=30)
        trial = ("renewed", "sgd", asked["number"])
        renewed = client.renew(*trial, lease=asked["lease"], lease_seconds=600)
        assert renewed["lease_expires_at"] > asked["lease_expires_at"]
        with pytest.raises(HPTError) as wrong:
            client.renew(*trial, lease="not-the-lease")
        assert wrong.value.status_code == 409 and "lease does not match" in wrong.value.message
        client.tell(*trial, value=1.0, lease=asked["lease"])
        with pytest.raises(HPTError) as ended:
            client.renew(*trial, lease=asked["lease"])
        assert ended.value.status_code == 409 and "already been told" in ended.value.message
        with pytest.raises(HPTError) as unknown:
            client.renew("renewed", "sgd", 99, lease=asked["lease"])
        assert unknown.value.status_code == 404


KILLED_CLIENT = """
import json, sys, time
from pathlib import Path
from service.client import HPTClient

def objective(trial):
    Path(sys.argv[2]).write_text(json.dumps(trial.params))
    time.sleep(600)  # killed while it trains

with HPTClient(sys.argv[1]) as client:
    client.optimize("killed", objective, lease_seconds=float(sys.argv[3]))
"""


@pytest.fixture
def killed_client_script(tmp_path: Path) -> Iterator[Path]:
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(KILLED_CLIENT))
    yield script


def test_a_killed_clients_trial_fails_after_its_lease_and_is_offered_again(
    start_server: Callable[..., Server],
    sqlite_url: str,
    processes: Processes,
    killed_client_script: Path,
    tmp_path: Path,
) -> None:
    server = start_server(sqlite_url)
    body = {
        "name": "killed", "task": "external", "confirm": {"top_k": 0},
        "optimizers": ["adam"], "n_trials": 1,
        "metric": "loss", "direction": "minimize", "seed": 0,
    }  # fmt: skip
    lease = 3.0
    with HPTClient(server.base_url) as client:
        client.create_study(body)
    started = tmp_path / "params.txt"
    victim = processes.start(
        "client",
        [sys.executable, str(killed_client_script), server.base_url, str(started), str(lease)],
        {},
    )
    wait_until(started.exists, 60, 0.1, message="the client to start training its trial")
    victim.send(signal.SIGKILL)
    victim.wait(timeout=30)
    params = json.loads(started.read_text())

    seen: list[RemoteTrial] = []

    def objective(trial: RemoteTrial) -> float:
        seen.append(trial)
        return 0.5

    with HPTClient(server.base_url) as client:
        # The only trial is held by the dead client: this one waits for the lease to run out.
        assert client.optimize("killed", objective, poll_interval=0.2, lease_seconds=5) == 1
        study = client.get_study("killed")
        trials = client.trials("killed")["items"]
    [trial] = seen
    assert trial.params == params, "the killed client's params were not offered again"
    assert trial.number == 1
    assert study["status"] == "completed"
    assert sorted(t["state"] for t in trials) == ["complete", "failed"], trials
    assert_exact_trials(sqlite_url, "killed", ["adam"], 1, failed=1)


INTERRUPTED_CLIENT = """
import sys, time
from pathlib import Path
from service.client import HPTClient

url, started, n_jobs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])

def objective(trial):
    if trial.number < 2:  # the first two are told complete
        return 0.1 * (trial.number + 1)
    (started / f"{trial.optimizer}-{trial.number}").write_text("training")
    time.sleep(600)  # Ctrl-C comes while it trains

with HPTClient(url) as client:
    client.optimize("ctrl-c", objective, n_jobs=n_jobs, poll_interval=0.2)
"""


def test_ctrl_c_ends_a_client_with_one_line_and_the_study_keeps_its_trials(
    start_server: Callable[..., Server], database_url: str, processes: Processes, tmp_path: Path
) -> None:
    interrupt_a_client(start_server, database_url, processes, tmp_path, n_jobs=1)


def test_ctrl_c_ends_a_client_of_two_threads_the_same_way(
    start_server: Callable[..., Server], sqlite_url: str, processes: Processes, tmp_path: Path
) -> None:
    interrupt_a_client(start_server, sqlite_url, processes, tmp_path, n_jobs=2)


def interrupt_a_client(
    start_server: Callable[..., Server],
    database_url: str,
    processes: Processes,
    tmp_path: Path,
    *,
    n_jobs: int,
) -> None:
    """A client process (``n_jobs`` threads) tells two trials, then gets SIGINT while it trains
    ``n_jobs`` more: one line, status 130, and the study holds exactly what was told."""
    server = start_server(database_url)
    body = {
        "name": "ctrl-c", "task": "external", "confirm": {"top_k": 0},
        "optimizers": ["adam"], "n_trials": 2 + n_jobs,
        "metric": "loss", "direction": "minimize", "seed": 0, "pruner": "none",
    }  # fmt: skip
    with HPTClient(server.base_url) as client:
        client.create_study(body)
    script = tmp_path / "client.py"
    script.write_text(INTERRUPTED_CLIENT)
    started = tmp_path / "started"
    started.mkdir()
    command = [sys.executable, str(script), server.base_url, str(started), str(n_jobs)]
    client_process = processes.start("client", command, {})
    wait_until(lambda: len(list(started.iterdir())) == n_jobs, 60, 0.1,
               message="the client to train its last trials")  # fmt: skip
    client_process.send(signal.SIGINT)
    assert client_process.wait(timeout=30) == 130
    [line] = client_process.log().splitlines()  # one line, no traceback
    training = {f"adam/{path.name.split('-')[1]}" for path in started.iterdir()}
    if n_jobs == 1:
        [label] = training
        told_failed = f"trial {label} was told failed, and the study runs its config again"
    else:  # in the order the threads asked them
        asked = re.search(r"; trials (\S+) and (\S+) were told failed", line)
        assert asked is not None and set(asked.groups()) == training, line
        first, second = asked.groups()
        told_failed = (
            f"trials {first} and {second} were told failed, and the study runs their configs again"
        )
    assert line == (
        f"Interrupted: 2 trials told this run (2 complete); {told_failed}. "
        "The study keeps everything told."
    )

    with HPTClient(server.base_url) as client:
        study = client.get_study("ctrl-c")
        states = Counter(trial["state"] for trial in client.trials("ctrl-c")["items"])
        assert states == {"complete": 2, "failed": n_jobs}, states  # none left running
        assert study["progress"]["finished"] == 2 and study["status"] == "running"
        # Another run finishes the study: the failed trials' places were given back.
        assert client.optimize("ctrl-c", lambda trial: 1.0, poll_interval=0.2) == n_jobs
    assert_exact_trials(database_url, "ctrl-c", ["adam"], 2 + n_jobs, failed=n_jobs)
