"""The fixtures every test folder shares, registered by ``tests/conftest.py`` (``pytest_plugins``).

One real embedded Kafka broker per session, unique names, fresh metric registries, the
loopback webhook receiver, Kafka and topic settings for the session broker, and the shipped
model loaded once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import CollectorRegistry

from newswatch.demo.broker import EmbeddedBroker
from newswatch.metrics import Metrics
from newswatch.models.engine import ClassifierEngine
from newswatch.settings import KafkaSettings, TopicSettings, load_settings
from tests.support.receivers import Receiver
from tests.support.settings import kafka_settings, topic_settings


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A real Tansu broker on a free loopback port, shared by the session."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log) as b:
        yield b


@pytest.fixture
def bootstrap(broker: EmbeddedBroker) -> str:
    """``host:port`` of the session broker."""
    return broker.bootstrap_servers


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic and group names, so tests never share state."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def metrics() -> Metrics:
    """Metrics on a fresh registry."""
    return Metrics(CollectorRegistry())


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP webhook receiver on a free loopback port."""
    rec = await Receiver().start()
    yield rec
    await rec.stop()


@pytest.fixture
def kafka(bootstrap: str) -> KafkaSettings:
    """Kafka settings for the session broker (group timeouts a notifier keeps its group with)."""
    return kafka_settings(bootstrap, steady=True)


@pytest.fixture
def topics(unique: str) -> TopicSettings:
    """Topic names of this test only."""
    return topic_settings(unique)


@pytest.fixture(scope="session")
def engine() -> Iterator[ClassifierEngine]:
    """The configured model (default: the shipped int8 ONNX model), loaded once."""
    eng = ClassifierEngine.load(load_settings().models)
    yield eng
    eng.close()
