"""The shared component lifecycle: async with, idempotent stop, a warning when left running."""

from __future__ import annotations

import gc
import socket
import warnings

import pytest

from newswatch.demo.console import WebhookReceiver
from newswatch.lifecycle import Service


async def test_async_with_starts_and_stops_and_stop_is_idempotent() -> None:
    async with WebhookReceiver() as receiver:
        assert receiver.port != 0
    await receiver.stop()  # second stop: a no-op


class _Socket(Service):
    """The smallest real service: it holds an open socket between start and stop."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None

    async def start(self) -> None:
        self.sock = socket.socket()

    async def stop(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def _holds_resources(self) -> bool:
        return self.sock is not None


async def test_a_service_left_running_warns_and_a_stopped_one_does_not() -> None:
    service = _Socket()
    await service.start()
    sock = service.sock
    with pytest.warns(ResourceWarning, match="unstopped _Socket"):
        del service
        gc.collect()
    assert sock is not None
    sock.close()
    async with _Socket() as stopped:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del stopped
        gc.collect()
