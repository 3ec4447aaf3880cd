"""Routing (which sinks get an alert) and grouping (which alerts travel together)."""

from __future__ import annotations

import fnmatch
from collections import defaultdict

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.exceptions import SinkConfigError
from newswatch.alerts.sinks.base import Notification
from newswatch.settings.alerts import NotifySettings, RouteSettings

__all__ = ["Router", "group_notifications"]

_RANK = {"warning": 0, "critical": 1}


class Router:
    """Maps an alert to sink names by the ``notify.routes`` rules (first match first).

    Without routes every alert goes to every sink. A rule matches when every condition it
    names matches (severity at least ``min_severity``; kind, key glob, signal in its lists);
    matching continues past a rule unless it sets ``stop``.
    """

    def __init__(self, settings: NotifySettings, sink_names: list[str]) -> None:
        self.sink_names = sink_names
        self.routes = settings.routes
        self.groups = settings.groups
        known = set(sink_names)
        for route in self.routes:
            unknown = [s for s in route.sinks if s not in known]
            if unknown:
                configured = ", ".join(sink_names) or "none"
                raise SinkConfigError(
                    f"route names unknown sink(s) {', '.join(unknown)}; configured: {configured}"
                )

    @staticmethod
    def _matches(route: RouteSettings, a: AlertEvent) -> bool:
        if _RANK[a.severity] < _RANK[route.min_severity]:
            return False
        if route.kinds and a.kind not in route.kinds:
            return False
        if route.signals and a.signal not in route.signals:
            return False
        return not route.keys or any(fnmatch.fnmatchcase(a.key, pat) for pat in route.keys)

    def sinks_for(self, a: AlertEvent) -> list[str]:
        """Sink names for ``a`` (no duplicates, in rule order)."""
        if not self.routes:
            return list(self.sink_names)
        out: list[str] = []
        for route in self.routes:
            if self._matches(route, a):
                out.extend(s for s in route.sinks if s not in out)
                if route.stop:
                    break
        return out

    def group_of(self, a: AlertEvent) -> str:
        """The grouping label: a configured group containing the key, else the key kind."""
        for name, members in self.groups.items():
            if any(fnmatch.fnmatchcase(a.key, pat) for pat in members):
                return name
        return a.kind


def group_notifications(router: Router, alerts: list[AlertEvent]) -> dict[str, list[Notification]]:
    """Per sink, the notifications for ``alerts``: one per (group, signal, status).

    Alerts of the same group, signal and status that arrive within one gathering period
    (``notify.group_wait_s``) become a single notification — 15 tickers of one sector
    surging together page once.
    """
    buckets: dict[tuple[str, str, str, str], list[AlertEvent]] = defaultdict(list)
    for a in alerts:
        group = router.group_of(a)
        for sink in router.sinks_for(a):
            buckets[(sink, group, a.signal, a.status)].append(a)
    out: dict[str, list[Notification]] = defaultdict(list)
    for (sink, group, _signal, _status), members in buckets.items():
        unique = {a.idempotency_key: a for a in members}
        out[sink].append(Notification(alerts=tuple(unique.values()), group=group))
    return dict(out)
