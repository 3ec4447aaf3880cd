"""The alert engine: detector scores → decisions → alert events (pure Python, no I/O).

``AlertEngine.observe(stat)`` takes one :class:`~newswatch.io.schemas.WindowStat`
(final or in-progress) and returns the alert transitions it causes. For each watched
signal of the window's key it scores the value with that series' detector, applies
the guards (minimum support, warm-up, hysteresis, cooldown, rate cap) and learns the
value when the window is final. The same engine runs in the ``alerts run`` stage,
in ``newswatch detect`` and in ``bench/detect.py``.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from newswatch.alerts.detectors.base import Detector, ValueModel, make_detector
from newswatch.alerts.events import AlertEvent, fingerprint_of
from newswatch.io.schemas import WindowStat
from newswatch.metrics import Metrics
from newswatch.settings.alerts import AlertSettings

__all__ = ["SIGNALS", "AlertEngine", "Decider", "Decision", "SeriesWindow", "SignalSpec", "signal_value"]

log = logging.getLogger(__name__)


def anscombe(count: float) -> float:
    """Variance-stabilising transform of a Poisson count: ``2 * sqrt(count + 3/8)``."""
    return 2.0 * math.sqrt(max(count, 0.0) + 0.375)


def inverse_anscombe(y: float) -> float:
    """Count whose :func:`anscombe` is ``y`` (the plain algebraic inverse)."""
    return max(0.0, (y / 2.0) ** 2 - 0.375)


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """How one signal is read from a window and modelled.

    ``model`` is the detector's value model (a post count, a share of ``support`` posts, a
    generic level); the detector sees ``offset + slope * raw``, oriented so that high is bad;
    ``needs_support`` holds back alerts (and learning) on windows with fewer than
    ``alerts.min_support`` posts: a share over three posts is noise, while a count carries
    its own noise model.

    The mean sentiment (in ``[-1, 1]``) is seen as ``(1 - mean) / 2``, a bearishness in
    ``[0, 1]`` modelled like a share of ``support`` posts: its standard error is at most
    that of a share with the same mean, so a mean over 300 posts is judged more strictly
    than one over 12.
    """

    name: str
    model: ValueModel
    read: Callable[[WindowStat], float] | None = None
    offset: float = 0.0
    slope: float = 1.0
    needs_support: bool = True

    def oriented(self, raw: float) -> float:
        """The value a detector sees for the raw signal value."""
        return self.offset + self.slope * raw

    def raw(self, oriented: float) -> float:
        """Back to signal units (what alerts report)."""
        return (oriented - self.offset) / self.slope

    def value(self, stat: WindowStat) -> float:
        """The raw value of this signal in ``stat`` (before orientation)."""
        if self.read is None:
            raise ValueError(f"signal {self.name!r} is not read from windows")
        return self.read(stat)

    @property
    def quiet_value(self) -> float | None:
        """The raw value a silent key stands for: no posts for a count, else unknown (None)."""
        return 0.0 if self.model == "count" else None


#: Every signal the engine knows. ``series`` is a generic value (``newswatch detect``).
SIGNALS: dict[str, SignalSpec] = {
    "volume": SignalSpec("volume", "count", lambda w: float(w.count), needs_support=False),
    "negative_share": SignalSpec("negative_share", "share", lambda w: float(w.negative_share)),
    "mean_sentiment": SignalSpec(
        "mean_sentiment", "share", lambda w: float(w.mean_score), offset=0.5, slope=-0.5
    ),
    "series": SignalSpec("series", "level", needs_support=False),
}


def signal_value(stat: WindowStat, signal: str) -> float:
    """The value of ``signal`` in ``stat``, oriented so that high is bad (as detectors see it).

    ``volume`` is the post count, ``negative_share`` the bearish share, ``mean_sentiment``
    ``(1 - mean score) / 2``. Detectors that do not model counts get the volume through
    :func:`anscombe` (see :meth:`AlertEngine.observe_value`).
    """
    spec = SIGNALS[signal]
    return spec.oriented(spec.value(stat))


@dataclass(slots=True)
class Decision:
    """What :class:`Decider` concluded about one scored window."""

    transition: str | None = None  # "firing", "resolved" or None
    suppressed: str | None = None  # reason a would-be alert was held back
    peak_score: float = 0.0


@dataclass(slots=True)
class Decider:
    """Hysteresis, warm-up, support and cooldown of one series (the rate cap is global).

    Windows are identified by their start; repeated updates of one in-progress window
    count once. A series fires after ``fire_windows`` consecutive distinct windows at or
    above ``fire_level`` (``alerts.fire_score``, or the detector's own level where that is
    unset; or one at ``immediate_score``) and resolves after ``resolve_windows``
    consecutive final windows below ``resolve_score`` (or with values the detector calls
    ordinary). After resolving it re-arms only once a final window
    scores below ``resolve_score``: a score that still remembers the episode cannot fire
    it again.
    """

    settings: AlertSettings
    #: The hot level: ``settings.fire_score``, or the detector's own where that is unset.
    fire_level: float = 0.6
    learned: int = 0
    firing: bool = False
    episode_start_ms: int = 0
    peak_score: float = 0.0
    hot_run: int = 0
    hot_last_start: int | None = None
    cool_run: int = 0
    cool_last_start: int | None = None
    resolved_at_ms: int | None = None
    armed: bool = True

    def decide(
        self,
        score: float,
        start_ms: int,
        end_ms: int,
        supported: bool,
        final: bool,
        rate_ok: Callable[[], bool],
        ordinary: bool = False,
    ) -> Decision:
        """Update the state with one scored window and say whether it is a transition.

        ``supported`` is False for a ratio signal's window with fewer than ``min_support`` posts;
        ``ordinary`` is True when the detector says the value is back within its noise (the
        window is then cool whatever the score still remembers).
        """
        s = self.settings
        if not self.firing and not self.armed:
            if final and score < s.resolve_score:
                self.armed = True
            return Decision()
        if not self.firing:
            hot = score >= self.fire_level and supported
            if hot:
                if self.hot_last_start is not None and start_ms - self.hot_last_start > end_ms - start_ms:
                    self.hot_run = 0  # a gap (no window in between): not consecutive
                if self.hot_last_start is None or start_ms > self.hot_last_start:
                    self.hot_run += 1
                    self.hot_last_start = start_ms
            elif final and self.hot_last_start is not None and start_ms >= self.hot_last_start:
                self.hot_run = 0
                self.hot_last_start = None
            if score >= self.fire_level and not supported:
                return Decision(suppressed="support") if final else Decision()
            if not hot or (self.hot_run < s.fire_windows and score < s.immediate_score):
                return Decision()
            if self.learned < s.warmup_windows:
                return Decision(suppressed="warmup")
            if self.resolved_at_ms is not None and end_ms - self.resolved_at_ms < s.cooldown_s * 1000:
                return Decision(suppressed="cooldown")
            if not rate_ok():
                return Decision(suppressed="rate_cap")
            self.firing = True
            self.episode_start_ms = start_ms
            self.peak_score = score
            self.cool_run = 0
            self.cool_last_start = None
            return Decision(transition="firing", peak_score=score)
        self.peak_score = max(self.peak_score, score)
        if not final:
            return Decision()
        if score < s.resolve_score or not supported or ordinary:
            if self.cool_last_start is None or start_ms > self.cool_last_start:
                self.cool_run += 1
                self.cool_last_start = start_ms
        elif self.cool_last_start is None or start_ms >= self.cool_last_start:
            self.cool_run = 0
            self.cool_last_start = None
        if self.cool_run >= s.resolve_windows:
            return self.resolve(end_ms)
        return Decision()

    def resolve(self, end_ms: int) -> Decision:
        """End the firing episode at ``end_ms`` (also used when the key falls silent)."""
        self.firing = False
        self.resolved_at_ms = end_ms
        self.hot_run = 0
        self.hot_last_start = None
        self.armed = False
        return Decision(transition="resolved", peak_score=self.peak_score)


@dataclass(frozen=True, slots=True)
class SeriesWindow:
    """One window of one series, as the engine scores it and reports it in alerts."""

    kind: str
    key: str
    window: str
    signal: str
    start_ms: int
    end_ms: int
    support: int
    examples: tuple[dict[str, Any], ...] = ()

    @property
    def ident(self) -> tuple[str, str, str, str]:
        """The series this window belongs to."""
        return (self.kind, self.key, self.window, self.signal)


@dataclass(slots=True)
class _Series:
    detector: Detector
    decider: Decider
    last_learned_start: int | None = None
    last_score: float = 0.0
    last_end_ms: int = 0
    window_ms: int = 60_000
    fired_event: AlertEvent | None = None
    stabilise: bool = False  # counts go through anscombe() for a detector without a count model


class AlertEngine:
    """Turns window statistics into alert events.

    Parameters
    ----------
    settings
        The ``alerts`` settings section.
    metrics
        Where fired/resolved/suppressed counts go (optional).
    detector_factory
        Builds one detector per series; by default ``settings.detector`` with
        ``settings.detector_params``.
    """

    def __init__(
        self,
        settings: AlertSettings | None = None,
        metrics: Metrics | None = None,
        detector_factory: Callable[[], Detector] | None = None,
    ) -> None:
        self.settings = settings or AlertSettings()
        self.metrics = metrics
        s = self.settings
        if detector_factory is None:
            make_detector(s.detector, **s.detector_params)  # fail early on a bad name/params

            def detector_factory() -> Detector:
                return make_detector(s.detector, **s.detector_params)

        self._factory = detector_factory
        sample = self._factory()
        self.rule = sample.name
        #: The hot level of every series: alerts.fire_score, else the detector's own scale.
        self.fire_level = s.fire_score if s.fire_score is not None else sample.fire_score
        if s.resolve_score > self.fire_level:
            raise ValueError(
                f"alerts.resolve_score ({s.resolve_score}) must not exceed the fire level "
                f"({self.fire_level}, {sample.name}'s own unless alerts.fire_score is set): hysteresis"
            )
        self._series: OrderedDict[tuple[str, str, str, str], _Series] = OrderedDict()
        self._fired_at: deque[int] = deque()
        self._firing: set[tuple[str, str, str, str]] = set()
        self._clock_ms = 0
        self._replaying = False

    def _rate_ok(self, now_ms: int) -> bool:
        while self._fired_at and now_ms - self._fired_at[0] >= 60_000:
            self._fired_at.popleft()
        if len(self._fired_at) >= self.settings.max_alerting_keys_per_min:
            return False
        self._fired_at.append(now_ms)
        return True

    def _get(self, ident: tuple[str, str, str, str]) -> _Series:
        series = self._series.get(ident)
        if series is None:
            detector = self._factory()
            detector.model = SIGNALS[ident[3]].model
            series = _Series(
                detector,
                Decider(self.settings, self.fire_level),
                stabilise=detector.model not in detector.value_models,
            )
            self._series[ident] = series
            if len(self._series) > self.settings.max_series:
                self._series.popitem(last=False)
        else:
            self._series.move_to_end(ident)
        return series

    def observe(self, stat: WindowStat, final: bool | None = None) -> list[AlertEvent]:
        """Score, decide and (for final windows) learn one window; return the transitions.

        ``final`` defaults to ``stat.final`` (in-progress updates are scored, never learned).
        """
        s = self.settings
        if stat.window not in s.windows or stat.kind not in s.kinds:
            return []
        if final is None:
            final = stat.final
        events: list[AlertEvent] = []
        for signal in s.signals:
            event = self.observe_value(
                kind=stat.kind,
                key=stat.key,
                window=stat.window,
                signal=signal,
                value=signal_value(stat, signal),
                start_ms=stat.start_ms,
                end_ms=stat.end_ms,
                support=stat.count,
                final=final,
                examples=stat.examples,
            )
            if event is not None:
                events.append(event)
        self._clock_ms = max(self._clock_ms, stat.end_ms)
        events.extend(self.expire(self._clock_ms))
        return events

    def expire(self, now_ms: int) -> list[AlertEvent]:
        """Resolve firing series that fell silent: no window for ``resolve_windows + 2`` window lengths.

        A key that stops getting posts emits no windows at all, so without this its alert
        would never resolve. ``observe`` calls it with the latest window end seen (event time).
        """
        events: list[AlertEvent] = []
        for ident in list(self._firing):
            series = self._series.get(ident)
            if series is None or not series.decider.firing:
                self._firing.discard(ident)
                continue
            if now_ms - series.last_end_ms < (self.settings.resolve_windows + 2) * series.window_ms:
                continue
            kind, key, window, signal = ident
            decision = series.decider.resolve(now_ms)
            self._firing.discard(ident)
            quiet = SIGNALS[signal].quiet_value
            value = quiet if quiet is not None else (series.detector.expected or 0.0)
            silent = SeriesWindow(kind, key, window, signal, now_ms - series.window_ms, now_ms, 0)
            events.append(self._event(silent, series, decision, value))
            self._count(events[-1])
        return events

    def observe_value(
        self,
        *,
        kind: str,
        key: str,
        window: str,
        signal: str,
        value: float,
        start_ms: int,
        end_ms: int,
        support: int,
        final: bool = True,
        examples: tuple[dict[str, Any], ...] = (),
    ) -> AlertEvent | None:
        """Score, decide and learn one oriented value of one series (what :meth:`observe` does per signal)."""
        ident = (kind, key, window, signal)
        spec = SIGNALS[signal]
        series = self._get(ident)
        series.last_end_ms = max(series.last_end_ms, end_ms)
        series.window_ms = max(1, end_ms - start_ms)
        t = start_ms / 1000.0
        n = support if spec.model == "share" else None  # a share of `support` posts
        x = anscombe(value) if series.stabilise else value
        score = series.detector.score_one(x, t, n=n)
        series.last_score = score
        ordinary = series.decider.firing and series.detector.is_ordinary(x, t, n=n)
        # A share or a mean over a handful of posts is noise: ratio signals need min_support posts.
        supported = not spec.needs_support or support >= self.settings.min_support
        decision = series.decider.decide(
            score, start_ms, end_ms, supported, final, lambda: self._rate_ok(end_ms), ordinary
        )
        if decision.suppressed and self.metrics is not None and not self._replaying:
            self.metrics.alerts_suppressed.labels(decision.suppressed).inc()
        event = None
        if decision.transition == "firing":
            self._firing.add(ident)
        elif decision.transition == "resolved":
            self._firing.discard(ident)
        if decision.transition is not None:
            seen = SeriesWindow(kind, key, window, signal, start_ms, end_ms, support, examples)
            event = self._event(seen, series, decision, value)
            self._count(event)
        if (
            final
            and supported
            and (series.last_learned_start is None or start_ms > series.last_learned_start)
        ):
            series.detector.learn_one(x, t, n=n)
            series.last_learned_start = start_ms
            series.decider.learned += 1
        return event

    def last_score(self, kind: str, key: str, window: str, signal: str) -> float:
        """Score of the series' latest observed value (0 for an unseen series)."""
        series = self._series.get((kind, key, window, signal))
        return 0.0 if series is None else series.last_score

    def is_firing(self, kind: str, key: str, window: str, signal: str) -> bool:
        """Whether the series is firing now."""
        series = self._series.get((kind, key, window, signal))
        return series is not None and series.decider.firing

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Within this block, transitions are not counted in the metrics (a replay on start-up).

        The detectors still learn and the deciders still change state: a replay rebuilds both.
        """
        self._replaying = True
        try:
            yield
        finally:
            self._replaying = False

    def _count(self, event: AlertEvent) -> None:
        if self.metrics is None:
            return
        open_ = event.status == "firing"
        self.metrics.set_alert_open(event.kind, event.key, event.window, event.signal, open_)
        if self._replaying:
            return  # the state above is rebuilt by a replay; the counters count new alerts only
        counter = self.metrics.alerts_fired if event.status == "firing" else self.metrics.alerts_resolved
        counter.labels(event.severity).inc()

    def _event(self, w: SeriesWindow, series: _Series, decision: Decision, x: float) -> AlertEvent:
        """The alert event of a transition of ``series`` at window ``w``; ``x`` is what the detector saw."""
        kind, key, window, signal, end_ms = w.kind, w.key, w.window, w.signal, w.end_ms
        s = self.settings
        baseline = series.detector.expected_at(w.start_ms / 1000.0)
        if series.stabilise and baseline is not None:
            baseline = inverse_anscombe(baseline)
        spec = SIGNALS[signal]
        observed = spec.raw(x)
        baseline = None if baseline is None else spec.raw(baseline)
        if decision.transition == "resolved" and series.fired_event is not None:
            severity = series.fired_event.severity
            if decision.peak_score >= s.critical_score:
                severity = "critical"
        else:
            severity = "critical" if decision.peak_score >= s.critical_score else "warning"
        top = tuple(sorted(w.examples, key=lambda e: float(e.get("score", 0.0)))[:3])
        fp = fingerprint_of(kind, key, window, signal, self.rule)
        values = {
            "key": quote(key, safe=""),
            "kind": kind,
            "signal": signal,
            "window": window,
            "start_ms": series.decider.episode_start_ms - 3_600_000,
            "end_ms": end_ms + 3_600_000,
            "fingerprint": fp,
        }
        try:
            url = s.dashboard_url_template.format_map(values)
        except (KeyError, ValueError, IndexError):
            url = s.dashboard_url_template
        event = AlertEvent(
            fingerprint=fp,
            status="firing" if decision.transition == "firing" else "resolved",
            severity=severity,
            kind=kind,
            key=key,
            signal=signal,
            rule=self.rule,
            window=window,
            start_ms=w.start_ms,
            end_ms=end_ms,
            episode_start_ms=series.decider.episode_start_ms,
            observed=round(observed, 6),
            baseline=None if baseline is None else round(baseline, 6),
            score=round(decision.peak_score, 4),
            support=w.support,
            examples=top,
            dashboard_url=url,
        )
        if event.status == "firing":
            series.fired_event = event
        else:
            series.fired_event = None
        return event
