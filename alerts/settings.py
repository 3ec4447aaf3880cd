"""Settings of detection (section ``alerts``) and delivery (section ``notify``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AlertSettings(BaseModel):
    """Detectors and the alert lifecycle."""

    model_config = ConfigDict(frozen=True)

    detector: str = Field("robust_zscore", description="Detector used for every key and signal.")
    min_support: int = Field(10, ge=1, description="No alert on a window with fewer posts than this.")
    warmup_windows: int = Field(10, ge=0, description="Windows a key must see before it may alert.")
    cooldown_s: float = Field(600.0, ge=0, description="After resolving, a key stays quiet this long.")
    max_alerting_keys_per_min: int = Field(20, ge=1, description="Cap on new alerts per minute.")
    dashboard_url_template: str = Field(
        "http://grafana.local/d/newswatch?var-key={key}&from={start_ms}&to={end_ms}",
        description="Link put in every alert; {key}, {signal}, {start_ms}, {end_ms} are filled in.",
    )


class NotifySettings(BaseModel):
    """The notifier: which sinks, retries and timeouts."""

    model_config = ConfigDict(frozen=True)

    group_id: str = Field("newswatch-notify", description="Kafka consumer group of the notifier.")
    timeout_s: float = Field(5.0, gt=0, description="HTTP timeout per delivery attempt.")
    max_attempts: int = Field(8, ge=1, description="Delivery attempts before an alert is dead-lettered.")
    backoff_initial_ms: int = Field(200, ge=1, description="First retry delay; doubles with jitter.")
    backoff_max_ms: int = Field(30_000, ge=1, description="Largest retry delay.")
    webhook_urls: tuple[str, ...] = Field((), description="Generic signed JSON webhooks (secret).")
