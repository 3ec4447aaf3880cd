"""Baseline: a threshold fixed once after a training period."""

from __future__ import annotations

import math

from newswatch.alerts.detectors.base import Detector, Direction, register, z_to_score

__all__ = ["FixedThreshold"]


@register
class FixedThreshold(Detector):
    """Alert above ``mean + 3 std`` of the first ``train`` values, never updated (a baseline).

    This is what a hand-set static threshold amounts to: right for the period it was
    set on, blind to daily and weekly patterns and to drift. The score maps the
    distance to the threshold so that the threshold itself scores 0.6.

    Examples
    --------
    >>> det = FixedThreshold(train=5)
    >>> for x in [10, 12, 8, 11, 9]:
    ...     det.learn_one(x)
    >>> round(det.threshold, 2), det.score_one(20.0) > 0.6
    (14.74, True)
    """

    name = "fixed_threshold"

    def __init__(self, train: int = 1440, direction: Direction = "up") -> None:
        super().__init__(direction)
        self.train = train
        self._sum = 0.0
        self._sq = 0.0
        self._mean = 0.0
        self._std = 0.0

    def learn_one(self, x: float, t: float | None = None, n: int | None = None) -> None:
        """Accumulate ``x`` while training; afterwards nothing changes."""
        del t, n
        if not math.isfinite(x) or self.n_seen >= self.train:
            return
        self.n_seen += 1
        self._sum += x
        self._sq += x * x
        self._mean = self._sum / self.n_seen
        var = max(0.0, self._sq / self.n_seen - self._mean**2) * self.n_seen / max(1, self.n_seen - 1)
        self._std = max(math.sqrt(var), 1e-6, 0.01 * abs(self._mean))

    @property
    def threshold(self) -> float:
        """The upper threshold (``mean + 3 std``)."""
        return self._mean + 3 * self._std

    def score_one(self, x: float, t: float | None = None, n: int | None = None) -> float:
        """0.6 at the threshold, growing with the distance beyond it."""
        del t, n
        if self.n_seen < 3 or not math.isfinite(x):
            return 0.0
        return z_to_score(self._oriented((x - self._mean) / self._std))

    @property
    def expected(self) -> float | None:
        """The training mean."""
        return self._mean if self.n_seen else None
