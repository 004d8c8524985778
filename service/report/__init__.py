"""The study report: one self-contained HTML page (plotly figures, plotly.js inlined: it loads
nothing).

The service fills a ``StudyReport`` from its tables and Optuna and calls ``render_report``.
"""

from service.report.data import (
    FINAL_STATUSES,
    PHASES,
    OptimizerReport,
    Progress,
    StudyReport,
    TrialPoint,
)
from service.report.from_optuna import seed_curve, trial_point, trial_points
from service.report.page import render_report

__all__ = [
    "FINAL_STATUSES",
    "PHASES",
    "OptimizerReport",
    "Progress",
    "StudyReport",
    "TrialPoint",
    "render_report",
    "seed_curve",
    "trial_point",
    "trial_points",
]
