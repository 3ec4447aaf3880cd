"""Settings of detection (section ``alerts``) and delivery (section ``notify``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

Signal = Literal["volume", "negative_share", "mean_sentiment"]
Kind = Literal["topic", "entity", "source", "global"]
Severity = Literal["warning", "critical"]
SinkType = Literal["webhook", "slack", "teams", "pagerduty", "alertmanager"]


class AlertSettings(BaseModel):
    """Detectors and the alert lifecycle (the decision layer on top of detector scores)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: str = Field("likelihood", description="Detector used for every key and signal.")
    detector_params: dict[str, float | int | str | None] = Field(
        default_factory=dict, description="Keyword arguments of the detector (e.g. window, season_s)."
    )
    signals: tuple[Signal, ...] = Field(
        ("volume", "negative_share", "mean_sentiment"), description="Signals watched per key."
    )
    kinds: tuple[Kind, ...] = Field(("topic", "entity", "source", "global"), description="Key kinds watched.")
    windows: tuple[str, ...] = Field(
        ("tumbling_60000",), description="Window names (WindowStat.window) the detectors run on."
    )
    fire_score: float | None = Field(
        None,
        gt=0,
        lt=1,
        description=(
            "Score at or above which a window is 'hot'; unset: the detector's own level (likelihood "
            "0.35, a tail of about 3e-4, where NAB's best threshold on its score is 0.34; z-score "
            "detectors 0.6, z≈3). On the 48-series NAB subset the likelihood's alert onsets score "
            "71.2 standard at 0.35 against 62.8 at 0.6 (docs/alerts.md, Choosing the defaults)."
        ),
    )
    fire_windows: int = Field(2, ge=1, description="Consecutive hot windows before an alert fires.")
    immediate_score: float = Field(
        0.8, gt=0, le=1, description="A single window at or above this fires at once (z≈8; fast surges)."
    )
    resolve_score: float = Field(
        0.3, ge=0, lt=1, description="Score below which a window is 'cool' (likelihood: tail above 1e-3)."
    )
    resolve_windows: int = Field(3, ge=1, description="Consecutive cool final windows before resolving.")
    critical_score: float = Field(0.85, gt=0, le=1, description="Peak score from which an alert is critical.")
    min_support: int = Field(10, ge=1, description="No alert on a window with fewer posts than this.")
    warmup_windows: int = Field(10, ge=0, description="Windows a key must see before it may alert.")
    cooldown_s: float = Field(600.0, ge=0, description="After resolving, a key stays quiet this long.")
    max_alerting_keys_per_min: int = Field(20, ge=1, description="Cap on new alerts per minute.")
    max_series: int = Field(
        50_000, ge=1, description="Tracked (key, signal) series; least recent are dropped."
    )
    dashboard_url_template: str = Field(
        "http://grafana.local/d/newswatch?var-kind={kind}&var-key={key}&var-window={window}&from={start_ms}&to={end_ms}",
        description=(
            "Link put in every alert; {key}, {kind}, {signal}, {window}, {start_ms}, {end_ms}, "
            "{fingerprint} are filled in."
        ),
    )
    group_id: str = Field("newswatch-detect", description="Kafka consumer group of `alerts run`.")
    replay_s: float = Field(
        6 * 3600.0,
        ge=0,
        description=(
            "On start, windows of the last replay_s seconds up to the committed offsets are replayed "
            "to warm the detectors and restore firing alerts (nothing is emitted); 0 disables."
        ),
    )

    @model_validator(mode="after")
    def _levels(self) -> AlertSettings:
        if self.fire_score is not None and self.resolve_score > self.fire_score:
            raise ValueError("resolve_score must not exceed fire_score (hysteresis)")
        return self


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url: str, allow_insecure: bool = False) -> str | None:
    """Why ``url`` cannot be a sink URL, or ``None``; the answer never repeats the URL (a secret).

    Sinks take ``https://`` URLs; ``http://`` only to loopback (tests, a local relay) or
    with ``allow_insecure``. Any other scheme, or none, is a configuration error (never a
    delivery failure retried as if it were transient).

    >>> url_problem("https://hooks.slack.com/services/T/B/x") is None
    True
    >>> url_problem("http://127.0.0.1:8080/hook") is None
    True
    >>> url_problem("ftp://example.com/x").split(";")[0]
    "the scheme is 'ftp'"
    >>> url_problem("hooks.example.com/x").split(";")[0]
    'no scheme'
    """
    rule = "sink URLs must start with https:// (http:// only to loopback or with allow_insecure: true)"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "it contains spaces or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "it is not a valid URL"
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        return f"no scheme; {rule}"
    if scheme not in ("https", "http"):
        return f"the scheme is {scheme!r}; {rule}"
    if not host:
        return "it has no host"
    if scheme == "http" and not allow_insecure and not _is_loopback(host):
        return (
            "http:// is allowed only to loopback (127.0.0.1, ::1, localhost); "
            "use https://, or set allow_insecure: true on this sink"
        )
    return None


