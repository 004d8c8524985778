"""Training seeds: every trial trains with a seed the service chose, reproducible from the study's
seed and the trial's number, so that a confirmation's seeds are fresh and a study can be repeated.

Kept free of torch: the API hands seeds to ask/tell clients without importing it.
"""

from __future__ import annotations

import numpy as np


def training_seed(base: int, number: int) -> int:
    """The seed of trial ``number``: distinct per trial, reproducible from the base seed."""
    return int(np.random.SeedSequence([base, number]).generate_state(1)[0])
