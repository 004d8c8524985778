"""The verdict of a study: per optimizer, a figure with its spread over seeds, and which one wins.

Pure functions on plain values; the service reads the seeds' values from its tables and Optuna.

1. ``summarize(values)``: n, mean, sample standard deviation and a Student-t confidence interval
   of the mean (95% by default). One value has no spread: its std and interval are ``None``,
   never a made-up zero.
2. ``representative_config(configs, direction)``: of the configs of one optimizer re-trained on
   several seeds, the one with the best mean (configs with at least two seeds first: a config
   whose other seeds failed is not allowed to win on one lucky value). The best of k means is
   a little optimistic (chosen on the seeds it is then reported with); every optimizer is
   picked the same way, so the comparison between them stays fair.
3. ``decide(values_by_optimizer, direction)``: the leaders are the optimizers that no other
   optimizer beats beyond seed noise; the one with the best mean is the winner only when it is
   the only leader (it beats every other one beyond noise), otherwise the leaders are tied.

The test (``TEST``): Welch's t-test (unequal variances, two-sided) between every pair of
optimizers, Holm's step-down correction over all the pairs, and a pair is a difference when its
adjusted p-value is at most ``alpha`` (0.05: "at 95%"). Every pair is tested, so which optimizer
came out best is not chosen after seeing the means and needs no extra correction; Holm bounds the
chance of any false "worse" (or of a false winner) at ``alpha`` whatever the number of optimizers.
(Testing only against the best mean, p doubled, Holm over the k - 1 comparisons, called some
equal optimizer worse in 7.4% of simulated studies of 8 equal optimizers at 5 seeds and 11% at 10,
above its stated 5%: the best mean is the largest of 8, and doubling pays for a choice among 2.)

Edge cases, decided:

- No finished seed (n = 0): the optimizer is listed last with ``status="no_seeds"`` and is never
  a leader or the winner.
- One seed (n = 1), on either side of a comparison: there is no variance to test with, so the
  pair is ``untestable`` (p-values ``None``) and left out of Holm's family. It is not a
  significant difference, so such an optimizer stays among the leaders and no winner is
  declared: one seed cannot show anything, for it or against it.
- Zero variance on both sides (every seed gives the same value, e.g. identical accuracies), n >= 2
  each: the standard error is 0. A different mean is then exact on every seed tried: p = 0, a
  significant difference. An equal mean is no evidence either way: one-sided p = 0.5 (the limit
  of t = 0), a tie. Zero variance on one side only is ordinary Welch (the other side's variance
  and degrees of freedom).
- Ties of means: the best is the first in (mean, more seeds, then the order given); tied means
  give t = 0, a two-sided p of 1, so they are always tied leaders whichever is listed first.
- One optimizer with seeds (others have none): ``outcome="single"``, no winner claimed.
- Values must be finite: a seed that diverged is the caller's to count (as its last finite figure
  or as missing), never silently a NaN here.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

from scipy import special

DIRECTIONS = ("maximize", "minimize")
DEFAULT_ALPHA = 0.05
DEFAULT_CONFIDENCE = 0.95
TEST = (
    "Welch's t-test, two-sided, between every pair of optimizers, Holm-corrected over all "
    "pairs; an optimizer is worse when another one is better than it beyond seed noise"
)
TEST_SHORT = "Welch's t-test, Holm-corrected"

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Summary:
    """Mean and spread of one figure over seeds.

    Attributes:
        n: Number of seeds.
        mean: Their mean; ``None`` when n = 0.
        std: Sample standard deviation (ddof = 1); ``None`` when n < 2.
        ci_low: Lower end of the Student-t confidence interval of the mean; ``None`` when n < 2.
        ci_high: Upper end; ``None`` when n < 2.
        confidence: Level of the interval (0.95).
        values: The seeds' values, in the order given.
    """

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float = DEFAULT_CONFIDENCE
    values: tuple[float, ...] = ()

    @property
    def half_width(self) -> float | None:
        """Half the width of the interval (the "±" figure); ``None`` when there is none."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "values": list(self.values), "half_width": self.half_width}


@dataclass(frozen=True)
class Comparison:
    """One pair of optimizers, on the seeds' values: the better mean against the other.

    Attributes:
        best: The optimizer of the pair with the better mean (in a standing: the optimizer that
            beats this one most clearly, usually the best mean of all).
        other: The optimizer compared with it.
        difference: How much better ``best``'s mean is, in the metric's units and >= 0
            (best - other when maximizing, other - best when minimizing).
        statistic: Welch's t (of that difference); ``None`` when untestable, ``inf`` when both
            sides have zero variance and the means differ.
        df: Welch-Satterthwaite degrees of freedom; ``None`` when untestable or undefined.
        p_one_sided: P(a difference this large | ``best`` is not better), one-sided.
        p_value: The two-sided p-value (``p_one_sided`` doubled, capped at 1).
        p_adjusted: ``p_value`` after Holm's correction over all testable pairs.
        significant: ``p_adjusted <= alpha``: ``other`` is worse than ``best`` beyond noise.
        note: Why the pair could not be tested, or what was special about it; else "".
    """

    best: str
    other: str
    difference: float
    statistic: float | None
    df: float | None
    p_one_sided: float | None
    p_value: float | None
    p_adjusted: float | None
    significant: bool
    note: str = ""

    @property
    def testable(self) -> bool:
        return self.p_value is not None


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


