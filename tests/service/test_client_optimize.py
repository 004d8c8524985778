"""``HPTClient.optimize`` and ``create_study(load_if_exists=True)``.

- The loop's logic against an in-memory ask/tell service behind ``httpx.MockTransport`` (the
  contract of the ask/report/renew/tell endpoints): values, pruning, exceptions, Ctrl-C, lease
  renewals, waiting for held slots, ``n_jobs`` threads with exact counts.
- Against a real API server: a study run to completion twice in a row (the second run finds it
  complete), and a client process SIGKILLed mid-trial, whose trial is failed after its lease and
  offered again to the next client.
"""

from __future__ import annotations

import _thread
import json
import signal
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

from service.client import HPTClient, HPTError, RemoteTrial, TrialPruned
from tests.helpers import wait_until
from tests.service.support import Processes, Server, assert_exact_trials

# --------------------------------------------------------------------------- a fake service


@dataclass
class FakeService:
    """One external study served in memory, as the API's ask/tell endpoints behave.

    ``prune`` says whether a report of (optimizer, number, step) prunes the trial; trials in
    ``held_by_others`` are running in another client and end when ``release_others`` is called.
    """

    optimizers: tuple[str, ...] = ("sgd", "adam")
    n_trials: int = 3
    task: str = "external"
    prune: Callable[[str, int, int], bool] = lambda optimizer, number, step: False
    held_by_others: int = 0
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
                study = {"name": parts[0], "task": self.task, "optimizers": rows}
                return httpx.Response(200, json={**study, "status": self.status})
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
            "lease_expires_at": "2030-01-01T00:00:00Z",
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


def test_ctrl_c_fails_the_running_trial_and_is_raised(fake: FakeService) -> None:
    def objective(trial: RemoteTrial) -> float:
        trial.report(0, 1.0)
        raise KeyboardInterrupt

    with client_of(fake) as client, pytest.raises(KeyboardInterrupt):
        client.optimize("s", objective)
    assert fake.failed == [("sgd", 0)] and not fake.held and fake.calls["ask"] == 1


def test_ctrl_c_with_threads_fails_every_running_trial_and_is_raised() -> None:
    fake = FakeService(n_trials=10)
    both_running, release = threading.Barrier(3), threading.Event()

    def objective(trial: RemoteTrial) -> float:
        both_running.wait(timeout=10)
        release.wait(timeout=10)  # still training when Ctrl-C comes
        return 1.0

    def press_ctrl_c() -> None:
        both_running.wait(timeout=10)
        _thread.interrupt_main()

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with client_of(fake) as client:
        with pytest.raises(KeyboardInterrupt):
            client.optimize("s", objective, n_jobs=2)
        assert sorted(fake.failed) == [("adam", 0), ("sgd", 0)] and not fake.held
        release.set()  # the threads' objectives return: their tells are refused, nothing runs
        wait_until(lambda: fake.calls["tell"] >= 4, 10, 0.01)
    assert not fake.finished and fake.calls["ask"] == 2


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
        "name": "remote", "task": "external", "optimizers": ["sgd", "adam"], "n_trials": 3,
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
        "name": "renewed", "task": "external", "optimizers": ["sgd"], "n_trials": 2,
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
        "name": "killed", "task": "external", "optimizers": ["adam"], "n_trials": 1,
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
