"""The decision: per optimizer its representative config and standing, and which one wins
(rules in :mod:`studies.verdict`)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

from studies.verdict.race import Race
from studies.verdict.sentences import race_sentence, verdict_sentence
from studies.verdict.statistics import (
    DEFAULT_ALPHA,
    DEFAULT_CONFIDENCE,
    Comparison,
    Summary,
    _compare,
    direction_sign,
    finite,
    holm,
    summarize,
)

TEST = (
    "Welch's t-test, two-sided, between every pair of optimizers, Holm-corrected over all "
    "pairs; an optimizer is worse when another one is better than it beyond seed noise"
)

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Standing:
    """One optimizer in the verdict.

    Attributes:
        optimizer: Its name.
        rank: 1 for the best mean; optimizers without seeds come last with ``rank=None``.
        summary: Its figure over seeds.
        status: ``"best"``, ``"tied"`` (no other optimizer is better beyond noise),
            ``"worse"`` (some other optimizer is better beyond noise) or ``"no_seeds"``.
        comparison: Against the optimizer with a better mean that beats it most clearly (the
            smallest adjusted p-value; the best mean when no pair is testable); ``None`` for the
            best itself and without seeds.
    """

    optimizer: str
    rank: int | None
    summary: Summary
    status: str
    comparison: Comparison | None = None

    @property
    def leader(self) -> bool:
        return self.status in ("best", "tied")


@dataclass(frozen=True)
class Verdict:
    """Which optimizer is best, with confidence.

    Attributes:
        outcome: ``"winner"`` (the best beats every other beyond noise), ``"tied"`` (several
            leaders), ``"single"`` (only one optimizer has seeds) or ``"none"`` (none has).
        winner: The winner's name when ``outcome == "winner"``, else ``None``.
        leaders: The best first, then every optimizer no other beats beyond noise, by mean.
        direction: ``"maximize"`` or ``"minimize"``.
        metric: Name of the figure compared (for the sentence).
        test: The test, in words.
        alpha: Significance level of each Holm-corrected comparison.
        confidence: Level of the intervals.
        standings: Every optimizer, best mean first, those without seeds last.
        sentence: The verdict for a person, naming the test.
    """

    outcome: str
    winner: str | None
    leaders: list[str]
    direction: str
    metric: str
    test: str
    alpha: float
    confidence: float
    standings: list[Standing] = field(default_factory=list)
    sentence: str = ""
    race: dict[str, Any] | None = None

    def standing(self, optimizer: str) -> Standing:
        """The standing of ``optimizer``.

        Raises:
            KeyError: no such optimizer in the verdict.
        """
        for standing in self.standings:
            if standing.optimizer == optimizer:
                return standing
        raise KeyError(optimizer)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``json.dumps`` takes it; infinite t statistics become ``None``)."""
        return _finite_json(
            {
                **{key: value for key, value in asdict(self).items() if key != "standings"},
                "standings": [
                    {
                        "optimizer": s.optimizer,
                        "rank": s.rank,
                        "status": s.status,
                        "leader": s.leader,
                        "summary": s.summary.to_json(),
                        "comparison": None if s.comparison is None else asdict(s.comparison),
                    }
                    for s in self.standings
                ],
            }
        )


@dataclass(frozen=True)
class ConfirmedConfig:
    """One config of an optimizer re-trained on fresh seeds.

    Attributes:
        key: What identifies it to the service (e.g. the number of the search trial it came from).
        params: Its hyperparameters as the optimizer takes them (``beta1``, not
            ``one_minus_beta1``).
        python: The line of Python that builds the optimizer with them, if known.
        val: The validation metric of each finished seed (finite).
        test: The test metric of each finished seed (finite; may be empty).
    """

    key: int | str
    params: dict[str, Any]
    python: str | None
    val: tuple[float, ...]
    test: tuple[float, ...] = ()


@dataclass(frozen=True)
class OptimizerResult:
    """What stands for one optimizer: its representative config and its figures over seeds."""

    optimizer: str
    config: ConfirmedConfig | None
    val: Summary
    test: Summary


@dataclass(frozen=True)
class StudyVerdict:
    """Per optimizer its result (in the order of ``verdict.standings``), and the verdict."""

    results: list[OptimizerResult]
    verdict: Verdict
    test_metric: str | None = None

    def result(self, optimizer: str) -> OptimizerResult:
        """The result of ``optimizer``.

        Raises:
            KeyError: no such optimizer.
        """
        for result in self.results:
            if result.optimizer == optimizer:
                return result
        raise KeyError(optimizer)

    def to_json(self) -> dict[str, Any]:
        return _finite_json(
            {
                "verdict": self.verdict.to_json(),
                "test_metric": self.test_metric,
                "results": [
                    {
                        "optimizer": r.optimizer,
                        "config": None
                        if r.config is None
                        else {
                            **asdict(r.config),
                            "val": list(r.config.val),
                            "test": list(r.config.test),
                        },
                        "val": r.val.to_json(),
                        "test": r.test.to_json(),
                    }
                    for r in self.results
                ],
            }
        )


