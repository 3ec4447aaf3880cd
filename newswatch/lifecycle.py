"""The lifecycle every long-lived component shares (aiokafka's habit).

``start()`` acquires resources, ``stop()`` releases them and is a no-op when already
stopped, ``async with`` calls both, and an object garbage-collected while it still holds
resources warns with :class:`ResourceWarning`.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Service"]


class Service(ABC):
    """Base of components with an explicit async lifecycle."""

    @abstractmethod
    async def start(self) -> None:
        """Acquire resources (connections, sessions, sockets)."""

    @abstractmethod
    async def stop(self) -> None:
        """Release them; a no-op when already stopped."""

    @abstractmethod
    def _holds_resources(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __del__(self) -> None:
        try:
            unclosed = self._holds_resources()
        except AttributeError:  # __init__ did not finish
            return
        if unclosed:
            warnings.warn(f"unstopped {type(self).__name__}", ResourceWarning, stacklevel=1)
