"""The frozen test suite of ``bench/warm_start_transfer.py``: tasks the warm start never saw.

Eight tasks, all data generated here with fixed seeds (nothing downloaded), each a full training
of about a tenth of a second on one core. Half are model families absent from the built-in
development set (digits_mlp, digits_cnn, breast_cancer_logreg, wine_mlp, diabetes_mlp, rosenbrock,
noisy_quadratic): a residual CNN, a GRU, an autoencoder and an embedding model (matrix
factorisation). The other half are familiar families in regimes the built-ins do not cover: a
1-D CNN on sequences, sparse high-dimensional logistic regression, a wide shallow net and
regression with heavy-tailed noise.

Nothing here may be learned from or tuned on: no portfolio, prior or default is chosen with these
tasks. The benchmark records the SHA-256 of this file (``FROZEN_SHA256`` in
``bench/warm_start_transfer.py``, and in the pools file) and refuses pools of another version.
Change a task and the suite is no longer held out: make a new suite instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from studies.tasks.base import Direction, Split, Task, TaskData
from studies.tasks.supervised import ClassificationTask, RegressionTask, split_arrays, standardize

DATA_SEED = 20  # issue 20; one seed for every generator of this file


def _rng(salt: int) -> np.random.Generator:
    return np.random.default_rng([DATA_SEED, salt])


# 1. A residual CNN on generated images (family absent from the built-ins).


def _shapes(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy ``size`` x ``size`` images of four shapes at random places: a horizontal bar, a
    vertical bar, a diagonal stroke and a hollow square."""
    images = rng.normal(0.0, 0.6, (n, size, size)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    for image, label in zip(images, labels, strict=True):
        r, c = rng.integers(1, size - 5, 2)
        length = rng.integers(3, 6)
        if label == 0:
            image[r + 2, c : c + length] += 1.5
        elif label == 1:
            image[r : r + length, c + 2] += 1.5
        elif label == 2:
            for k in range(length):
                image[r + k, c + k] += 1.5
        else:
            image[r, c : c + 4] += 1.5
            image[r + 3, c : c + 4] += 1.5
            image[r : r + 4, c] += 1.5
            image[r : r + 4, c + 3] += 1.5
    return images.reshape(n, -1), labels


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.second = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.second(F.relu(self.first(x))))


class ShapesResNet(ClassificationTask):
    """400 noisy 10x10 images of four shapes; conv stem, one residual block, pooling, linear."""

    name = "shapes_resnet"
    description = "Generated 10x10 shapes (4 classes, noisy), residual CNN; accuracy."
    default_epochs = 6
    per_feature_scaling = False
    input_shape = (1, 10, 10)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return _shapes(400, 10, _rng(1))

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=3, padding=1),
            nn.ReLU(),
            _ResidualBlock(6),
            nn.MaxPool2d(2),  # 10x10 -> 5x5
            nn.Flatten(),
            nn.Linear(6 * 5 * 5, 4),
        )


# 2. A GRU on generated sequences (family absent).


class _GRUClassifier(nn.Module):
    def __init__(self, hidden: int, classes: int) -> None:
        super().__init__()
        self.gru = nn.GRU(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(x.unsqueeze(-1))
        return self.head(last[0])


class SequenceGRU(ClassificationTask):
    """400 noisy sequences of 12 steps; the label is which third of the sequence holds its
    largest value: a question of order that a recurrent net answers by carrying a state."""

    name = "sequence_gru"
    description = "Generated sequences of 12 steps (3 classes: where the peak is), GRU; accuracy."
    default_epochs = 6
    per_feature_scaling = False

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        rng = _rng(2)
        x = rng.normal(0.0, 1.0, (400, 12)).astype(np.float32)
        return x, np.argmax(x, axis=1) // 4

    def build_model(self) -> nn.Module:
        return _GRUClassifier(hidden=12, classes=3)


# 3. An autoencoder (family absent).


class ManifoldAutoencoder(Task):
    """600 points in 24-D near a curved 3-D manifold; an autoencoder 24-12-3-12-24.

    The metric is the reconstruction's mean squared error on the validation split (features
    standardized on the training split).
    """

    name = "manifold_autoencoder"
    description = "Generated 24-D data on a 3-D manifold, autoencoder 24-12-3-12-24; val_loss."
    metrics: Mapping[str, Direction] = MappingProxyType({"val_loss": "minimize"})
    default_metric = "val_loss"
    default_epochs = 10

    def load_data(self) -> TaskData:
        rng = _rng(3)
        z = rng.normal(0.0, 1.0, (600, 3))
        mixing = rng.normal(0.0, 1.0, (3, 24))
        x = np.tanh(z @ mixing) + rng.normal(0.0, 0.1, (600, 24))
        x_train, _, x_val, _, x_test, _ = split_arrays(
            x, np.zeros(len(x)), seed=self.split_seed, stratify=False
        )
        x_train, x_val, x_test = (
            torch.tensor(split, dtype=torch.float32)
            for split in standardize(x_train, x_val, x_test)
        )
        return TaskData(x_train, x_train, x_val, x_val, x_test, x_test)

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(24, 12),
            nn.Tanh(),
            nn.Linear(12, 3),
            nn.Linear(3, 12),
            nn.Tanh(),
            nn.Linear(12, 24),
        )

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(model(x), y)

    def evaluate(self, model: nn.Module, split: Split) -> dict[str, float]:
        x, y = self.data.split(split)
        return {f"{split}_loss": F.mse_loss(model(x), y).item()}


