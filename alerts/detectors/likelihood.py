"""Anomaly likelihood: a calibrated tail probability of recent surprise, with counts as counts."""

from __future__ import annotations

import math
from array import array
from collections import deque
from statistics import NormalDist

from newswatch.alerts.detectors.base import Detector, Direction, ValueModel, register

__all__ = ["AnomalyLikelihood", "count_tail", "likelihood_to_score", "score_to_tail"]

_NORMAL = NormalDist()
#: ``score = -log10(tail) / _DECADES``: a score of 1 is a tail probability of 1e-10 (as NAB's HTM maps it).
_DECADES = 10.0
#: Values before a history or a range is a reference (a young series pages on bursts only).
_YOUNG = 50
#: A new extreme: (+1 above the range / -1 below it, how far past it as a fraction of the range).
_Record = tuple[int, float] | None


def likelihood_to_score(tail: float) -> float:
    """Map a tail probability to ``[0, 1]``: ``-log10(tail) / 10`` (0.3 is 1e-3, 0.5 is 1e-5).

    >>> likelihood_to_score(1.0), likelihood_to_score(1e-3), likelihood_to_score(0.0)
    (0.0, 0.3, 1.0)
    """
    if tail <= 0.0:
        return 1.0
    return min(1.0, max(0.0, -math.log10(min(tail, 1.0)) / _DECADES))


def score_to_tail(score: float) -> float:
    """Inverse of :func:`likelihood_to_score`: the tail probability a score stands for.

    >>> score_to_tail(0.3)
    0.001
    """
    return round(10.0 ** (-_DECADES * score), 15)


