"""``newswatch up``: the embedded broker and every stage, on this machine, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from newswatch.demo.stack import STAGES, LocalStack, StackError
from newswatch.logs import json_enabled
from newswatch.settings import Settings

__all__ = ["add_commands"]


def _up(args: argparse.Namespace, settings: Settings) -> int:
    stages = tuple(dict(STAGES))
    if args.no_notify or not (settings.notify.sinks or settings.notify.webhook_urls):
        stages = tuple(s for s in stages if s != "notify")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="newswatch-up-"))
    workdir.mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"starting the embedded broker and {', '.join(stages)} (logs in {workdir}) …", flush=True)
    fmt = "json" if json_enabled() else None  # `newswatch --log-format json up`: the stages' logs too
    with LocalStack(settings, workdir, stages=stages, broker_port=args.port or None, log_format=fmt) as stack:
        bootstrap = stack.bootstrap_servers
        print(f"broker     {bootstrap}", flush=True)
        for ep in stack.endpoints():
            print(f"{ep.stage:<10} {ep.metrics_url}   log {ep.log}", flush=True)
        if "notify" not in stages:
            print("notify     not started: no sinks configured (alerts stay on the alerts topic)")
        print(
            f"ready. Feed it: NEWSWATCH_KAFKA_BOOTSTRAP_SERVERS={bootstrap} "
            "NEWSWATCH_KAFKA_BROKER_COMPAT=tansu newswatch replay FILE --retime; Ctrl-C stops everything.",
            flush=True,
        )
        while not done.wait(1.0):
            gone = stack.stopped()
            if gone is not None:
                raise StackError(f"{gone.name} exited with {gone.proc.returncode}:\n{stack.log_tail(gone)}")
    return 0


def add_commands(subparsers: Any) -> None:  # argparse._SubParsersAction
    """Register ``newswatch up``."""
    p = subparsers.add_parser(
        "up", help="Run the embedded broker and every stage locally until Ctrl-C (try it on your own data)."
    )
    p.add_argument("--port", type=int, default=0, help="Broker port (default: a free one).")
    p.add_argument("--workdir", help="Folder for the stages' config and logs (default: a new temp folder).")
    p.add_argument("--no-notify", action="store_true", help="Leave the notifier out.")
    p.set_defaults(func=_up)
