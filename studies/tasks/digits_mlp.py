"""digits_mlp: the 8x8 handwritten digits of scikit-learn, classified by a 64-128-10 MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from studies.tasks.supervised import ClassificationTask

if TYPE_CHECKING:
    from torch import nn


class DigitsMLP(ClassificationTask):
    """1797 digit images as 64 standardized pixels; an MLP with one hidden layer of 128."""

    name = "digits_mlp"
    description = "Handwritten digits 8x8 (1797 images, sklearn), MLP 64-128-10; >= 0.97 accuracy."
    default_epochs = 20

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits  # scikit-learn only where data is loaded

        return load_digits(return_X_y=True)

    def build_model(self) -> nn.Module:
        from torch import nn

        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
