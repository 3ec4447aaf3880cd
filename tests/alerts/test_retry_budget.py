"""The default retry schedule outlasts a one-minute receiver outage, whatever the jitter."""

from __future__ import annotations

import random

from newswatch.alerts.delivery import backoff_s
from newswatch.settings.alerts import NotifySettings


class _Lowest(random.Random):
    """Jitter always at its low end (the shortest possible schedule)."""

    def uniform(self, a: float, b: float) -> float:
        return a


def test_default_budget_outlasts_a_minute_of_refused_connections() -> None:
    s = NotifySettings()
    gaps = [backoff_s(n, s, _Lowest()) for n in range(1, s.max_attempts)]
    assert sum(gaps) >= 60.0, f"default retries give up after {sum(gaps):.0f} s"
    assert max(gaps) <= s.backoff_max_ms / 1000
