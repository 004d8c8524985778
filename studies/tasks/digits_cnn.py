"""digits_cnn: the 8x8 handwritten digits of scikit-learn, classified by a small CNN."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from studies.tasks.supervised import ClassificationTask

if TYPE_CHECKING:
    from torch import nn


class DigitsCNN(ClassificationTask):
    """1797 digit images as 1x8x8 tensors; two 3x3 conv layers (16, 32 channels) with pooling."""

    name = "digits_cnn"
    description = "Handwritten digits 8x8 (1797 images, sklearn), 2 conv layers; >= 0.98 accuracy."
    default_epochs = 20
    per_feature_scaling = False  # one scale for all pixels keeps the images' spatial structure
    input_shape = (1, 8, 8)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits  # scikit-learn only where data is loaded

        return load_digits(return_X_y=True)

    def build_model(self) -> nn.Module:
        from torch import nn

        return nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
            nn.Flatten(),
            nn.Linear(32 * 2 * 2, 10),
        )
