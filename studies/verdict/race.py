"""Confirmation as a race: seeds go only where the answer is still open.

The optimizers' representative configs are re-trained in ROUNDS of seeds. The race looks at the
seeds at fixed seed counts per optimizer, the looks (3, 5, 7 and 10 by default; the last is the
cap). At each look, for every pair of optimizers still in question it asks two questions of the
seeds' values:

- is one better than the other beyond noise? Welch's t-test, two-sided, of "no difference";
- is their difference within the practical-equivalence margin ``equivalence`` (in the metric's
  units, ±margin)? Two one-sided Welch t-tests (TOST) of "the difference is at least the margin",
  the p-value being the larger of the two.

A pair ends ``better`` (the first test rejects), ``tied`` (the second one rejects; when both do,
the difference is real but smaller than the margin, and the pair is ``tied``), or stays ``open``;
pairs still open after the last look end ``not_separable`` (not separable within the cap).

The error rate, over all rounds and all pairs: the chance that the race makes any false claim,
``better`` for a pair of equal optimizers (or in the wrong direction) or ``tied`` for a pair that
differs by the margin or more, is at most ``alpha`` (0.05). How:

1. Alpha is spent over the looks by the Lan-DeMets O'Brien-Fleming-type function
   ``f(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t))`` of the information fraction
   ``t = seeds / cap``: look k may spend ``f(t_k) - f(t_{k-1})`` (for 3, 5, 7, 10 seeds and
   alpha 0.05: 0.00035, 0.0052, 0.0136, 0.0309), which sum to alpha. Early looks spend almost
   nothing, so only a glaring difference stops an optimizer after 3 seeds.
2. At look k, each of the pair's two tests runs at level ``spent_k / m``, m the number of pairs
   of the race (28 for 8 optimizers): Bonferroni over pairs and over looks. A pair makes one
   claim at most, and whatever its true difference the chance that a test at level ``a`` makes
   it a false one is at most ``a``: with a true difference of 0 only ``better`` is false; of
   at least the margin, a false ``tied`` and a ``better`` in the wrong direction both need the
   estimate a one-sided critical value below the margin (one event, same standard error and
   degrees of freedom); in between, only a wrong direction is false. So the union bound over
   the m pairs and K looks gives at most ``sum_k m * spent_k / m = alpha``
   whatever the optimizers' true means and whichever pairs are still tested at each look. For
   that, a pair is tested at look k only while both its optimizers race, each on exactly its
   first ``looks[k]`` seeds (failed seeds count as seeds without a value), so a test's data
   never depends on earlier decisions; a pair one of whose optimizers stopped keeps its last
   outcome. Nominal p-values (Welch's, approximate as always) are compared with these levels:
   the bound needs no independence between looks, which makes it conservative (exact
   group-sequential boundaries would use the correlation between looks and give the last look
   a higher nominal level), but robust to optimizers stopping and to failed seeds.

   Why not Holm over the pairs at each look (what the issue proposed): declaring a pair
   ``better`` does not make its equivalence hypothesis false, nor the reverse, so a step-down
   that shrinks the family as pairs resolve is not valid for the two kinds of claim together
   (the closed test it shortcuts gives back Bonferroni); and to find one optimizer worse only
   its first rejected pair matters, which Holm tests at the same level as Bonferroni anyway.

Who gets seeds:

- an optimizer worse than another one beyond noise stops (status ``"worse"``);
- an optimizer none of whose pairs with optimizers still in contention (not ``"worse"``) is
  open stops (status ``"leader"`` when no other optimizer beats it);
- the others go on to the next look; at the cap everyone stops, and the race is settled.

A stopped optimizer's figures are frozen at the seeds it had at its last look, and its pairs
are no longer tested. Those left open do not matter for the verdict: a leader stops only once
its pairs with every optimizer still in contention are decided, so its open pairs are with
worse ones; a worse one is out whatever its other pairs say. They end ``not_separable``.

The race is a pure function of the seeds' values: :func:`judge_race` replays every look from the
values in seed order, so the caller keeps no state and the same values give the same race.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy import special

from studies.verdict.statistics import DEFAULT_ALPHA, direction_sign, summarize

DEFAULT_LOOKS = (3, 5, 7, 10)
OUTCOMES = ("better", "tied", "open", "not_separable")
STATUSES = ("racing", "worse", "leader", "no_seeds")
ACCURACY_MARGIN = 0.005  # half a percentage point
RELATIVE_MARGIN = 0.01  # 1% of the best value's magnitude

METHOD = (
    "Welch's t-test (better) and two one-sided tests against the margin (tied) per pair, "
    "at looks of {looks} seeds, O'Brien-Fleming-type alpha spending over the looks and "
    "Bonferroni over the {pairs} pairs: at most {alpha:.0%} chance of any false claim"
)


@dataclass(frozen=True)
class RaceDesign:
    """How the race looks at its seeds, fixed before the first seed.

    Attributes:
        equivalence: The practical-equivalence margin, in the metric's units (> 0 to allow
            ``tied``; 0 never declares a tie). See :func:`default_equivalence`.
        looks: Seed counts per optimizer at which the race decides, increasing, the first at
            least 2 (a spread needs two seeds); the last is the cap.
        alpha: Chance of any false claim over the whole race.
    """

    equivalence: float
    looks: tuple[int, ...] = DEFAULT_LOOKS
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self) -> None:
        if not (math.isfinite(self.equivalence) and self.equivalence >= 0.0):
            raise ValueError(f"equivalence must be finite and >= 0, got {self.equivalence!r}")
        looks = tuple(self.looks)
        if not looks or looks[0] < 2 or any(b <= a for a, b in itertools.pairwise(looks)):
            raise ValueError(f"looks must increase from at least 2 seeds, got {self.looks!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        object.__setattr__(self, "looks", looks)

    @property
    def cap(self) -> int:
        return self.looks[-1]

    def spent(self) -> tuple[float, ...]:
        """Alpha spent at each look (Lan-DeMets O'Brien-Fleming type), summing to ``alpha``."""
        z = float(special.ndtri(1.0 - self.alpha / 2.0))
        cumulative = [
            2.0 - 2.0 * float(special.ndtr(z / math.sqrt(n / self.cap))) for n in self.looks[:-1]
        ]
        cumulative.append(self.alpha)  # f(1) = alpha exactly, not up to rounding
        return tuple(b - a for a, b in itertools.pairwise([0.0, *cumulative]))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "looks": list(self.looks)}


