"""newswatch: real-time finance text-stream monitoring.

The distribution installs four packages under one import name:

- :mod:`newswatch` (this folder): version, the root error, the typed settings tree and the metrics.
- :mod:`newswatch.stream` (``stream/``): Kafka I/O, schemas, stages, windows, CLI wiring.
- :mod:`newswatch.models` (``models/``): the topic and sentiment classifiers.
- :mod:`newswatch.alerts` (``alerts/``): detectors, alert lifecycle and sinks.
"""

from newswatch.errors import NewswatchError

__version__ = "0.1.0"
__all__ = ["NewswatchError", "__version__"]
