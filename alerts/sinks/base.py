"""The sink ABC, the notification it delivers, secret loading and HTTP error classification.

Every sink request is a POST that never follows a redirect (a 3xx answer is a failed,
non-retriable attempt naming where the receiver pointed), and whose reply body is read
up to :data:`MAX_REPLY_BYTES` only (the rest is dropped with the connection).
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from pydantic import SecretStr

from newswatch.alerts.events import AlertEvent
from newswatch.alerts.exceptions import DeliveryError, SinkConfigError
from newswatch.lifecycle import Service
from newswatch.settings.alerts import SinkSettings, url_problem

__all__ = ["MAX_REPLY_BYTES", "IncidentSummary", "Notification", "Sink", "load_secret"]

#: At most this much of a receiver's reply body is read (error pages, bodies of any size).
MAX_REPLY_BYTES = 16 * 1024


def load_secret(value: SecretStr | None, file: Path | None, what: str) -> str | None:
    """The secret from the value or from ``file`` (stripped); the error never shows it."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SinkConfigError(
                f"cannot read the {what} file {file}: {exc.strerror or 'unreadable'}"
            ) from None
    return None


@dataclass(frozen=True, slots=True)
class IncidentSummary:
    """The incident a notification pages for (see :mod:`newswatch.alerts.incidents`).

    ``lead_key`` is the most specific key that explains the others, ``summary`` says how
    (``$NVDA explains 92 % of the rise in topic Financials' negative share; also moved: …``),
    ``also_moved`` lists the other keys (``kind``, ``key``, ``signals``, ``explained``: the
    share of each signal's excess the lead accounts for), ``evidence`` the posts.
    ``dedup_key`` is the fingerprint of the alert that opened it (PagerDuty's ``dedup_key``).
    ``member_groups`` maps member fingerprints to their routing group (Alertmanager labels).
    """

    id: str
    status: str
    dedup_key: str
    lead_kind: str
    lead_key: str
    lead_signals: tuple[str, ...]
    summary: str
    also_moved: tuple[dict[str, Any], ...]
    evidence: tuple[dict[str, Any], ...]
    start_ms: int
    end_ms: int
    member_groups: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``incident`` object of the generic payload."""
        return {
            "id": self.id,
            "status": self.status,
            "lead": {"kind": self.lead_kind, "key": self.lead_key, "signals": list(self.lead_signals)},
            "summary": self.summary,
            "also_moved": [dict(a) for a in self.also_moved],
            "evidence": [dict(e) for e in self.evidence],
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one sink: one alert, or several grouped ones (same status and group).

    ``id`` is stable for the same set of alert transitions, so a retried delivery
    carries the same idempotency key (``webhook-id``). An incident notification
    (``incident`` set) carries every alert of the incident and its id derives from the
    incident id and status only, so it is the same whichever members it lists.
    """

    alerts: tuple[AlertEvent, ...]
    group: str
    test: bool = False
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    incident: IncidentSummary | None = None

    @property
    def id(self) -> str:
        """``msg_<24 hex>`` derived from the members' idempotency keys (or the incident)."""
        if self.incident is not None:
            raw = f"incident\n{self.incident.id}\n{self.incident.status}"
            return "msg_" + hashlib.sha256(raw.encode()).hexdigest()[:24]
        keys = "\n".join(sorted(a.idempotency_key for a in self.alerts))
        return "msg_" + hashlib.sha256(f"{self.group}\n{keys}".encode()).hexdigest()[:24]

    @property
    def status(self) -> str:
        """``firing``, ``resolved`` or ``mixed``."""
        statuses = {a.status for a in self.alerts}
        return statuses.pop() if len(statuses) == 1 else "mixed"

    @property
    def severity(self) -> str:
        """The highest member severity."""
        return "critical" if any(a.severity == "critical" for a in self.alerts) else "warning"

    def title(self) -> str:
        """Short headline, e.g. ``[FIRING] 15 alerts: volume in group semis``.

        Keys and the group come from posts and settings: they are neutralised (no mentions,
        links or markup) and a key is cut to ``KEY_CHARS`` characters.
        """
        from newswatch.alerts.sinks._text import display_key, neutral

        prefix = "[TEST] " if self.test else ""
        if self.incident is not None:
            inc = self.incident
            related = len(inc.also_moved)
            more = f", {related} related key{'s' if related != 1 else ''}" if related else ""
            key = display_key(inc.lead_key)
            lead = key if inc.lead_kind == "entity" else f"{neutral(inc.lead_kind, 40)} {key}"
            head = f"{prefix}[{self.status.upper()}] incident {lead}"
            return f"{head}: {len(self.alerts)} alerts{more} ({self.severity})"
        if len(self.alerts) == 1:
            a = self.alerts[0]
            return f"{prefix}[{a.status.upper()}] {a.signal} {a.kind} {display_key(a.key)} ({a.severity})"
        signals = Counter(a.signal for a in self.alerts)
        what = ", ".join(sorted(signals))
        head = f"{prefix}[{self.status.upper()}] {len(self.alerts)} alerts"
        return f"{head}: {what} in {display_key(self.group)} ({self.severity})"

    def to_payload(self) -> dict[str, Any]:
        """The generic JSON payload (documented in ``docs/alerts.md``).

        The human fields (``title``, ``incident.summary``) are neutralised like every chat
        text; the data fields (``alerts[].key``, ``examples``, ``incident.evidence``) are the
        posts' own values, which a receiver must escape before it displays them.
        """
        from newswatch.alerts.sinks._text import neutral

        incident = None
        if self.incident is not None:
            incident = self.incident.to_dict()
            incident["summary"] = neutral(incident["summary"], SUMMARY_CHARS)
        return {
            "type": "newswatch.alerts",
            "version": 1,
            "id": self.id,
            "test": self.test,
            "status": self.status,
            "severity": self.severity,
            "group": self.group,
            "title": self.title(),
            "created_ms": self.created_ms,
            "alerts": [a.to_dict() for a in self.alerts],
            "incident": incident,
        }


