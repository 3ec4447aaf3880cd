"""Baseline: plain rolling mean ± 3 standard deviations."""

from __future__ import annotations

import math
from collections import deque

from newswatch.alerts.detectors.base import Detector, Direction, register, z_to_score

__all__ = ["ThreeSigma"]


@register
class ThreeSigma(Detector):
    """The textbook 3-sigma rule over the last ``window`` values (a benchmark baseline).

    No robustness, no seasonality, no outlier protection: every value is learned.
    ``z = 3`` maps to a score of 0.6, the default firing level.

    Examples
    --------
    >>> det = ThreeSigma(window=10)
    >>> for x in [10, 11, 9, 10, 12, 8, 10, 11, 9, 10]:
    ...     det.learn_one(x)
    >>> round(det.score_one(10.0), 2), round(det.score_one(16.0), 2)
    (0.0, 0.72)
    """

    name = "three_sigma"

    def __init__(self, window: int = 60, direction: Direction = "up") -> None:
        super().__init__(direction)
        self._values: deque[float] = deque(maxlen=window)

    def learn_one(self, x: float, t: float | None = None, n: int | None = None) -> None:
        """Append ``x`` to the rolling window."""
        del t, n
        if math.isfinite(x):
            self._values.append(x)
            self.n_seen += 1

    def score_one(self, x: float, t: float | None = None, n: int | None = None) -> float:
        """``z_to_score`` of ``(x - mean) / std``."""
        del t, n
        n = len(self._values)
        if n < 3 or not math.isfinite(x):
            return 0.0
        mean = sum(self._values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in self._values) / (n - 1))
        return z_to_score(self._oriented((x - mean) / max(std, 1e-6, 0.01 * abs(mean))))

    @property
    def expected(self) -> float | None:
        """The rolling mean."""
        return sum(self._values) / len(self._values) if self._values else None