class SinkSettings(BaseModel):
    """One delivery channel. Secrets come from the value or from a file (``*_file``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)  # inputs hold secrets

    name: str = Field(description="Name used by routes, metrics and `alerts test --sink`.")
    type: SinkType = Field(description="webhook, slack, teams, pagerduty or alertmanager.")
    url: SecretStr | None = Field(None, description="Endpoint URL (secret: Slack/Teams URLs carry tokens).")
    url_file: Path | None = Field(None, description="File holding the URL (e.g. a mounted Secret).")
    secret: SecretStr | None = Field(
        None, description="Webhook signing secret (whsec_…) or PagerDuty routing key."
    )
    secret_file: Path | None = Field(None, description="File holding the secret.")
    timeout_s: float | None = Field(None, gt=0, description="Overrides notify.timeout_s for this sink.")
    allow_insecure: bool = Field(
        False,
        description=(
            "Allow an http:// url to a host other than loopback (e.g. an in-cluster Alertmanager); "
            "the body, and any token in the URL, travel unencrypted."
        ),
    )
    urls: tuple[SecretStr, ...] = Field(
        (),
        description=(
            "Alertmanager only: base URLs of the replicas of one HA cluster, besides url (or instead "
            "of it); every alert is posted to each (docs/alerts.md, Prometheus Alertmanager)."
        ),
    )
    resend_interval_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Alertmanager only: active alerts are posted again this often (the API asks for 30 s to "
            "3 min); an active alert's endsAt is 4 intervals ahead, so a stopped notifier's alerts expire."
        ),
    )
    runbook_url: str = Field(
        "https://github.com/newswatch/newswatch/blob/main/docs/alerts.md#runbook-newswatchanomaly",
        description="Alertmanager only: the runbook_url annotation of every alert (empty: none).",
    )

    @model_validator(mode="after")
    def _url_rules(self) -> SinkSettings:
        urls = ([] if self.url is None else [("url", self.url)]) + [
            (f"urls[{i}]", u) for i, u in enumerate(self.urls)
        ]
        for field, url in urls:
            problem = url_problem(url.get_secret_value(), self.allow_insecure)
            if problem is not None:
                raise PydanticCustomError(
                    "sink_url",
                    "{field} of sink '{name}': {problem}",
                    {"field": field, "name": self.name, "problem": problem},
                )
        if self.urls and self.type != "alertmanager":
            raise PydanticCustomError(
                "sink_urls",
                "sink '{name}': urls (several replicas) is for alertmanager sinks only",
                {"name": self.name},
            )
        return self


class RouteSettings(BaseModel):
    """A routing rule: alerts matching every given condition go to ``sinks``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sinks: tuple[str, ...] = Field(description="Sink names.")
    min_severity: Severity = Field("warning", description="Lowest severity routed.")
    kinds: tuple[Kind, ...] = Field((), description="Key kinds matched (empty: any).")
    keys: tuple[str, ...] = Field((), description="Key glob patterns, e.g. '$NVDA' or 'M&A*' (empty: any).")
    signals: tuple[Signal, ...] = Field((), description="Signals matched (empty: any).")
    stop: bool = Field(False, description="Stop at this rule when it matches.")


class NotifySettings(BaseModel):
    """The notifier: which sinks, routes, grouping, retries and timeouts."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)  # inputs hold secrets

    group_id: str = Field("newswatch-notify", description="Kafka consumer group of the notifier.")
    timeout_s: float = Field(5.0, gt=0, description="HTTP timeout per delivery attempt.")
    max_attempts: int = Field(
        14,
        ge=1,
        description="Delivery attempts before an alert is dead-lettered (defaults outlast a 2-min outage).",
    )
    backoff_initial_ms: int = Field(500, ge=1, description="First retry delay; doubles with jitter.")
    backoff_max_ms: int = Field(30_000, ge=1, description="Largest retry delay.")
    webhook_urls: tuple[SecretStr, ...] = Field(
        (), description="Shorthand: generic webhooks signed with webhook_secret (secret)."
    )
    webhook_secret: SecretStr | None = Field(None, description="Signing secret (whsec_…) of webhook_urls.")
    webhook_allow_insecure: bool = Field(
        False,
        description="Allow http:// webhook_urls to hosts other than loopback (see sinks[].allow_insecure).",
    )
    sinks: tuple[SinkSettings, ...] = Field((), description="Delivery channels.")
    routes: tuple[RouteSettings, ...] = Field(
        (), description="Routing rules, first match first; none means every alert goes to every sink."
    )
    groups: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description=(
            "Named key groups (e.g. a sector's tickers); keys of one group firing together "
            "become one notification."
        ),
    )
    group_wait_s: float = Field(
        5.0, ge=0, description="How long to gather alerts into one grouped notification."
    )
    delivery_log_topic: str = Field(
        "newswatch.alerts.delivered", description="Compacted topic recording acknowledged deliveries."
    )
    incidents: bool = Field(
        True,
        description=(
            "Alerts that fire close together in event time and share their posts become one incident: "
            "one firing and one resolved notification (see docs/alerts.md, Incidents)."
        ),
    )
    incident_gap_ms: int = Field(
        600_000,
        ge=0,
        description="Event time between an alert's window and an incident's span within which it may join.",
    )
    incident_wait_s: float = Field(
        0.0,
        ge=0,
        description=(
            "How long a batch holding a firing alert is gathered before paging (if longer than "
            "group_wait_s), so more related keys of a new incident are named in its first notification."
        ),
    )
    incident_max_members: int = Field(
        200, ge=1, description="Alert episodes per incident (bounds its record)."
    )
    incident_log_topic: str = Field(
        "newswatch.alerts.incidents",
        description="Compacted topic holding the open incidents (restart state).",
    )

    @model_validator(mode="after")
    def _webhook_url_rules(self) -> NotifySettings:
        for i, url in enumerate(self.webhook_urls):
            problem = url_problem(url.get_secret_value(), self.webhook_allow_insecure)
            if problem is not None:
                raise PydanticCustomError(
                    "sink_url",
                    "webhook_urls[{i}] (NEWSWATCH_NOTIFY_WEBHOOK_URLS): {problem}",
                    {"i": i, "problem": problem},
                )
        return self
