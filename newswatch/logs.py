"""One log format for every stage: human by default, one JSON object per line on request.

:func:`configure` installs a single handler on the root logger (stderr), once per process,
so newswatch's own loggers and the libraries' (faust, mode, aiokafka, aiohttp, Python
warnings) all come out the same way. The aggregator's faust worker is told not to install
its own (``override_logging=False``), so nothing replaces this handler later.

``human`` (the default)::

    2026-12-06T19:40:01.123Z INFO classify newswatch.io.stage: metrics on http://127.0.0.1:9400/metrics

``json`` (``--log-format json`` or ``NEWSWATCH_LOG_FORMAT=json``), one object a line::

    {"ts": "2026-12-06T19:40:01.123Z", "stage": "classify", "level": "INFO",
     "logger": "newswatch.io.stage", "message": "metrics on http://127.0.0.1:9400/metrics",
     "url": "http://127.0.0.1:9400/metrics"}

Context passed as ``log.info(..., extra={"key": value})`` becomes fields of the JSON object
(the human format shows the message only); an exception's traceback is the ``exc`` field.

Levels: without ``--log-level``, the stages' (and the broker's) newswatch loggers log at INFO
(start lines, assignments), every library and the other commands at WARNING;
``--log-level LEVEL`` sets all of them to LEVEL.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
from typing import Any, TextIO

__all__ = [
    "FORMATS",
    "LOG_FORMAT_ENV",
    "HumanFormatter",
    "JsonFormatter",
    "configure",
    "json_enabled",
    "report_error",
    "set_stage",
]

#: The formats :func:`configure` takes.
FORMATS = ("human", "json")
#: Environment variable choosing the format when no ``--log-format`` is given.
LOG_FORMAT_ENV = "NEWSWATCH_LOG_FORMAT"

#: Attributes every LogRecord has: anything else on a record is context from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

_state: dict[str, Any] = {"stage": None, "format": "human", "handler": None}


def _ts(record: logging.LogRecord) -> str:
    when = _dt.datetime.fromtimestamp(record.created, tz=_dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _stage(record: logging.LogRecord) -> str | None:
    stage = record.__dict__.get("stage")
    return str(stage) if stage is not None else _state["stage"]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``stage``, ``level``, ``logger``, ``message``, context."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _ts(record),
            "stage": _stage(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _context(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """``TS LEVEL STAGE LOGGER: MESSAGE`` (a traceback follows on its own lines).

    The context fields are left out: newswatch's messages say what they carry.
    """

    def format(self, record: logging.LogRecord) -> str:
        stage = _stage(record)
        parts = [_ts(record), record.levelname]
        if stage:
            parts.append(stage)
        line = " ".join(parts) + f" {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def configure(
    *,
    stage: str | None = None,
    fmt: str | None = None,
    level: str | int | None = None,
    stream: TextIO | None = None,
    force: bool = False,
    status: bool = True,
) -> None:
    """Install the one root handler (again: it replaces the previous one, never adds a second).

    ``fmt`` is ``human`` or ``json`` (default: ``NEWSWATCH_LOG_FORMAT``, else ``human``);
    ``stage`` is the ``stage`` field of every record; ``level`` see the module docstring
    (``status=False``: without a level, newswatch's loggers log from WARNING too, for the
    tools whose output is their stdout or a live view, e.g. ``newswatch demo``).
    Like :func:`logging.basicConfig`, it leaves a root logger that someone else configured
    alone (a host application, pytest's capture) unless ``force``. Raises ``ValueError``
    for an unknown format or level.
    """
    fmt = (fmt or os.environ.get(LOG_FORMAT_ENV) or "human").lower()
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    if isinstance(level, str) and not isinstance(logging.getLevelName(level.upper()), int):
        raise ValueError(f"log level {level!r} is not a level (DEBUG, INFO, WARNING, ERROR)")
    root = logging.getLogger()
    if not force and any(h is not _state["handler"] for h in root.handlers):
        _state.update(stage=stage, format=fmt)
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if level is None:
        root.setLevel(logging.WARNING)
        logging.getLogger("newswatch").setLevel(logging.INFO if status else logging.NOTSET)
    else:
        root.setLevel(level if isinstance(level, int) else logging.getLevelName(str(level).upper()))
        logging.getLogger("newswatch").setLevel(logging.NOTSET)
    logging.captureWarnings(True)
    if fmt == "json":  # an uncaught exception is one record too, its traceback in ``exc``
        sys.excepthook = _log_uncaught
    elif sys.excepthook is _log_uncaught:
        sys.excepthook = sys.__excepthook__
    _state.update(stage=stage, format=fmt, handler=handler)


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("newswatch").critical(
        "uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, tb)
    )


def set_stage(stage: str | None) -> None:
    """Set the ``stage`` field of the records logged from now on."""
    _state["stage"] = stage


def json_enabled() -> bool:
    """Whether :func:`configure` chose the JSON format."""
    return bool(_state["format"] == "json")


def report_error(command: str, message: str) -> None:
    """The one line a command ends with on a handled error, in the chosen format.

    Human: ``newswatch COMMAND: error: MESSAGE`` (plain, no timestamp); JSON: a record of
    level ERROR from logger ``newswatch.cli``.
    """
    if json_enabled():
        logging.getLogger("newswatch.cli").error(message, extra={"command": command})
        return
    print(f"newswatch {command}: error: {message}", file=sys.stderr, flush=True)
