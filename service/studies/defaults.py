"""The defaults of a study request that a user reads about: one home for each, so that the API's
schema, the CLI's help and the documents all say the same (a test reads them from here)."""

from __future__ import annotations

from typing import NamedTuple


class Confirmation(NamedTuple):
    """How a study confirms: its ``top_k`` best configs per optimizer on ``seeds`` fresh seeds."""

    top_k: int
    seeds: int

    def to_json(self) -> dict[str, int]:
        return {"top_k": self.top_k, "seeds": self.seeds}

    def describe(self) -> str:
        return f'{{"top_k": {self.top_k}, "seeds": {self.seeds}}}'


# Confirmation by default: the top 2 configs of each optimizer, re-trained on 10 fresh seeds each.
# 10 seeds give the verdict's all-pairs test (studies.verdict) a 99.8% chance of finding an
# optimizer 2.5 seed standard deviations below the others among 8 (7 seeds: 94%), the gap of
# full-batch gd on digits_mlp: at 2 x 7 it was a leader in 1 of 10 studies, at 2 x 10 in none.
# Two configs, because the search's best is often tied with its second on a small validation
# set, and the tie's order can pick the weaker one (1 x 14 did, in 1 of 10 studies):
# docs/verdict.md.
DEFAULT_CONFIRM = Confirmation(top_k=2, seeds=10)