@dataclass(frozen=True)
class PairResult:
    """One pair of optimizers as the race left it.

    Attributes:
        a: The optimizer with the better mean (at the pair's last test).
        b: The other one.
        outcome: ``"better"`` (``a`` beats ``b`` beyond noise), ``"tied"`` (their difference is
            within ±equivalence), ``"open"`` (the race goes on) or ``"not_separable"`` (still
            open when the race stopped testing it).
        difference: How much better ``a``'s mean is, >= 0, in the metric's units; ``None``
            while a side has no finished seed.
        interval: 95% Welch interval of that difference; ``None`` with fewer than 2 seeds a side.
        p_difference: Two-sided Welch p-value of "no difference" at the last test.
        p_equivalence: TOST p-value of "the difference is at least the margin".
        level: The level both p-values were compared with at that look (spent / pairs).
        seeds: Finished seeds of ``a`` and ``b`` at the last test.
        decided_at: Seeds per optimizer of the look that decided it (for ``better`` and
            ``tied``), or of the last look that tested it.
    """

    a: str
    b: str
    outcome: str
    difference: float | None = None
    interval: tuple[float, float] | None = None
    p_difference: float | None = None
    p_equivalence: float | None = None
    level: float | None = None
    seeds: tuple[int, int] = (0, 0)
    decided_at: int | None = None

    def involves(self, name: str) -> bool:
        return name in (self.a, self.b)

    def other(self, name: str) -> str:
        return self.b if name == self.a else self.a


