"""Prometheus Alertmanager: ``POST /api/v2/alerts`` so its routing, silences and inhibition apply.

The client follows the API's contract (``docs/alerts.md``, "Prometheus Alertmanager"):

* **Re-send.** The sink remembers the alerts it has active in Alertmanager and posts them
  again every ``resend_interval_s`` (a background task between ``start()`` and ``stop()``).
* **endsAt.** An active alert carries ``endsAt`` = now + :data:`EXPIRY_RESENDS` resend
  intervals, so the alerts of a stopped notifier expire on their own; a resolved one
  carries ``endsAt`` = now.
* **Stable identity.** The labels are the same for every transition of an alert but
  ``severity``: when an alert's severity changes (an escalation, or a resolve that reports a
  higher severity than the firing did) the labelset posted before is resolved along with it,
  so no labelset is left behind.
* **HA.** ``url`` and ``urls`` are replicas of one Alertmanager cluster; every request goes
  to each. A notification is delivered when at least one replica accepted it; a replica
  that did not gets the active alerts, and the resolves it missed, at the next re-send.

Alertmanager passes labels and annotations on to its own receivers (Slack, PagerDuty, …)
through templates, so texts from posts are neutralised here as for every chat channel
(:func:`~newswatch.alerts.sinks._text.neutral`). Alertmanager documents no size limit;
label values are cut to :data:`LABEL_CHARS`, annotations to :data:`ANNOTATION_CHARS`
(JSON annotations drop whole items, so they stay valid JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.exceptions import DeliveryError
from newswatch.alerts.sinks._text import (
    alert_line,
    cut,
    display_key,
    neutral,
    safe_also_moved,
    safe_posts,
    safe_url,
)
from newswatch.alerts.sinks.base import Notification, Sink
from newswatch.settings.alerts import SinkSettings

if TYPE_CHECKING:
    from newswatch.alerts.incidents import IncidentBook

__all__ = ["EXPIRY_RESENDS", "AlertmanagerSink", "alertmanager_alerts", "labelset"]

log = logging.getLogger(__name__)

#: An active alert's ``endsAt`` is this many resend intervals ahead (Prometheus uses 4 too):
#: three re-sends may be lost before Alertmanager ends the alert on its own.
EXPIRY_RESENDS = 4
#: The resend interval when none is given (``notify.sinks[].resend_interval_s``' default).
DEFAULT_RESEND_S = 60.0
#: At most this many alerts in one re-send request.
RESEND_BATCH = 500
LABEL_CHARS = 1024
ANNOTATION_CHARS = 4000


def _iso(ms: int | float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _now_ms() -> int:
    return int(time.time() * 1000)


def alertmanager_alerts(
    n: Notification,
    *,
    now_ms: int | None = None,
    resend_interval_s: float = DEFAULT_RESEND_S,
    runbook_url: str = "",
) -> list[dict[str, Any]]:
    """The ``postableAlerts`` body: labels identify the alert, annotations describe it.

    A firing alert ends :data:`EXPIRY_RESENDS` resend intervals after ``now_ms`` (wall
    clock), a resolved one at ``now_ms``; ``startsAt`` is the episode start, never after
    ``now_ms`` (Alertmanager rejects an end before the start).

    Alerts of an incident keep their own labels (those a standalone notification would
    give them, so firing and resolved transitions match); the incident is in annotations
    (``incident``, ``incident_lead``, ``incident_summary``, ``incident_also_moved``,
    ``incident_evidence``), and all its alerts go in one request.
    """
    now = _now_ms() if now_ms is None else now_ms
    expiry_ms = round(EXPIRY_RESENDS * resend_interval_s * 1000)
    runbook = safe_url(runbook_url, ANNOTATION_CHARS) if runbook_url else ""
    out = []
    inc = n.incident
    for a in n.alerts:
        group = inc.member_groups.get(a.fingerprint, n.group) if inc is not None else n.group
        annotations = {
            "summary": cut(alert_line(a), ANNOTATION_CHARS),
            "description": _description(a, inc.summary if inc is not None else ""),
            "observed": f"{a.observed:g}",
            "baseline": "" if a.baseline is None else f"{a.baseline:g}",
            "score": f"{a.score:.3f}",
            "dashboard": _url(a.dashboard_url),
            "examples": _json_within(safe_posts(a.examples[:3], 1000)),
        }
        if runbook:
            annotations["runbook_url"] = runbook
        if inc is not None:
            annotations.update(
                incident=inc.id,
                incident_lead=f"{neutral(inc.lead_kind, 40)} {display_key(inc.lead_key)}",
                incident_summary=neutral(inc.summary, ANNOTATION_CHARS),
                incident_also_moved=_json_within(safe_also_moved(inc)),
                incident_evidence=_json_within(safe_posts(inc.evidence, 1000)),
            )
        out.append(
            {
                "labels": _labels(a, group),
                "annotations": annotations,
                "startsAt": _iso(min(a.episode_start_ms, now)),
                "endsAt": _iso(now if a.status == "resolved" else now + expiry_ms),
                "generatorURL": _url(a.dashboard_url) or "http://newswatch.invalid/",
            }
        )
    return out


def _labels(a: AlertEvent, group: str) -> dict[str, str]:
    """Identity labels; ``fingerprint`` stays exact, so two keys cut alike remain two alerts."""
    labels = {
        "alertname": "NewswatchAnomaly",
        "fingerprint": a.fingerprint,
        "kind": a.kind,
        "key": neutral(a.key, LABEL_CHARS),
        "signal": a.signal,
        "window": a.window,
        "rule": a.rule,
        "severity": a.severity,
        "group": neutral(group, LABEL_CHARS),
    }
    return labels


def labelset(alert: dict[str, Any]) -> str:
    """The identity of a postable alert in Alertmanager: its labels (canonical JSON)."""
    return json.dumps(alert["labels"], sort_keys=True, ensure_ascii=False)


def _description(a: AlertEvent, incident_summary: str) -> str:
    """A sentence for people: what moved, against what, on how many posts, since when."""
    base = "no baseline yet" if a.baseline is None else f"a baseline of {a.baseline:g}"
    since = datetime.fromtimestamp(a.episode_start_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"{a.severity.capitalize()} anomaly on {neutral(a.kind, 40)} {display_key(a.key)}: "
        f"{a.signal} is {a.observed:g} against {base} (score {a.score:.2f}, {a.support} posts "
        f"in the {a.window} window), since {since}."
    )
    if incident_summary:
        text += " Incident: " + neutral(incident_summary)
    return cut(text, ANNOTATION_CHARS)


def _url(url: str) -> str:
    """The dashboard link when it is an http(s) URL that fits an annotation, else empty."""
    return safe_url(url, ANNOTATION_CHARS)


def _json_within(items: list[dict[str, Any]], limit: int = ANNOTATION_CHARS) -> str:
    """``items`` as JSON of at most ``limit`` characters, dropping items from the end."""
    while items:
        text = json.dumps(items, ensure_ascii=False)
        if len(text) <= limit:
            return text
        items = items[:-1]
    return "[]"


def _endpoint(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/api/v2/alerts") else url + "/api/v2/alerts"


def _ends_ms(alert: dict[str, Any]) -> float:
    return datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")).timestamp() * 1000


class AlertmanagerSink(Sink):
    """Posts to ``<url>/api/v2/alerts`` of every replica and re-sends the active alerts.

    ``url`` (or ``url_file``) and ``urls`` are Alertmanager base URLs (replicas of one HA
    cluster). The active alerts are kept in memory, keyed by fingerprint; after a restart
    the notifier hands them back with :meth:`resume`.
    """

    sink_type = "alertmanager"

    def __init__(self, settings: SinkSettings, timeout_s: float = 5.0) -> None:
        super().__init__(settings, timeout_s)
        more = [u.get_secret_value() for u in settings.urls]
        self._urls = list(dict.fromkeys(_endpoint(u) for u in (self._url, *more)))
        self.resend_interval_s = settings.resend_interval_s
        self.runbook_url = settings.runbook_url
        #: Fingerprint → the alert as last posted firing (its labels carry the severity).
        self._active: dict[str, dict[str, Any]] = {}
        #: Fingerprint → the idempotency key of the resolve that ends the active alert.
        self._resolve_keys: dict[str, str] = {}
        #: Whether the delivery log shows a transition acknowledged by this sink (see :meth:`resume`).
        self._acknowledged: Callable[[str], bool] | None = None
        #: Per replica: resolved alerts (by labelset) it has not accepted yet.
        self._unsent: list[dict[str, dict[str, Any]]] = [{} for _ in self._urls]
        #: Per replica: requests go one at a time, so a re-send never overtakes a resolve.
        self._locks = [asyncio.Lock() for _ in self._urls]
        self._resender: asyncio.Task[None] | None = None

    def default_url(self) -> str | None:
        """The first of ``urls`` when neither ``url`` nor ``url_file`` is set."""
        return self.settings.urls[0].get_secret_value() if self.settings.urls else None

    @property
    def replicas(self) -> int:
        """How many Alertmanager replicas every request goes to."""
        return len(self._urls)

    def active(self) -> list[dict[str, Any]]:
        """The alerts this sink holds active in Alertmanager (as last posted)."""
        return list(self._active.values())

    async def start(self) -> None:
        """Open the HTTP session and start re-sending the active alerts every ``resend_interval_s``."""
        await super().start()
        if self._resender is None:
            self._resender = asyncio.create_task(self._resend_loop(), name=f"alertmanager-resend-{self.name}")

    async def stop(self) -> None:
        """Stop re-sending (the alerts then expire in Alertmanager on their own) and close the session."""
        task, self._resender = self._resender, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().stop()

    def _holds_resources(self) -> bool:
        return self._session is not None or self._resender is not None

    async def send(self, notification: Notification) -> int:
        """POST every member alert in one request to each replica; see the module docstring.

        Raises :class:`DeliveryError` when no replica accepted (retriable if any failure is).
        """
        now = _now_ms()
        posted = alertmanager_alerts(
            notification, now_ms=now, resend_interval_s=self.resend_interval_s, runbook_url=self.runbook_url
        )
        body: list[dict[str, Any]] = []
        for a, alert in zip(notification.alerts, posted, strict=True):
            # The active set changes before anything is posted, so a re-send (which waits for the
            # replica's lock) never posts a state older than this request: a resolved alert is
            # forgotten, a firing one replaces the labelset posted before, which, when it differs
            # (another severity), is resolved in the same request.
            if a.status == "resolved":
                before = self._active.pop(a.fingerprint, None)
                self._resolve_keys.pop(a.fingerprint, None)
            else:
                before = self._active.get(a.fingerprint)
                self._active[a.fingerprint] = alert
                self._resolve_keys[a.fingerprint] = _resolved_key(a)
            if before is not None and labelset(before) != labelset(alert):
                body.append({**before, "endsAt": _iso(now)})
            body.append(alert)
        results = await asyncio.gather(*(self._post_to(i, body) for i in range(self.replicas)))
        accepted = [r for r in results if isinstance(r, int)]
        if not accepted:  # still held: the re-send brings it once a replica is back
            raise _combined([r for r in results if isinstance(r, DeliveryError)])
        for r in results:
            if isinstance(r, DeliveryError):
                log.warning("%s; it gets the alerts at the next re-send", r)
        return accepted[0]

    async def _post_to(self, i: int, alerts: list[dict[str, Any]]) -> int | DeliveryError:
        """POST ``alerts`` to replica ``i``; resolves it does not accept wait for the next re-send."""
        async with self._locks[i]:
            try:
                status = await self._post_batch(i, alerts)
            except DeliveryError as exc:
                for alert in alerts:
                    if _ends_ms(alert) <= _now_ms():
                        self._unsent[i][labelset(alert)] = alert
                return exc
        for alert in alerts:
            self._unsent[i].pop(labelset(alert), None)
        return status

    async def _post_batch(self, i: int, alerts: list[dict[str, Any]]) -> int:
        body = json.dumps(alerts, ensure_ascii=False).encode()
        try:
            status, _ = await self._post(self._urls[i], body, {"Content-Type": "application/json"})
        except DeliveryError as exc:
            if self.replicas == 1:
                raise
            raise DeliveryError(
                f"{exc} (Alertmanager replica {i + 1} of {self.replicas})",
                retriable=exc.retriable,
                status=exc.status,
                retry_after_s=exc.retry_after_s,
            ) from None
        return status

    async def resend(self) -> None:
        """Post the active alerts (fresh ``endsAt``) and each replica's missed resolves to every replica.

        An active alert whose resolve the delivery log shows acknowledged for this sink (by
        another notifier replica, after a rebalance moved its partition) is dropped first.
        """
        if self._acknowledged is not None:
            for fingerprint, key in list(self._resolve_keys.items()):
                if self._acknowledged(key):
                    del self._resolve_keys[fingerprint]
                    self._active.pop(fingerprint, None)
        await asyncio.gather(*(self._resend_to(i) for i in range(self.replicas)))

    async def _resend_to(self, i: int) -> None:
        async with self._locks[i]:
            now = _now_ms()
            ends = _iso(now + round(EXPIRY_RESENDS * self.resend_interval_s * 1000))
            active = [{**a, "endsAt": ends} for a in self._active.values()]
            keys = {labelset(a) for a in active}
            horizon_ms = EXPIRY_RESENDS * self.resend_interval_s * 1000
            unsent = self._unsent[i]
            for key, alert in list(unsent.items()):
                # The replica's own copy has expired by now, or the alert is active again.
                if key in keys or _ends_ms(alert) + horizon_ms < now:
                    del unsent[key]
            alerts = [*active, *unsent.values()]
            for start in range(0, len(alerts), RESEND_BATCH):
                chunk = alerts[start : start + RESEND_BATCH]
                try:
                    await self._post_batch(i, chunk)
                except DeliveryError as exc:
                    log.warning("re-send of %d alert(s) failed: %s", len(alerts), exc)
                    return
                for alert in chunk:
                    unsent.pop(labelset(alert), None)

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resend_interval_s)
            try:
                await self.resend()
            except Exception:  # never let one bad round end the re-sending
                log.exception("re-send to Alertmanager sink %r failed", self.name)

    def resume(
        self,
        acknowledged: Callable[[str], bool],
        book: IncidentBook | None = None,
        group_of: Callable[[AlertEvent], str] = lambda a: a.kind,
    ) -> int:
        """Take back, after a restart, the alerts this sink had active: returns how many it holds.

        ``acknowledged(idempotency_key)`` says whether the delivery log shows a transition
        acknowledged by this sink; the re-send consults it from now on (an alert whose resolve
        another notifier replica delivered is no longer re-sent). The alerts taken back are the
        members of the incidents in ``book`` (the notifier's incident log) whose firing
        transition this sink acknowledged and whose resolved transition it did not; they are
        posted again at the next re-send, as the incident's notification (or a standalone one,
        grouped by ``group_of``) had them.
        """
        self._acknowledged = acknowledged
        if book is None:
            return len(self._active)
        now = _now_ms()
        for inc in book.incidents.values():
            alive = [
                m.firing
                for m in inc.members.values()
                if acknowledged(m.firing.idempotency_key)
                and not acknowledged(_resolved_key(m.firing))
                and (m.firing.idempotency_key in (inc.paged or ()))
            ]
            if not alive:
                continue
            notes: Iterable[Notification]
            if len(inc.paged or ()) > 1:
                groups = {a.fingerprint: group_of(a) for a in alive}
                notes = [
                    Notification(
                        alerts=tuple(alive), group="incident", incident=inc.summary("firing", groups)
                    )
                ]
            else:
                notes = [Notification(alerts=(a,), group=group_of(a)) for a in alive]
            for note in notes:
                posted = alertmanager_alerts(
                    note, now_ms=now, resend_interval_s=self.resend_interval_s, runbook_url=self.runbook_url
                )
                for a, alert in zip(note.alerts, posted, strict=True):
                    self._active.setdefault(a.fingerprint, alert)
                    self._resolve_keys.setdefault(a.fingerprint, _resolved_key(a))
        return len(self._active)


def _resolved_key(a: AlertEvent) -> str:
    return replace(a, status="resolved").idempotency_key


def _combined(errors: list[DeliveryError]) -> DeliveryError:
    """One error for a notification no replica accepted."""
    if len(errors) == 1:
        return errors[0]
    waits = [e.retry_after_s for e in errors if e.retry_after_s is not None]
    return DeliveryError(
        "no Alertmanager replica accepted: " + "; ".join(str(e) for e in errors),
        retriable=any(e.retriable for e in errors),
        status=errors[-1].status,
        retry_after_s=max(waits) if waits else None,
    )