def representative_config(configs: Mapping[K, Sequence[float]], direction: str) -> K | None:
    """The config that stands for an optimizer: the best mean over its seeds.

    Configs with at least two seeds are preferred over configs with one (one value has no
    spread and may be the lucky survivor of failed seeds); configs without seeds are skipped.
    Equal means: the one with more seeds, then the first in ``configs``' order (the service
    passes them in search rank).

    Args:
        configs: Config key (e.g. the search trial number) -> its seeds' values.
        direction: ``"maximize"`` or ``"minimize"``.

    Returns:
        The key of that config, ``None`` when no config has a seed.
    """
    sign = direction_sign(direction)
    best_key: K | None = None
    best_rank: tuple[bool, float, int] | None = None
    for key, values in configs.items():
        data = finite(values)
        if not data:
            continue
        rank = (len(data) >= 2, sign * math.fsum(data) / len(data), len(data))
        if best_rank is None or rank > best_rank:
            best_key, best_rank = key, rank
    return best_key


def decide(
    values: Mapping[str, Sequence[float]],
    direction: str,
    *,
    metric: str = "value",
    alpha: float = DEFAULT_ALPHA,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Verdict:
    """The verdict over the optimizers' seed values (see the module docstring for the rules).

    Args:
        values: Optimizer name -> the values of its representative config's seeds (finite).
            An empty sequence is an optimizer without finished seeds.
        direction: ``"maximize"`` or ``"minimize"``.
        metric: Name of the figure, used in the sentence.
        alpha: Significance level of each comparison after Holm's correction.
        confidence: Level of the intervals of the summaries.

    Raises:
        ValueError: unknown direction, a non-finite value, or ``alpha`` outside (0, 1).
    """
    sign = direction_sign(direction)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    summaries = {name: summarize(seeds, confidence) for name, seeds in values.items()}
    order = {name: i for i, name in enumerate(values)}
    ranked = sorted(
        (name for name, s in summaries.items() if s.n > 0),
        key=lambda name: (-sign * summaries[name].mean, -summaries[name].n, order[name]),  # type: ignore[operator]
    )
    empty = [name for name, s in summaries.items() if s.n == 0]
    base = dict(direction=direction, metric=metric, test=TEST, alpha=alpha, confidence=confidence)
    no_seeds = [Standing(name, None, summaries[name], "no_seeds") for name in empty]
    if not ranked:
        sentence = "No verdict yet: no optimizer has a finished seed."
        return Verdict("none", None, [], standings=no_seeds, sentence=sentence, **base)
    best = ranked[0]
    # Every pair, the better mean first; Holm over the testable ones.
    pairs = [
        _compare(a, summaries[a], b, summaries[b], direction)
        for i, a in enumerate(ranked)
        for b in ranked[i + 1 :]
    ]
    testable = [c for c in pairs if c.testable]
    adjusted = iter(holm([c.p_value for c in testable]))  # type: ignore[misc]
    judged = []
    for c in pairs:
        if c.testable:
            p_adjusted = next(adjusted)
            c = replace(c, p_adjusted=p_adjusted, significant=p_adjusted <= alpha)
        judged.append(c)
    standings = [Standing(best, 1, summaries[best], "best")]
    for rank, name in enumerate(ranked[1:], start=2):
        c = _strongest(name, best, judged)
        standings.append(Standing(name, rank, summaries[name], _status(name, judged), c))
    standings += no_seeds
    leaders = [s.optimizer for s in standings if s.leader]
    if len(ranked) == 1:
        outcome, winner = "single", None
    elif len(leaders) == 1:
        outcome, winner = "winner", best
    else:
        outcome, winner = "tied", None
    verdict = Verdict(outcome, winner, leaders, standings=standings, **base)
    return replace(verdict, sentence=verdict_sentence(verdict))


def _status(name: str, pairs: Sequence[Comparison]) -> str:
    """``"worse"`` when some optimizer beats ``name`` beyond noise, else ``"tied"``."""
    return "worse" if any(c.other == name and c.significant for c in pairs) else "tied"


def _strongest(name: str, best: str, pairs: Sequence[Comparison]) -> Comparison:
    """The comparison shown for ``name``: against the better optimizer with the smallest
    adjusted p-value (ties: the best mean first, then by mean); against the best mean when no
    pair of ``name`` is testable."""
    against = [c for c in pairs if c.other == name]
    testable = [c for c in against if c.testable]
    if not testable:
        return next(c for c in against if c.best == best)
    return min(testable, key=lambda c: c.p_adjusted)  # type: ignore[arg-type,return-value]


def _finite_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(item) for item in value]
    return value


