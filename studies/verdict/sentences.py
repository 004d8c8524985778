"""The verdict in words: the sentence a person reads, and how a mean with its interval is
written."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from studies.verdict.statistics import Summary

if TYPE_CHECKING:
    from studies.verdict.decision import Verdict
    from studies.verdict.race import Race

TEST_SHORT = "Welch's t-test, Holm-corrected"


def verdict_sentence(verdict: Verdict) -> str:
    """The verdict in one or two sentences, with the figures and the test."""
    level = f"{1 - verdict.alpha:.0%}"
    better = "higher" if verdict.direction == "maximize" else "lower"
    if verdict.outcome == "none":
        return "No verdict yet: no optimizer has a finished seed."
    best = verdict.standings[0]
    figure = f"{verdict.metric} {figure_of(best.summary)}"
    if verdict.outcome == "single":
        return (
            f"Only {best.optimizer} has finished seeds ({figure}); there is nothing to compare "
            "it with."
        )
    runner_up = verdict.standings[1]
    assert runner_up.comparison is not None
    test = f"{TEST_SHORT}, {level}"
    if verdict.outcome == "winner":
        return (
            f"{best.optimizer} wins: {figure}, {better} than every other optimizer beyond seed "
            f"noise ({test}). Runner-up: {runner_up.optimizer}, {figure_of(runner_up.summary)}, "
            f"{_p(runner_up.comparison.p_adjusted)}."
        ) + _not_compared(verdict)
    tied = [s for s in verdict.standings if s.status == "tied"]
    worse = [s.optimizer for s in verdict.standings if s.status == "worse"]
    untestable = [s.optimizer for s in tied if s.comparison and not s.comparison.testable]
    text = (
        f"No single winner: {_join(verdict.leaders)} are tied, none worse than the best mean "
        f"beyond seed noise ({test}). Best mean: {best.optimizer}, {figure}."
    )
    if untestable:
        text += f" {_join(untestable)}: one seed only, not testable."
    if worse:
        text += f" Worse beyond noise: {_join(worse)}."
    return text + _not_compared(verdict)


def _not_compared(verdict: Verdict) -> str:
    """Every optimizer without a finished seed, named: none is ever dropped silently."""
    missing = [s.optimizer for s in verdict.standings if s.status == "no_seeds"]
    if not missing:
        return ""
    return f" Not compared: {_join(missing)} (no finished confirmation seed)."


def format_mean(summary: Summary) -> str:
    """``0.9769 ± 0.0045``: the mean to the precision of its interval's half-width (two
    significant digits); the mean alone (4 significant digits) without an interval."""
    if summary.mean is None:
        return "n/a"
    half = summary.half_width
    if half is None or half == 0 or not math.isfinite(half):
        return _number(summary.mean) if half is None else f"{_number(summary.mean)} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(half)))
    if decimals > 6 or abs(summary.mean) >= 1e5:
        return f"{_number(summary.mean)} ± {half:.2g}"
    return f"{summary.mean:.{decimals}f} ± {half:.{decimals}f}"


def figure_of(summary: Summary) -> str:
    """``0.9769 ± 0.0045 (95% CI, 5 seeds)``."""
    if summary.half_width is None:
        return f"{format_mean(summary)} ({summary.n} seed{'s' * (summary.n != 1)}, no interval)"
    return f"{format_mean(summary)} ({summary.confidence:.0%} CI, {summary.n} seeds)"


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"


def _p(value: float | None) -> str:
    if value is None:
        return "p n/a"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _join(names: Sequence[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def race_sentence(
    race: Race, metric: str = "value", figures: Mapping[str, Summary] | None = None
) -> str:
    """The race in words: where it stands, which pairs are better, tied within the margin (the
    margin stated) or not separable within the cap, and which optimizer stopped when and why."""
    margin = f"±{_number(race.design.equivalence)} {metric}"
    cap = race.design.cap
    order = list(race.optimizers)
    losers: dict[str, list[str]] = {}
    for p in race.pairs:
        if p.outcome == "better":
            losers.setdefault(p.b, []).append(p.a)
    better = [f"{_join(winners)} over {loser}" for loser, winners in losers.items()]
    tied = _grouped([(p.a, p.b) for p in race.pairs if p.outcome == "tied"], order)
    out = {name for name, o in race.optimizers.items() if o.status in ("worse", "no_seeds")}
    # Pairs left open only because one side dropped out say nothing about the leaders.
    open_pairs = [
        (p.a, p.b)
        for p in race.pairs
        if p.outcome in ("open", "not_separable") and p.a not in out and p.b not in out
    ]
    contenders = len(order) - len(out)
    if contenders > 2 and len(open_pairs) == contenders * (contenders - 1) // 2:
        unsure = f"all {len(open_pairs)} pairs of {_join([n for n in order if n not in out])}"
    else:
        unsure = _grouped(open_pairs, order)
    if race.settled:
        if race.winner is not None:
            head = f"Race settled: {race.winner} wins, better than every other beyond noise."
        elif race.leaders:
            verb = "leads, not beaten" if len(race.leaders) == 1 else "lead, none beaten"
            head = f"Race settled: {_join(race.leaders)} {verb} beyond noise."
        else:
            head = "Race settled without a finished seed."
    else:
        racing = [name for name, o in race.optimizers.items() if o.status == "racing"]
        step = race.design.looks[race.looks_done]
        head = f"Race on: {_join(racing)} get seeds up to {step}."
    parts = [head]
    # ``figures``: the best mean's, when the caller has the seeds' summaries.
    for best, summary in (figures or {}).items():
        parts.append(f"Best mean: {best}, {metric} {figure_of(summary)}.")
    if better:
        parts.append(f"Better beyond noise: {'; '.join(better)}.")
    if tied:
        parts.append(f"Tied within the margin of {margin}: {tied}.")
    if unsure:
        label = "Not separable within the cap of" if race.settled else "Still open at"
        seeds = cap if race.settled else race.design.looks[max(0, race.looks_done - 1)]
        # The margin is stated whatever the outcome: it is what "tied" would have meant.
        within = "" if tied else f" (neither better nor within the margin of {margin})"
        parts.append(f"{label} {seeds} seeds{within}: {unsure}.")
    for name, o in race.optimizers.items():
        early = o.stopped_at_seeds is not None and o.stopped_at_seeds < cap
        if o.status in ("worse", "no_seeds") or (o.status == "leader" and early):
            parts.append(f"{name}: {o.reason}.")
    parts.append(f"({race.method}.)")
    return " ".join(parts)


def _grouped(pairs: Sequence[tuple[str, str]], order: Sequence[str]) -> str:
    """``a with b and c; b with c``: pairs grouped by their first optimizer in ``order``."""
    rank = {name: i for i, name in enumerate(order)}
    groups: dict[str, list[str]] = {}
    for a, b in pairs:
        first, second = sorted((a, b), key=lambda name: rank.get(name, len(rank)))
        groups.setdefault(first, []).append(second)
    return "; ".join(
        f"{first} with {_join(sorted(others, key=lambda name: rank.get(name, len(rank))))}"
        for first, others in sorted(groups.items(), key=lambda item: rank.get(item[0], len(rank)))
    )
