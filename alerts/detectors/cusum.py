"""CUSUM change detector for sustained shifts (ramps, level shifts)."""

from __future__ import annotations

import math

from newswatch.alerts.detectors.base import Detector, Direction, register, z_to_score

__all__ = ["Cusum"]


@register
class Cusum(Detector):
    """Page's cumulative sum of standardised deviations from a slow robust baseline.

    Each value is standardised against an exponentially weighted mean and mean
    absolute deviation (half-life ``halflife`` values); the statistic
    ``S = max(0, S + z - k)`` accumulates small sustained deviations that a
    point detector misses. The score maps ``3 * S / h`` through
    :func:`~newswatch.alerts.detectors.base.z_to_score`, so ``S = h`` scores 0.6
    (the default firing level). The baseline is not updated by values beyond
    ``protect_z`` unless ``relearn_after`` come in a row; ``S`` decays to zero
    once the shift is absorbed.

    Parameters
    ----------
    k
        Allowance (in scale units) subtracted from each deviation.
    h
        Decision interval: ``S = h`` is the usual alarm level.
    halflife
        Half-life of the baseline in learned values.
    protect_z, relearn_after
        Outlier protection of the baseline, as in ``robust_zscore``.
    clip
        Largest deviation one value adds to a sum (winsorising).
    direction
        ``"up"``, ``"down"`` or ``"both"`` (both keeps two sums).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> det = Cusum()
    >>> for _ in range(200):
    ...     det.learn_one(10 + rng.gauss(0, 1))
    >>> for _ in range(6):
    ...     det.learn_one(12.5 + rng.gauss(0, 1))
    >>> det.score_one(12.5) > 0.6
    True

    References
    ----------
    .. [1] Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2).
    """

    name = "cusum"

    def __init__(
        self,
        k: float = 0.5,
        h: float = 5.0,
        halflife: float = 120.0,
        protect_z: float = 3.0,
        relearn_after: int = 60,
        clip: float = 4.0,
        direction: Direction = "up",
    ) -> None:
        super().__init__(direction)
        self.clip = clip
        self.k = k
        self.h = h
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.protect_z = protect_z
        self.relearn_after = relearn_after
        self._mean: float | None = None
        self._absdev = 0.0
        self._s_up = 0.0
        self._s_down = 0.0
        self._protected_run = 0

    def _z(self, x: float) -> float:
        assert self._mean is not None
        scale = max(1.2533 * self._absdev, 0.01 * abs(self._mean), 1e-6)
        return (x - self._mean) / scale

    def _sums(self, z: float) -> tuple[float, float]:
        # Winsorised: one huge outlier adds at most ``clip`` (a spike is the point detector's job).
        z = max(-self.clip, min(self.clip, z))
        return max(0.0, self._s_up + z - self.k), max(0.0, self._s_down - z - self.k)

    def learn_one(self, x: float, t: float | None = None, n: int | None = None) -> None:
        """Update the sums with ``x`` and, unless it is an outlier, the baseline."""
        del t, n
        if not math.isfinite(x):
            return
        self.n_seen += 1
        if self._mean is None:
            self._mean = x
            return
        z = self._z(x)
        if self.n_seen > 10:
            self._s_up, self._s_down = self._sums(z)
        if self.n_seen > 10 and self._oriented(z) > self.protect_z:
            self._protected_run += 1
            if self._protected_run < self.relearn_after:
                return
        else:
            self._protected_run = 0
        a = max(self.alpha, 1.0 / self.n_seen)
        self._absdev += a * (abs(x - self._mean) - self._absdev)
        self._mean += a * (x - self._mean)

    def score_one(self, x: float, t: float | None = None, n: int | None = None) -> float:
        """Score of the sums as they would be after ``x``."""
        del t, n
        if self._mean is None or self.n_seen <= 10 or not math.isfinite(x):
            return 0.0
        up, down = self._sums(self._z(x))
        stat = {"up": up, "down": down, "both": max(up, down)}[self.direction]
        return z_to_score(3.0 * stat / self.h)

    @property
    def expected(self) -> float | None:
        """The exponentially weighted baseline mean."""
        return self._mean
