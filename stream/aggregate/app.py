"""The faust app of the aggregator, configured from the settings tree."""

from __future__ import annotations

from typing import Any

import faust

from newswatch.settings import KafkaSettings, Settings
from newswatch.stream.aggregate.faust_compat import TansuCompatApp

__all__ = ["build_app"]


def _credentials(kafka: KafkaSettings) -> tuple[Any, Any]:
    """faust ``broker_credentials`` and ``ssl_context`` from the newswatch Kafka settings."""
    kwargs = kafka.client_kwargs()
    ssl_context = kwargs.get("ssl_context")
    if kafka.sasl_mechanism:
        creds = faust.SASLCredentials(
            username=kwargs.get("sasl_plain_username"),
            password=kwargs.get("sasl_plain_password"),
            mechanism=kafka.sasl_mechanism,
            ssl_context=ssl_context if kafka.security_protocol == "SASL_SSL" else None,
        )
        return creds, None
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context), None
    return None, None


def build_app(settings: Settings) -> faust.App:
    """A faust app configured from ``settings`` (no web server, at-least-once).

    With ``kafka.broker_compat == 'tansu'`` it is a
    :class:`~newswatch.stream.aggregate.faust_compat.TansuCompatApp` (true changelog end offsets).
    """
    kafka, agg = settings.kafka, settings.aggregate
    credentials, ssl_context = _credentials(kafka)
    app_cls = TansuCompatApp if kafka.broker_compat == "tansu" else faust.App
    session_s = kafka.session_timeout_ms / 1000.0
    return app_cls(
        agg.app_id,
        broker=[f"kafka://{hp.strip()}" for hp in kafka.bootstrap_servers.split(",") if hp.strip()],
        broker_credentials=credentials,
        ssl_context=ssl_context,
        broker_client_id=f"{kafka.client_id}-aggregate",
        broker_session_timeout=session_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000.0,
        broker_rebalance_timeout=session_s,
        broker_request_timeout=max(kafka.request_timeout_ms / 1000.0, session_s),
        broker_commit_interval=agg.commit_interval_ms / 1000.0,
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=agg.data_dir,
        store="memory://",
        table_standby_replicas=0,
        producer_acks=-1,
        producer_linger=0.01,
        consumer_max_fetch_size=8 * 1024 * 1024,  # pane records are large: fewer fetches per post
        autodiscover=False,
        # Events are acked only after their state is flushed (see Aggregator._process); on stop
        # faust must not wait for acks the stopped timer can no longer give: unacked events are
        # simply read again after a restart (and deduplicated).
        stream_wait_empty=False,
    )
