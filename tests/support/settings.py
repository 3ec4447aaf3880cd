"""Settings builders of the tests: one per section, each test with its own topics and groups."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from newswatch.demo.broker import free_port
from newswatch.settings import KafkaSettings, MetricsSettings, Settings, TopicSettings
from newswatch.settings.alerts import AlertSettings, NotifySettings, SinkSettings
from newswatch.settings.stream import AggregateSettings, ClassifySettings

#: Group timeouts that form a group on the embedded broker in about a second.
FAST_GROUPS: dict[str, Any] = {"session_timeout_ms": 2_000, "heartbeat_interval_ms": 300}
#: Group timeouts for stages that must keep their group through pauses (faust, the notifier).
STEADY_GROUPS: dict[str, Any] = {"session_timeout_ms": 6_000, "heartbeat_interval_ms": 1_000}

#: The aggregator's windows in the tests: 10 s tumbling, 30 s hopping by 10 s, 5 s grace.
GRACE_MS = 5_000
TUMBLING_MS = 10_000
HOPPING = ((30_000, 10_000),)

#: A webhook signing key (Standard Webhooks ``whsec_`` form).
WHSEC = "whsec_c2VjcmV0LWtleS0xMjM0NTY3OA=="


def kafka_settings(
    bootstrap: str, partitions: int = 2, *, steady: bool = False, **more: Any
) -> KafkaSettings:
    """Kafka settings for the broker at ``bootstrap``: Tansu compatibility, short group timeouts
    (``steady``: the longer ones of :data:`STEADY_GROUPS`); ``more`` overrides any option."""
    groups = STEADY_GROUPS if steady else FAST_GROUPS
    options: dict[str, Any] = {"partitions": partitions, "broker_compat": "tansu", **groups, **more}
    return KafkaSettings(bootstrap_servers=bootstrap, **options)


def topic_settings(unique: str, prefix: str = "") -> TopicSettings:
    """Every topic of one test, named ``{prefix}{topic}-{unique}``."""
    return TopicSettings(
        posts=f"{prefix}posts-{unique}",
        scored=f"{prefix}scored-{unique}",
        panes=f"{prefix}panes-{unique}",
        windows=f"{prefix}windows-{unique}",
        alerts=f"{prefix}alerts-{unique}",
        dead_letter=f"{prefix}dlq-{unique}",
        alerts_dead_letter=f"{prefix}alerts-dlq-{unique}",
    )


def settings_for(bootstrap: str, unique: str, partitions: int = 2, **classify: object) -> Settings:
    """Settings of one classify test: its own topics and group, fast group joins."""
    return Settings(
        kafka=kafka_settings(bootstrap, partitions=partitions),
        topics=topic_settings(unique),
        classify=ClassifySettings(group_id=f"classify-{unique}", **classify),  # type: ignore[arg-type]
    )


def aggregate_settings(
    bootstrap: str,
    unique: str,
    tmp: Path,
    *,
    partitions: int = 1,
    compat: str = "tansu",
    input: Literal["panes", "scored"] = "scored",
    **kafka: Any,
) -> Settings:
    """Settings of one aggregator test: small windows (:data:`TUMBLING_MS`, :data:`HOPPING`,
    :data:`GRACE_MS`), frequent emits and commits, steady group timeouts, a free metrics port.

    The aggregator reads scored posts (``input="scored"``) unless told otherwise: most tests
    produce :class:`ScoredPost` records themselves, one per post; the pane tests produce pane
    records, or run the classify stage, which writes them."""
    return Settings(
        kafka=kafka_settings(bootstrap, partitions, steady=True, broker_compat=compat, **kafka),
        topics=topic_settings(unique),
        aggregate=AggregateSettings(
            app_id=f"agg-{unique}",
            input=input,
            tumbling_ms=TUMBLING_MS,
            hopping=HOPPING,
            grace_ms=GRACE_MS,
            emit_interval_ms=200,
            commit_interval_ms=200,
            data_dir=str(tmp / "faust"),
        ),
        alerts=AlertSettings(windows=(f"tumbling_{TUMBLING_MS}",)),  # a window the aggregator writes
        metrics=MetricsSettings(port=free_port()),
    )


def notify_settings(url: str, unique: str, **kw: object) -> NotifySettings:
    """A notifier with one signed webhook sink at ``url``, quick retries and a short gathering wait."""
    base: dict[str, object] = {
        "group_id": f"notify-{unique}",
        "delivery_log_topic": f"delivered-{unique}",
        "incident_log_topic": f"incidents-{unique}",  # no test reads another's open incidents
        "sinks": (SinkSettings(name="hook", type="webhook", url=url, secret=WHSEC),),
        "timeout_s": 0.5,
        "backoff_initial_ms": 20,
        "backoff_max_ms": 200,
        "group_wait_s": 0.3,
    }
    base.update(kw)
    return NotifySettings(**base)  # type: ignore[arg-type]


def notify_config(kafka: KafkaSettings, topics: TopicSettings, unique: str, url: str, keys: list[str]) -> str:
    """The YAML configuration of a ``newswatch notify`` process: one unsigned webhook sink at ``url``,
    one notification per alert key in ``keys``, no gathering wait."""
    import yaml

    notify = {
        "group_id": f"notify-{unique}",
        "delivery_log_topic": f"delivered-{unique}",
        "incident_log_topic": f"incidents-{unique}",
        "group_wait_s": 0.0,
        "groups": {f"g{k}": [k] for k in keys},  # one notification per alert
        "sinks": [{"name": "hook", "type": "webhook", "url": url}],
    }
    return yaml.safe_dump(
        {
            "kafka": kafka.model_dump(mode="json", exclude_unset=True),
            "topics": topics.model_dump(),
            "notify": notify,
        }
    )


def stage_env(
    settings: Settings, sections: tuple[str, ...] = ("kafka", "topics", "classify"), **extra: str
) -> dict[str, str]:
    """The environment of a stage subprocess configured exactly like ``settings``.

    Every option of ``sections`` becomes ``NEWSWATCH_<SECTION>_<OPTION>`` (JSON for lists and
    numbers); the parent's own ``NEWSWATCH_*`` variables are dropped so they cannot leak in.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSWATCH_")}
    for section, values in settings.model_dump(mode="json", include=set(sections)).items():
        for option, value in values.items():
            if value is not None:
                name = f"NEWSWATCH_{section.upper()}_{option.upper()}"
                env[name] = value if isinstance(value, str) else json.dumps(value)
    env.update(extra)
    return env
