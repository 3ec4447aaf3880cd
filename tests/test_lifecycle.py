"""The shared component lifecycle: async with, idempotent stop, a warning when left running."""

from __future__ import annotations

import gc

import pytest

from newswatch.stream.console import WebhookReceiver


async def test_async_with_starts_and_stops_and_stop_is_idempotent() -> None:
    async with WebhookReceiver() as receiver:
        assert receiver.port != 0
    await receiver.stop()  # second stop: a no-op


async def test_a_component_left_running_warns() -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    runner = receiver._runner
    with pytest.warns(ResourceWarning, match="unstopped WebhookReceiver"):
        del receiver
        gc.collect()
    assert runner is not None
    await runner.cleanup()
