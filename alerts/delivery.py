"""Delivering one notification to one sink: retries with exponential backoff and jitter."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from newswatch.alerts.exceptions import DeliveryError
from newswatch.alerts.sinks.base import Notification, Sink
from newswatch.metrics import Metrics
from newswatch.settings.alerts import NotifySettings

__all__ = ["Outcome", "backoff_s", "deliver"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of :func:`deliver`: ``ok`` or not, attempts made, and the last error (no secrets)."""

    ok: bool
    attempts: int
    error: str = ""
    status: int | None = None


def backoff_s(attempt: int, settings: NotifySettings, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (1-based): ``d = initial * 2**(attempt-1)``, capped, jittered.

    The delay is drawn uniformly from ``[d/2, d]`` so retries of many notifiers spread out.

    >>> s = NotifySettings(backoff_initial_ms=100, backoff_max_ms=1000)
    >>> [round(backoff_s(a, s, random.Random(0)), 3) for a in (1, 2, 3, 6)]
    [0.092, 0.184, 0.369, 0.922]
    """
    cap = min(settings.backoff_max_ms, settings.backoff_initial_ms * 2 ** (attempt - 1)) / 1000
    return (rng or random).uniform(cap / 2, cap)


async def deliver(
    sink: Sink,
    notification: Notification,
    settings: NotifySettings,
    metrics: Metrics | None = None,
    rng: random.Random | None = None,
) -> Outcome:
    """Send until the sink accepts, a non-retriable error, or ``max_attempts`` attempts."""
    error = ""
    status: int | None = None
    for attempt in range(1, settings.max_attempts + 1):
        t0 = time.perf_counter()
        try:
            status = await sink.send(notification)
        except DeliveryError as exc:
            if metrics is not None:
                metrics.delivery_seconds.labels(sink.name).observe(time.perf_counter() - t0)
            error, status = str(exc), exc.status
            final = not exc.retriable or attempt == settings.max_attempts
            if metrics is not None:
                metrics.deliveries.labels(sink.name, "failed" if final else "retry").inc()
            log.warning(
                "delivery of %s to %s failed (attempt %d): %s", notification.id, sink.name, attempt, error
            )
            if final:
                return Outcome(False, attempt, error, status)
            delay = backoff_s(attempt, settings, rng)
            if exc.retry_after_s is not None:
                delay = min(max(delay, exc.retry_after_s), settings.backoff_max_ms / 1000)
            await asyncio.sleep(delay)
            continue
        if metrics is not None:
            metrics.delivery_seconds.labels(sink.name).observe(time.perf_counter() - t0)
            metrics.deliveries.labels(sink.name, "ok").inc()
        return Outcome(True, attempt, "", status)
    return Outcome(False, settings.max_attempts, error, status)  # pragma: no cover - loop returns
