"""breast_cancer_logreg: the Wisconsin breast cancer data of scikit-learn, logistic regression."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from studies.tasks.base import Direction
from studies.tasks.supervised import ClassificationTask

if TYPE_CHECKING:
    from torch import nn


class BreastCancerLogReg(ClassificationTask):
    """569 tumours, 30 standardized features; logistic regression, a convex problem.

    The model is a single linear layer to two logits with softmax cross-entropy, which is binary
    logistic regression written in the multinomial form (still convex in the weights).
    """

    name = "breast_cancer_logreg"
    description = (
        "Breast cancer diagnosis (569 samples, 30 features, sklearn), logistic regression "
        "(convex); ~0.97 accuracy."
    )
    metrics: Mapping[str, Direction] = MappingProxyType(
        {"val_loss": "minimize", "val_accuracy": "maximize"}
    )
    default_metric = "val_loss"
    default_epochs = 20

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_breast_cancer  # scikit-learn only where data is loaded

        return load_breast_cancer(return_X_y=True)

    def build_model(self) -> nn.Module:
        from torch import nn

        return nn.Linear(30, 2)