def _upper_normal(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _deviate(tail: float) -> float:
    """The standard normal deviate whose upper tail is ``tail`` (0 for tails of one half or more)."""
    return -_NORMAL.inv_cdf(max(tail, 1e-300)) if tail < 0.5 else 0.0


def count_tail(x: float, mean: float, dispersion: float = 0.0) -> float:
    """``P(X >= x)`` for a count ``X`` with ``mean`` and ``Var = mean + dispersion * mean**2``.

    Poisson for ``dispersion == 0``, negative binomial otherwise; exact sums for small
    means, a continuity-corrected normal tail for large ones.

    >>> round(count_tail(2, 1.0), 3), f"{count_tail(8, 1.0):.2e}"
    (0.264, '1.02e-05')
    >>> count_tail(0, 3.0)
    1.0
    """
    k = math.ceil(x - 1e-9)
    if k <= 0:
        return 1.0
    mean = max(mean, 1e-3)
    var = mean + dispersion * mean * mean
    if mean > 50.0 or k > 2_000:
        return _upper_normal((k - 0.5 - mean) / math.sqrt(var))
    if dispersion <= 1e-9:
        log_p = -mean  # P(X = 0)
        below = 0.0
        for j in range(k):
            below += math.exp(log_p)
            log_p += math.log(mean) - math.log(j + 1)
        return max(0.0, 1.0 - below) if below < 0.999 else _tail_sum_poisson(k, mean)
    r = 1.0 / dispersion
    p = r / (r + mean)
    log_pmf = r * math.log(p)  # P(X = 0)
    below = 0.0
    for j in range(k):
        below += math.exp(log_pmf)
        log_pmf += math.log((j + r) / (j + 1)) + math.log(1.0 - p)
    if below < 0.999:
        return max(0.0, 1.0 - below)
    # Sum the upper tail directly where 1 - below would lose precision.
    tail, term = 0.0, math.exp(log_pmf)
    j = k
    while term > 1e-300 and j < k + 10_000:
        tail += term
        term *= (j + r) / (j + 1) * (1.0 - p)
        j += 1
        if term < tail * 1e-12:
            break
    return min(1.0, tail)


def _tail_sum_poisson(k: int, mean: float) -> float:
    term = math.exp(-mean + k * math.log(mean) - math.lgamma(k + 1))
    tail, j = 0.0, k
    while term > 1e-300:
        tail += term
        j += 1
        term *= mean / j
        if term < tail * 1e-12:
            break
    return min(1.0, tail)


class _Profile:
    """A seasonal profile: ``season_s / slot_s`` slots, each the mean of the values seen in it
    per season, exponentially smoothed over seasons (weight one half on the latest), and the
    profile's weighted mean absolute error as a forecast.

    The slot being filled is kept apart (sum and count) and folded in when it ends, so a slot
    forecasts from earlier seasons only: a day without its usual peak is not forecast from its
    own first values.
    """

    __slots__ = ("cur", "err", "n", "n_err", "season_s", "slot_s", "values")

    def __init__(self, season_s: float, slot_s: float) -> None:
        self.season_s = season_s
        self.slot_s = slot_s
        self.values: array[float] | None = None
        self.n: array[int] | None = None  # seasons folded in per slot, capped at 65,535
        self.err: float | None = None
        self.n_err = 0
        self.cur: tuple[int, int, float, int] | None = None  # (slot, season, sum, count) being filled

    def slot(self, t: float) -> int:
        return int((t % self.season_s) // self.slot_s)

    def forecast(self, t: float | None) -> float | None:
        if t is None or self.values is None or self.n is None:
            return None
        slot = self.slot(t)
        return self.values[slot] if self.n[slot] >= 1 else None

    def learn_error(self, x: float, t: float | None, alpha: float) -> None:
        f = self.forecast(t)
        if f is None:
            return
        err = abs(x - f)
        self.n_err += 1
        b = max(alpha, 1.0 / self.n_err)
        self.err = err if self.err is None else self.err + b * (err - self.err)

    def learn(self, x: float, t: float) -> None:
        if self.values is None or self.n is None:
            slots = max(1, math.ceil(self.season_s / self.slot_s))
            self.values = array("d", [0.0] * slots)
            self.n = array("H", [0] * slots)
        slot = self.slot(t)
        season = int(t // self.season_s)
        cur = self.cur
        if cur is not None and cur[0] == slot and cur[1] == season:
            self.cur = (slot, season, cur[2] + x, cur[3] + 1)
            return
        if cur is not None:
            done, _, total, count = cur
            mean = total / count
            if self.n[done] == 0:
                self.values[done] = mean
            else:
                self.values[done] += 0.5 * (mean - self.values[done])
            self.n[done] = min(self.n[done] + 1, 65_535)
        self.cur = (slot, season, x, 1)


class _History:
    """The distribution of one running average of surprises over the series' own history.

    A Gaussian fit in the body, exponentially weighted with a half-life of ``history`` values;
    beyond a running ``1 - q`` quantile an exponential tail fitted to the excesses over it
    (peaks over threshold), since real series have heavier tails than a Gaussian. The excess
    of a young history is widened by ``1 + span / n``, as the body's spread is.
    """

    __slots__ = ("alpha", "excess", "history", "mean", "median", "n", "q", "span", "u", "var")

    def __init__(self, history: int, span: float) -> None:
        self.history = history
        self.span = span  # values behind one average (overlapping averages widen a young fit)
        self.alpha = 1.0 - 0.5 ** (1.0 / history)
        self.n = 0
        self.mean = 0.0
        self.var = 0.0
        self.q = 0.02
        self.u: float | None = None
        self.excess: float | None = None
        self.median: float | None = None

    def tail(self, avg: float, sd_floor: float) -> float | None:
        """Upper tail probability of ``avg`` (``None`` while the history is too short)."""
        if self.n < 10:
            return None
        k = min(self.n, self.history)
        sd = max(math.sqrt(self.var), sd_floor)
        # Overlapping averages: k of them hold about k / span independent ones, so a young
        # history understates the spread; widen it until the history is long.
        sd *= 1.0 + 2.0 * self.span / k
        gaussian = _upper_normal((avg - self.mean) / sd)
        q, u, excess, median = self.q, self.u, self.excess, self.median
        if u is None or excess is None or median is None or self.n < _YOUNG:
            # A tail far below one in n cannot be read from n averages: a young history
            # (its first _YOUNG) says at most 1 / (n + 1); bursts of counts and shares still
            # score on their own exact tails.
            return max(gaussian, 1.0 / (self.n + 1))
        if avg > u:
            # The excess is fitted from about ``n * q`` exceedances of overlapping averages: as the
            # body's spread above, a young history's extrapolated tail is widened (by ``span / n``).
            excess *= 1.0 + self.span / self.n
            return q * math.exp(-(avg - u) / max(excess, 1e-3))
        if avg <= median or u <= median:
            return 1.0 if avg <= median else q
        # Between the running median and the 1 - q quantile: log-linear in the tail.
        return math.exp(math.log(0.5) + (avg - median) / (u - median) * (math.log(q) - math.log(0.5)))

    def learn(self, avg: float) -> None:
        self.n += 1
        b = max(self.alpha, 1.0 / self.n)
        delta = avg - self.mean
        self.mean += b * delta
        self.var = (1.0 - b) * (self.var + b * delta * delta)
        # Move the running median and 1 - q quantile towards theirs, and the mean excess.
        if self.u is None or self.median is None:
            self.u = self.median = avg
            return
        step = max(0.01, 1.0 / self.n) * max(self.excess or 0.05, 0.01)
        self.median += step * ((1.0 if avg > self.median else 0.0) - 0.5)
        self.u += step * ((1.0 if avg > self.u else 0.0) - self.q)
        if avg > self.u:
            e = avg - self.u
            b = max(1.0 / (self.n * self.q + 1.0), 0.02)
            self.excess = e if self.excess is None else self.excess + b * (e - self.excess)


@register
class AnomalyLikelihood(Detector):
    """How unlikely the recent surprise of a series is, as a calibrated score in ``[0, 1]``.

    Three layers, each cheap and streaming:

    1. **A forecast and its noise.** The next value is forecast by the best (smallest mean
       absolute error, half-life ``20 * halflife`` values) of an exponentially weighted level
       (half-life ``halflife`` values), a time-of-day profile (``slot_s`` slots of a
       ``season_s`` season) and a day-of-week × time-of-day profile (``week_slot_s`` slots of
       seven seasons). A profile slot holds the mean of its values per season, smoothed over
       seasons; the slot being filled is folded in only when it ends, so a slot forecasts
       from earlier seasons alone (a day without its usual peak is a surprise throughout).
       The weekly profile wins only where the series has a weekly structure (weekends,
       holidays). The value's surprise is the standard normal deviate ``z`` of its tail
       probability under the series' value model:

       - ``"level"`` (generic values): Gaussian with the forecast's weighted mean absolute error;
       - ``"count"`` (posts per window): negative binomial around the forecast, with the
         over-dispersion learned from the residuals, so 1 → 2 posts is ordinary and a
         sustained 1 → 8 is not, and a count of 0 against a forecast of 0.3 is no news;
       - ``"share"`` (the bearish share of ``n`` posts): binomial noise ``p(1-p)/n`` plus the
         between-window variance learned from the residuals.

       The level and the error scales start as plain means of the values so far (no start-up
       bias) and turn exponential after ``1 / alpha`` values. For counts and shares two guards
       keep a young series' start-up honest: the extra variance starts from none (pure count or
       share noise) worth ``noise_prior`` values, and a value more than four noise standard
       deviations off the forecast is learned at the mature rates, so a burst in a series'
       first minutes does not become its normal and its noise at once.

    2. **Anomaly likelihood** (as Numenta's HTM detector does on NAB): the mean of the last
       ``short`` surprises (each clipped at ``z_clip``) is compared with the distribution of
       that mean in the series' history, and its upper tail probability ``q`` is the
       likelihood. In the body the history is a Gaussian fit, exponentially weighted with a
       half-life of ``history`` values (so the start-up of the forecast fades); beyond a
       running 98th percentile the tail is exponential, fitted to the series' own excesses
       over it (peaks over threshold), since real series have heavier tails than a Gaussian.
       A young history's excess, fitted from a few dozen overlapping averages, is widened by
       ``1 + short / n`` (``n`` averages seen), as its Gaussian body is, so the tail it
       extrapolates is not over-confident (on NAB: 71.86 -> 72.06 standard, 68.02 -> 68.41
       low-FP; a widening by ``2 short / n``: 71.68, by ``1 / sqrt(n q)``: 71.47).
       Sustained moderate deviations and single extreme ones both get small ``q``; the
       history makes one threshold mean the same on a calm and on a jittery series. A second,
       slow look does the same for an exponentially weighted mean of the surprises
       (half-life ``long_halflife`` values: a spike rate, a change of pattern over hours);
       the smaller of the two tails, doubled (Bonferroni), is ``q``. For counts and shares,
       whose noise model is exact, one window whose own tail is below ``burst_tail`` keeps
       at least that score (a burst stays hot while it lasts).

    3. **Calibrated score**: ``-log10(q) / 10``, so a score of ``s`` is a tail probability
       of ``10**(-10 s)`` (0.3 is one row in a thousand under the series' own noise).
       A value beyond the range seen so far by more than ``range_tolerance`` of it, and
       improbable under the forecast, scores 1 (NAB's leading detectors flag new extremes
       too; a first 3 on a series of 0s and 1s is not improbable, so it is not flagged).
       A young series (fewer than 50 values) has no reference yet: no range flags, and its
       likelihood history reads no tail below ``1 / (n + 1)`` from its ``n`` averages, so it
       pages only on a count or share burst judged on its own exact tail.

    4. **One detection per episode** (as ARTime masks after an anomaly and CAD OSE rests
       after one): once a value scores at least ``suppress_score``, a *new* run of such
       scores that starts within ``suppress_n`` values of the last one is damped (times
       ``suppress_damp``) unless it beats that episode's peak by ``suppress_margin``. A run
       that continues is never damped (the decision layer counts consecutive hot windows),
       and a stronger episode always comes through. Flickering around one incident, or
       aftershocks of it, are then not reported again and again. On a level series a new
       extreme (score 1) soon after an episode that made one on the same side is such an
       aftershock too unless it clears that extreme by ``record_margin`` of the range (a
       series creeping on to new highs is one episode); count and share records always come
       through (a burst that grows is news).

    The whole state is a few floats plus the profiles (``season_s / slot_s`` and
    ``7 * season_s / week_slot_s`` slots: 288 + 168 by default, 10 bytes each), so tens of
    thousands of series fit in memory. Levels adapt with the ``halflife``: a level
    shift becomes the new normal within a few half-lives and the likelihood's history
    absorbs it, so no series stays anomalous.

    Parameters
    ----------
    model
        ``"level"``, ``"count"`` or ``"share"`` (the engine sets it per signal).
    halflife
        Half-life, in values, of the level and of the error scale.
    short
        Surprises averaged for the likelihood.
    history
        Half-life, in values, of the weights of the likelihood's history (O(1) state per series).
    warmup
        Values before any score is given; the decision layer's ``warmup_windows`` (10)
        holds alerts back longer, and a young history's spread is widened.
    season_s, slot_s
        Season length and slot width in seconds; ``season_s=None`` disables the profiles.
    week_slot_s
        Slot width in seconds of the weekly profile (seven seasons); ``None`` disables it.
    long_halflife
        Half-life, in values, of the slow look's mean surprise; ``None`` disables it.
    z_clip
        Surprise cap (one wild value cannot dominate ``short`` averages for long).
    range_tolerance, range_tail, count_range_tail, range_warmup
        A new extreme scores 1 when it passes the seen range by more than ``range_tolerance``
        of it and its own tail probability under the forecast is below ``range_tail`` (level
        series with ``range_warmup`` values seen: three half-lives of the error scale) or
        ``count_range_tail`` (counts and shares, and younger level series, whose scale is
        still uncertain; a series that just shifted sets new records that are no news);
        ``range_tolerance=None`` disables it. Defaults chosen on NAB with suppression on
        (standard / low-FP): 1.5 % and 0.1 give 71.32 / 67.01, 1 % and 1e-2 (the defaults
        before) 69.83 / 65.72; 1 % / 0.1: 70.79, 2 % / 0.1: 70.17, 1.5 % / 0.05: 70.17.
        Once suppression damps the records that follow an episode, a mature level series'
        new extreme needs little more than to be a new extreme (Numenta HTM's spatial
        anomaly, in NAB, needs nothing more).
    burst_tail
        A count or share window whose own tail is below this scores at least its own
        ``-log10(tail) / 10`` (3e-7: a floor of 0.65). Chosen on NAB with ``record_margin``
        and the widened young tail (standard / low-FP): 1e-6 (the default before) 72.06 / 68.41,
        5e-7 72.16, 3e-7 72.24 / 68.80, 2e-7 72.24, 1e-7 72.46 / 69.35 (but then 22 posts where
        4-6 are usual, a tail of 1.3e-7, no longer scores as a burst on its own).
    suppress_score, suppress_n, suppress_margin, suppress_damp
        Re-detection suppression (layer 4): a score of at least ``suppress_score`` (0.35, the
        detector's fire level, a tail of about 3e-4) is a detection; a new one within
        ``suppress_n`` values of the last hot value is multiplied by ``suppress_damp`` unless
        it exceeds that episode's peak by ``suppress_margin`` (a score of 1, a new extreme,
        always comes through). ``suppress_score=None`` disables it. Chosen on NAB (the
        48-series subset, ``bench/nab.py``): with the range defaults before (1 %, 1e-2)
        69.28 -> 69.83 standard, 64.59 -> 65.72 low-FP (damping 0.5: 69.68 / 65.39); a lower
        level (0.25) scores higher on NAB but damps noise re-crossings enough to break the
        calibration under pure noise.
    record_margin
        Fraction of the range by which a level series' new extreme must clear the extreme of
        the episode just before it (same side, within ``suppress_n`` values) to be reported
        at 1 rather than damped like any weaker re-detection (0.1; 0 turns it off). On NAB
        with the other defaults before it: 71.59 -> 71.86 standard, 67.49 -> 68.02 low-FP
        (0.05: 71.79; 0.1 to 1: 71.86).
    noise_prior
        Values' worth of no extra variance the count/share noise starts from (20): seven windows
        of 25-45 posts are Poisson noise around 34, not evidence that 93 is ordinary.
    direction
        ``"up"``, ``"down"`` or ``"both"``. A count or share burst (``burst_tail``) counts only
        in this direction: for volume, a window with far fewer posts than usual is no burst.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> det = AnomalyLikelihood(model="count", season_s=None)
    >>> for i in range(400):
    ...     det.learn_one(rng.choice([0, 1, 1, 2]), t=60.0 * i)
    >>> det.score_one(2, t=24_000.0) < 0.2  # two posts where 0-2 is usual
    True
    >>> det.score_one(8, t=24_000.0) > 0.5  # eight
    True

    A second, weaker burst soon after an episode (40 posts where 4-6 are usual) is damped
    (layer 4), where the same detector without suppression would report it again; a new
    extreme still scores 1:

    >>> det = AnomalyLikelihood(model="count", season_s=None)
    >>> plain = AnomalyLikelihood(model="count", season_s=None, suppress_score=None)
    >>> for x in [4, 5, 6, 5] * 75 + [40] + [4, 5, 6, 5] * 5:
    ...     det.learn_one(x)
    ...     plain.learn_one(x)
    >>> round(det.score_one(22), 2), round(plain.score_one(22), 2), det.score_one(41)
    (0.21, 0.69, 1.0)

    A level series that just made an episode with a new high (60 where 48-52 is usual) and
    creeps on to a new one just past it (60.5, 4 % of the range) is not reported again; a new
    high that clears the last one by more than ``record_margin`` of the range (62) is:

    >>> det = AnomalyLikelihood(season_s=None)
    >>> for x in [48.0, 50.0, 52.0, 50.0] * 200 + [60.0] + [48.0, 50.0, 52.0, 50.0] * 5:
    ...     det.learn_one(x)
    >>> det.score_one(60.5), det.score_one(62.0)
    (0.3, 1.0)
    """

    name = "likelihood"
    #: A tail of about 3e-4 (NAB's best threshold on this score is 0.34).
    fire_score = 0.35
    value_models = frozenset({"level", "count", "share"})

    def __init__(
        self,
        model: ValueModel = "level",
        halflife: float = 10.0,
        short: int = 25,
        history: int = 300,
        warmup: int = 5,
        season_s: float | None = 86_400.0,
        slot_s: float = 300.0,
        z_clip: float = 6.0,
        week_slot_s: float | None = 3_600.0,
        long_halflife: float | None = 70.0,
        range_tolerance: float | None = 0.015,
        range_tail: float = 0.1,
        count_range_tail: float = 1e-4,
        range_warmup: int = 600,
        burst_tail: float = 3e-7,
        suppress_score: float | None = 0.35,
        suppress_n: int = 100,
        suppress_margin: float = 0.05,
        suppress_damp: float = 0.3,
        record_margin: float = 0.1,
        noise_prior: int = 20,
        direction: Direction = "up",
    ) -> None:
        super().__init__(direction, model)
        if short < 1 or history < 10:
            raise ValueError("short must be >= 1 and history >= 10")
        self.halflife = halflife
        self.short = short
        self.history = history
        self.warmup = warmup
        self.season_s = season_s
        self.slot_s = slot_s
        self.z_clip = z_clip
        self.range_tolerance = range_tolerance
        self.range_tail = range_tail
        self.count_range_tail = count_range_tail
        self.range_warmup = range_warmup
        self.burst_tail = burst_tail
        self.week_slot_s = week_slot_s
        self.long_halflife = long_halflife
        self._sd_floor = 0.05  # of the short averages' spread: an all-quiet history is not infinitely sure
        self._alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self._err_alpha = 1.0 - 0.5 ** (1.0 / (20.0 * halflife))
        self._level: float | None = None
        self._level_err: float | None = None  # weighted mean |residual| of the level forecast
        self._profiles: list[_Profile] = []
        if season_s is not None:
            self._profiles.append(_Profile(season_s, slot_s))
            if week_slot_s is not None:
                self._profiles.append(_Profile(7.0 * season_s, week_slot_s))
        self._extra_var = 0.0  # between-window variance beyond the count/share noise
        self._lo = math.inf
        self._hi = -math.inf
        self._recent: deque[float] = deque(maxlen=short)
        self._hist = _History(history, short)  # of the short averages
        # The slow look: an exponentially weighted mean of the surprises (a spike rate, a drift).
        self._long_alpha = 1.0 - 0.5 ** (1.0 / long_halflife) if long_halflife else 0.0
        self._long_avg = 0.0
        self._long = _History(history, 2.0 * long_halflife) if long_halflife else None
        self._pending: tuple[float, float | None, int | None, float, float, float, int] | None = None
        self.suppress_score = suppress_score
        self.suppress_n = suppress_n
        self.suppress_margin = suppress_margin
        self.suppress_damp = suppress_damp
        self.record_margin = record_margin
        if noise_prior < 0:
            raise ValueError("noise_prior must be >= 0")
        self.noise_prior = noise_prior
        self._det_peak = 0.0  # peak score of the last reported detection episode
        self._det_side = 0  # +1 / -1: that episode set a new high / low (a range flag); 0: it did not
        self._since_det: int | None = None  # values since its last hot value
        self._prev_hot = False

    # -- the forecast -------------------------------------------------------------------
    def _forecast(self, t: float | None) -> tuple[float, float]:
        """The forecast and its mean absolute error: the level's, or a profile's that forecasts better."""
        assert self._level is not None
        best, best_err = self._level, self._level_err if self._level_err is not None else 0.0
        for profile in self._profiles:
            f = profile.forecast(t)
            if f is not None and profile.err is not None and profile.err < best_err:
                best, best_err = f, profile.err
        return best, best_err

    # -- the value model ----------------------------------------------------------------
    def _surprise(self, x: float, t: float | None, n: int | None) -> tuple[float, float]:
        """Signed standard normal deviate of ``x`` and its one-value tail probability."""
        mean, err = self._forecast(t)
        if self.model == "count":
            mean = max(mean, 0.0)
            dispersion = max(self._extra_var, 0.0) / max(mean * mean, 1e-6)
            if x >= mean:
                tail = count_tail(x, mean, dispersion)
                return _deviate(tail), tail
            below = 1.0 - count_tail(x + 1.0, mean, dispersion)
            return -_deviate(below), below
        if self.model == "share" and n:
            p = min(max(mean, 0.01), 0.99)
            sd = math.sqrt(p * (1.0 - p) / n + max(self._extra_var, 0.0))
        else:
            span = self._hi - self._lo if self._hi > self._lo else 0.0
            sd = max(1.2533 * err, 0.002 * span, 1e-9)
        z = (x - mean) / sd
        return z, _upper_normal(abs(z))

    def _oriented_z(self, z: float) -> float:
        return max(0.0, self._oriented(z))

    # -- the likelihood -----------------------------------------------------------------
    def _evaluate(self, x: float, t: float | None, n: int | None) -> tuple[float, float, float, _Record]:
        """(score, clipped surprise, short average, new extreme) of ``x``, without learning it."""
        if self._level is None or self._level_err is None:
            return 0.0, 0.0, 0.0, None
        z, tail = self._surprise(x, t, n)
        raw = min(self._oriented_z(z), self.z_clip) / self.z_clip
        recent = [*self._recent, raw][-self.short :]
        avg = sum(recent) / len(recent)
        score = 0.0
        if self.n_seen < self.warmup:
            return score, raw, avg, None
        q = self._hist.tail(avg, self._sd_floor)
        if self._long is not None:
            q_long = self._long.tail(
                self._long_avg + self._long_alpha * (raw - self._long_avg), self._sd_floor
            )
            if q_long is not None:
                # Two looks at the same surprises: the smaller tail, doubled (Bonferroni), stays calibrated.
                q = 2.0 * min(q, q_long) if q is not None else q_long
        if q is not None:
            score = likelihood_to_score(min(q, 1.0))

        if self.model != "level" and tail < self.burst_tail and self._oriented(z) > 0.0:
            # A count or a share has an exact noise model: one window that improbable is news
            # on its own, whatever the recent average (a burst stays hot while it lasts). Only
            # in the watched direction: ``tail`` is the one-sided tail on the side ``x`` is on,
            # so for volume (up) a window with far fewer posts than usual (an in-progress
            # window's first seconds, the last window of a stream that stopped) is no burst.
            score = max(score, likelihood_to_score(tail))
        # A young level series' scale is still being learned: its records need the stricter tail.
        mature = self.n_seen >= self.range_warmup
        gate = self.range_tail if self.model == "level" and mature else self.count_range_tail
        # A range seen over fewer than _YOUNG values is no reference yet (nor is a young
        # likelihood history): a young series pages only on a burst judged on its own tail.
        record: _Record = None
        if self.n_seen >= _YOUNG and self._beyond_range(x) and tail < gate:
            score = 1.0
            side = 1 if x > self._hi else -1
            record = (side, (x - self._hi if side > 0 else self._lo - x) / (self._hi - self._lo))
        return score, raw, avg, record

    def _beyond_range(self, x: float) -> bool:
        if self.range_tolerance is None or not self._hi > self._lo:
            return False
        tol = (self._hi - self._lo) * self.range_tolerance
        if self.direction == "up":
            return x > self._hi + tol
        if self.direction == "down":
            return x < self._lo - tol
        return x > self._hi + tol or x < self._lo - tol

    # -- the Detector API -----------------------------------------------------------------
    def score_one(self, x: float, t: float | None = None, n: int | None = None) -> float:
        """Calibrated score of ``x`` at ``t`` (``n``: posts behind a share); no side effects."""
        if not math.isfinite(x):
            return 0.0
        score, raw, avg, record = self._evaluate(x, t, n)
        out = self._suppressed(score, record)
        self._pending = (x, t, n, raw, avg, out, record[0] if record and out >= 1.0 else 0)
        return out

    def _suppressed(self, score: float, record: _Record = None) -> float:
        """``score`` after re-detection suppression (layer 4): a new hot run soon after one is damped."""
        th = self.suppress_score
        if th is None or score < th or self._prev_hot:
            return score
        recent = self._since_det is not None and self._since_det < self.suppress_n
        if recent and score < min(self._det_peak + self.suppress_margin, 1.0):
            return score * self.suppress_damp
        if (
            recent
            and self.model == "level"
            and record is not None
            and record[0] == self._det_side
            and record[1] < self.record_margin
        ):
            # A level series creeping on to new extremes just past the one that made the last
            # episode: an aftershock of it, unless it clears that extreme by ``record_margin`` of
            # the range. (A count or share record is judged on its exact tail: a burst that
            # grows is news, so it always comes through.)
            return score * self.suppress_damp
        return score

    def is_ordinary(self, x: float, t: float | None = None, n: int | None = None) -> bool:
        """Whether ``x`` is within one noise scale of the forecast (in the watched direction).

        The score of a short average lingers for ``short`` values after an episode; this says
        the episode is over, so the decision layer can resolve.
        """
        if not math.isfinite(x) or self._level is None or self._level_err is None:
            return True
        return self._oriented_z(self._surprise(x, t, n)[0]) < 1.0

    def learn_one(self, x: float, t: float | None = None, n: int | None = None) -> None:
        """Add ``x`` to the surprise history, the level, the profile and the error scales."""
        if not math.isfinite(x):
            return
        if self._pending is not None and self._pending[:3] == (x, t, n):
            raw, avg, out, side = self._pending[3:]
        else:
            score, raw, avg, record = self._evaluate(x, t, n)
            out = self._suppressed(score, record)
            side = record[0] if record and out >= 1.0 else 0
        self._pending = None
        th = self.suppress_score
        if th is not None:
            hot = out >= th
            if hot:
                self._det_peak = out if not self._prev_hot else max(self._det_peak, out)
                if not self._prev_hot or side:
                    self._det_side = side  # the side of the episode's (latest) new extreme
                self._since_det = 0
            elif self._since_det is not None:
                self._since_det += 1
            self._prev_hot = hot
        self._recent.append(raw)
        self._hist.learn(avg)
        if self._long is not None:
            self._long_avg += self._long_alpha * (raw - self._long_avg)
            self._long.learn(self._long_avg)
        self._learn_forecast(x, t, n)
        self._lo = min(self._lo, x)
        self._hi = max(self._hi, x)
        self.n_seen += 1

    def _learn_forecast(self, x: float, t: float | None, n: int | None) -> None:
        if self._level is None:
            self._level = x
        else:
            mean, _ = self._forecast(t)
            resid = x - mean
            noise = max(mean, 0.0) if self.model == "count" else 0.0
            if self.model == "share" and n:
                p = min(max(mean, 0.01), 0.99)
                noise = p * (1.0 - p) / n
            # Plain means until there are 1/alpha values, exponential weights after (no start-up
            # bias). The average of (residual² - noise) may go negative; it is clamped where read.
            a = max(self._err_alpha, 1.0 / max(self.n_seen, 1))
            # Winsorised at 4 standard deviations: one burst does not make the series noisy.
            cap = 16.0 * (noise + max(self._extra_var, 0.0)) if self.n_seen > self.warmup else math.inf
            # A count or share beyond that is an outlier: it is learned at the mature rates
            # (``halflife`` for the level, ``20 * halflife`` for the noise) however young the
            # series is. With plain means a young series' first burst became its normal and its
            # noise within a window or two (a burst that starts mid-window: the first window
            # scores alone, the next no longer stands out), so it was never paged twice running.
            outlier = self.model != "level" and resid * resid > cap
            # The extra variance starts from none (pure count/share noise) worth ``noise_prior``
            # values: the spread of a handful of windows is no evidence of over-dispersion.
            a_noise = (
                self._err_alpha if outlier else max(self._err_alpha, 1.0 / (self.n_seen + self.noise_prior))
            )
            self._extra_var += a_noise * (min(resid * resid, cap) - noise - self._extra_var)
            err = abs(x - self._level)
            level_err = self._level_err
            self._level_err = err if level_err is None else level_err + a * (err - level_err)
            for profile in self._profiles:
                profile.learn_error(x, t, self._err_alpha)
            # The level too: a plain mean of the first 1/alpha values, then exponential weights.
            # A first value that is off (the partial first window of a stream that starts
            # mid-window) would otherwise weigh 0.5 for ``halflife`` values and read as noise.
            self._level += (self._alpha if outlier else max(self._alpha, 1.0 / (self.n_seen + 1))) * (
                x - self._level
            )
        if t is not None:
            for profile in self._profiles:
                profile.learn(x, t)

    @property
    def expected(self) -> float | None:
        """The exponentially weighted level."""
        return self._level

    def expected_at(self, t: float | None) -> float | None:
        """The forecast at ``t`` (the profile's where it forecasts better)."""
        return None if self._level is None else self._forecast(t)[0]
