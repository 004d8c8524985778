"""Fixtures of the studies tests: quiet Optuna, small toy tasks, fake installed task plugins."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest

from tests.studies.helpers import Parabola


@pytest.fixture(autouse=True)
def quiet_optuna() -> Iterator[None]:
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


@pytest.fixture
def parabola() -> Parabola:
    return Parabola()


PLUGIN_MODULE = '''
import torch

from studies.tasks.point import PointTask


class ShiftedBowl(PointTask):
    """(w - 3)^2 summed over 4 coordinates, from w = 0."""

    name = "shifted_bowl"
    description = "A plugin task: (w - 3)^2 from 0."
    default_epochs = 4
    steps_per_epoch = 20

    def start(self):
        return torch.zeros(4)

    def value(self, position):
        return (position - 3.0).square().sum()

    def batch_loss(self, model, x, y):
        return self.value(model())


class Misnamed(ShiftedBowl):
    name = "another_name"


def broken():
    raise RuntimeError("this plugin is broken")
'''


@pytest.fixture
def install_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], str]]:
    """Install a fake distribution whose ``hpt.tasks`` entry points are the given lines.

    Returns the name of the plugin's module; the distribution is found by importlib.metadata
    through ``sys.path`` exactly as an installed package would be.
    """
    count = 0

    def install(entry_points: str) -> str:
        nonlocal count
        count += 1
        module = f"hpt_fake_plugin_{count}"
        root = tmp_path / f"site{count}"
        dist_info = root / f"{module}-0.1.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n"
        )
        body = entry_points.format(module=module)
        (dist_info / "entry_points.txt").write_text(
            "[hpt.tasks]\n" + textwrap.dedent(body).strip() + "\n"
        )
        (root / f"{module}.py").write_text(PLUGIN_MODULE)
        monkeypatch.syspath_prepend(str(root))
        return module

    yield install
    for index in range(1, count + 1):
        sys.modules.pop(f"hpt_fake_plugin_{index}", None)
