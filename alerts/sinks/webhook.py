"""Generic JSON webhook signed per the Standard Webhooks specification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from newswatch.alerts.exceptions import SinkConfigError
from newswatch.alerts.sinks.base import Notification, Sink, load_secret
from newswatch.settings.alerts import SinkSettings

__all__ = ["WebhookSink", "sign", "verify"]

_PREFIX = "whsec_"


def _key(secret: str) -> bytes:
    if secret.startswith(_PREFIX):
        try:
            return base64.b64decode(secret[len(_PREFIX) :], validate=True)
        except ValueError:
            raise SinkConfigError("webhook secret: the part after 'whsec_' is not valid base64") from None
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (the ``webhook-signature`` value).

    >>> sign("whsec_" + base64.b64encode(b"k" * 24).decode(), "msg_1", 1700000000, b"{}")
    'v1,E3sCg9uS8x43RKlJqcda1EcaYZxNkN+l2u7RBZBSZQQ='
    """
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify(
    secret: str, headers: dict[str, str], body: bytes, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """Check a received request as a receiver would: signature and timestamp tolerance."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, ts = lower["webhook-id"], int(lower["webhook-timestamp"])
        given = lower["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance_s:
        return False
    expected = sign(secret, msg_id, ts, body)
    return any(hmac.compare_digest(expected, g) for g in given)


class WebhookSink(Sink):
    """POSTs :meth:`Notification.to_payload` as JSON with ``webhook-id``/``-timestamp``/``-signature``.

    ``webhook-id`` is the notification id, the same on every retry, so receivers drop
    duplicates by it. Without a secret the request is sent unsigned (not recommended).
    """

    sink_type = "webhook"

    def __init__(self, settings: SinkSettings, timeout_s: float = 5.0) -> None:
        super().__init__(settings, timeout_s)
        self._secret = load_secret(settings.secret, settings.secret_file, "secret")
        if self._secret is not None:
            _key(self._secret)  # validate now

    async def send(self, notification: Notification) -> int:
        """Sign and POST the payload."""
        body = json.dumps(notification.to_payload(), ensure_ascii=False, separators=(",", ":")).encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "newswatch-notify",
            "webhook-id": notification.id,
            "webhook-timestamp": str(ts),
        }
        if self._secret is not None:
            headers["webhook-signature"] = sign(self._secret, notification.id, ts, body)
        status, _ = await self._post(self._url, body, headers)
        return status
