"""Settings of the stream stages (sections ``classify``, ``aggregate``, ``demo``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = ["AggregateSettings", "ClassifySettings", "DemoSettings", "window_name"]


def window_name(duration_ms: int, step_ms: int) -> str:
    """The name of a window shape, as in ``WindowStat.window`` and ``alerts.windows``.

    >>> window_name(60_000, 60_000), window_name(300_000, 60_000)
    ('tumbling_60000', 'hopping_300000_60000')
    """
    if step_ms == duration_ms:
        return f"tumbling_{duration_ms}"
    return f"hopping_{duration_ms}_{step_ms}"


class ClassifySettings(BaseModel):
    """The classify worker: batching and delivery."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group_id: str = Field("newswatch-classify", description="Kafka consumer group of the classify workers.")
    batch_size: int = Field(64, ge=1, description="Largest batch handed to the engine.")
    batch_max_wait_ms: int = Field(200, ge=1, description="A partial batch is scored after this long.")
    max_in_flight_batches: int = Field(
        2, ge=1, description="Bounds memory when the engine is slower than input."
    )
    max_text_chars: int = Field(
        20_000,
        ge=1,
        description=(
            "The decoder's cleaned copy of a text (entities, the empty-text check) is cut at this many "
            "characters; the engine cuts its own copy at models.max_length × 32 before tokenizing."
        ),
    )
    max_message_bytes: int = Field(
        1_048_576, ge=1_024, description="Larger messages are dead-lettered as 'too_large'."
    )
    watchlist: tuple[str, ...] = Field(
        (), description="Company names matched as entities in addition to $cashtags (case-insensitive)."
    )
    max_future_skew_s: int = Field(
        300,
        ge=0,
        description="Posts stamped further than this ahead of the time they are read are "
        "dead-lettered as 'future_timestamp'.",
    )
    oldest_published_year: int = Field(
        1990, ge=1970, le=9999, description="Posts published before January 1 of this year: 'bad_timestamp'."
    )
    max_entities: int = Field(32, ge=1, description="Entities kept per post (given or extracted).")
    write_panes: bool = Field(
        True,
        description="Also write each batch's pre-aggregated window panes to topics.panes, the "
        "aggregator's input when aggregate.input is 'panes'.",
    )


class AggregateSettings(BaseModel):
    """The aggregator: event-time windows per topic, entity and source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: str = Field("newswatch-aggregate", description="faust app id (consumer group, changelog prefix).")
    input: Literal["panes", "scored"] = Field(
        "panes",
        description="What the aggregator reads: 'panes' (topics.panes, one pre-aggregated record per "
        "classify batch and partition) or 'scored' (topics.scored, one record per post: for scorers "
        "that write only scored posts).",
    )
    tumbling_ms: int = Field(60_000, ge=1_000, description="Tumbling bucket size.")
    hopping: tuple[tuple[int, int], ...] = Field(
        ((300_000, 60_000), (3_600_000, 60_000)),
        description="Hopping windows as (duration_ms, step_ms) pairs.",
    )
    grace_ms: int = Field(120_000, ge=0, description="Allowed lateness; later events are counted as late.")

    @field_validator("hopping")
    @classmethod
    def _check_hopping(cls, v: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        for duration_ms, step_ms in v:
            if not 0 < step_ms <= duration_ms:
                raise ValueError(
                    f"hopping window ({duration_ms}, {step_ms}): need 0 < step_ms <= duration_ms"
                )
        return v

    emit_interval_ms: int = Field(
        500, ge=10, description="Closed windows and due updates are emitted at most this often."
    )
    updates_per_step: int = Field(
        10,
        ge=0,
        description="An in-progress window is re-emitted (coalesced) at most this many times per step "
        "of its shape: every 6 s for 1-minute steps. 0: at every emit. Finals are emitted as soon as "
        "a window closes.",
    )
    idle_partition_ms: int = Field(
        5_000,
        ge=0,
        description="An input partition, or a feed (a source on it), silent this long no longer holds "
        "the event-time watermark back.",
    )
    max_batch: int = Field(
        10_000,
        ge=1,
        description="Most posts aggregated between two state flushes (each flush writes every "
        "changed pane to the changelog once; the emit interval flushes too).",
    )
    commit_interval_ms: int = Field(
        1_000,
        ge=100,
        description="How often the aggregator writes its state (changelog) and commits the offsets "
        "it covers.",
    )
    data_dir: str = Field("/tmp/newswatch-aggregate", description="faust data directory (table stores).")

    def window_names(self) -> tuple[str, ...]:
        """Names of the windows the aggregator writes: the tumbling bucket, then each hopping window."""
        names = [window_name(self.tumbling_ms, self.tumbling_ms)]
        names.extend(window_name(d, s) for d, s in self.hopping)
        return tuple(dict.fromkeys(names))


class DemoSettings(BaseModel):
    """The built-in demo: generated stream, incident script and compressed time scales.

    The one place the demo is configured: ``newswatch demo`` (its ``--duration`` overrides
    ``duration_s``), the stream generator's defaults and the demo's settings overlay
    (``newswatch.demo.run.demo_settings``) all read this section.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    duration_s: float = Field(
        180.0,
        gt=0,
        description=(
            "Seconds of generated posts (newswatch demo --duration). 180 s: the incident (70-130 s) "
            "resolves after alerts.resolve_windows (3) cool final windows of tumbling_ms plus grace_ms "
            "(163 s), and a stopped stream's last window is never final."
        ),
    )
    rate_per_s: float = Field(40.0, gt=0, description="Generated posts per second.")
    seed: int = Field(7, description="Seed of the generator (same seed, same stream).")
    incident_after_s: float = Field(
        70.0, ge=0, description="When the scripted negative burst starts (after the detectors' 50 s warm-up)."
    )
    incident_duration_s: float = Field(60.0, gt=0, description="How long the scripted burst lasts.")
    incident_ticker: str = Field("$NVDA", description="Ticker of the scripted incident.")
    incident_rate_per_s: float = Field(
        6.0, gt=0, description="Extra posts per second about the incident's ticker during the burst."
    )
    tumbling_ms: int = Field(
        10_000,
        ge=1_000,
        description="The demo's tumbling window: aggregate.tumbling_ms and the alerts' only window.",
    )
    hopping_ms: int = Field(
        60_000,
        ge=1_000,
        description="The demo's hopping window, stepping by tumbling_ms (the live view's volumes).",
    )
    grace_ms: int = Field(3_000, ge=0, description="aggregate.grace_ms during the demo.")
    warmup_windows: int = Field(
        5, ge=0, description="alerts.warmup_windows during the demo (5 windows of tumbling_ms: 50 s)."
    )
    cooldown_s: float = Field(60.0, ge=0, description="alerts.cooldown_s during the demo.")

    @field_validator("hopping_ms")
    @classmethod
    def _hopping_spans_buckets(cls, v: int, info: ValidationInfo) -> int:
        tumbling = info.data.get("tumbling_ms")
        if tumbling and (v < tumbling or v % tumbling):
            raise ValueError(f"hopping_ms {v} must be a whole multiple of tumbling_ms {tumbling}")
        return v