#: The generic payload's ``incident.summary`` is cut to this many characters.
SUMMARY_CHARS = 3000


class Sink(Service, ABC):
    """A delivery channel. ``start()`` opens the HTTP session, ``stop()`` closes it (idempotent).

    ``send`` raises :class:`~newswatch.alerts.exceptions.DeliveryError` (with ``retriable``)
    when the receiver does not accept the notification; its messages never contain the
    URL or any secret.
    """

    #: Sink type name, as in ``SinkSettings.type``.
    sink_type: ClassVar[str] = ""

    def __init__(self, settings: SinkSettings, timeout_s: float = 5.0) -> None:
        self.name = settings.name
        self.settings = settings
        self.timeout_s = settings.timeout_s or timeout_s
        url = load_secret(settings.url, settings.url_file, "url")
        if not url and self.default_url() is None:
            raise SinkConfigError(f"sink {self.name!r} ({self.sink_type}) needs a url or url_file")
        self._url: str = url or self.default_url() or ""
        problem = url_problem(self._url, settings.allow_insecure)
        if problem is not None:  # a url_file's content (a url value was checked at settings load)
            raise SinkConfigError(f"sink {self.name!r} ({self.sink_type}): {problem}")
        self._session: aiohttp.ClientSession | None = None

    def default_url(self) -> str | None:
        """URL used when none is configured (PagerDuty's public endpoint), else ``None``."""
        return None

    def __repr__(self) -> str:  # never show the URL
        return f"<{type(self).__name__} {self.name!r}>"

    async def start(self) -> None:
        """Open the HTTP session (no network I/O yet)."""
        if self._session is None:
            # auto_decompress off: a compressed reply could inflate far beyond MAX_REPLY_BYTES.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s), auto_decompress=False
            )

    async def stop(self) -> None:
        """Close the HTTP session; a no-op when closed."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _holds_resources(self) -> bool:
        return self._session is not None

    @abstractmethod
    async def send(self, notification: Notification) -> int:
        """Deliver ``notification``; returns the HTTP status of the (last) accepted request."""

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POST ``body``; classify failures into retriable / not retriable ``DeliveryError``.

        Redirects are not followed: a 3xx answer fails (not retriable) and names the
        ``Location`` (only its origin and path, and not at all when it points back to the
        sink's own host, whose URL may be a secret). At most :data:`MAX_REPLY_BYTES` of the
        reply are read.
        """
        if self._session is None:
            raise RuntimeError(f"sink {self.name!r} is not started")
        headers = {"Accept-Encoding": "identity", **headers}
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                raw = await _read_capped(resp)
                text = raw.decode("utf-8", errors="replace")[:200]
                if 200 <= resp.status < 300:
                    return resp.status, text
                if 300 <= resp.status < 400:
                    raise DeliveryError(
                        f"sink {self.name!r} answered HTTP {resp.status} redirecting to "
                        f"{_location(url, resp.headers.get('Location'))}; redirects are not followed: "
                        "set the sink's url to the final address",
                        retriable=False,
                        status=resp.status,
                    )
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                retriable = resp.status in (408, 425, 429) or resp.status >= 500
                raise DeliveryError(
                    f"sink {self.name!r} answered HTTP {resp.status}",
                    retriable=retriable,
                    status=resp.status,
                    retry_after_s=retry_after,
                )
        except TimeoutError:
            raise DeliveryError(
                f"sink {self.name!r} timed out after {self.timeout_s:g} s", retriable=True
            ) from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError):
            raise DeliveryError(
                f"sink {self.name!r} has an invalid url (not retried)", retriable=False
            ) from None
        except aiohttp.ClientError as exc:
            # The exception text may contain the URL (a secret for Slack/Teams): only its type is kept.
            raise DeliveryError(
                f"sink {self.name!r} unreachable ({type(exc).__name__})", retriable=True
            ) from None


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """At most :data:`MAX_REPLY_BYTES` of the reply body; a longer body's connection is closed."""
    buf = bytearray()
    while len(buf) < MAX_REPLY_BYTES:
        chunk = await resp.content.read(MAX_REPLY_BYTES - len(buf))
        if not chunk:
            return bytes(buf)
        buf += chunk
    if not resp.content.at_eof():
        resp.close()  # drop the rest with the connection instead of reading it
    return bytes(buf)


def _location(url: str, location: str | None) -> str:
    """Where a redirect points, safe to log: origin and path of another host, never the sink's own."""
    if not location:
        return "nowhere (no Location header)"
    target = urlsplit(urljoin(url, location.strip()))
    own = urlsplit(url)
    if (target.scheme, target.netloc) == (own.scheme, own.netloc):
        return "another path of the sink's own host (not shown: the sink url may be secret)"
    host = target.hostname or "?"
    port = f":{target.port}" if target.port else ""
    path = target.path if len(target.path) <= 100 else target.path[:99] + "…"
    return f"{target.scheme}://{host}{port}{path}"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