def study_verdict(
    configs: Mapping[str, Sequence[ConfirmedConfig]],
    direction: str,
    *,
    metric: str = "value",
    test_metric: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    confidence: float = DEFAULT_CONFIDENCE,
) -> StudyVerdict:
    """Pick each optimizer's representative config and decide on their validation seeds.

    Args:
        configs: Optimizer name -> its confirmed configs, in search rank (best first); an
            optimizer with no config (or no finished seed) is listed without seeds.
        direction: Direction of the validation metric.
        metric: Name of the validation metric (for the sentence).
        test_metric: Name of the test metric (shown beside it).
        alpha: See ``decide``.
        confidence: See ``decide``.
    """
    chosen: dict[str, ConfirmedConfig | None] = {}
    for optimizer, candidates in configs.items():
        key = representative_config({i: c.val for i, c in enumerate(candidates)}, direction)
        chosen[optimizer] = None if key is None else candidates[key]
    verdict = decide(
        {name: () if c is None else c.val for name, c in chosen.items()},
        direction,
        metric=metric,
        alpha=alpha,
        confidence=confidence,
    )
    results = [
        OptimizerResult(
            optimizer=s.optimizer,
            config=chosen[s.optimizer],
            val=s.summary,
            test=summarize(_test_values(chosen[s.optimizer]), confidence),
        )
        for s in verdict.standings
    ]
    return StudyVerdict(results, verdict, test_metric)


def _test_values(config: ConfirmedConfig | None) -> tuple[float, ...]:
    return () if config is None else config.test


RACE_STATUSES = {"worse": "worse", "no_seeds": "no_seeds", "racing": "racing"}
"""How an optimizer's state in the race reads as its standing (a leader is ``best`` or ``tied``)."""


def race_verdict(
    race: Race,
    configs: Mapping[str, ConfirmedConfig | None],
    *,
    metric: str = "value",
    test_metric: str | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> StudyVerdict:
    """The verdict of a confirmation that ran as a race: the race's own decisions, one source
    (running :func:`decide` again on the same seeds would test at other levels and could
    disagree). Standings are ordered leaders first, then by mean; a pair's p-value is its
    Welch test's at the look that decided it.

    Args:
        race: The race as its seeds stand (:func:`studies.verdict.judge_race`).
        configs: Per optimizer of the race, its representative config (``None``: none ran).
        metric: Name of the validation metric.
        test_metric: Name of the test metric.
        confidence: Level of the intervals.
    """
    sign = direction_sign(race.direction)
    summaries = {
        name: summarize(() if configs.get(name) is None else configs[name].val, confidence)
        for name in race.optimizers
    }
    order = list(race.optimizers)

    def rank_key(name: str) -> tuple[int, float, int]:
        mean = summaries[name].mean
        return (name not in race.leaders, -sign * mean if mean is not None else math.inf,
                order.index(name))  # fmt: skip

    ranked = sorted(race.optimizers, key=rank_key)
    best = ranked[0]
    standings = []
    for position, name in enumerate(ranked, start=1):
        state = race.optimizers[name]
        if state.status == "leader":
            status = "best" if name == best else "tied"
        else:
            status = RACE_STATUSES.get(state.status, state.status)
        comparison = None if name == best else _race_comparison(race, name, best)
        rank = position if summaries[name].n else None
        standings.append(Standing(name, rank, summaries[name], status, comparison))
    if not race.settled:
        outcome, winner = "racing", None
    elif race.winner is not None:
        outcome, winner = "winner", race.winner
    elif len(race.leaders) > 1:
        outcome, winner = "tied", None
    else:
        outcome, winner = ("single" if race.leaders else "none"), None
    verdict = Verdict(
        outcome=outcome,
        winner=winner,
        leaders=list(race.leaders),
        direction=race.direction,
        metric=metric,
        test=race.method,
        alpha=race.design.alpha,
        confidence=confidence,
        standings=standings,
        sentence=race_sentence(
            race, metric, {best: summaries[best]} if summaries[best].n else None
        ),
        race=race.to_json(),
    )
    results = [
        OptimizerResult(
            optimizer=s.optimizer,
            config=configs.get(s.optimizer),
            val=s.summary,
            test=summarize(_test_values(configs.get(s.optimizer)), confidence),
        )
        for s in standings
    ]
    return StudyVerdict(results, verdict, test_metric)


def _race_comparison(race: Race, name: str, best: str) -> Comparison | None:
    """The pair that decided ``name``'s standing: one that beats it, else its pair with the best."""
    pairs = [p for p in race.pairs if p.involves(name)]
    beaten = [p for p in pairs if p.outcome == "better" and p.b == name]
    pair = min(beaten, key=lambda p: p.p_difference or 0.0) if beaten else next(
        (p for p in pairs if p.involves(best)), None
    )  # fmt: skip
    if pair is None:
        return None
    return Comparison(
        best=pair.a,
        other=pair.b,
        difference=pair.difference if pair.difference is not None else math.nan,
        statistic=None,
        df=None,
        p_one_sided=None,
        p_value=pair.p_difference,
        p_adjusted=pair.p_difference,
        significant=pair.outcome == "better",
        note=f"race: {pair.outcome.replace('_', ' ')} at {pair.decided_at} seeds"
        if pair.decided_at is not None
        else f"race: {pair.outcome.replace('_', ' ')}",
    )