@dataclass(frozen=True)
class OptimizerRace:
    """One optimizer in the race.

    Attributes:
        status: ``"racing"`` (gets the next round's seeds), ``"worse"`` (stopped: another one is
            better beyond noise), ``"leader"`` (stopped or settled, and no other one beats it)
            or ``"no_seeds"`` (settled without a finished seed; never a leader).
        seeds: Seeds tried so far (finished or failed).
        finished: Of those, the finished ones (with a value).
        mean: Mean of the finished seeds the race judged it on; ``None`` without one.
        stopped_at_seeds: The look (seed count) at which it stopped; ``None`` while racing.
        reason: Why it stopped or goes on, in a sentence.
    """

    status: str
    seeds: int
    finished: int
    mean: float | None
    stopped_at_seeds: int | None
    reason: str


@dataclass(frozen=True)
class Race:
    """The race after the looks its seeds reached.

    Attributes:
        direction: ``"maximize"`` or ``"minimize"``.
        design: The looks, alpha and margin.
        looks_done: How many looks the seeds reached (0: not even the first).
        optimizers: Name -> its state, in the order given.
        pairs: Every pair, in the order of the optimizers given.
        settled: No optimizer races any more (every pair decided, or the cap reached).
        next_seeds: Name -> seeds it still needs to reach the next look (0 when stopped).
        leaders: Optimizers no other one beats beyond noise (once settled: the verdict's
            leaders; ``"no_seeds"`` ones excluded).
        winner: The one leader, when settled with exactly one.
        method: The tests and error control, in words.
    """

    direction: str
    design: RaceDesign
    looks_done: int
    optimizers: dict[str, OptimizerRace]
    pairs: list[PairResult]
    settled: bool
    next_seeds: dict[str, int]
    leaders: list[str] = field(default_factory=list)
    winner: str | None = None
    method: str = ""

    def pair(self, a: str, b: str) -> PairResult:
        """The pair of ``a`` and ``b``, in either order.

        Raises:
            KeyError: no such pair.
        """
        for pair in self.pairs:
            if {pair.a, pair.b} == {a, b}:
                return pair
        raise KeyError((a, b))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_json` reads it back."""
        return {
            "direction": self.direction,
            "design": self.design.to_json(),
            "looks_done": self.looks_done,
            "optimizers": {name: asdict(o) for name, o in self.optimizers.items()},
            "pairs": [
                {
                    **asdict(p),
                    "interval": None if p.interval is None else list(p.interval),
                    "seeds": list(p.seeds),
                }
                for p in self.pairs
            ],
            "settled": self.settled,
            "next_seeds": dict(self.next_seeds),
            "leaders": list(self.leaders),
            "winner": self.winner,
            "method": self.method,
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Race:
        design = payload["design"]
        return cls(
            direction=payload["direction"],
            design=RaceDesign(design["equivalence"], tuple(design["looks"]), design["alpha"]),
            looks_done=payload["looks_done"],
            optimizers={name: OptimizerRace(**o) for name, o in payload["optimizers"].items()},
            pairs=[
                PairResult(
                    **{
                        **p,
                        "interval": None if p["interval"] is None else tuple(p["interval"]),
                        "seeds": tuple(p["seeds"]),
                    }
                )
                for p in payload["pairs"]
            ],
            settled=payload["settled"],
            next_seeds=dict(payload["next_seeds"]),
            leaders=list(payload["leaders"]),
            winner=payload["winner"],
            method=payload["method"],
        )


def default_equivalence(metric: str, values: Iterable[float], direction: str) -> float:
    """The practical-equivalence margin when the user sets none, in the metric's units.

    - An accuracy (a name with a token ``acc`` or ending in ``accuracy``, e.g. ``val_accuracy``,
      ``top1_acc``) whose values all lie in [0, 1]: 0.005, half a percentage point (on a
      validation set of 359 images, under two images).
    - Anything else: 1% of the magnitude of the best value (a loss of 0.30 gets ±0.003); 0 when
      the best value is 0, where no tie can be declared (set ``"confirm": {"equivalence": ...}``).

    Args:
        metric: The metric's name.
        values: Figures known before the race, e.g. the finished search trials' values (so the
            margin is fixed before the first confirmation seed).
        direction: ``"maximize"`` or ``"minimize"``.

    Raises:
        ValueError: no finite value, or an unknown direction.
    """
    sign = direction_sign(direction)
    data = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not data:
        raise ValueError("default_equivalence needs at least one finite value")
    tokens = [token for token in re.split(r"[^a-z0-9]+", metric.lower()) if token]
    accuracy = any(token == "acc" or token.endswith("accuracy") for token in tokens)
    if accuracy and all(0.0 <= v <= 1.0 for v in data):
        return ACCURACY_MARGIN
    best = max(data, key=lambda v: sign * v)
    return RELATIVE_MARGIN * abs(best)


def race_design(
    confirm: Mapping[str, Any], metric: str, values: Iterable[float], direction: str
) -> RaceDesign:
    """The race's design from a study request's ``"confirm"`` object: ``equivalence`` (else
    :func:`default_equivalence` of the metric and ``values``), ``looks`` and ``alpha`` (else
    the defaults).

    Raises:
        ValueError: a value the design refuses (see :class:`RaceDesign`).
    """
    equivalence = confirm.get("equivalence")
    if equivalence is None:
        equivalence = default_equivalence(metric, values, direction)
    return RaceDesign(
        equivalence=float(equivalence),
        looks=tuple(int(n) for n in confirm.get("looks", DEFAULT_LOOKS)),
        alpha=float(confirm.get("alpha", DEFAULT_ALPHA)),
    )


def judge_race(
    values: Mapping[str, Sequence[float | None]],
    direction: str,
    design: RaceDesign,
) -> Race:
    """The race so far, replayed look by look from the seeds' values (rules in the module's
    docstring).

    Args:
        values: Optimizer name -> its representative config's seeds, in the order the seeds
            were given out; ``None`` for a failed seed (it counts towards the look, without a
            value). Extra seeds past the look where an optimizer stopped are ignored.
        direction: ``"maximize"`` or ``"minimize"``.
        design: The looks, alpha and margin.

    Returns:
        The race: per optimizer its status and why, per pair its outcome, whether it is
        settled, and the seeds each optimizer needs for the next look.

    Raises:
        ValueError: a value is not finite, or an unknown direction.
    """
    sign = direction_sign(direction)
    names = list(values)
    seeds = {name: [_checked(v) for v in values[name]] for name in names}
    m = max(1, len(names) * (len(names) - 1) // 2)
    spent = design.spent()
    index = {name: i for i, name in enumerate(names)}
    pairs: dict[tuple[str, str], PairResult] = {
        (a, b): PairResult(a, b, "open") for i, a in enumerate(names) for b in names[i + 1 :]
    }
    status = {name: "racing" for name in names}
    stopped_at: dict[str, int] = {}
    reasons: dict[str, str] = {}
    looks_done = 0
    for k, look in enumerate(design.looks):
        racing = [name for name in names if status[name] == "racing"]
        if not racing or any(len(seeds[name]) < look for name in racing):
            break
        level = spent[k] / m
        for key, pair in pairs.items():
            # Only pairs of two racing optimizers, each on exactly its first ``look`` seeds: the
            # data of a test never depends on when an optimizer stopped (see the docstring).
            if pair.outcome != "open" or not all(status[n] == "racing" for n in key):
                continue
            data = {n: _judged(seeds[n], look) for n in key}
            pairs[key] = _test(key, data, sign, design.equivalence, level, look, index)
        looks_done = k + 1
        last = k == len(design.looks) - 1
        # 1. Beaten beyond noise: out of the race.
        for name in racing:
            beaten = [p for p in pairs.values() if p.outcome == "better" and p.b == name]
            if beaten:
                status[name], stopped_at[name] = "worse", look
                reasons[name] = _worse_reason(name, beaten, look)
        # 2. Nothing left open against an optimizer still in contention: done.
        for name in racing:
            if status[name] != "racing":
                continue
            if last or not _open_against_contenders(name, pairs.values(), status):
                status[name], stopped_at[name] = "leader", look
        if last:
            break
    settled = all(s != "racing" for s in status.values())
    if settled:
        pairs = {
            key: (p if p.outcome != "open" else _replace_outcome(p, "not_separable"))
            for key, p in pairs.items()
        }
    next_look = design.looks[looks_done] if looks_done < len(design.looks) else None
    optimizers: dict[str, OptimizerRace] = {}
    for name in names:
        judged = _judged(seeds[name], stopped_at.get(name, len(seeds[name])))
        finished = [v for v in judged if v is not None]
        state = status[name]
        if settled and state == "leader" and not finished:
            state = "no_seeds"
        if state == "no_seeds":
            reason = f"no finished seed of {len(judged)} tried; it is not compared"
        elif state == "worse":
            reason = reasons[name]
        elif state == "leader":
            reason = _leader_reason(name, pairs.values(), stopped_at[name], design)
        else:
            open_ = [
                p.other(name)
                for p in pairs.values()
                if p.involves(name) and p.outcome == "open" and status[p.other(name)] != "worse"
            ]
            reason = (
                f"racing: {len(seeds[name])} seeds, still open against {_join(open_)}; "
                f"next look at {next_look} seeds"
            )
        optimizers[name] = OptimizerRace(
            status=state,
            seeds=len(seeds[name]),
            finished=len(finished),
            mean=math.fsum(finished) / len(finished) if finished else None,
            stopped_at_seeds=stopped_at.get(name),
            reason=reason,
        )
    next_seeds = {
        name: (
            max(0, next_look - len(seeds[name]))
            if optimizers[name].status == "racing" and next_look is not None
            else 0
        )
        for name in names
    }
    beaten = {p.b for p in pairs.values() if p.outcome == "better"}
    leaders = [n for n in names if optimizers[n].status in ("leader", "racing") and n not in beaten]
    leaders.sort(key=lambda n: (_rank_key(optimizers[n].mean, sign), index[n]))
    # A winner needs someone to have beaten: at least two optimizers with finished seeds.
    compared = sum(1 for o in optimizers.values() if o.finished)
    winner = leaders[0] if settled and len(leaders) == 1 and compared > 1 else None
    method = METHOD.format(
        looks=_join([str(n) for n in design.looks]), pairs=len(pairs), alpha=design.alpha
    )
    return Race(
        direction=direction,
        design=design,
        looks_done=looks_done,
        optimizers=optimizers,
        pairs=list(pairs.values()),
        settled=settled,
        next_seeds=next_seeds,
        leaders=leaders,
        winner=winner,
        method=method,
    )


# --------------------------------------------------------------------------- one pair, one look


def _test(
    key: tuple[str, str],
    data: Mapping[str, Sequence[float | None]],
    sign: float,
    margin: float,
    level: float,
    look: int,
    index: Mapping[str, int],
) -> PairResult:
    """Both tests of one pair at one look: ``better`` when Welch's two-sided p <= level,
    ``tied`` when the TOST p <= level (tied wins when both hold), else ``open``."""
    summaries = {n: summarize([v for v in data[n] if v is not None]) for n in key}
    x, y = key
    sx, sy = summaries[x], summaries[y]
    if sx.mean is None or sy.mean is None:
        return PairResult(x, y, "open", seeds=(sx.n, sy.n), level=level, decided_at=look)
    if sign * (sy.mean - sx.mean) > 0:
        x, y, sx, sy = y, x, sy, sx
    difference = sign * (sx.mean - sy.mean)
    base = dict(difference=difference, level=level, seeds=(sx.n, sy.n), decided_at=look)
    if sx.n < 2 or sy.n < 2:
        return PairResult(x, y, "open", **base)
    assert sx.std is not None and sy.std is not None
    va, vb = sx.std**2 / sx.n, sy.std**2 / sy.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        # Every seed of both gave one value: the difference is exact.
        p_difference = 0.0 if difference > 0 else 1.0
        p_equivalence = 0.0 if difference < margin else 1.0
        interval = (difference, difference)
    else:
        df = (va + vb) ** 2 / (va**2 / (sx.n - 1) + vb**2 / (sy.n - 1))
        p_difference = min(1.0, 2.0 * float(special.stdtr(df, -difference / se)))
        # H1: d <= -margin, H2: d >= margin; both rejected -> |d| < margin.
        p_low = float(special.stdtr(df, -(difference + margin) / se))
        p_high = float(special.stdtr(df, (difference - margin) / se))
        p_equivalence = max(p_low, p_high)
        half = float(special.stdtrit(df, 0.975)) * se
        interval = (difference - half, difference + half)
    if margin > 0 and p_equivalence <= level:
        outcome = "tied"
    elif difference > 0 and p_difference <= level:
        outcome = "better"
    else:
        outcome = "open"
    if outcome == "open" and index[x] > index[y] and difference == 0:
        x, y = y, x  # equal means: keep the order given
    return PairResult(
        x, y, outcome, interval=interval, p_difference=p_difference,
        p_equivalence=p_equivalence, **base,
    )  # fmt: skip


def _rank_key(mean: float | None, sign: float) -> float:
    return math.inf if mean is None else -sign * mean


def _judged(seeds: Sequence[float | None], look: int) -> list[float | None]:
    return list(seeds[:look])


def _checked(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"values must be finite or None for a failed seed, got {value}")
    return value


def _replace_outcome(pair: PairResult, outcome: str) -> PairResult:
    return PairResult(**{**asdict(pair), "outcome": outcome})


def _open_against_contenders(
    name: str, pairs: Iterable[PairResult], status: Mapping[str, str]
) -> bool:
    return any(
        p.outcome == "open" and p.involves(name) and status[p.other(name)] != "worse" for p in pairs
    )


# --------------------------------------------------------------------------- reasons


def _worse_reason(name: str, beaten: Sequence[PairResult], look: int) -> str:
    strongest = min(beaten, key=lambda p: (p.p_difference or 0.0, p.a))
    return (
        f"stopped after {look} seeds: worse than {strongest.a} beyond noise (by "
        f"{_num(strongest.difference)}, p = {_p(strongest.p_difference)}, at most "
        f"{strongest.level:.2g} at that look)"
    )


def _leader_reason(name: str, pairs: Iterable[PairResult], look: int, design: RaceDesign) -> str:
    mine = [p for p in pairs if p.involves(name)]
    tied = [p.other(name) for p in mine if p.outcome == "tied"]
    beats = [p.b for p in mine if p.outcome == "better" and p.a == name]
    unsure = [p.other(name) for p in mine if p.outcome in ("open", "not_separable")]
    parts = []
    if tied:
        parts.append(f"tied with {_join(tied)} within ±{_num(design.equivalence)}")
    if beats:
        parts.append(f"better than {_join(beats)}")
    if unsure:
        parts.append(f"not separable from {_join(unsure)} within the cap")
    if not mine:
        return f"stopped after {look} seeds: no other optimizer to compare it with"
    what = "; ".join(parts)
    if look == design.cap:
        return f"ran to the cap of {look} seeds: {what}"
    return f"stopped after {look} seeds, every pair that matters settled: {what}"


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4g}"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2g}"


def _join(names: Sequence[str]) -> str:
    names = list(names)
    if not names:
        return "none"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
