"""Waiting for a condition: the one poll loop of the tests, async and sync."""

from __future__ import annotations

import asyncio
import inspect
import time
import urllib.request
from collections.abc import Callable


def _timed_out(what: str, timeout_s: float, detail: Callable[[], str] | None) -> AssertionError:
    message = f"timed out after {timeout_s} s waiting for {what}"
    return AssertionError(f"{message}\n{detail()}" if detail is not None else message)


async def wait_until(
    check: Callable[[], object],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> float:
    """Poll ``check()`` (a function or a coroutine function) until it is true; the seconds it took.

    Fails with an :class:`AssertionError` naming ``what`` (and ``detail()``, e.g. a process's log)
    after ``timeout_s``. An :class:`AssertionError` raised by ``check`` itself stops at once.
    """
    start = time.monotonic()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise _timed_out(what, timeout_s, detail)
        await asyncio.sleep(interval_s)


def wait_until_sync(
    check: Callable[[], object],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.25,
    detail: Callable[[], str] | None = None,
    ignore: tuple[type[Exception], ...] = (),
) -> float:
    """:func:`wait_until` for synchronous tests: blocks between polls.

    Errors of the types in ``ignore`` raised by ``check`` count as "not yet".
    """
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except ignore:
            pass
        if time.monotonic() - start > timeout_s:
            raise _timed_out(what, timeout_s, detail)
        time.sleep(interval_s)


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """Whether ``GET url`` answers 200 now (a refused or failed connection: no)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
