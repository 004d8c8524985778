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

Confirmation as a race (:mod:`studies.verdict.race`): ``judge_race(values, direction, design)``
replays looks at 3, 5, 7 and 10 seeds; an optimizer worse than another beyond noise stops, pairs
within the margin ``default_equivalence(metric, values, direction)`` are tied, and the error of
any false claim over all looks and pairs stays at most alpha. Which configs run in it:
``configs_to_confirm`` (:mod:`studies.verdict.candidates`). ``race_sentence`` says it in words.
"""

from studies.verdict.candidates import ConfigChoice, SearchTrial, configs_to_confirm
from studies.verdict.decision import (
    TEST,
    ConfirmedConfig,
    OptimizerResult,
    Standing,
    StudyVerdict,
    Verdict,
    decide,
    race_verdict,
    representative_config,
    study_verdict,
)
from studies.verdict.race import (
    DEFAULT_LOOKS,
    OptimizerRace,
    PairResult,
    Race,
    RaceDesign,
    default_equivalence,
    judge_race,
    race_design,
)
from studies.verdict.sentences import TEST_SHORT, format_mean, race_sentence, verdict_sentence
from studies.verdict.statistics import (
    DEFAULT_ALPHA,
    DEFAULT_CONFIDENCE,
    DIRECTIONS,
    Comparison,
    Summary,
    compare,
    holm,
    summarize,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_LOOKS",
    "DIRECTIONS",
    "TEST",
    "TEST_SHORT",
    "Comparison",
    "ConfigChoice",
    "ConfirmedConfig",
    "OptimizerRace",
    "OptimizerResult",
    "PairResult",
    "Race",
    "RaceDesign",
    "SearchTrial",
    "Standing",
    "StudyVerdict",
    "Summary",
    "Verdict",
    "compare",
    "configs_to_confirm",
    "decide",
    "default_equivalence",
    "format_mean",
    "holm",
    "judge_race",
    "race_design",
    "race_sentence",
    "race_verdict",
    "representative_config",
    "study_verdict",
    "summarize",
    "verdict_sentence",
]
