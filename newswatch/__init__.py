"""newswatch: real-time finance text-stream monitoring.

The distribution installs six packages under one import name; each imports only the
ones below it (``tests/test_layout.py`` checks this from the imports):

- :mod:`newswatch.cli` (``cli/``): every command; the only package that imports all others.
- :mod:`newswatch.demo` (``demo/``): the demo, its console view, the generator, the
  embedded broker and replay.
- :mod:`newswatch.stream` (``stream/``): the data plane: classify, windows, aggregate.
- :mod:`newswatch.alerts` (``alerts/``): detectors, alert lifecycle, routing and sinks.
- :mod:`newswatch.models` (``models/``): the topic and sentiment classifiers.
- :mod:`newswatch.io` (``newswatch/io/``): Kafka factories, HTTP endpoints, dead letters
  and record schemas.
- :mod:`newswatch` (this folder, the ground floor): version, errors, lifecycle, the typed
  settings tree and the metrics. It imports none of the packages above.
"""

from newswatch.errors import NewswatchError

__version__ = "0.1.0"
__all__ = ["NewswatchError", "__version__"]
