"""What a study tries first: the shipped portfolio (learned offline, shipped as data) and the
known configs of earlier studies, fitted to the study's space.

- :mod:`studies.warm_start.configs`: which configs a new study tries, in order, fitted to its space;
- :mod:`studies.warm_start.portfolio`: the portfolio's data and how it is scored and chosen;
- :mod:`studies.warm_start.learn`: the script that learns it (``python -m
studies.warm_start.learn``).
"""

from studies.warm_start.configs import (
    CATALOGUE_CONFIGS,
    MAX_WARM_START,
    ORIGIN_ATTR,
    ORIGINS,
    PORTFOLIO_SOURCE,
    SOURCE_ATTR,
    WARM_START_SHARE,
    KnownConfig,
    Origin,
    WarmStartConfig,
    enqueue_warm_start,
    fit_to_space,
    record_origin,
    warm_start_budget,
    warm_start_configs,
)
from studies.warm_start.portfolio import (
    Evaluations,
    PortfolioError,
    greedy_portfolio,
    learn_portfolio,
    leave_one_task_out,
    load_evaluations,
    load_portfolio,
    parse_portfolio,
    rank_scores,
    score_matrix,
)

__all__ = [
    "CATALOGUE_CONFIGS",
    "MAX_WARM_START",
    "ORIGINS",
    "ORIGIN_ATTR",
    "PORTFOLIO_SOURCE",
    "SOURCE_ATTR",
    "WARM_START_SHARE",
    "Evaluations",
    "KnownConfig",
    "Origin",
    "PortfolioError",
    "WarmStartConfig",
    "enqueue_warm_start",
    "fit_to_space",
    "greedy_portfolio",
    "learn_portfolio",
    "leave_one_task_out",
    "load_evaluations",
    "load_portfolio",
    "parse_portfolio",
    "rank_scores",
    "record_origin",
    "score_matrix",
    "warm_start_budget",
    "warm_start_configs",
]
