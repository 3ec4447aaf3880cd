"""faust-streaming on the embedded Tansu broker: true end offsets for changelog recovery.

Tansu (0.6) answers ListOffsets(latest) with too low an end offset (the base offset
of the last record batch + 1 on ``memory://``, far less on ``s3://``), while Fetch
responses carry the right high-water mark. faust's changelog recovery reads its
target end offsets with ListOffsets (``AIOKafkaConsumerThread._highwaters`` ->
``AIOKafkaConsumer.end_offsets``), so on Tansu a restarted worker stops recovery
early and loses its newest table state.

The workaround is narrow and opt-in: :class:`TansuCompatApp` (used only when
``KafkaSettings.broker_compat == 'tansu'``) builds its consumer transport from
:class:`TansuTransport`, whose consumer thread overrides ``_highwaters`` to take
the maximum of the ListOffsets answer and the high-water mark of a real fetch
(:func:`fetch_highwaters`). No global monkeypatching: other faust apps in the
same process, and every app with ``broker_compat == 'kafka'``, are unaffected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import aiokafka
import faust
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT

__all__ = ["TansuCompatApp", "TansuTransport", "fetch_highwaters"]


async def fetch_highwaters(
    consumer_kwargs: Mapping[str, Any],
    start_offsets: Mapping[TopicPartition, int],
    timeout_s: float = 10.0,
) -> dict[TopicPartition, int]:
    """High-water marks of ``start_offsets``' partitions, read from real Fetch responses.

    A throw-away consumer (no group) is assigned the partitions, positioned at
    ``start_offsets`` (for example the possibly too-low ListOffsets answer, which is
    never past the true end) and fetches once; every Fetch response carries the
    partition's high-water mark whether or not it holds records.

    Parameters
    ----------
    consumer_kwargs
        Connection keyword arguments for :class:`aiokafka.AIOKafkaConsumer`
        (``bootstrap_servers``, security settings, ``client_id`` ...).
    start_offsets
        Partition -> offset to fetch from (``0`` is always valid).
    timeout_s
        Give up after this long; partitions without an answer keep their start offset.

    Returns
    -------
    dict
        Partition -> ``max(start offset, fetch high-water mark)``.
    """
    result = {tp: max(0, int(off)) for tp, off in start_offsets.items()}
    if not result:
        return result
    consumer = aiokafka.AIOKafkaConsumer(
        **consumer_kwargs,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=64 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(list(result))
        for tp, offset in result.items():
            consumer.seek(tp, offset)
        deadline = asyncio.get_running_loop().time() + timeout_s
        pending = set(result)
        while pending and asyncio.get_running_loop().time() < deadline:
            await consumer.getmany(*pending, timeout_ms=100)
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None:
                    result[tp] = max(result[tp], int(hw))
                    pending.discard(tp)
        return result
    finally:
        await consumer.stop()


class TansuConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The aiokafka consumer thread with end offsets corrected from fetch high-water marks."""

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported = await super()._highwaters(partitions)
        if not reported:
            return reported
        conf = self.app.conf
        transport = cast(faust_aiokafka.Transport, self.transport)
        kwargs: dict[str, Any] = {
            "bootstrap_servers": faust_aiokafka.server_list(transport.url, transport.default_port),
            "client_id": f"{conf.broker_client_id}-highwater",
            "request_timeout_ms": int(conf.broker_request_timeout * 1000.0),
            **faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        }
        starts = {
            TopicPartition(tp.topic, tp.partition): (off if off is not None else 0)
            for tp, off in reported.items()
        }
        fixed = await fetch_highwaters(kwargs, starts)
        out: dict[TP, int] = dict(reported)
        for tp in reported:
            out[tp] = fixed[TopicPartition(tp.topic, tp.partition)]
        if out != dict(reported):
            self.log.info("tansu compat: end offsets corrected from fetch high-water marks: %r", out)
        return out


class TansuConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer using :class:`TansuConsumerThread`."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return TansuConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TansuTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with the Tansu end-offset workaround."""

    Consumer = TansuConsumer


class TansuCompatApp(faust.App):
    """A :class:`faust.App` whose consumer transport is :class:`TansuTransport`."""

    def _new_transport(self) -> TransportT:
        return TansuTransport(self.conf.broker_consumer, self)