# 4. Matrix factorisation with embeddings (family absent).


class _Factorisation(nn.Module):
    def __init__(self, users: int, items: int, rank: int) -> None:
        super().__init__()
        self.users = nn.Embedding(users, rank)
        self.items = nn.Embedding(items, rank)
        self.user_bias = nn.Embedding(users, 1)
        self.item_bias = nn.Embedding(items, 1)
        for table in (self.users, self.items):
            nn.init.normal_(table.weight, std=0.3)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        user, item = x[:, 0], x[:, 1]
        dot = (self.users(user) * self.items(item)).sum(dim=1, keepdim=True)
        return dot + self.user_bias(user) + self.item_bias(item)


class RatingsFactorisation(RegressionTask):
    """900 observed ratings of 40 users x 30 items, rank 3 plus noise; embeddings of rank 3."""

    name = "ratings_factorisation"
    description = "Generated ratings (40 users x 30 items, rank 3), matrix factorisation; val_mse."
    default_epochs = 8

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        rng = _rng(4)
        users, items = rng.normal(0, 1, (40, 3)), rng.normal(0, 1, (30, 3))
        cells = rng.choice(40 * 30, 900, replace=False)
        user, item = cells // 30, cells % 30
        ratings = (users[user] * items[item]).sum(axis=1) + rng.normal(0, 0.5, len(cells))
        return np.stack([user, item], axis=1), ratings

    def load_data(self) -> TaskData:
        x, y = self.load_arrays()
        x_train, y_train, x_val, y_val, x_test, y_test = split_arrays(
            x, y, seed=self.split_seed, stratify=False
        )
        self.target_std = float(y_train.std())
        ys = standardize(y_train, y_val, y_test)
        xs = (torch.tensor(split, dtype=torch.int64) for split in (x_train, x_val, x_test))
        y_train, y_val, y_test = (
            torch.tensor(split, dtype=torch.float32).reshape(-1, 1) for split in ys
        )
        x_train, x_val, x_test = xs
        return TaskData(x_train, y_train, x_val, y_val, x_test, y_test)

    def build_model(self) -> nn.Module:
        return _Factorisation(40, 30, rank=3)


# 5. A 1-D CNN on generated sequences (conv family, on sequences).


class MotifConv1d(ClassificationTask):
    """400 noisy sequences of 32 steps, each holding one of three short motifs somewhere; two
    1-D conv layers and a global max pool."""

    name = "motif_conv1d"
    description = "Generated sequences of 32 steps (3 motifs at random places), 1-D CNN; accuracy."
    default_epochs = 6
    per_feature_scaling = False
    input_shape = (1, 32)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        rng = _rng(5)
        motifs = np.array([[1, 1, -1, -1, 1], [1, -1, 1, -1, 1], [-1, 1, 1, 1, -1]], float)
        x = rng.normal(0.0, 0.9, (400, 32))
        labels = rng.integers(0, 3, 400)
        for row, label in zip(x, labels, strict=True):
            start = rng.integers(0, 32 - 5)
            row[start : start + 5] += motifs[label]
        return x.astype(np.float32), labels

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Conv1d(1, 8, kernel_size=5),
            nn.ReLU(),
            nn.Conv1d(8, 8, kernel_size=3),
            nn.ReLU(),
            nn.AdaptiveMaxPool1d(1),
            nn.Flatten(),
            nn.Linear(8, 3),
        )


