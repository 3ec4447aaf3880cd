"""Run newswatch stages as real processes on loopback, for the dashboard tests.

Each stage is started through the real ``newswatch`` command line against the session's
embedded broker, with its ``/metrics`` endpoint on a free port, configured purely through
``NEWSWATCH_*`` environment variables (as the Helm chart does).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from newswatch.demo.broker import free_port
from newswatch.io.kafka import create_topics
from newswatch.models.artifacts import default_data_dir
from newswatch.processes import stop_process
from newswatch.settings import KafkaSettings
from tests.support.poll import http_ok, wait_until_sync
from tests.support.settings import kafka_settings, topic_settings

__all__ = ["Stage", "StageEnv", "cli_commands", "malformed_posts", "real_posts"]


def cli_commands() -> set[str]:
    """Sub-commands the ``newswatch`` command line registers now."""
    from newswatch.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


@dataclass
class StageEnv:
    """The environment shared by the stages of one test pipeline (unique topics and groups)."""

    bootstrap: str
    unique: str
    workdir: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def topics(self) -> dict[str, str]:
        return {k.upper(): v for k, v in topic_settings(self.unique).model_dump().items()}

    @property
    def kafka(self) -> KafkaSettings:
        return kafka_settings(self.bootstrap, steady=True)

    def env(self, port: int) -> dict[str, str]:
        """Process environment of a stage serving metrics on ``port``."""
        # the caller's NEWSWATCH_MODELS_* (e.g. a model directory to test) pass through
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("NEWSWATCH_") or k.startswith(("NEWSWATCH_MODELS_", "NEWSWATCH_TANSU_"))
        }
        env.update(
            {
                "NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "NEWSWATCH_KAFKA_BROKER_COMPAT": "tansu",
                "NEWSWATCH_KAFKA_PARTITIONS": "2",
                "NEWSWATCH_KAFKA_SESSION_TIMEOUT_MS": "6000",
                "NEWSWATCH_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
                "NEWSWATCH_METRICS_HOST": "127.0.0.1",
                "NEWSWATCH_METRICS_PORT": str(port),
                "NEWSWATCH_CLASSIFY_GROUP_ID": f"classify-{self.unique}",
                "NEWSWATCH_CLASSIFY_BATCH_MAX_WAIT_MS": "50",
                "NEWSWATCH_AGGREGATE_APP_ID": f"aggregate-{self.unique}",
                "NEWSWATCH_AGGREGATE_DATA_DIR": str(self.workdir / f"aggregate-{port}"),
                "NEWSWATCH_AGGREGATE_EMIT_INTERVAL_MS": "500",
                "NEWSWATCH_ALERTS_GROUP_ID": f"detect-{self.unique}",
                "NEWSWATCH_NOTIFY_GROUP_ID": f"notify-{self.unique}",
                "NEWSWATCH_NOTIFY_GROUP_WAIT_S": "0",
                "NEWSWATCH_NOTIFY_DELIVERY_LOG_TOPIC": f"delivered-{self.unique}",
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({f"NEWSWATCH_TOPICS_{k}": v for k, v in self.topics.items()})
        env.update(self.extra)
        return env

    def create_topics(self) -> None:
        """Create every topic up front (the embedded broker would auto-create with 4 partitions)."""
        asyncio.run(create_topics(self.kafka, list(self.topics.values())))


class Stage:
    """One ``newswatch <args>`` process with its metrics endpoint on a free port."""

    def __init__(self, name: str, args: list[str], env: StageEnv, module: str = "newswatch.cli.main") -> None:
        self.name = name
        self.args = args
        self.module = module
        self.port = free_port()
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = env.workdir / f"{name}.log"
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the metrics endpoint."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        self._log = self._log_path.open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            env=self._env.env(self.port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Poll ``/readyz`` until it answers 200; fail with the stage's log otherwise."""

        def ready() -> bool:
            if self._proc is None or self._proc.poll() is not None:
                raise AssertionError(f"stage {self.name} exited: {self.log_tail()}")
            return http_ok(f"http://{self.address}/readyz")

        wait_until_sync(
            ready, timeout_s, f"stage {self.name} to be ready", interval_s=0.2, detail=self.log_tail
        )

    def log_tail(self, n: int = 3000) -> str:
        """The end of the stage's output."""
        return self._log_path.read_text(errors="replace")[-n:] if self._log_path.exists() else ""

    def terminate(self) -> None:
        """Send SIGTERM without waiting (stop several stages at once, then :meth:`stop` each)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; a no-op when stopped."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
        if self._log is not None:
            self._log.close()
            self._log = None


def real_posts(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` real tweets from the StockNet stream (``../shared/data``), published just now."""
    path = default_data_dir() / "stocknet_tweets" / "stocknet_tweets_2014_2016.csv"
    now = datetime.now(UTC)
    out: list[tuple[bytes, bytes]] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["tweet_id"] in seen or not row["text"].strip():
                continue
            seen.add(row["tweet_id"])
            i = len(out)
            post = {
                "id": f"stocknet-{row['tweet_id']}",
                "text": row["text"],
                "source": "stocknet",
                "published_at": (now - timedelta(seconds=n - i)).isoformat(),
            }
            out.append((post["id"].encode(), json.dumps(post).encode()))
            if len(out) == n:
                break
    return out


def malformed_posts() -> list[tuple[bytes, bytes]]:
    """Input the classify stage must dead-letter (bad JSON, a missing field)."""
    return [
        (b"bad-1", b"not json at all"),
        (
            b"bad-2",
            json.dumps({"id": "bad-2", "source": "x", "published_at": "2026-01-01T00:00:00Z"}).encode(),
        ),
    ]
