"""Alert delivery sinks, one per module: webhook, Slack, Teams, PagerDuty, Alertmanager."""

from __future__ import annotations

from newswatch.alerts.sinks.alertmanager import AlertmanagerSink
from newswatch.alerts.sinks.base import Notification, Sink
from newswatch.alerts.sinks.pagerduty import PagerDutySink
from newswatch.alerts.sinks.slack import SlackSink
from newswatch.alerts.sinks.teams import TeamsSink
from newswatch.alerts.sinks.webhook import WebhookSink
from newswatch.settings.alerts import SinkSettings

__all__ = ["Notification", "Sink", "build_sink"]

_TYPES: dict[str, type[Sink]] = {
    cls.sink_type: cls for cls in (WebhookSink, SlackSink, TeamsSink, PagerDutySink, AlertmanagerSink)
}


def build_sink(settings: SinkSettings, timeout_s: float = 5.0) -> Sink:
    """The sink of ``settings.type`` (not started)."""
    return _TYPES[settings.type](settings, timeout_s)
