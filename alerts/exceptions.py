"""Errors of the alerts package, rooted in :class:`~newswatch.errors.NewswatchError`."""

from __future__ import annotations

from newswatch.errors import ConfigError, NewswatchError
from newswatch.io.stage import StageError

__all__ = [
    "DeliveryError",
    "DetectError",
    "NotifyError",
    "SeriesError",
    "SinkConfigError",
    "UnknownDetectorError",
]


class UnknownDetectorError(ConfigError):
    """A detector name that is not registered."""


class SinkConfigError(ConfigError):
    """A sink or route is misconfigured (unknown sink, missing URL or secret)."""


class SeriesError(NewswatchError):
    """An input series (``detect --series``) cannot be read."""


class DeliveryError(NewswatchError):
    """A sink did not accept a notification.

    ``retriable`` is true for timeouts, connection errors, 429 and 5xx answers;
    ``retry_after_s`` carries the receiver's ``Retry-After`` when it sent one.
    The message never contains the sink's URL or secrets.
    """

    def __init__(
        self, message: str, *, retriable: bool, status: int | None = None, retry_after_s: float | None = None
    ):
        super().__init__(message)
        self.retriable = retriable
        self.status = status
        self.retry_after_s = retry_after_s


class DetectError(StageError):
    """The detection stage stopped because Kafka did not take its alert events in time (exit 2).

    Retriable: restarted, it replays recent windows and reads from the last committed offset.
    """


class NotifyError(StageError):
    """The notifier stopped because Kafka did not take its delivery record or dead letter in time.

    Retriable: restarted, it reads the alerts again from the last committed offset and skips
    every delivery the delivery log shows acknowledged, so at most the notifications in flight
    at the failure are sent again (same idempotency key and ``webhook-id``). Exit code 2.
    """
