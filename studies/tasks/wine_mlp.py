"""wine_mlp: the wine recognition data of scikit-learn (3 cultivars), classified by an MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from studies.tasks.supervised import ClassificationTask

if TYPE_CHECKING:
    from torch import nn


class WineMLP(ClassificationTask):
    """178 wines, 13 standardized chemical measurements; an MLP 13-32-3."""

    name = "wine_mlp"
    description = "Wine cultivars (178 samples, 13 features, sklearn), MLP 13-32-3; ~0.98 accuracy."
    default_epochs = 30

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_wine  # scikit-learn only where data is loaded

        return load_wine(return_X_y=True)

    def build_model(self) -> nn.Module:
        from torch import nn

        return nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 3))
