"""Test support: the one copy of every helper the tests share.

``tests/conftest.py`` registers :mod:`tests.support.fixtures` as a plugin (``pytest_plugins``),
so its fixtures (the session broker, the loopback webhook receiver, the shipped model, ...)
are available everywhere. Plain helpers are imported from their module:

- :mod:`tests.support.settings` — settings builders (Kafka, topics, each stage) and a stage's env
- :mod:`tests.support.poll` — :func:`~tests.support.poll.wait_until` (async) and its sync twin
- :mod:`tests.support.receivers` — the real loopback webhook receiver
- :mod:`tests.support.kafka` — reading topics, publishing posts, counting, an S3-backed broker
- :mod:`tests.support.aggregate` — the aggregator process, its windows and their reference
- :mod:`tests.support.alerts` — alert events, incidents, producing alerts, the notifier process
- :mod:`tests.support.models` — the tiny training configuration

No test module imports another test module (``tests/test_layout.py`` checks it).
"""
