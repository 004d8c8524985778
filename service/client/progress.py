"""The progress bar of ``optimize(show_progress_bar=True)``: trials told of the total, and the
best value so far. tqdm is imported only when a bar is asked for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class ProgressBar:
    """A tqdm bar over the trials one optimize call tells."""

    bar: Any  # tqdm.tqdm
    metric: str
    maximize: bool
    best: float | None = None

    @classmethod
    def open(cls, study: Mapping[str, Any], n_trials: int | None) -> ProgressBar:
        """A bar of ``n_trials``, or (``None``) of the study's remaining trials, the
        confirmation's included; ``study`` is the answer of ``GET /studies/{name}``."""
        from tqdm.auto import tqdm

        if n_trials is None:
            progress = study.get("progress") or {}
            n_trials = max(0, progress.get("total", 0) - progress.get("finished", 0))
        bar = tqdm(total=n_trials, desc=study.get("name"), unit="trial", dynamic_ncols=True)
        opened = cls(
            bar,
            metric=study.get("metric") or "value",
            maximize=study.get("direction") == "maximize",
        )
        opened.advance(0, (study.get("best") or {}).get("value"))
        return opened

    def advance(self, trials: int, best_candidate: float | None) -> None:
        """``trials`` more told; ``best_candidate``: the value of a search trial told complete
        (a confirmation seed is one more run of a config already seen, not a new config)."""
        if best_candidate is not None and self._better(best_candidate):
            self.best = best_candidate
            self.bar.set_postfix_str(f"best {self.metric} {best_candidate:.6g}", refresh=False)
        self.bar.update(trials)

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.maximize else value < self.best

    def close(self) -> None:
        self.bar.close()