# 6. Sparse high-dimensional logistic regression.


class SparseLogReg(ClassificationTask):
    """800 bag-of-words-like documents over 2000 features, about 12 non-zero counts each; the
    class follows a sparse weight vector. Logistic regression (convex) on log(1 + count), not
    standardized, which would densify the data."""

    name = "sparse_logreg"
    description = "Generated sparse counts (800 x 2000, ~12 words), logistic regression; val_loss."
    metrics: Mapping[str, Direction] = MappingProxyType(
        {"val_loss": "minimize", "val_accuracy": "maximize"}
    )
    default_metric = "val_loss"
    default_epochs = 10

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        rng = _rng(6)
        features = 2000
        weights = np.where(rng.random(features) < 0.15, rng.normal(0.0, 1.5, features), 0.0)
        popularity = 1.0 / (np.arange(features) + 20.0)  # a long tail of rare words
        popularity /= popularity.sum()
        x = np.zeros((800, features), dtype=np.float32)
        for row in x:
            words = rng.choice(features, rng.poisson(12) + 1, p=popularity)
            np.add.at(row, words, 1.0)
        logits = x @ weights
        labels = (logits + rng.logistic(0.0, 0.5, 800) > np.median(logits)).astype(np.int64)
        return x, labels

    def load_data(self) -> TaskData:
        x, y = self.load_arrays()
        x_train, y_train, x_val, y_val, x_test, y_test = split_arrays(
            x, y, seed=self.split_seed, stratify=True
        )
        x_train, x_val, x_test = (
            torch.tensor(np.log1p(split), dtype=torch.float32) for split in (x_train, x_val, x_test)
        )
        y_train, y_val, y_test = (
            torch.tensor(split, dtype=torch.int64) for split in (y_train, y_val, y_test)
        )
        return TaskData(x_train, y_train, x_val, y_val, x_test, y_test)

    def build_model(self) -> nn.Module:
        return nn.Linear(2000, 2)


# 7. A wide shallow net.


class WideShallow(ClassificationTask):
    """600 samples of sklearn's make_classification (20 features, 4 classes, 5% flipped labels);
    one hidden layer of 1024 units."""

    name = "wide_shallow"
    description = "Generated tabular data (600 x 20, 4 classes), MLP 20-1024-4; accuracy."
    default_epochs = 10

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import make_classification

        return make_classification(
            n_samples=600,
            n_features=20,
            n_informative=8,
            n_redundant=4,
            n_classes=4,
            n_clusters_per_class=2,
            flip_y=0.05,
            class_sep=1.0,
            random_state=DATA_SEED,
        )

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(20, 1024), nn.ReLU(), nn.Linear(1024, 4))


# 8. Regression with heavy-tailed noise.


class HeavyTailRegression(RegressionTask):
    """600 samples, 8 features, a smooth nonlinear target plus Student-t noise with 2.5 degrees
    of freedom (outliers in every split); MLP 8-32-1 on the squared error."""

    name = "heavy_tail_regression"
    description = "Generated regression (600 x 8) with Student-t(2.5) noise, MLP 8-32-1; val_mse."
    default_epochs = 10

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        rng = _rng(8)
        x = rng.normal(0.0, 1.0, (600, 8))
        signal = np.sin(2.0 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3] ** 2 - x[:, 4]
        return x, signal + 0.5 * rng.standard_t(2.5, 600)

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))


TEST_TASKS: Mapping[str, type[Task]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            ShapesResNet,
            SequenceGRU,
            ManifoldAutoencoder,
            RatingsFactorisation,
            MotifConv1d,
            SparseLogReg,
            WideShallow,
            HeavyTailRegression,
        )
    }
)
"""The test suite by name. The first four are the model families absent from the built-ins."""

ABSENT_FAMILIES = frozenset(
    {"shapes_resnet", "sequence_gru", "manifold_autoencoder", "ratings_factorisation"}
)
