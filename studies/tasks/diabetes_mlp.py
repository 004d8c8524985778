"""diabetes_mlp: the diabetes progression data of scikit-learn, regressed by an MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from studies.tasks.supervised import RegressionTask

if TYPE_CHECKING:
    from torch import nn


class DiabetesMLP(RegressionTask):
    """442 patients, 10 standardized baseline variables, disease progression after a year."""

    name = "diabetes_mlp"
    description = (
        "Diabetes progression (442 samples, 10 features, sklearn), MLP 10-32-1 regression; R2 ~0.4."
    )
    default_epochs = 30

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_diabetes  # scikit-learn only where data is loaded

        return load_diabetes(return_X_y=True)

    def build_model(self) -> nn.Module:
        from torch import nn

        return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
