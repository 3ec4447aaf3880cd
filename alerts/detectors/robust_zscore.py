"""Robust z-score: rolling median/MAD baseline with optional daily or weekly seasonality."""

from __future__ import annotations

import math
from collections import deque

from newswatch.alerts.detectors.base import Detector, Direction, register, z_to_score

__all__ = ["RobustZScore"]

_MAD_TO_SIGMA = 1.4826
_MEAN_ABS_TO_SIGMA = 1.2533


@register
class RobustZScore(Detector):
    """Deviation from a rolling median in units of the rolling MAD, after removing seasonality.

    The baseline is the median of the last ``window`` learned values; the scale is
    ``1.4826 * MAD`` (with floors so constant or sparse series do not divide by zero).
    With timestamps, a seasonal profile (``season_s`` split in ``slots``) of the
    residuals is learned and subtracted; a slot is used once it has been seen in two
    different seasons, so the detector learns the series' own cadence and scale.
    Values more than ``protect_z`` from the baseline are not learned (an incident
    does not become the baseline) unless ``relearn_after`` of them come in a row,
    which is then taken as a new normal (a level shift resolves eventually).

    For a share of ``n`` posts (``learn_one(x, t, n)``), the scale is split into binomial
    noise ``p(1-p)/n`` and the extra between-window variance left in the MAD, so a share
    over 300 posts is judged more strictly than one over 12.

    Parameters
    ----------
    window
        Learned values kept for the median and MAD.
    season_s
        Season length in seconds (86400 daily, 604800 weekly); ``None`` disables it.
    slots
        Seasonal slots per season (24 = hourly for a daily season).
    protect_z
        Values further than this (in the oriented direction) are not learned.
    relearn_after
        Consecutive protected values after which learning resumes.
    min_scale
        Absolute floor of the scale.
    direction
        ``"up"``, ``"down"`` or ``"both"``.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(42)
    >>> det = RobustZScore(season_s=None)
    >>> for i in range(100):
    ...     det.learn_one(50 + rng.gauss(0, 5), t=60.0 * i)
    >>> round(det.score_one(52.0), 2), round(det.score_one(90.0), 2)
    (0.09, 0.81)

    References
    ----------
    .. [1] Rousseeuw, P. J. and Croux, C. (1993). Alternatives to the median absolute deviation.
    """

    name = "robust_zscore"

    def __init__(
        self,
        window: int = 60,
        season_s: float | None = 86_400.0,
        slots: int = 24,
        protect_z: float = 4.0,
        relearn_after: int = 30,
        min_scale: float = 1e-6,
        direction: Direction = "up",
    ) -> None:
        super().__init__(direction)
        if window < 3:
            raise ValueError("window must be at least 3")
        self.window = window
        self.season_s = season_s
        self.slots = slots
        self.protect_z = protect_z
        self.relearn_after = relearn_after
        self.min_scale = min_scale
        self._values: deque[float] = deque(maxlen=window)
        self._ns: deque[int] = deque(maxlen=window)
        self._extra_var: float | None = None
        self._profile = [0.0] * slots
        self._slot_n = [0] * slots
        self._slot_seasons = [0] * slots
        self._slot_last_season = [-1] * slots
        self._protected_run = 0
        self._median = 0.0
        self._scale = 1.0

    def _slot(self, t: float | None) -> tuple[int, int] | None:
        if t is None or self.season_s is None:
            return None
        season, offset = divmod(t, self.season_s)
        return int(offset * self.slots // self.season_s) % self.slots, int(season)

    def _seasonal(self, t: float | None) -> float:
        s = self._slot(t)
        if s is None or self._slot_seasons[s[0]] < 2:
            return 0.0
        return self._profile[s[0]]

    def _refresh(self) -> None:
        vals = sorted(self._values)
        n = len(vals)
        med = vals[n // 2] if n % 2 else 0.5 * (vals[n // 2 - 1] + vals[n // 2])
        devs = sorted(abs(v - med) for v in vals)
        mad = devs[n // 2] if n % 2 else 0.5 * (devs[n // 2 - 1] + devs[n // 2])
        mean_abs = sum(devs) / n
        self._median = med
        self._scale = max(_MAD_TO_SIGMA * mad, _MEAN_ABS_TO_SIGMA * mean_abs, 0.01 * abs(med), self.min_scale)
        self._extra_var = None
        if len(self._ns) == n and all(k > 0 for k in self._ns):
            # Shares of n posts: binomial noise p(1-p)/n plus extra between-window variance.
            m = min(max(med, 0.01), 0.99)
            binom = sorted(m * (1 - m) / k for k in self._ns)[n // 2]
            self._extra_var = max(0.0, (_MAD_TO_SIGMA * mad) ** 2 - binom)

    def _z(self, x: float, t: float | None, n: int | None = None) -> float:
        scale = self._scale
        if n and self._extra_var is not None:
            m = min(max(self._median, 0.01), 0.99)
            scale = max(math.sqrt(self._extra_var + m * (1 - m) / n), self.min_scale, 0.01)
        return (x - self._seasonal(t) - self._median) / scale

    def learn_one(self, x: float, t: float | None = None, n: int | None = None) -> None:
        """Add ``x`` to the baseline (unless it is protected as an outlier)."""
        if not math.isfinite(x):
            return
        if len(self._values) >= 3 and self._oriented(self._z(x, t, n)) > self.protect_z:
            self._protected_run += 1
            if self._protected_run < self.relearn_after:
                return
        else:
            self._protected_run = 0
        s = self._slot(t)
        if s is not None and len(self._values) >= 3:
            slot, season = s
            resid = x - self._median
            self._slot_n[slot] += 1
            alpha = 1.0 / min(self._slot_n[slot], 3 * max(1, self.window))
            self._profile[slot] += alpha * (resid - self._profile[slot])
            if self._slot_last_season[slot] != season:
                self._slot_last_season[slot] = season
                self._slot_seasons[slot] += 1
        self._values.append(x - self._seasonal(t))
        self._ns.append(n or 0)
        self._refresh()
        self.n_seen += 1

    def score_one(self, x: float, t: float | None = None, n: int | None = None) -> float:
        """Score ``x``: ``z_to_score`` of its oriented robust z."""
        if len(self._values) < 3 or not math.isfinite(x):
            return 0.0
        return z_to_score(self._oriented(self._z(x, t, n)))

    @property
    def expected(self) -> float | None:
        """The rolling median (without the seasonal term)."""
        return self._median if self._values else None

    def expected_at(self, t: float | None) -> float | None:
        """The baseline at time ``t`` including the seasonal term."""
        return self._median + self._seasonal(t) if self._values else None
