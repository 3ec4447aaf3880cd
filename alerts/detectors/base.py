"""The detector ABC and the registry of detectors by name.

A detector is a small streaming model of one series (one key, one signal):
``learn_one(x, t)`` updates it with a value, ``score_one(x, t)`` returns an
anomaly score in ``[0, 1]`` (high means anomalous) without changing it. Deciding
whether a score is an alert (thresholds, hysteresis, warm-up, cooldown) is the
job of :mod:`newswatch.alerts.engine`, not of the detector.

Scores share one scale: a detector computes a one-sided standardised deviation
``z`` and maps it with :func:`z_to_score`, so ``z = 3`` is a score of 0.6 and
``z = 2`` is 0.5 whatever the detector.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, TypeVar

from newswatch.alerts.exceptions import UnknownDetectorError

__all__ = ["Detector", "Direction", "ValueModel", "available", "make_detector", "register", "z_to_score"]

Direction = Literal["up", "down", "both"]
#: What a series' values are: a generic level, a count of posts, or a share of ``n`` posts.
ValueModel = Literal["level", "count", "share"]

_REGISTRY: dict[str, type[Detector]] = {}
D = TypeVar("D", bound="type[Detector]")


def z_to_score(z: float) -> float:
    """Map a standardised deviation to ``[0, 1)``: ``z / (z + 2)`` for ``z > 0``, else 0.

    >>> z_to_score(3.0), z_to_score(2.0), z_to_score(-1.0)
    (0.6, 0.5, 0.0)
    """
    if not math.isfinite(z):
        return 1.0 if z > 0 else 0.0
    return z / (z + 2.0) if z > 0 else 0.0


def score_to_z(score: float) -> float:
    """Inverse of :func:`z_to_score` (``score`` in ``[0, 1)``)."""
    score = min(max(score, 0.0), 0.999999)
    return 2.0 * score / (1.0 - score)


class Detector(ABC):
    """Streaming anomaly detector of one series.

    Parameters
    ----------
    direction
        Which deviations count: ``"up"`` (surges; the default, since every signal is
        oriented so that high is bad), ``"down"`` or ``"both"``.
    model
        What the values are (:data:`ValueModel`). A detector that lists a model in
        :attr:`value_models` is given such values as they are (post counts as counts); for
        any other the engine feeds counts through a variance-stabilising transform.
    """

    #: Registry name, set by :func:`register`.
    name: ClassVar[str] = ""
    #: The score at or above which the decision layer calls a window hot when
    #: ``alerts.fire_score`` is not set: the detector's own scale (``z = 3`` for z-scores).
    fire_score: ClassVar[float] = 0.6
    #: The value models this detector models natively.
    value_models: ClassVar[frozenset[str]] = frozenset({"level", "share"})

    def __init__(self, direction: Direction = "up", model: ValueModel = "level") -> None:
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be up, down or both, not {direction!r}")
        if model not in ("level", "count", "share"):
            raise ValueError(f"model must be level, count or share, not {model!r}")
        self.direction: Direction = direction
        self.model: ValueModel = model
        self.n_seen = 0

    @abstractmethod
    def learn_one(self, x: float, t: float | None = None, n: int | None = None) -> None:
        """Update the model with value ``x`` observed at time ``t`` (epoch seconds).

        ``n`` is the number of posts behind ``x`` when ``x`` is a share (binomial sampling
        noise shrinks with ``n``); detectors that do not model it ignore it.
        """

    @abstractmethod
    def score_one(self, x: float, t: float | None = None, n: int | None = None) -> float:
        """Anomaly score of ``x`` at ``t`` (``n`` as in :meth:`learn_one`) in ``[0, 1]``; no side effects."""

    @property
    @abstractmethod
    def expected(self) -> float | None:
        """The value the detector expects now (its baseline), or ``None`` before any data."""

    def is_ordinary(self, x: float, t: float | None = None, n: int | None = None) -> bool:
        """Whether ``x`` is back within the series' normal noise, so a firing alert may resolve
        even while the score still remembers the episode. ``False`` (the score decides) by default."""
        return False

    def expected_at(self, t: float | None) -> float | None:
        """The value expected at time ``t`` (seasonal detectors override it); :attr:`expected` by default."""
        return self.expected

    def _oriented(self, z: float) -> float:
        """Apply :attr:`direction` to a signed deviation."""
        if self.direction == "up":
            return z
        if self.direction == "down":
            return -z
        return abs(z)


def register(cls: D) -> D:
    """Class decorator: add a detector to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of every registered detector."""
    _load_all()
    return sorted(_REGISTRY)


def make_detector(name: str, **params: Any) -> Detector:
    """Build the detector registered as ``name`` with ``params``.

    Raises :class:`~newswatch.alerts.exceptions.UnknownDetectorError` for an unknown name.
    """
    _load_all()
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise UnknownDetectorError(
            f"unknown detector {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}"
        ) from None
    return cls(**params)


def _load_all() -> None:
    # Importing the package imports every detector module, which registers itself.
    import newswatch.alerts.detectors  # noqa: F401