def summarize(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> Summary:
    """Mean, sample standard deviation and Student-t interval of the mean of ``values``.

    Args:
        values: Finite floats (one per seed), any length.
        confidence: Level of the interval, in (0, 1).

    Raises:
        ValueError: a value is not finite, or ``confidence`` is outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    data = _finite(values)
    n = len(data)
    if n == 0:
        return Summary(0, None, None, None, None, confidence)
    # Equal values have exactly that mean and no spread (fsum / n can be off by an ulp, which
    # would give a spurious spread of 1e-17 and an absurd t statistic).
    mean = data[0] if min(data) == max(data) else math.fsum(data) / n
    if n == 1:
        return Summary(1, mean, None, None, None, confidence, data)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in data) / (n - 1))
    half = float(special.stdtrit(n - 1, 0.5 + confidence / 2)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, confidence, data)


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
    sign = _sign(direction)
    best_key: K | None = None
    best_rank: tuple[bool, float, int] | None = None
    for key, values in configs.items():
        data = _finite(values)
        if not data:
            continue
        rank = (len(data) >= 2, sign * math.fsum(data) / len(data), len(data))
        if best_rank is None or rank > best_rank:
            best_key, best_rank = key, rank
    return best_key


def compare(
    best: str,
    best_values: Sequence[float],
    other: str,
    other_values: Sequence[float],
    direction: str,
) -> Comparison:
    """Welch's test of ``best`` against ``other`` (Holm not applied yet): the one-sided p-value
    that ``best`` is better and the two-sided one (``best`` should have the better mean).

    ``p_adjusted`` and ``significant`` of the result are provisional (``p_value`` and
    ``p_value <= DEFAULT_ALPHA``); ``decide`` sets them after Holm's correction.
    """
    return _compare(best, summarize(best_values), other, summarize(other_values), direction)


def _compare(best: str, a: Summary, other: str, b: Summary, direction: str) -> Comparison:
    if a.mean is None or b.mean is None:
        raise ValueError("both optimizers need at least one value")
    difference = _sign(direction) * (a.mean - b.mean)
    if a.n < 2 or b.n < 2:
        lonely = [name for name, s in ((best, a), (other, b)) if s.n < 2]
        note = f"untestable: {' and '.join(lonely)} has one seed, so no spread to test against"
        return Comparison(best, other, difference, None, None, None, None, None, False, note)
    assert a.std is not None and b.std is not None
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        # Every seed of both gave one value: the difference (or its absence) is exact.
        statistic, df = (math.inf if difference > 0 else 0.0), None
        p_one = 0.0 if difference > 0 else 0.5
        note = "zero variance on both sides: every seed gave the same value"
    else:
        statistic = difference / se
        df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
        p_one = float(special.stdtr(df, -statistic))  # Student-t survival function
        note = ""
    p_value = min(1.0, 2.0 * p_one)
    return Comparison(
        best, other, difference, statistic, df, p_one, p_value, p_value,
        p_value <= DEFAULT_ALPHA, note,
    )  # fmt: skip


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * p_values[i]))
        adjusted[i] = running
    return adjusted


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
    sign = _sign(direction)
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


def verdict_sentence(verdict: Verdict) -> str:
    """The verdict in one or two sentences, with the figures and the test."""
    level = f"{1 - verdict.alpha:.0%}"
    better = "higher" if verdict.direction == "maximize" else "lower"
    if verdict.outcome == "none":
        return "No verdict yet: no optimizer has a finished seed."
    best = verdict.standings[0]
    figure = f"{verdict.metric} {_figure(best.summary)}"
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
            f"noise ({test}). Runner-up: {runner_up.optimizer}, {_figure(runner_up.summary)}, "
            f"{_p(runner_up.comparison.p_adjusted)}."
        )
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
    return text


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


def _figure(summary: Summary) -> str:
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


def _sign(direction: str) -> float:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    return 1.0 if direction == "maximize" else -1.0


def _finite(values: Sequence[float]) -> tuple[float, ...]:
    data = tuple(float(v) for v in values)
    bad = [v for v in data if not math.isfinite(v)]
    if bad:
        raise ValueError(f"values must be finite (count a diverged seed before), got {bad}")
    return data


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
